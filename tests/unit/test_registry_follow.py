"""Staging's champion follows production's (``registry.follow_production``), on a real MLflow
store (SQLite in the test's work folder, versions without artifacts).

Staging serves the project's model and shadows each candidate against its champion; production
serves the copies approvals released. Only a promotion in production makes a version what
callers get, so only that moves staging's champion: not the approval, not a rollback.
"""

from __future__ import annotations

from pathlib import Path

from kubeloop import model_store, registry
from kubeloop.settings import PlatformSettings

STAGING, PRODUCTION = "energy", "energy-production"


def staging_registry(settings: PlatformSettings, tmp_path: Path, versions: int = 3):
    client = model_store.configure(settings)
    client.create_registered_model(STAGING)
    for auto in range(versions):
        client.create_model_version(
            STAGING, source=str(tmp_path / f"m{auto}"), tags={registry.TAG_NAME: f"V1.0.{auto}"}
        )
    registry.promote(client, STAGING, "1", approve=True, approver="first-approval")
    return client


def staging_champion(client) -> str:
    return str(registry.by_alias(client, STAGING, registry.CHAMPION).version)


def test_staging_follows_only_a_promotion_in_production(
    settings: PlatformSettings, tmp_path: Path
) -> None:
    client = staging_registry(settings, tmp_path)
    assert registry.follow_production(client, STAGING, PRODUCTION) is None  # no production yet
    first = registry.release(client, STAGING, "1", PRODUCTION, state_tags={})
    registry.promote(client, PRODUCTION, str(first.version), approve=True, approver="prod")
    assert registry.follow_production(client, STAGING, PRODUCTION) is None  # the same already

    # V1.0.1 approved: released to production's challenger; its canary has not finished
    copy = registry.release(client, STAGING, "2", PRODUCTION, state_tags={})
    assert registry.follow_production(client, STAGING, PRODUCTION) is None
    assert staging_champion(client) == "1"

    # the canary passed: production's champion moves, and staging's follows
    registry.promote(client, PRODUCTION, str(copy.version), approve=True, approver="alice")
    moved = registry.follow_production(client, STAGING, PRODUCTION)
    assert moved is not None and str(moved.version) == "2" and staging_champion(client) == "2"
    assert moved.tags[registry.TAG_FOLLOWS] == f"{PRODUCTION}/{copy.version}"
    assert moved.tags["kubeloop.approved_by"] == "alice"  # as production recorded it
    assert moved.tags["kubeloop.promoted_from"] == "1"
    assert registry.follow_production(client, STAGING, PRODUCTION) is None  # once

    # V1.0.2 released, then rolled back in production: staging keeps what production serves
    rejected = registry.release(client, STAGING, "3", PRODUCTION, state_tags={})
    client.delete_registered_model_alias(PRODUCTION, registry.CHALLENGER)
    assert registry.follow_production(client, STAGING, PRODUCTION) is None
    assert staging_champion(client) == "2"

    # a production champion that came from no staging version (registered there by hand)
    registry.promote(client, PRODUCTION, str(rejected.version), approve=True, approver="x")
    client.delete_model_version_tag(PRODUCTION, rejected.version, registry.TAG_RELEASED_FROM)
    assert registry.follow_production(client, STAGING, PRODUCTION) is None
    assert staging_champion(client) == "2"
