"""Model registry rules: version names, aliases, registration, release and approved promotion.

Names follow ``V<tag>.<manual>.<auto>``: ``tag`` and ``manual`` come from the spec (a data
scientist raises ``manual`` when revising the model), ``auto`` counts retrainings under the same
tag and manual revision and restarts at 0 when either changes. The name and its parts are tags
on the MLflow model version; aliases ``challenger`` and ``champion`` say what serving uses.

Two environments share one central MLflow registry: training registers versions into the
project's model (staging serves it); an approval *releases* a version by copying it
(``copy_model_version``: same artifacts, same tags, a new version number) into the production
model, which only approvers may edit under MLflow's authentication. The copy is the approval:
whoever can create it is an approver, and the identity recorded is the one MLflow
authenticated, not a name the caller passes. Once production promotes the copy, staging's
champion follows it (``follow_production``), so staging compares candidates with what
production serves.
"""

from __future__ import annotations

import getpass
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubeloop.errors import ModelNotFoundError, PromotionError

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
TAG_NAME = "kubeloop.version"
TAG_MODEL_TAG = "kubeloop.tag"
TAG_MANUAL = "kubeloop.manual_revision"
TAG_AUTO = "kubeloop.auto_revision"
TAG_DATA = "kubeloop.data_version"
TAG_RUN = "kubeloop.run_id"
# Registered-model tag the rollout writes and every server replica reads: the canary weight
# and the version it applies to (JSON).
CANARY_TAG = "kubeloop.canary"
TAG_RELEASED_FROM = "kubeloop.released_from"  # on a production version: "<model>/<version>"
TAG_APPROVED_BY = "kubeloop.approved_by"
# On a staging version made champion because production promoted its copy: "<model>/<version>"
TAG_FOLLOWS = "kubeloop.follows"
TAG_ROLLOUT_STATE = "kubeloop.rollout.state"  # shadow, canary, promoted, ... (monitoring.rollout)
# On a candidate's MLflow run, by the evaluate step: the gate's verdict and the KFP run's id
# (how a launcher finds a run's outcome; the lineage shows the verdict).
GATE_TAG = "kubeloop.gate"  # passed | failed
GATE_REASONS_TAG = "kubeloop.gate_reasons"
PIPELINE_RUN_TAG = "kubeloop.pipeline_run"
# The staging rollout's own approval, which a copy into production must not carry.
STAGING_APPROVAL_TAGS = tuple(
    f"kubeloop.rollout.{key}" for key in ("approved_by", "approved_at", "released_as")
)
TAG_RETIRED_AT = "kubeloop.retired_at"  # when another version took the champion alias from it
CURRENT_USER_PATH = "/api/2.0/mlflow/users/current"  # MLflow's basic-auth app


def version_name(tag: int, manual: int, auto: int) -> str:
    return f"V{tag}.{manual}.{auto}"


def next_auto_revision(versions: list[Any], tag: int, manual: int) -> int:
    """One more than the highest auto revision under (tag, manual); 0 for a new revision."""
    autos = [
        int(v.tags[TAG_AUTO])
        for v in versions
        if v.tags.get(TAG_MODEL_TAG) == str(tag)
        and v.tags.get(TAG_MANUAL) == str(manual)
        and TAG_AUTO in v.tags
    ]
    return max(autos) + 1 if autos else 0


def all_versions(client, name: str) -> list[Any]:
    return list(client.search_model_versions(f"name = '{name}'"))


def aliases_by_version(client, name: str) -> dict[str, list[str]]:
    """Registry version number -> its aliases (a version search leaves aliases empty)."""
    out: dict[str, list[str]] = {}
    for alias, version in client.get_registered_model(name).aliases.items():
        out.setdefault(str(version), []).append(alias)
    return out


def by_alias(client, name: str, alias: str):
    """The model version behind an alias, or None."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def register(
    client,
    name: str,
    model_uri: str,
    run_id: str,
    tag: int,
    manual: int,
    data_version: str,
    extra_tags: dict[str, str] | None = None,
):
    """Create the next registry version with all its tags at once, then alias it challenger.

    The tags are written with the version (one call), so no version ever lacks its name; if the
    alias cannot be set the version is deleted again rather than left half-registered.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description="Registered by kubeloop.")
    auto = next_auto_revision(all_versions(client, name), tag, manual)
    label = version_name(tag, manual, auto)
    tags = {
        TAG_NAME: label,
        TAG_MODEL_TAG: str(tag),
        TAG_MANUAL: str(manual),
        TAG_AUTO: str(auto),
        TAG_DATA: data_version,
        TAG_RUN: run_id,
        **(extra_tags or {}),
    }
    version = mlflow.register_model(model_uri, name, tags=tags)
    try:
        client.set_registered_model_alias(name, CHALLENGER, version.version)
    except MlflowException:
        client.delete_model_version(name, version.version)
        raise
    log.info(
        "registered %s as version %s of %s (alias %s)", label, version.version, name, CHALLENGER
    )
    return client.get_model_version(name, version.version)


