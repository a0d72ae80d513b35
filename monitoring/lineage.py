"""Lineage: where a deployed model version came from and when it took traffic.

One record per deployed version links the DVC data version (md5 and ``.dvc`` pointer), the Feast
materialization (feature service and window), the MLflow run (experiment, code commit), the
registry version (V-name, approval) and the traffic history (shadow, canary, champion). It is
assembled from what the pipeline and the rollout already write to MLflow, and frozen as the
model version tag ``kubeloop.lineage`` when the version becomes champion, so later changes to
runs or aliases cannot rewrite what was deployed.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

import yaml

from kubeloop import registry

log = logging.getLogger(__name__)

LINEAGE_TAG = "kubeloop.lineage"
RETRAIN_REASON_TAG = "kubeloop.retrained_because"
SUPERSEDES_TAG = "kubeloop.supersedes"  # the run in progress the version's run superseded
# Rollout steps recorded on the version (monitoring.rollout writes them).
TRAFFIC_TAGS = {
    "shadow_since": "kubeloop.rollout.shadow_started_at",
    "canary_since": "kubeloop.rollout.canary_started_at",
    "champion_since": f"kubeloop.{registry.CHAMPION}_since",
    "rolled_back_at": "kubeloop.rollout.rolled_back_at",
    "retired_at": registry.TAG_RETIRED_AT,
}
STRESS_TAG = "kubeloop.rollout.stress_result"  # monitoring.stress, before any traffic


def _iso_ms(millis: int | None) -> str | None:
    if not millis:
        return None
    return datetime.fromtimestamp(millis / 1000, UTC).isoformat(timespec="seconds")


def _pointer(client, run_id: str) -> dict[str, Any]:
    """The run's DVC pointer (``data/dataset.parquet.dvc``), parsed; empty when absent."""
    import mlflow

    try:
        text = mlflow.artifacts.load_text(f"runs:/{run_id}/data/dataset.parquet.dvc")
    except Exception:  # noqa: BLE001 - a model registered by hand has no pointer
        return {}
    try:
        out = (yaml.safe_load(text) or {}).get("outs", [{}])[0]
    except yaml.YAMLError:
        return {}
    return {
        "md5": out.get("md5"),
        "size": out.get("size"),
        "path": out.get("path"),
        "pointer": text,
    }


def build(client, name: str, ref: str) -> dict[str, Any]:
    """The lineage record of a version (number, V-name or alias), read live from MLflow."""
    version = registry.find_version(client, name, ref)
    tags = dict(version.tags)
    run = client.get_run(version.run_id) if version.run_id else None
    run_tags = dict(run.data.tags) if run else {}
    pointer = _pointer(client, version.run_id) if run else {}
    materialized = run_tags.get("kubeloop.feast_materialized") or ""
    start, _, end = materialized.partition("/")
    return {
        "model": name,
        "version": str(version.version),
        "label": tags.get(registry.TAG_NAME, f"v{version.version}"),
        # a version found by V-name comes from a search, which leaves its aliases empty
        "aliases": sorted(registry.aliases_by_version(client, name).get(str(version.version), [])),
        "data": {
            "dvc_md5": tags.get(registry.TAG_DATA) or run_tags.get("kubeloop.data_version"),
            "dvc_path": pointer.get("path"),
            "dvc_size": pointer.get("size"),
            "dvc_pointer": pointer.get("pointer"),
            "production_rows": run.data.params.get("production_rows") if run else None,
            "labelled_hours": run.data.params.get("labelled_hours") if run else None,
        },
        "features": {
            "feature_service": run_tags.get("kubeloop.feature_service"),
            "materialized_from": start or None,
            "materialized_to": end or None,
        },
        "mlflow": {
            "run_id": version.run_id,
            "experiment_id": run.info.experiment_id if run else None,
            "started_at": _iso_ms(run.info.start_time) if run else None,
            "user": run.info.user_id if run else None,
            "git_commit": run_tags.get("mlflow.source.git.commit"),
            "estimator": run.data.params.get("estimator") if run else None,
            "test_metrics": {
                k.removeprefix("test_"): v
                for k, v in (run.data.metrics.items() if run else [])
                if k.startswith("test_")
            },
        },
        "evaluation": {
            # the gate's comparison on the same held-out rows: the fair one, unlike two
            # versions' own held-out metrics, which come from different windows
            "gate": run_tags.get(registry.GATE_TAG),
            "reasons": run_tags.get(registry.GATE_REASONS_TAG) or None,
            "champion_metrics": {
                k.removeprefix("champion_"): v
                for k, v in (run.data.metrics.items() if run else [])
                if k.startswith("champion_")
            },
        },
        "registry": {
            "registered_at": _iso_ms(version.creation_timestamp),
            "approved_by": tags.get("kubeloop.approved_by"),
            "approved_at": tags.get("kubeloop.approved_at"),
            "promoted_from": tags.get("kubeloop.promoted_from"),
            "retrained_because": tags.get(RETRAIN_REASON_TAG),
            "supersedes": tags.get(SUPERSEDES_TAG),
        },
        "traffic": {key: tags.get(tag) for key, tag in TRAFFIC_TAGS.items()},
        "stress_test": json.loads(tags[STRESS_TAG]) if STRESS_TAG in tags else None,
        "rollout_state": tags.get(registry.TAG_ROLLOUT_STATE),
    }


def record(client, name: str, ref: str) -> dict[str, Any]:
    """Freeze the lineage of a version that takes traffic (the ``kubeloop.lineage`` tag)."""
    data = build(client, name, ref)
    frozen = {k: v for k, v in data.items() if k != "aliases"}
    frozen["data"] = {k: v for k, v in data["data"].items() if k != "dvc_pointer"}
    frozen["recorded_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    client.set_model_version_tag(
        name, data["version"], LINEAGE_TAG, json.dumps(frozen, sort_keys=True, default=str)
    )
    return data


def record_after_promotion(client, name: str, version: str) -> None:
    """``record`` for a champion that has already moved: a failure here (a run no longer
    readable) is logged, never reported as a failed promotion."""
    try:
        record(client, name, version)
    except Exception as exc:  # noqa: BLE001 - the promotion stands; the lineage is a record
        log.warning("%s version %s: the lineage could not be frozen: %s", name, version, exc)


def tag_supersedes(client, engine, name: str, label: str, run_id: str) -> None:
    """Say on a version which run its own run superseded, if any (``monitoring.state``)."""
    from monitoring import state

    old = {new: old for old, new in state.supersessions(engine, name).items()}.get(run_id)
    if not old:
        return
    try:
        version = registry.find_version(client, name, label)
        client.set_model_version_tag(name, version.version, SUPERSEDES_TAG, old)
    except Exception as exc:  # noqa: BLE001 - lineage detail, never worth failing the run
        log.warning("could not tag %s with the run it superseded: %s", label, exc)


def show(client, name: str, ref: str) -> dict[str, Any]:
    """The lineage to print: the frozen record (if deployed) with the live traffic history."""
    live = build(client, name, ref)
    version = registry.find_version(client, name, ref)
    stored = version.tags.get(LINEAGE_TAG)
    if not stored:
        return {**live, "deployed": False}
    frozen = json.loads(stored)
    return {
        **frozen,
        "aliases": live["aliases"],
        "traffic": live["traffic"],
        "rollout_state": live["rollout_state"],
        "deployed": True,
        "data": {**frozen.get("data", {}), "dvc_pointer": live["data"]["dvc_pointer"]},
    }
