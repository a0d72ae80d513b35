"""Data engineers may create Jobs (materialization on demand), but only the materialize
CronJob's own pod: the chart's ValidatingAdmissionPolicy, its CEL run on the rendered objects."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.k8s.admission import decide
from tests.k8s.chart import NAMESPACE, kinds, one, render

ENGINEERS = {"groups": ["de"], "users": ["erin@example.com"]}
VALUES = {
    "rbac": {"dataEngineers": ENGINEERS},
    "featureStore": {
        "enabled": True,
        "registry": {"existingSecret": "feast-db"},
        "redis": {"existingSecret": "feast-redis"},
    },
    "server": {"auth": {"existingSecret": "api"}},
}
MATERIALIZE = "kubeloop-materialize"


@pytest.fixture(scope="module")
def rendered() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(policy, binding, the materialize CronJob as the API server holds it)."""
    objects = render(VALUES)
    (policy,) = kinds(objects, "ValidatingAdmissionPolicy")
    (binding,) = kinds(objects, "ValidatingAdmissionPolicyBinding")
    cronjob = copy.deepcopy(one(objects, "CronJob", MATERIALIZE))
    cronjob["metadata"]["uid"] = "5f0c6a52-8d1e-4f0e-9a57-3c1d1c1f9e01"
    return policy, binding, cronjob


def job_from(cronjob: dict[str, Any]) -> dict[str, Any]:
    """The Job `kubectl create job materialize-now --from=cronjob/<name>` sends."""
    template = cronjob["spec"]["jobTemplate"]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": "materialize-now",
            "namespace": NAMESPACE,
            "annotations": {"cronjob.kubernetes.io/instantiate": "manual"},
            "labels": template.get("metadata", {}).get("labels", {}),
            "ownerReferences": [
                {
                    "apiVersion": "batch/v1",
                    "kind": "CronJob",
                    "name": cronjob["metadata"]["name"],
                    "uid": cronjob["metadata"]["uid"],
                    "controller": True,
                }
            ],
        },
        "spec": copy.deepcopy(template["spec"]),
    }


def test_the_binding_checks_jobs_in_the_release_namespace_against_the_materialize_cronjob(
    rendered,
) -> None:
    policy, binding, _ = rendered
    assert binding["spec"]["policyName"] == policy["metadata"]["name"]
    assert binding["spec"]["validationActions"] == ["Deny"]
    assert binding["spec"]["paramRef"] == {
        "name": MATERIALIZE,
        "namespace": NAMESPACE,
        "parameterNotFoundAction": "Deny",
    }
    selector = binding["spec"]["matchResources"]["namespaceSelector"]["matchLabels"]
    assert selector == {"kubernetes.io/metadata.name": NAMESPACE}
    assert policy["spec"]["failurePolicy"] == "Fail"
    assert policy["spec"]["paramKind"] == {"apiVersion": "batch/v1", "kind": "CronJob"}
    (rule,) = policy["spec"]["matchConstraints"]["resourceRules"]
    assert (rule["apiGroups"], rule["resources"], rule["operations"]) == (
        ["batch"],
        ["jobs"],
        ["CREATE"],
    )


def test_a_data_engineer_runs_materialization_on_demand(rendered) -> None:
    policy, _, cronjob = rendered
    job = job_from(cronjob)
    # As the API server validates it: defaulted to one pod, with the Job controller's labels.
    job["spec"].update(parallelism=1, completions=1)
    labels = job["spec"]["template"]["metadata"]["labels"]
    labels.update(
        {"batch.kubernetes.io/job-name": "materialize-now", "job-name": "materialize-now"}
    )
    labels["batch.kubernetes.io/controller-uid"] = labels["controller-uid"] = "0c8e3d4a"
    by_group = decide(policy, job, cronjob, "dave@example.com", ["de", "system:authenticated"])
    by_user = decide(policy, job, cronjob, "erin@example.com", ["system:authenticated"])
    for decision in (by_group, by_user):
        assert decision.applies and decision.allowed, decision


def _mount_secret(spec: dict[str, Any]) -> None:
    spec["volumes"] = [*spec.get("volumes", []), {"name": "t", "secret": {"secretName": "api"}}]
    container = spec["containers"][0]
    mounts = [*container.get("volumeMounts", []), {"name": "t", "mountPath": "/t"}]
    container["volumeMounts"] = mounts