def version_of_run(client, name: str, run_id: str):
    """The version registered from an MLflow run, or None."""
    if not run_id:
        return None
    found = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    return max(found, key=lambda v: int(v.version)) if found else None


def find_version(client, name: str, ref: str):
    """A version by registry number (``3``), V-name (``V1.0.2``) or alias (``challenger``)."""
    from mlflow.exceptions import MlflowException

    ref = str(ref)  # MLflow 3 hands version numbers back as ints
    if ref.isdigit():
        try:
            return client.get_model_version(name, ref)
        except MlflowException as exc:
            raise ModelNotFoundError(f"{name} has no version {ref}") from exc
    if ref.startswith("V"):
        for v in all_versions(client, name):
            if v.tags.get(TAG_NAME) == ref:
                return v
        raise ModelNotFoundError(f"{name} has no version named {ref}")
    found = by_alias(client, name, ref)
    if found is None:
        raise ModelNotFoundError(f"{name} has no version with alias '{ref}'")
    return found


def promote(
    client,
    name: str,
    ref: str,
    *,
    approve: bool,
    approver: str | None = None,
    alias: str = CHAMPION,
):
    """Move ``alias`` (champion) to a version; only with explicit approval, which is recorded."""
    if not approve:
        raise PromotionError(
            "promotion needs manual approval: run again with --approve once the candidate "
            "has been reviewed"
        )
    version = find_version(client, name, ref)
    previous = by_alias(client, name, alias)
    now = datetime.now(UTC).isoformat(timespec="seconds")
    who = approver or approver_identity(client)
    for key, value in {
        "kubeloop.approved_by": who,
        "kubeloop.approved_at": now,
        "kubeloop.promoted_from": str(previous.version) if previous else "none",
        f"kubeloop.{alias}_since": now,
    }.items():
        client.set_model_version_tag(name, version.version, key, value)
    client.set_registered_model_alias(name, alias, version.version)
    if alias == CHAMPION:
        # The champion's history, whoever moved it (the rollout, a runbook's rollback by hand)
        if TAG_RETIRED_AT in (version.tags or {}):  # a former champion, back again
            client.delete_model_version_tag(name, version.version, TAG_RETIRED_AT)
        if previous is not None and str(previous.version) != str(version.version):
            client.set_model_version_tag(name, previous.version, TAG_RETIRED_AT, now)
    log.info(
        "%s: %s -> version %s (%s), approved by %s",
        name,
        alias,
        version.version,
        version.tags.get(TAG_NAME),
        who,
    )
    return client.get_model_version(name, version.version)


def authenticated_user(client) -> str | None:
    """The user MLflow authenticated this client as (``mlflow server --app-name basic-auth``);
    None when the registry has no authentication (a local store, or a server without it)."""
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    uri = str(client.tracking_uri)
    if not uri.startswith(("http://", "https://")):
        return None
    response = http_request(get_default_host_creds(uri), CURRENT_USER_PATH, "GET")
    if response.status_code == 404:
        return None
    if response.status_code != 200:
        raise PromotionError(
            f"the registry at {uri} did not accept these credentials (HTTP "
            f"{response.status_code}): set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
        )
    return str(response.json()["user"]["username"])


def approver_identity(client) -> str:
    """Who approves: the authenticated registry user, else (no authentication: dev) the OS
    user running the command."""
    return authenticated_user(client) or getpass.getuser()


def recorded_approver(client, named: str | None) -> str:
    """Who a person's approval is recorded as: where the registry has a login, the user it
    authenticated (naming anyone else is refused); else the name given, or the OS user."""
    user = authenticated_user(client)
    if user is None:
        return named or getpass.getuser()
    if named and named != user:
        raise PromotionError(
            f"the registry authenticated you as {user}: an approval is recorded as the "
            f"authenticated user, not as {named!r} (--approver applies only to a registry "
            "without a login)"
        )
    return user


def refusal(exc: BaseException) -> str | None:
    """A one-line reason when the registry refused a request for lack of credentials (401) or
    permission (403); None for any other error."""
    codes = _error_codes(exc)
    if "PERMISSION_DENIED" in codes:
        return (
            "the registry refused: your MLflow user lacks the permission for this "
            "(HTTP 403; who may do what: docs/serving.md, 'Who may do what')"
        )
    if "UNAUTHENTICATED" in codes:
        return (
            "the registry did not accept these credentials (HTTP 401): set "
            "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
        )
    return None


def _error_codes(exc: BaseException | None) -> list[str]:
    """MLflow's error codes along the chain (``copy_model_version`` re-raises the server's
    refusal as the cause of a generic error)."""
    codes = []
    while exc is not None:
        codes.append(getattr(exc, "error_code", None))
        exc = exc.__cause__
    return [c for c in codes if c]


