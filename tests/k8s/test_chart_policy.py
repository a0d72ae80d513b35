"""Policy: secure pods, wired Services, HPA and PDB, named ports, least privilege, no secrets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.k8s.chart import (
    VALUES_FILES,
    containers,
    is_hook,
    kinds,
    pod_labels,
    pod_specs,
    render,
    render_scenario,
    scenario_id,
)

SCENARIOS = pytest.mark.parametrize("values_file", VALUES_FILES, ids=scenario_id)
WORKSPACE = "loop-workspace"  # ci/full-values.yaml's fullnameOverride


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


@SCENARIOS
def test_every_pod_runs_non_root_with_runtime_default_seccomp(values_file: Path | None) -> None:
    for owner, spec in pod_specs(render_scenario(values_file)):
        pod = spec.get("securityContext", {})
        assert pod.get("runAsNonRoot") is True, owner["metadata"]["name"]
        assert pod.get("runAsUser", 0) > 0, owner["metadata"]["name"]
        assert pod.get("seccompProfile", {}).get("type") == "RuntimeDefault"
        assert spec.get("serviceAccountName"), owner["metadata"]["name"]
        # The workspace is a person's: it carries the data scientists' API token (tested below).
        if owner["metadata"]["name"] != WORKSPACE:
            assert spec.get("automountServiceAccountToken") is False, owner["metadata"]["name"]


@SCENARIOS
def test_every_container_is_locked_down(values_file: Path | None) -> None:
    for owner, container in containers(render_scenario(values_file)):
        where = f"{owner['kind']}/{owner['metadata']['name']}/{container['name']}"
        sc = container.get("securityContext", {})
        assert sc.get("runAsNonRoot") is True, where
        assert sc.get("readOnlyRootFilesystem") is True, where
        assert sc.get("allowPrivilegeEscalation") is False, where
        assert sc.get("capabilities", {}).get("drop") == ["ALL"], where
        assert not sc.get("capabilities", {}).get("add"), where
        assert not sc.get("privileged"), where
        assert sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", where


@SCENARIOS
def test_every_container_has_requests_and_limits(values_file: Path | None) -> None:
    for owner, container in containers(render_scenario(values_file)):
        resources = container.get("resources", {})
        for section in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(resources.get(section, {})), (
                f"{owner['metadata']['name']}/{container['name']} lacks {section}"
            )


@SCENARIOS
def test_long_running_containers_have_probes_on_named_ports(values_file: Path | None) -> None:
    deployments = pod_specs(kinds(render_scenario(values_file), "Deployment"))
    # Init containers run to completion before the pod starts: they take no probes.
    for owner, container in ((o, c) for o, spec in deployments for c in spec["containers"]):
        where = f"{owner['metadata']['name']}/{container['name']}"
        ports = {p["name"] for p in container.get("ports", [])}
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            assert probe in container, f"{where} has no {probe}"
            port = container[probe]["httpGet"]["port"]
            assert port in ports, f"{where}: {probe} uses port {port!r}, not one of {ports}"


@SCENARIOS
def test_writable_paths_are_volumes(values_file: Path | None) -> None:
    # A read-only root works only if /tmp (the work folder, temp files) is a volume.
    for owner, container in containers(render_scenario(values_file)):
        mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
        if owner["kind"] == "Pod":  # the helm test only reads its script
            continue
        assert "/tmp" in mounts, f"{owner['metadata']['name']}/{container['name']}"


@SCENARIOS
def test_every_service_selects_pods_on_named_ports(values_file: Path | None) -> None:
    objects = render_scenario(values_file)
    workloads = [(o, pod_labels(o)) for o, _ in pod_specs(objects) if not is_hook(o)]
    for service in kinds(objects, "Service"):
        selector = service["spec"]["selector"]
        selected = [o for o, labels in workloads if _matches(selector, labels)]
        name = service["metadata"]["name"]
        assert len(selected) == 1, f"Service {name} selects {len(selected)} workloads"
        pod_containers = selected[0]["spec"]["template"]["spec"]["containers"]
        pod_ports = {
            p["name"]: p["containerPort"] for c in pod_containers for p in c.get("ports", [])
        }
        for port in service["spec"]["ports"]:
            assert port.get("name"), f"Service {name} has an unnamed port"
            assert port["targetPort"] in pod_ports, f"Service {name}: {port['targetPort']} unknown"


@SCENARIOS
def test_every_container_port_is_named_and_unique(values_file: Path | None) -> None:
    for owner, container in containers(render_scenario(values_file)):
        ports = container.get("ports", [])
        assert all(p.get("name") for p in ports), owner["metadata"]["name"]
        assert len({p["name"] for p in ports}) == len(ports)


@SCENARIOS
def test_selectors_are_stable_and_match_their_pods(values_file: Path | None) -> None:
    objects = render_scenario(values_file)
    for obj in kinds(objects, "Deployment"):
        selector = obj["spec"]["selector"]["matchLabels"]
        assert "helm.sh/chart" not in selector and "app.kubernetes.io/version" not in selector
        assert _matches(selector, pod_labels(obj)), obj["metadata"]["name"]
    for obj in objects:
        labels = obj["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/instance") == "kubeloop", obj["metadata"]["name"]
        assert labels.get("app.kubernetes.io/managed-by") == "Helm"


@SCENARIOS
def test_hpa_and_pdb_target_the_server_deployment(values_file: Path | None) -> None:
    objects = render_scenario(values_file)
    deployments = {o["metadata"]["name"]: o for o in kinds(objects, "Deployment")}
    for hpa in kinds(objects, "HorizontalPodAutoscaler"):
        assert hpa["apiVersion"] == "autoscaling/v2"
        ref = hpa["spec"]["scaleTargetRef"]
        assert ref["kind"] == "Deployment" and ref["apiVersion"] == "apps/v1"
        target = deployments[ref["name"]]
        assert pod_labels(target)["app.kubernetes.io/component"] == "server"
        assert "replicas" not in target["spec"], "the HPA owns the replica count"
        # CPU utilisation is relative to requests: without them the HPA cannot work.
        assert target["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"]
        assert hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    budgeted = set()
    for pdb in kinds(objects, "PodDisruptionBudget"):
        selected = [
            name
            for name, d in deployments.items()
            if _matches(pdb["spec"]["selector"]["matchLabels"], pod_labels(d))
        ]
        assert selected == [pdb["metadata"]["name"]], (pdb["metadata"]["name"], selected)
        budgeted.update(selected)
    # Every Deployment of more than one replica has a budget (a drain never takes them all).
    for name, d in deployments.items():
        if d["spec"].get("replicas", 1) > 1 and "workspace" not in name:
            assert name in budgeted, name


@SCENARIOS
def test_service_monitor_scrapes_the_server_service_port(values_file: Path | None) -> None:
    objects = render_scenario(values_file)
    services = kinds(objects, "Service")
    for monitor in kinds(objects, "ServiceMonitor"):
        selected = [
            s
            for s in services
            if _matches(monitor["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])
        ]
        assert len(selected) == 1
        port_names = {p["name"] for p in selected[0]["spec"]["ports"]}
        for endpoint in monitor["spec"]["endpoints"]:
            assert endpoint["port"] in port_names
            assert endpoint["path"] == "/metrics"


@SCENARIOS
def test_secrets_are_only_referenced_never_rendered(values_file: Path | None) -> None:
    objects = render_scenario(values_file)
    assert not kinds(objects, "Secret"), "the chart must not create Secrets from values"
    for owner, container in containers(objects):
        for env in container.get("env", []):
            value = env.get("value", "")
            if "valueFrom" in env:
                continue
            # Plain values may name places, never carry credentials.
            assert "@" not in value and "password" not in value.lower(), (owner, env)
            if env["name"] in (
                "KUBELOOP_API_TOKEN",
                "KUBELOOP_PREDICTION_LOG_URL",
                "KUBELOOP_FEAST_REGISTRY",
                "MLFLOW_BACKEND_STORE_URI",
                "AWS_ACCESS_KEY_ID",
                "AWS_SECRET_ACCESS_KEY",
            ):
                pytest.fail(f"{env['name']} must come from a Secret, not a value")


def _rules(role: dict[str, Any]) -> list[dict[str, Any]]:
    return role.get("rules") or []


def _grants(role: dict[str, Any], resource: str, verb: str, name: str | None = None) -> bool:
    for rule in _rules(role):
        if resource in rule["resources"] and verb in rule["verbs"]:
            names = rule.get("resourceNames")
            if names is None or name is None or name in names:
                return True
    return False


FULL = {
    "rbac": {
        "rawSourceSecrets": ["raw-s3"],
        "dataEngineers": {"groups": ["de"], "users": []},
        "dataScientists": {"groups": ["ds"], "users": []},
        "approvers": {"groups": ["ap"], "users": []},
    },
    "featureStore": {
        "enabled": True,
        "registry": {"existingSecret": "feast-db"},
        "redis": {"existingSecret": "feast-redis"},
    },
    "server": {"auth": {"existingSecret": "api"}},
}


def test_roles_never_use_wildcards_or_list_secrets() -> None:
    for values_file in VALUES_FILES:
        for role in kinds(render_scenario(values_file), "Role", "ClusterRole"):
            assert role["kind"] == "Role", "no cluster-wide permissions"
            for rule in _rules(role):
                assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"], role
                if "secrets" in rule["resources"]:
                    assert rule.get("resourceNames"), f"{role['metadata']['name']}: all Secrets"
                    assert set(rule["verbs"]) <= {"get"}


def test_only_data_engineers_read_raw_sources_and_write_features() -> None:
    roles = {r["metadata"]["name"]: r for r in kinds(render(FULL), "Role")}
    engineer, scientist = roles["kubeloop-data-engineer"], roles["kubeloop-data-scientist"]
    approver = roles["kubeloop-approver"]
    assert _grants(engineer, "secrets", "get", "raw-s3")
    assert _grants(engineer, "secrets", "get", "feast-db")
    assert _grants(engineer, "jobs", "create")  # materialization on demand
    assert not _grants(engineer, "jobs", "delete")  # it would stop a monitor or a rollout run
    for other in (scientist, approver):
        assert not _grants(other, "secrets", "get"), other["metadata"]["name"]
        assert not _grants(other, "jobs", "create")
    assert not _grants(engineer, "secrets", "get", "api"), "the API token is nobody's business"


def test_data_scientists_reach_runs_and_registry_and_approvers_promote() -> None:
    objects = render(FULL)
    roles = {(r["metadata"]["namespace"], r["metadata"]["name"]): r for r in kinds(objects, "Role")}
    scientist = roles[("kubeloop", "kubeloop-data-scientist")]
    assert _grants(scientist, "services/proxy", "create", "kubeloop-mlflow")  # registry, runs
    kfp = roles[("kubeflow", "kubeloop-data-scientist")]
    assert _grants(kfp, "services/proxy", "create", "kubeloop-kfp-gateway")  # pipeline runs
    approver = roles[("kubeloop", "kubeloop-approver")]
    assert _grants(approver, "services/proxy", "create", "kubeloop-mlflow")  # release, aliases
    # No Deployment patch: it would let an approver mount any Secret into the server's pods.
    assert not _grants(approver, "deployments", "patch")
    assert not _grants(scientist, "deployments", "patch")
    bindings = {
        (b["metadata"]["namespace"], b["metadata"]["name"]): b
        for b in kinds(objects, "RoleBinding")
    }
    assert bindings[("kubeloop", "kubeloop-data-engineer")]["subjects"][0]["name"] == "de"
    assert bindings[("kubeflow", "kubeloop-data-scientist")]["subjects"][0]["name"] == "ds"


def test_no_data_scientist_role_can_terminate_or_delete_runs() -> None:
    """A run is never stopped by a person. KFP is reached only through the gateway (which
    refuses terminate and delete, tests/unit/test_kfp_gateway.py): not ml-pipeline or its UI
    directly, no DELETE through any proxy, and no write on the pods and Argo workflows that
    carry a run."""
    objects = render(FULL)
    scientist_roles = [
        r for r in kinds(objects, "Role") if r["metadata"]["name"] == "kubeloop-data-scientist"
    ]
    assert {r["metadata"]["namespace"] for r in scientist_roles} == {"kubeloop", "kubeflow"}
    for role in scientist_roles:
        for service in ("ml-pipeline", "ml-pipeline-ui"):
            assert not _grants(role, "services/proxy", "create", service)
            assert not _grants(role, "services/proxy", "get", service)
        assert not _grants(role, "services/proxy", "delete")
        for verb in ("delete", "deletecollection", "patch", "update", "create"):
            assert not _grants(role, "pods", verb)
            assert not _grants(role, "workflows", verb)
            assert not _grants(role, "jobs", verb)
    [gateway] = [
        d for d in kinds(objects, "Deployment") if d["metadata"]["name"] == "kubeloop-kfp-gateway"
    ]
    assert gateway["metadata"]["namespace"] == "kubeflow"
    command = gateway["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[:2] == ["kubeloop", "kfp-gateway"]
    assert "http://ml-pipeline.kubeflow:8888" in command


@SCENARIOS
def test_every_pod_runs_as_a_service_account_the_chart_creates(values_file: Path | None) -> None:
    """A pod naming a ServiceAccount that does not exist is never created (FailedCreate): the
    log-retention job once did, in every environment."""
    objects = render_scenario(values_file)
    accounts = {
        (a["metadata"].get("namespace"), a["metadata"]["name"])
        for a in kinds(objects, "ServiceAccount")
    }
    for owner, spec in pod_specs(objects):
        wanted = (owner["metadata"].get("namespace"), spec["serviceAccountName"])
        assert wanted in accounts, f"{owner['kind']} {owner['metadata']['name']}: {wanted}"


def test_jobs_have_their_own_service_accounts_with_no_api_access() -> None:
    objects = render(FULL)
    accounts = {a["metadata"]["name"]: a for a in kinds(objects, "ServiceAccount")}
    bound = {
        s["name"]
        for b in kinds(objects, "RoleBinding", "ClusterRoleBinding")
        for s in b["subjects"]
        if s["kind"] == "ServiceAccount"
    }
    used = {}
    for owner, spec in pod_specs(objects):
        used.setdefault(spec["serviceAccountName"], []).append(owner["metadata"]["name"])
    for name, owners in used.items():
        assert len(owners) == 1, f"{name} is shared by {owners}"
        assert accounts[name]["automountServiceAccountToken"] is False
        assert name not in bound, f"{name} needs no Kubernetes API access"


WORKSPACE_VALUES = {
    "workspace": {
        "enabled": True,
        "repository": {"url": "https://git.example.com/ml/kubeloop.git", "ref": "v1.2"},
        "mlflowCredentials": {"existingSecret": "ds-mlflow"},
    },
    "rbac": FULL["rbac"] | {"kfpNamespace": "kubeflow"},
    "monitoring": {"kfpHost": "http://ml-pipeline.kubeflow:8888"},
}


def test_the_workspace_is_off_by_default() -> None:
    names = {o["metadata"]["name"] for o in render(FULL)}
    assert not any("workspace" in n for n in names)
    accounts = {a["metadata"]["name"] for a in kinds(render(FULL), "ServiceAccount")}
    assert "kubeloop-data-scientist" not in accounts


def test_the_workspace_runs_with_exactly_the_data_scientists_rights() -> None:
    objects = render(FULL | WORKSPACE_VALUES)
    [(owner, spec)] = [
        (o, p) for o, p in pod_specs(objects) if o["metadata"]["name"] == "kubeloop-workspace"
    ]
    account = spec["serviceAccountName"]
    assert account == "kubeloop-data-scientist" and spec["automountServiceAccountToken"] is True
    # Bound to the data-scientist Roles, here and in KFP's namespace, and to nothing else.
    bound_to = {
        (b["metadata"]["namespace"], b["roleRef"]["kind"], b["roleRef"]["name"])
        for b in kinds(objects, "RoleBinding", "ClusterRoleBinding")
        for s in b["subjects"]
        if s["kind"] == "ServiceAccount" and s["name"] == account
    }
    assert bound_to == {
        ("kubeloop", "Role", "kubeloop-data-scientist"),
        ("kubeflow", "Role", "kubeloop-data-scientist"),
    }
    # ... the very Roles people get, so its rights are theirs: no Secret, no Jobs, no patches.
    roles = {(r["metadata"]["namespace"], r["metadata"]["name"]): r for r in kinds(objects, "Role")}
    scientist = roles[("kubeloop", "kubeloop-data-scientist")]
    assert not _grants(scientist, "secrets", "get") and not _grants(scientist, "jobs", "create")
    assert not _grants(scientist, "deployments", "patch")
    assert _grants(scientist, "services/proxy", "create", "kubeloop-workspace")  # reach it
    # No other pod mounts an API token.
    tokens = [
        o["metadata"]["name"] for o, p in pod_specs(objects) if p["automountServiceAccountToken"]
    ]
    assert tokens == ["kubeloop-workspace"]
    # The project's image, the repository cloned at the given ref, KFP and MLflow to talk to.
    (clone,) = spec["initContainers"]
    (lab,) = spec["containers"]
    assert clone["image"] == lab["image"] and lab["image"].split("/")[-1].startswith(
        "kubeloop-python:"
    )
    env = {e["name"]: e.get("value") for e in clone["env"]}
    assert env["GIT_URL"] == "https://git.example.com/ml/kubeloop.git" and env["GIT_REF"] == "v1.2"
    assert "dulwich clone" in clone["command"][-1]
    lab_env = {e["name"]: e for e in lab["env"]}
    # KFP through the gateway (which refuses to stop runs), not monitoring's direct ml-pipeline.
    assert lab_env["KFP_HOST"]["value"] == "http://kubeloop-kfp-gateway.kubeflow:8888"
    secrets = {e["valueFrom"]["secretKeyRef"]["name"] for e in lab["env"] if "valueFrom" in e}
    assert secrets == {"ds-mlflow"}  # a data scientist's MLflow user; no raw or feature Secrets
    assert owner["spec"]["template"]["metadata"]["labels"]["kubeloop.io/mlflow-client"] == "true"
    assert "kubeloop.io/feast-client" not in owner["spec"]["template"]["metadata"]["labels"]


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Kubernetes label-selector semantics (matchLabels and matchExpressions; {} selects all)."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    tests = {
        "In": lambda key, values: labels.get(key) in values,
        "NotIn": lambda key, values: labels.get(key) not in values,
        "Exists": lambda key, _: key in labels,
        "DoesNotExist": lambda key, _: key not in labels,
    }
    return all(
        tests[e["operator"]](e["key"], e.get("values", []))
        for e in selector.get("matchExpressions", [])
    )


def _egress_admits(policy: dict[str, Any], namespace: str, labels: dict[str, str]) -> bool:
    """Whether ``policy`` lets its pods open a connection to a pod (selectors only: ipBlock is
    for addresses outside the cluster)."""
    namespace_labels = {"kubernetes.io/metadata.name": namespace}
    own = policy["metadata"]["namespace"]
    for rule in policy["spec"]["egress"]:
        for peer in rule.get("to", []):
            if "ipBlock" in peer:
                continue
            in_namespace = (
                _selects(peer["namespaceSelector"], namespace_labels)
                if "namespaceSelector" in peer
                else namespace == own
            )
            if in_namespace and _selects(peer.get("podSelector", {}), labels):
                return True
    return False


def test_the_workspace_reaches_kfp_only_through_the_gateway() -> None:
    """The notebooks' KFP_HOST is the gateway, the one KFP Service the data-scientist Role may
    proxy to; and the workspace's NetworkPolicy keeps the pod itself off KFP's API server and UI
    (standalone KFP's `app` labels), so no notebook terminates a run by calling ml-pipeline."""
    cidrs = ["10.244.0.0/16", "10.96.0.0/12"]
    objects = render(
        FULL | WORKSPACE_VALUES | {"networkPolicy": {"enabled": True, "clusterCIDRs": cidrs}}
    )
    [lab] = [c for _, c in containers(objects) if c["name"] == "jupyterlab"]
    host = {e["name"]: e.get("value") for e in lab["env"]}["KFP_HOST"]
    [service] = [
        s for s in kinds(objects, "Service") if s["metadata"]["name"] == "kubeloop-kfp-gateway"
    ]
    name, namespace = service["metadata"]["name"], service["metadata"]["namespace"]
    assert host == f"http://{name}.{namespace}:{service['spec']['ports'][0]['port']}"
    [role] = [
        r
        for r in kinds(objects, "Role")
        if r["metadata"]["name"] == "kubeloop-data-scientist"
        and r["metadata"]["namespace"] == namespace
    ]
    assert _grants(role, "services/proxy", "create", name)

    [policy] = [
        p for p in kinds(objects, "NetworkPolicy") if p["metadata"]["name"] == "kubeloop-workspace"
    ]
    workspace = next(
        o for o, _ in pod_specs(objects) if o["metadata"]["name"] == "kubeloop-workspace"
    )
    assert _selects(policy["spec"]["podSelector"], pod_labels(workspace))
    assert "Egress" in policy["spec"]["policyTypes"]
    gateway = next(o for o in kinds(objects, "Deployment") if o["metadata"]["name"] == name)
    assert _egress_admits(policy, "kubeflow", pod_labels(gateway))
    for app in ("ml-pipeline", "ml-pipeline-ui"):  # standalone KFP's API server and UI pods
        assert not _egress_admits(policy, "kubeflow", {"app": app, "application-crd-id": "x"})
    # Everything else stays reachable: KFP's MinIO, MLflow, DNS, the release's own pods.
    mlflow = next(
        o for o in kinds(objects, "Deployment") if o["metadata"]["name"].endswith("mlflow")
    )
    assert _egress_admits(policy, "kubeflow", {"app": "minio"})
    assert _egress_admits(policy, "kubeloop", pod_labels(mlflow))
    assert _egress_admits(policy, "kube-system", {"k8s-app": "kube-dns"})
    # Outside addresses too (git, S3, databases), but not the cluster's own ranges, where a
    # CNI that matches pods by ipBlock would find ml-pipeline's pod address.
    [outside] = [p["ipBlock"] for r in policy["spec"]["egress"] for p in r["to"] if "ipBlock" in p]
    assert outside == {"cidr": "0.0.0.0/0", "except": cidrs}


def test_the_workspace_needs_a_repository_and_outside_dev_a_token() -> None:
    prod = {
        "environment": "prod",
        "server": {"auth": {"existingSecret": "api"}, "predictionLog": {"existingSecret": "log"}},
        "mlflow": {
            "backendStore": {"existingSecret": "db"},
            "artifacts": {"destination": "s3://bucket/artifacts"},
            "auth": {"existingSecret": "mlflow-auth"},
            "clientCredentials": {"server": "mlflow-server", "jobs": "mlflow-jobs"},
        },
    }
    with pytest.raises(Exception, match=r"workspace\.repository\.url"):
        render({"workspace": {"enabled": True}})
    with pytest.raises(Exception, match=r"workspace\.auth\.existingSecret"):
        render(prod | {"workspace": WORKSPACE_VALUES["workspace"]})
    secured = {**WORKSPACE_VALUES["workspace"], "auth": {"existingSecret": "jupyter"}}
    assert any("workspace" in o["metadata"]["name"] for o in render(prod | {"workspace": secured}))


def test_network_policies_deny_by_default_and_open_each_flow() -> None:
    objects = render(
        FULL
        | {
            "networkPolicy": {
                "enabled": True,
                "metricsNamespace": "monitoring",
                "pipelinesNamespace": "kubeflow",
                "serverIngressFrom": [],
            }
        }
    )
    policies = {p["metadata"]["name"]: p for p in kinds(objects, "NetworkPolicy")}
    deny = policies["kubeloop-default-deny"]
    assert deny["spec"]["policyTypes"] == ["Ingress"] and "ingress" not in deny["spec"]
    workloads = [o for o, _ in pod_specs(objects)]
    for owner in workloads:
        assert _matches(deny["spec"]["podSelector"]["matchLabels"], pod_labels(owner))
    server_pod = pod_labels(
        next(o for o in workloads if o["metadata"]["name"] == "kubeloop-server")
    )
    for target, label in (
        ("kubeloop-mlflow", "kubeloop.io/mlflow-client"),
        ("kubeloop-feast", "kubeloop.io/feast-client"),
    ):
        sources = policies[target]["spec"]["ingress"][0]["from"]
        assert {"podSelector": {"matchLabels": {label: "true"}}} in sources
        assert server_pod.get(label) == "true", f"the server must be allowed to reach {target}"


def test_restricted_server_ingress_still_admits_prometheus_and_helm_test() -> None:
    peers = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress"}}}]
    objects = render({"networkPolicy": {"serverIngressFrom": peers}})
    policy = next(
        p for p in kinds(objects, "NetworkPolicy") if p["metadata"]["name"] == "kubeloop-server"
    )
    sources = policy["spec"]["ingress"][0]["from"]
    assert peers[0] in sources
    assert {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}
    } in sources
    test_pod = next(o for o in kinds(objects, "Pod"))
    assert any(
        _matches(s.get("podSelector", {}).get("matchLabels", {}), pod_labels(test_pod))
        for s in sources
    )


def test_dashboards_are_labelled_for_the_grafana_sidecar() -> None:
    maps = [c for c in kinds(render(), "ConfigMap") if "dashboard" in c["metadata"]["name"]]
    assert maps
    for cm in maps:
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert all(key.endswith(".json") for key in cm["data"])
