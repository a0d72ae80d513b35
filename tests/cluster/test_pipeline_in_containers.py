"""The training pipeline as a cluster runs it, on this machine: kfp.local's DockerRunner over
podman, every step in its own container of the pipeline image, sharing nothing but the KFP
pipeline root and the services (PostgreSQL, Redis, S3, an MLflow tracking server). Then
``kubeloop monitor`` launches a retraining into the same harness.

A candidate the gate rejects is not run here as well (it was, at a third of this test's 10
minutes on a slow machine): the skipped register step and the CLI's exit code 1 are kfp.local's
and the CLI's own, tested with the SubprocessRunner in ``test_training_pipeline.py`` and
``test_pipeline_outcome.py``; what containers change, steps meeting only through the pipeline
root and the services, both runs here show.

`make cluster-test` runs just this; CI runs it with the rest (KUBELOOP_REQUIRE_SERVICES=1).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy
import yaml

from components.features.core import materialize_incremental
from kubeloop import model_store, registry
from kubeloop.feature_store import offline_table, open_store
from kubeloop.settings import PlatformSettings
from kubeloop.spec import dump_spec
from tests.cluster.conftest import Platform, environ_with
from tests.utils.factories import example_spec, sample_frame
from tests.utils.images import ENGINE_OPTIONS
from tests.utils.monitoring import log_feedback, log_rows, production_rows

pytestmark = [pytest.mark.slow, pytest.mark.services, pytest.mark.timeout(3600)]

ROWS = 3_000
STEPS = {"ingest", "features", "train", "evaluate", "register"}
V_NAME = re.compile(r"^V\d+\.\d+\.\d+$")
# Before KFP's command, each container notes its id (from its own mounts), its step and how many
# probe files its /tmp already holds, then leaves one there: a shared /tmp would show them.
PROBE = (
    'id=$(grep -o "containers/[0-9a-f]\\{{64\\}}" /proc/self/mountinfo | head -1); '
    'step=$(printf "%s\\n" "$@" | grep -A1 -x -- --function_to_execute | tail -1); '
    'seen=$(ls /tmp | grep -c "^kubeloop-probe" || true); '
    'echo "$step ${{id#containers/}} $seen" > {probes}/$(date +%s%N)-$$; '
    'touch /tmp/kubeloop-probe-$step; exec "$@"'
)


def run_args(probes: Path) -> dict:
    """DockerRunner options for podman: runc, lowered ulimits, the probe as entrypoint."""
    return {
        **ENGINE_OPTIONS,
        "entrypoint": ["/bin/sh", "-c", PROBE.format(probes=probes), "probe"],
    }


def kubeloop(args: list[str], env: dict[str, str], log: Path, returncode: int = 0) -> float:
    """The CLI in a child process (as a laptop or the monitor's CronJob runs it); wall time."""
    started = time.monotonic()
    with log.open("w") as out:
        proc = subprocess.run(
            [sys.executable, "-m", "kubeloop", *args],
            env=environ_with(env),
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=2400,
            check=False,
        )
    assert proc.returncode == returncode, log.read_text()[-6000:]
    return time.monotonic() - started


def said(log: Path) -> str:
    """The CLI's output with its line wrapping undone (rich wraps at 80 columns off a tty)."""
    return " ".join(log.read_text().split())


def probes_of(folder: Path) -> list[tuple[str, str, int]]:
    lines = [p.read_text().split() for p in sorted(folder.iterdir())]
    return [(step, cid, int(seen)) for step, cid, seen in lines]


def test_every_step_in_its_own_container_then_a_monitor_retraining(
    platform: Platform, pipeline_image: str, tmp_path: Path
) -> None:
    work = tmp_path / "laptop"  # the submitting machine's work folder: no step sees it
    probes = work / "kfp" / "probes"
    probes.mkdir(parents=True)
    probes.chmod(0o777)
    drop = tmp_path / "drop.parquet"
    frame = sample_frame(ROWS, buildings=30)
    frame.to_parquet(drop, index=False)
    platform.s3.client().upload_file(str(drop), "raw", "drops/first.parquet")
    spec = example_spec()
    spec = spec.model_copy(
        update={
            "monitoring": spec.monitoring.model_copy(
                update={"min_rows": 100, "min_labelled_rows": 50, "new_labels": 200}
            )
        }
    )
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(dump_spec(spec)))
    env = {
        **platform.env,
        "KUBELOOP_WORK_DIR": str(work),
        "KUBELOOP_LOCAL_RUNNER": "docker",
        "KUBELOOP_DOCKER_RUN_ARGS": json.dumps(run_args(probes)),
    }
    source = "s3://raw/drops/first.parquet"

    wall = kubeloop(
        ["run", "training", "--spec", str(spec_file), "--source", source],
        env,
        tmp_path / "training.log",
    )
    print(f"harness: training pipeline in containers {wall:.1f} s")  # docs/benchmarks.md

    # Every step ran in a container of its own, and found no other step's /tmp.
    seen = probes_of(probes)
    assert {step for step, _, _ in seen} == STEPS, seen
    assert len({cid for _, cid, _ in seen}) == len(STEPS) and all(len(c) == 64 for _, c, _ in seen)
    assert all(count == 0 for _, _, count in seen), seen

    # A V-named version whose artifacts are in S3, its dataset in the S3 DVC remote.
    client = model_store.configure(PlatformSettings(mlflow_tracking_uri=platform.mlflow_url))
    versions = registry.all_versions(client, spec.model_name)
    assert len(versions) == 1
    first = versions[0]
    assert V_NAME.match(first.tags[registry.TAG_NAME]), first.tags
    artifacts = platform.s3.keys("mlflow", "artifacts/")
    assert any(first.run_id in key and key.endswith("reference.parquet") for key in artifacts)
    assert any(key.endswith("/MLmodel") for key in artifacts)
    md5 = first.tags[registry.TAG_DATA]
    assert any(key.endswith(md5[2:]) for key in platform.s3.keys("datasets", "dvc/")), md5
    assert not (work / "dvc").exists() and not (work / "feast").exists()

    # The Feast offline rows are in PostgreSQL, where the materialize job (a pod of its own)
    # reads them into Redis.
    job = PlatformSettings(work_dir=tmp_path / "materialize-job", **_feast(platform))
    views = materialize_incremental(spec, job)
    engine = sqlalchemy.create_engine(platform.offline_url)
    with engine.connect() as conn:
        count = conn.execute(sqlalchemy.text(f"select count(*) from {offline_table(views[0])}"))
        assert count.scalar_one() == ROWS
    engine.dispose()
    store = open_store(job, spec)
    online = store.get_online_features(
        features=store.get_feature_service(spec.features.service),
        entity_rows=[{"building_id": int(frame["building_id"].iloc[-1])}],
    ).to_dict()
    assert all(values[0] is not None for values in online.values())

    print("harness: first run checked; monitoring launches the retraining")
    # Monitoring: the champion answered labelled traffic; enough new labels call for a
    # retraining, which `kubeloop monitor` launches into the same harness.
    registry.promote(client, spec.model_name, str(first.version), approve=True, approver="test")
    champion = registry.load_alias(client, spec.model_name, registry.CHAMPION)
    assert champion is not None
    # The prediction log is a database every step reaches (a laptop's SQLite file is not).
    log_engine = sqlalchemy.create_engine(platform.env["KUBELOOP_PREDICTION_LOG_URL"])
    now = datetime.now(UTC)
    rows = production_rows(
        sample_frame(400, seed=11, buildings=30), spec, champion.model, champion.metadata_features
    )
    ids = log_rows(
        log_engine,
        rows,
        champion.metadata_features,
        model_name=spec.model_name,
        version=str(first.version),
        label=first.tags[registry.TAG_NAME],
        start=now - timedelta(minutes=50),
        spacing=timedelta(seconds=5),
    )
    log_feedback(log_engine, ids, rows["actual"].tolist(), now - timedelta(minutes=1))
    log_engine.dispose()
    for old in probes.iterdir():
        old.unlink()
    retrain = kubeloop(
        ["monitor", "--spec", str(spec_file)],
        {
            **env,
            "KUBELOOP_LAUNCHER": "local",
            "KUBELOOP_RETRAIN_SOURCE": source,
        },
        tmp_path / "monitor.log",
    )
    print(f"harness: monitor with its retraining in containers {retrain:.1f} s")
    assert "registered V" in said(tmp_path / "monitor.log")
    assert {step for step, _, _ in probes_of(probes)} == STEPS
    versions = registry.all_versions(client, spec.model_name)
    names = sorted(v.tags[registry.TAG_NAME] for v in versions)
    tag, manual, auto = first.tags[registry.TAG_NAME][1:].split(".")
    assert names == sorted([first.tags[registry.TAG_NAME], f"V{tag}.{manual}.{int(auto) + 1}"])


def _feast(platform: Platform) -> dict:
    return {
        "feast_registry": platform.env["KUBELOOP_FEAST_REGISTRY"],
        "feast_offline_store": platform.env["KUBELOOP_FEAST_OFFLINE_STORE"],
        "feast_online_store": "redis",
        "redis_url": platform.env["KUBELOOP_REDIS_URL"],
    }
