"""Features step: raw dataset -> engineered features in Feast (offline and online)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pandas as pd

from components.ingest.quality import normalize
from kubeloop import production_labels
from kubeloop.engineering import load_transform
from kubeloop.errors import SpecError
from kubeloop.feature_store import definitions, open_store, write_offline
from kubeloop.settings import PlatformSettings
from kubeloop.spec import ProjectSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FeatureResult:
    offline: str  # where the first view's rows went: a Parquet path or a PostgreSQL table
    rows: int
    entities: int
    materialized_from: datetime
    materialized_to: datetime
    feature_views: list[str]


def service_views(store, spec: ProjectSpec):
    """Feature views behind the spec's feature service, with their feature names in order."""
    service = store.get_feature_service(spec.features.service)
    return [
        (store.get_feature_view(p.name), [f.name for f in p.features])
        for p in service.feature_view_projections
    ]


def materialize_features(
    raw: pd.DataFrame, spec: ProjectSpec, settings: PlatformSettings
) -> FeatureResult:
    """Engineer features, write them to the offline source, ``feast apply``, materialize online."""
    features = load_transform(spec)(raw)
    missing = {spec.entity_key, spec.timestamp} - set(features.columns)
    if missing:
        raise SpecError(
            f"features.transform must keep the key columns; missing {sorted(missing)}",
            field="features.transform",
        )
    features[spec.timestamp] = pd.to_datetime(features[spec.timestamp], utc=True).dt.as_unit("us")
    store = open_store(settings, spec)
    store.apply(definitions(spec, settings))
    views = service_views(store, spec)
    where = [
        write_offline(store, view, features[[spec.entity_key, spec.timestamp, *names]], settings)
        for view, names in views
    ]
    first = features[spec.timestamp].min().to_pydatetime()
    end = features[spec.timestamp].max().to_pydatetime()
    # The online store keeps the latest row per entity, and rows older than a view's TTL are
    # stale there anyway: materializing only the last TTL window gives the same online state.
    ttl = max((view.ttl for view, _ in views if view.ttl), default=None)
    start = max(first, end - ttl) if ttl else first
    store.materialize(
        start_date=start,
        end_date=end + pd.Timedelta(seconds=1),
        feature_views=[v.name for v, _ in views],
    )
    log.info(
        "wrote %d feature rows of %d entities offline; materialized %s .. %s online",
        len(features),
        features[spec.entity_key].nunique(),
        start,
        end,
    )
    return FeatureResult(
        offline=where[0],
        rows=len(features),
        entities=int(features[spec.entity_key].nunique()),
        materialized_from=start,
        materialized_to=end,
        feature_views=[v.name for v, _ in views],
    )


def labels(raw: pd.DataFrame, spec: ProjectSpec) -> pd.DataFrame:
    """The entity dataframe for training: entity, event time and target."""
    return raw[[spec.entity_key, spec.timestamp, spec.target]].copy()


def run_step(
    spec: ProjectSpec, settings: PlatformSettings, dataset_path: str, labels_path: str
) -> FeatureResult:
    """The features step as a pipeline sees it: dataset in, Feast updated, labels out."""
    source, logged = production_labels.split(pd.read_parquet(dataset_path), spec)
    # Feast gets the source's rows; logged rows carry the features they were served with.
    raw = normalize(source, spec) if len(logged) else source
    result = materialize_features(raw, spec, settings)
    Path(labels_path).parent.mkdir(parents=True, exist_ok=True)
    pd.concat([labels(raw, spec), logged], ignore_index=True).to_parquet(labels_path, index=False)
    return result


def materialize_incremental(
    spec: ProjectSpec, settings: PlatformSettings, end: datetime | None = None
) -> list[str]:
    """Bring the online store up to ``end`` (now) from the offline source (the CronJob's work)."""
    from datetime import UTC

    store = open_store(settings, spec)
    views = [view.name for view, _ in service_views(store, spec)]
    store.materialize_incremental(end_date=end or datetime.now(UTC), feature_views=views)
    return views
