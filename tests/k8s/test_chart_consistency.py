"""The chart agrees with the code: commands, settings, images, ports, Feast, spec, metrics."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.k8s.chart import (
    CHART,
    REPO,
    VALUES_FILES,
    containers,
    kinds,
    pod_specs,
    render,
    render_scenario,
    scenario_id,
)
from tests.k8s.processes import describe
from tests.k8s.validation import dashboard_queries, metric_names

SCENARIOS = pytest.mark.parametrize("values_file", VALUES_FILES, ids=scenario_id)


def _config_maps(objects: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    return {c["metadata"]["name"]: c.get("data", {}) for c in kinds(objects, "ConfigMap")}


@SCENARIOS
def test_every_command_names_a_real_module_or_cli_command(values_file: Path | None) -> None:
    objects = render_scenario(values_file)
    problems = []
    for owner, spec in pod_specs(objects):
        for container in spec["containers"]:
            proc = describe(container, spec, _config_maps(objects))
            problems += [f"{owner['metadata']['name']}: {p}" for p in proc.problems]
    assert problems == []


@SCENARIOS
def test_every_environment_variable_is_read_by_its_process(values_file: Path | None) -> None:
    objects = render_scenario(values_file)
    unread = []
    for owner, spec in pod_specs(objects):
        for container in spec["containers"]:
            proc = describe(container, spec, _config_maps(objects))
            if proc.problems:
                continue  # reported by the command test
            for env in container.get("env", []):
                if env["name"] not in proc.env:
                    unread.append(
                        f"{owner['metadata']['name']} ({proc.description}): {env['name']}"
                    )
    assert unread == [], "set by the chart but read by no setting of the process"


def test_the_process_model_catches_a_typo() -> None:
    objects = render()
    owner, spec = next(
        (o, s) for o, s in pod_specs(objects) if o["metadata"]["name"] == "kubeloop-server"
    )
    container = dict(spec["containers"][0])
    container["env"] = [*container["env"], {"name": "KUBELOOP_API_TOKN", "value": "x"}]
    proc = describe(container, spec, {})
    assert "KUBELOOP_API_TOKEN" in proc.env and "KUBELOOP_API_TOKN" not in proc.env
    bad = dict(container, command=["kubeloop", "materialise"])
    assert describe(bad, spec, {}).problems


def test_every_setting_the_chart_exposes_is_a_real_field() -> None:
    # server.settings and monitoring.settings become KUBELOOP_<NAME>: the env test above covers
    # the values files; this covers a typo users would make.
    objects = render({"server": {"settings": {"canary_wieght": 0.1}}})
    server = next(c for o, c in containers(objects) if c["name"] == "server")
    spec = next(s for o, s in pod_specs(objects) if o["metadata"]["name"] == "kubeloop-server")
    assert "KUBELOOP_CANARY_WIEGHT" not in describe(server, spec, {}).env


def test_images_are_the_ones_components_images_names() -> None:
    from kubeloop import images

    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert chart["appVersion"] == images.VERSION
    assert values["image"]["registry"] == images.REGISTRY
    feature_store = {
        "enabled": True,
        "registry": {"existingSecret": "r"},
        "redis": {"address": "r:6379"},
    }
    for owner, container in containers(render({"featureStore": feature_store})):
        expected = images.SERVER_IMAGE if container["name"] == "server" else images.PIPELINE_IMAGE
        assert container["image"] == expected, owner["metadata"]["name"]


def _dockerfile(name: str) -> str:
    return (REPO / "docker" / f"{name}.Dockerfile").read_text()


def test_each_image_has_its_dockerfile_with_the_same_name_and_entrypoint() -> None:
    from kubeloop import images

    expected = {"server": images.SERVER_IMAGE, "pipeline": images.PIPELINE_IMAGE}
    found = {p.name.removesuffix(".Dockerfile") for p in (REPO / "docker").glob("*.Dockerfile")}
    assert found == set(expected)
    for name, image in expected.items():
        text = _dockerfile(name)
        repository = image.rsplit(":", 1)[0].rsplit("/", 1)[1]
        assert f'org.opencontainers.image.title="{repository}"' in text, name
    server = _dockerfile("server")
    assert f"EXPOSE {images.SERVER_PORT}" in server
    assert 'ENTRYPOINT ["python", "-m", "serving"]' in server
    assert 'ENTRYPOINT ["python", "-m", "kubeloop"]' in _dockerfile("pipeline")


def test_server_port_and_user_match_the_images() -> None:
    from kubeloop import images

    objects = render()
    server = next(c for o, c in containers(objects) if c["name"] == "server")
    assert server["ports"][0]["containerPort"] == images.SERVER_PORT
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for name in ("server", "pipeline"):
        uid = re.search(r"^USER (\d+)", _dockerfile(name), re.M)
        assert uid and int(uid.group(1)) == values["podSecurityContext"]["runAsUser"], name


@pytest.mark.parametrize("drain", [None, 40])
def test_the_servers_shutdown_fits_its_grace_period_and_its_spool_its_volume(drain) -> None:
    """What the server does after SIGTERM (uvicorn's graceful shutdown, then the log's drain, as
    serving/server.py and serving/settings.py define them) ends before the kubelet's SIGKILL,
    and the spool drops rows (counted) before its emptyDir would get the pod evicted."""
    from serving.server import uvicorn_config
    from serving.settings import ServingSettings

    settings = {} if drain is None else {"log_drain_seconds": drain}
    spec = next(
        s
        for o, s in pod_specs(render({"server": {"settings": settings}}))
        if o["metadata"]["name"] == "kubeloop-server"
    )
    [server] = spec["containers"]
    env = {e["name"]: e.get("value") for e in server["env"]}
    code = ServingSettings(**settings)
    pre_stop = int(server["lifecycle"]["preStop"]["exec"]["command"][-1])
    graceful = uvicorn_config(code).timeout_graceful_shutdown
    assert pre_stop + graceful + code.log_drain_seconds < spec["terminationGracePeriodSeconds"]

    [volume] = [v for v in spec["volumes"] if v["name"] == "spool"]
    mount = next(m for m in server["volumeMounts"] if m["name"] == "spool")
    assert env["KUBELOOP_LOG_SPOOL_DIR"] == mount["mountPath"]
    size = int(volume["emptyDir"]["sizeLimit"].removesuffix("Gi")) * 2**30
    assert int(env["KUBELOOP_LOG_SPOOL_MAX_BYTES"]) <= 0.8 * size


def test_feature_server_config_is_what_the_code_renders() -> None:
    from kubeloop.feature_store import feast_project, render_yaml
    from kubeloop.settings import PlatformSettings
    from tests.utils.factories import example_spec

    values = {
        "featureStore": {
            "enabled": True,
            "registry": {"existingSecret": "r"},
            "redis": {"address": "redis:6379"},
        }
    }
    cm = next(
        c for c in kinds(render(values), "ConfigMap") if c["metadata"]["name"] == "kubeloop-feast"
    )
    settings = PlatformSettings(
        feast_online_store="redis",
        redis_url="${KUBELOOP_REDIS_URL}",
        feast_registry="${KUBELOOP_FEAST_REGISTRY}",
    )
    project = feast_project(example_spec())
    assert yaml.safe_load(cm["data"]["feature_store.yaml"]) == yaml.safe_load(
        render_yaml(settings, project)
    )
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    assert defaults["featureStore"]["project"] == project


def test_inline_project_spec_is_a_valid_spec() -> None:
    from kubeloop.spec import parse_spec

    objects = render_scenario(CHART / "ci" / "full-values.yaml")
    cm = next(c for c in kinds(objects, "ConfigMap") if c["metadata"]["name"] == "loop-spec")
    spec = parse_spec(yaml.safe_load(cm["data"]["spec.yaml"]))
    assert spec.name == "building-energy"
    for owner, container in containers(objects):
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        if "KUBELOOP_SPEC" in env:
            assert env["KUBELOOP_SPEC"] == "/etc/kubeloop/spec.yaml", owner["metadata"]["name"]


def test_bundled_spec_path_is_in_the_images() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    bundled = Path(values["project"]["bundledSpec"])
    assert bundled.is_relative_to("/app")
    assert (REPO / bundled.relative_to("/app")).exists()
    for name in ("server", "pipeline"):
        assert "WORKDIR /app" in _dockerfile(name)
        assert re.search(r"^COPY .*examples", _dockerfile(name), re.M), name


def _metric_families() -> set[str]:
    """Every series kubeloop exports: the server's /metrics and the monitoring job's pushes
    (each exporter's METRIC_NAMES), and the derived series tests/utils/series.py lists."""
    import importlib

    from tests.utils.series import exported_series

    names: set[str] = set()
    for module in ("serving.metrics", "monitoring.exporter"):
        names |= set(importlib.import_module(module).METRIC_NAMES)
    families = set(names) | set(exported_series())
    for name in names:  # histogram series and counters without their suffix
        families |= {f"{name}_bucket", f"{name}_sum", f"{name}_count", name.removesuffix("_total")}
    return families


def test_alert_rules_use_only_metrics_the_server_exports() -> None:
    exported = _metric_families()
    rules = kinds(render({"metrics": {"prometheusRule": {"enabled": True}}}), "PrometheusRule")
    used = {
        m
        for r in rules
        for g in r["spec"]["groups"]
        for rule in g["rules"]
        for m in metric_names(rule["expr"])
    }
    assert used and used <= exported, used - exported


@pytest.mark.parametrize(
    "dashboard", sorted((CHART / "dashboards").glob("*.json")), ids=lambda p: p.name
)
def test_dashboards_use_only_metrics_the_server_exports(dashboard: Path) -> None:
    used = {
        m for q in dashboard_queries(json.loads(dashboard.read_text())) for m in metric_names(q)
    }
    assert used and used <= _metric_families(), used - _metric_families()


def _leaf_paths(node: Any, prefix: str = "") -> list[str]:
    if isinstance(node, dict) and node and prefix not in ("", *_FREE_MAPS):
        return [p for k, v in node.items() for p in _leaf_paths(v, f"{prefix}.{k}")]
    if isinstance(node, dict) and prefix == "":
        return [p for k, v in node.items() for p in _leaf_paths(v, k)]
    return [prefix]


# Maps whose content is free-form (resources, labels, security contexts, the spec, subcharts).
_FREE_MAPS = (
    "podSecurityContext",
    "containerSecurityContext",
    "project.spec",
    "tests.request",
    "postgresql",
    "redis",
    "minio",
    "global",
)


def test_every_value_is_documented_and_typed() -> None:
    text = (CHART / "values.yaml").read_text()
    documented = set(re.findall(r"^\s*## @param (\S+) \S", text, re.M))
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["$schema"].startswith("http://json-schema.org/draft-07/schema")
    missing = []
    for path in _leaf_paths(yaml.safe_load(text)):
        if not any(
            path == d or path.startswith(f"{d}.") or d.startswith(f"{path}.") for d in documented
        ):
            missing.append(path)
    assert missing == [], "values.yaml keys without ## @param"
    for param in documented:
        node = schema
        for part in param.split("."):
            node = node["properties"][part]
        assert node.get("description"), f"values.schema.json: {param} has no description"


def test_helm_test_request_carries_exactly_the_model_features() -> None:
    import importlib

    from tests.utils.factories import example_spec

    spec = example_spec()
    features = importlib.import_module(spec.features.definitions).FEATURES
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    (record,) = values["tests"]["request"]["records"]
    assert list(record["features"]) == list(features)


def test_pipeline_env_config_map_is_the_one_pipeline_steps_read() -> None:
    from kubeloop import images
    from kubeloop.settings import PlatformSettings
    from tests.k8s.processes import library_env, settings_env

    objects = render_scenario(CHART / "ci" / "full-values.yaml")
    (cm,) = [
        c
        for c in kinds(objects, "ConfigMap")
        if c["metadata"]["name"] == images.PIPELINE_ENV_CONFIGMAP
    ]
    assert cm["metadata"]["namespace"] == "ml-pipelines"  # pipelines.namespace
    assert set(cm["data"]) <= set(images.PIPELINE_ENV_KEYS)
    assert set(cm["data"]) <= settings_env(PlatformSettings) | library_env()
    assert cm["data"]["MLFLOW_TRACKING_URI"] == "http://loop-mlflow.kubeloop.svc:5000"
    # MLflow accepts that Host header (its allowed hosts cover <service>.<namespace>...).
    mlflow = next(c for o, c in containers(objects) if c["name"] == "mlflow")
    allowed = next(e["value"] for e in mlflow["env"] if e["name"] == "MLFLOW_SERVER_ALLOWED_HOSTS")
    import fnmatch

    assert any(fnmatch.fnmatch("loop-mlflow.kubeloop.svc:5000", p) for p in allowed.split(","))
