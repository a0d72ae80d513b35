"""Register step: only a model whose evaluation passed becomes a registry version."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from kubeloop import model_store, registry
from kubeloop.settings import PlatformSettings
from kubeloop.spec import ProjectSpec

log = logging.getLogger(__name__)


def run_step(
    spec: ProjectSpec,
    settings: PlatformSettings,
    decision_path: str,
    run_id: str,
    model_uri: str,
    data_version: str,
) -> str:
    """Register the candidate if the gate passed; returns its V-name, or '' when rejected."""
    decision = json.loads(Path(decision_path).read_text())
    if not decision["passed"]:
        log.warning("not registered: %s", "; ".join(decision["reasons"]))
        return ""
    client = model_store.configure(settings)
    version = registry.register(
        client,
        spec.model_name,
        model_uri,
        run_id,
        spec.model.tag,
        spec.model.manual_revision,
        data_version,
        extra_tags={f"kubeloop.test_{k}": f"{v:.6g}" for k, v in decision["metrics"].items()},
    )
    return version.tags[registry.TAG_NAME]
