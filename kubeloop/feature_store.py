"""The Feast store, configured from settings (one code path for both backends).

Embedded default: file registry, SQLite online store, DuckDB offline store over Parquet files,
all under ``<work_dir>/feast``. Services: Redis online store
(``KUBELOOP_FEAST_ONLINE_STORE=redis``) and a SQL registry on PostgreSQL
(``KUBELOOP_FEAST_REGISTRY=postgresql+psycopg://...``). ``render_yaml`` gives the same
configuration as a ``feature_store.yaml`` for Feast's own feature server.
"""

from __future__ import annotations

import copy
import importlib
from pathlib import Path
from typing import Any

import yaml

from kubeloop.settings import PlatformSettings
from kubeloop.spec import ProjectSpec


def feast_project(spec: ProjectSpec) -> str:
    """Feast project names allow letters, digits and underscores only."""
    return spec.name.replace("-", "_")


def repo_path(settings: PlatformSettings) -> Path:
    return settings.work_dir / "feast"


def repo_config(settings: PlatformSettings, project: str) -> dict[str, Any]:
    """The ``feature_store.yaml`` content for these settings."""
    root = repo_path(settings)
    if settings.feast_registry:
        registry: dict[str, Any] = {
            "registry_type": "sql",
            "path": settings.feast_registry,
            "cache_ttl_seconds": 60,
        }
    else:
        registry = {"registry_type": "file", "path": str(root / "registry.db")}
    if settings.feast_online_store == "redis":
        online: dict[str, Any] = {"type": "redis", "connection_string": settings.redis_url}
    else:
        online = {"type": "sqlite", "path": str(root / "online.db")}
    return {
        "project": project,
        "provider": "local",
        "registry": registry,
        "online_store": online,
        "offline_store": {"type": "duckdb"},
        "entity_key_serialization_version": 3,
    }


def render_yaml(settings: PlatformSettings, project: str) -> str:
    return yaml.safe_dump(repo_config(settings, project), sort_keys=False)


def open_store(settings: PlatformSettings, spec: ProjectSpec):
    """A ``FeatureStore`` for the spec's project on the configured backends."""
    from feast import FeatureStore
    from feast.repo_config import RepoConfig

    root = repo_path(settings)
    root.mkdir(parents=True, exist_ok=True)
    config = RepoConfig(repo_path=root, **repo_config(settings, feast_project(spec)))
    return FeatureStore(config=config)


def definitions(spec: ProjectSpec, settings: PlatformSettings) -> list[Any]:
    """Every Feast object (entities, sources, views, services) of the spec: generated from its
    declared features, or found in its definitions module.

    Relative file-source paths are made absolute under the repo path (DuckDB reads them from the
    process's working directory otherwise). The module's objects are copied, not changed, so
    one process can hold stores of several work folders.
    """
    from feast import Entity, FeatureService, FeatureView, FileSource
    from feast.data_source import DataSource

    if spec.features.declared is not None:
        from kubeloop.declared_features import feast_objects

        objects = feast_objects(spec)
    else:
        module = importlib.import_module(spec.features.definitions or "")
        kinds = (Entity, DataSource, FeatureView, FeatureService)
        objects = copy.deepcopy([obj for obj in vars(module).values() if isinstance(obj, kinds)])
    root = repo_path(settings)
    sources = [o for o in objects if isinstance(o, FileSource)]
    sources += [
        o.batch_source
        for o in objects
        if isinstance(o, FeatureView) and isinstance(o.batch_source, FileSource)
    ]
    for source in sources:
        if not Path(source.path).is_absolute():
            source.file_options.uri = str(root / source.path)
    return objects