def release(client, name: str, ref: str, production: str, *, state_tags: dict[str, str]):
    """Copy a version into the ``production`` model as its ``challenger``, recording who
    approved (the authenticated identity) and where it came from. ``state_tags`` replace the
    staging rollout's tags on the copy (it starts the production half afresh).

    Raises PromotionError when the registry refuses: only approvers may edit ``production``.
    """
    from mlflow.exceptions import MlflowException

    version = find_version(client, name, ref)
    existing = released_copy(client, name, str(version.version), production)
    if existing is not None:  # a retry: the copy stands, never a second one
        log.info(
            "%s version %s is %s version %s already",
            name,
            version.version,
            production,
            existing.version,
        )
        return existing
    who = approver_identity(client)
    copy = None
    try:
        copy = client.copy_model_version(f"models:/{name}/{version.version}", production)
        # The copy carries the staging version's tags: its rollout's approval is not the
        # release's (anyone with EDIT on staging could have written it).
        for key in STAGING_APPROVAL_TAGS:
            if key in (copy.tags or {}):
                client.delete_model_version_tag(production, copy.version, key)
        tags = {
            TAG_APPROVED_BY: who,
            "kubeloop.approved_at": datetime.now(UTC).isoformat(timespec="seconds"),
            **state_tags,
        }
        for key, value in tags.items():
            client.set_model_version_tag(production, copy.version, key, value)
        client.set_registered_model_alias(production, CHALLENGER, copy.version)
        # Last: a copy that carries its origin is a whole release (``released_copy``).
        client.set_model_version_tag(
            production, copy.version, TAG_RELEASED_FROM, f"{name}/{version.version}"
        )
    except MlflowException as exc:
        if copy is not None:  # never half a release: a retry starts afresh
            _discard(client, production, str(copy.version))
        if "PERMISSION_DENIED" in _error_codes(exc):
            raise PromotionError(
                f"{who} may not release into {production}: only approvers may ({exc.message})"
            ) from exc
        raise
    log.info(
        "%s version %s released as %s version %s, approved by %s",
        name,
        version.version,
        production,
        copy.version,
        who,
    )
    return client.get_model_version(production, copy.version)


def _discard(client, name: str, version: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.delete_model_version(name, version)
    except MlflowException as exc:
        log.warning("could not delete the incomplete copy %s version %s: %s", name, version, exc)


def released_copy(client, name: str, version: str, production: str):
    """The ``production`` version released from ``name``'s ``version``, or None."""
    origin = f"{name}/{version}"
    for candidate in all_versions(client, production):
        if (candidate.tags or {}).get(TAG_RELEASED_FROM) == origin:
            return candidate
    return None


def follow_production(client, name: str, production: str):
    """Move ``name``'s (staging's) ``champion`` to the version production's champion was
    released from, so that staging shadows the next candidate against what production serves.

    Only a promotion in production moves it: an approval alone does not (the canary may still
    roll the version back), nor does a rollback. The approval recorded is the release's. Who
    calls this needs EDIT on ``name`` only (staging's rollout controller, a job), never on
    ``production``.

    Returns:
        The version that became staging's champion, or None when nothing moved (production has
        no champion, its champion was not released from ``name``, or staging's already is it).
    """
    served = by_alias(client, production, CHAMPION)
    origin = (served.tags or {}).get(TAG_RELEASED_FROM, "") if served is not None else ""
    model, _, version = origin.rpartition("/")
    if model != name or not version:
        return None
    current = by_alias(client, name, CHAMPION)
    if current is not None and str(current.version) == version:
        return None
    moved = promote(client, name, version, approve=True, approver=served.tags.get(TAG_APPROVED_BY))
    client.set_model_version_tag(name, version, TAG_FOLLOWS, f"{production}/{served.version}")
    return client.get_model_version(name, moved.version)


@dataclass(frozen=True)
class LoadedModel:
    """A registry version ready to predict: the fitted Pipeline and its input order."""

    name: str
    version: str
    label: str
    model: Any
    metadata_features: list[str]


def load_version(client, name: str, version) -> LoadedModel:
    """Load a version's scikit-learn model and its feature order."""
    from mlflow.models import get_model_info

    from kubeloop.model_store import load_model

    uri = f"models:/{name}/{version.version}"
    info = get_model_info(uri)
    features = list((info.metadata or {}).get("features", []))
    return LoadedModel(
        name=name,
        version=str(version.version),
        label=version.tags.get(TAG_NAME, f"v{version.version}"),
        model=load_model(uri),
        metadata_features=features,
    )


def load_alias(client, name: str, alias: str) -> LoadedModel | None:
    version = by_alias(client, name, alias)
    return None if version is None else load_version(client, name, version)
