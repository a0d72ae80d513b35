"""The production half's server serves the production model, with the settings the chart renders.

Staging serves the project's registered model, where training registers versions; an approval
copies a version into the spec's ``rollout.production_model`` (``copy_model_version``), and
production must serve that model's champion, never the project's. The server below is a real
``python -m serving`` process whose environment is what ``values-prod.yaml`` renders for the
server container (``KUBELOOP_ENV=prod``, ``KUBELOOP_SERVED_MODEL=production``, ...), with only
what points at the cluster (spec path, work folder, MLflow, stores, tokens) replaced by this
machine's.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from kubeloop import model_store, registry
from kubeloop.errors import SpecError
from serving.process import ServerProcess
from tests.k8s import chart
from tests.utils.serving import Seeded

pytestmark = pytest.mark.slow

TOKEN, ADMIN_TOKEN = "prod-token", "prod-admin-token"
# Rendered values that point at the cluster, replaced by this machine's below.
CLUSTER_ONLY = {
    "KUBELOOP_WORK_DIR",
    "KUBELOOP_SPEC",
    "MLFLOW_TRACKING_URI",
    "KUBELOOP_FEAST_ONLINE_STORE",
}


def rendered_server_env(values_file: str) -> dict[str, str]:
    """The plain environment the chart gives the server container for an environment."""
    objects = chart.render_scenario(chart.CHART / values_file)
    (deployment,) = [
        o for o in chart.kinds(objects, "Deployment") if o["metadata"]["name"].endswith("-server")
    ]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


def test_each_environment_renders_the_model_its_server_serves(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from kubeloop.spec import load_spec
    from serving.settings import ServingSettings
    from tests.utils.serving import EXAMPLE_SPEC

    spec = load_spec(EXAMPLE_SPEC)  # the spec the images bundle (KUBELOOP_SPEC on the cluster)
    served = {}
    for values_file in ("values-staging.yaml", "values-prod.yaml"):
        with monkeypatch.context() as patch:
            for key, value in rendered_server_env(values_file).items():
                patch.setenv(key, value)
            settings = ServingSettings(spec=EXAMPLE_SPEC, api_token=TOKEN)
        served[values_file] = settings.model_name(spec)
    assert served == {
        "values-staging.yaml": spec.model_name,
        "values-prod.yaml": spec.rollout.production_model,
    }
    without = spec.model_copy(
        update={"rollout": spec.rollout.model_copy(update={"production_model": None})}
    )
    with pytest.raises(SpecError, match="needs rollout.production_model"):
        ServingSettings(served_model="production", spec=EXAMPLE_SPEC).model_name(without)


def test_the_production_server_serves_the_released_version_of_the_production_model(
    own_seeded: Seeded, tmp_path: Path
) -> None:
    seeded = own_seeded
    spec = seeded.spec()
    production = spec.rollout.production_model
    assert production, "the bundled spec names the model production serves"
    client = model_store.configure(seeded.settings())
    # Staging's champion is version 1; the approver released version 2 (its challenger).
    released = registry.release(client, seeded.model_name, "2", production, state_tags={})
    registry.promote(client, production, str(released.version), approve=True, approver="tests")
    released_label = released.tags[registry.TAG_NAME]
    staging_label = registry.by_alias(client, seeded.model_name, registry.CHAMPION).tags[
        registry.TAG_NAME
    ]
    assert released_label != staging_label

    rendered = rendered_server_env("values-prod.yaml")
    assert rendered["KUBELOOP_SERVED_MODEL"] == "production"
    env = {k: v for k, v in rendered.items() if k not in CLUSTER_ONLY}
    env.update(
        {
            "KUBELOOP_WORK_DIR": str(seeded.work_dir),
            "KUBELOOP_SPEC": str(seeded.spec_path),
            "MLFLOW_TRACKING_URI": seeded.tracking_uri,
            "KUBELOOP_API_TOKEN": TOKEN,  # from Secrets on the cluster
            "KUBELOOP_ADMIN_TOKEN": ADMIN_TOKEN,
            "KUBELOOP_PREDICTION_LOG_URL": f"sqlite:///{tmp_path / 'predictions.db'}",
        }
    )
    with ServerProcess(env, log_path=tmp_path / "server.log", ready_timeout=300) as server:
        ready = httpx.get(server.url + "/health/ready", timeout=10).json()
        answer = httpx.post(
            server.url + "/predict",
            json={"records": [{"entity_id": seeded.entities[0]}]},
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=30,
        )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["model"] == production
    assert body["predictions"][0]["model_version"] == released_label
    assert answer.headers["X-Model-Version"] == str(released.version)
    assert released_label in str(ready) and staging_label not in str(ready)
