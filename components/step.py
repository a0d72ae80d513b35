"""What every pipeline step does first: logging, the spec, the settings."""

from __future__ import annotations

import json
import logging

from kubeloop.settings import PlatformSettings
from kubeloop.spec import ProjectSpec, parse_spec


def prepare(spec: str) -> tuple[ProjectSpec, PlatformSettings]:
    """Set up logging and read the spec (JSON: a pipeline parameter keeps its types that way)."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for noisy in ("feast.infra.registry", "alembic", "dvc"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return parse_spec(json.loads(spec)), PlatformSettings()