def _env_from_secret(spec: dict[str, Any]) -> None:
    spec["containers"][0]["envFrom"] = [{"secretRef": {"name": "kubeloop-credentials"}}]


def _other_image(spec: dict[str, Any]) -> None:
    spec["containers"][0]["image"] = "docker.io/library/busybox:1.37"


def _other_command(spec: dict[str, Any]) -> None:
    spec["containers"][0]["command"] = ["sh", "-c", "cat /var/run/secrets/*"]


def _other_account(spec: dict[str, Any]) -> None:
    spec["serviceAccountName"] = "kubeloop-server"
    spec["automountServiceAccountToken"] = True


@pytest.mark.parametrize(
    "tamper", [_mount_secret, _env_from_secret, _other_image, _other_command, _other_account]
)
def test_a_data_engineer_cannot_change_the_pod(rendered, tamper) -> None:
    policy, _, cronjob = rendered
    job = job_from(cronjob)
    tamper(job["spec"]["template"]["spec"])
    decision = decide(policy, job, cronjob, "dave@example.com", ["de"])
    assert decision.applies and not decision.allowed
    assert decision.message is not None and "unchanged" in decision.message
    assert MATERIALIZE in decision.message


def _many_pods(job: dict[str, Any]) -> None:
    job["spec"]["parallelism"] = job["spec"]["completions"] = 20


def _own_selector(job: dict[str, Any]) -> None:
    job["spec"]["manualSelector"] = True
    job["spec"]["selector"] = {"matchLabels": {"app.kubernetes.io/component": "server"}}


def _server_label(job: dict[str, Any]) -> None:
    # The server's Service, PDB and HPA select pods by these labels.
    job["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] = "server"


def _extra_label(job: dict[str, Any]) -> None:
    job["spec"]["template"]["metadata"]["labels"]["example.com/team"] = "data"


def _annotation(job: dict[str, Any]) -> None:
    job["spec"]["template"]["metadata"]["annotations"] = {"sidecar.istio.io/inject": "false"}


@pytest.mark.parametrize(
    ("tamper", "says"),
    [
        (_many_pods, "once"),
        (_own_selector, "once"),
        (_server_label, "labels"),
        (_extra_label, "labels"),
        (_annotation, "annotations"),
    ],
)
def test_a_data_engineer_cannot_change_how_the_job_runs_or_what_its_pod_looks_like(
    rendered, tamper, says
) -> None:
    policy, _, cronjob = rendered
    job = job_from(cronjob)
    tamper(job)
    decision = decide(policy, job, cronjob, "dave@example.com", ["de"])
    assert not decision.allowed
    assert decision.message is not None and says in decision.message


def test_a_data_engineer_cannot_create_a_job_of_their_own(rendered) -> None:
    policy, _, cronjob = rendered
    job = job_from(cronjob)
    del job["metadata"]["ownerReferences"]  # the same pod, but not from the CronJob
    decision = decide(policy, job, cronjob, "dave@example.com", ["de"])
    assert not decision.allowed
    assert decision.message == (
        f"a data engineer may create only Jobs of the CronJob {MATERIALIZE}: "
        f"kubectl create job <name> --from=cronjob/{MATERIALIZE}"
    )
    other = job_from(cronjob)
    other["metadata"]["ownerReferences"][0]["name"] = "kubeloop-monitor"
    assert not decide(policy, other, cronjob, "dave@example.com", ["de"]).allowed


def test_the_policy_leaves_everyone_else_to_rbac(rendered) -> None:
    policy, _, cronjob = rendered
    job = job_from(cronjob)
    _mount_secret(job["spec"]["template"]["spec"])
    decision = decide(policy, job, cronjob, "admin", ["system:masters"])
    assert not decision.applies and decision.allowed


def test_no_policy_without_data_engineers_or_materialization() -> None:
    no_subjects = {**VALUES, "rbac": {"dataEngineers": {"groups": [], "users": []}}}
    no_materialize = copy.deepcopy(VALUES)
    no_materialize["featureStore"]["materialize"] = {"enabled": False}
    for values in (no_subjects, no_materialize):
        objects = render(values)
        assert not kinds(objects, "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")
    # Without materialization the Role has no Job right for the policy to narrow.
    roles = {r["metadata"]["name"]: r for r in kinds(render(no_materialize), "Role")}
    assert not any(
        "jobs" in rule["resources"] and "create" in rule["verbs"]
        for rule in roles["kubeloop-data-engineer"]["rules"]
    )
