"""Release a challenger: shadow, approval, canary steps, then the champion alias moves.

A state machine over the candidate's MLflow model version: every step and every verdict is a
tag on that version (``kubeloop.rollout.*``), so the rollout survives restarts of whoever drives
it (``kubeloop rollout run``, a Job, a notebook) and leaves an audit trail.

::

    (new challenger) -> shadow -> awaiting_approval -> approved -> canary[0..n] -> promoted
                          |              |                           |
                          +--------------+---------------------------+--> rolled_back

- **shadow**: the server scores every request with the candidate too (role ``shadow``). Once
  ``rollout.shadow_min_requests`` requests have both answers, a shadow report compares them
  (differences and, where feedback exists, both models' errors). A candidate measurably worse
  than the champion on labelled requests is rolled back here.
- **approval**: ``kubeloop rollout approve`` records who approved: the identity the registry
  authenticated (MLflow's basic-auth app), never a name the caller passes; in the dev
  environment the spec may allow auto-approval (``rollout.auto_approve_dev``).

Two environments run one half each (``phase``, from ``KUBELOOP_ROLLOUT_PHASE``): **staging**
shadows, stress-tests and waits for approval; the approval *releases* the version, copying it
into the production model (``registry.release``, which only approvers may edit) where it starts
``approved`` and its state here becomes ``released``. **production** takes only released
versions through the canary steps to champion; once it promotes one, staging's champion follows
at staging's next step (``registry.follow_production``), so the next shadow compares with what
production serves. ``all`` (dev) runs everything in one place.
- **stress**: once shadow passes, a bounded load test against the candidate
  (``monitoring.stress``, ``rollout.stress``); a candidate that misses it never takes traffic.
  The result is a tag on the version and part of its lineage.
- **canary**: for each step the candidate answers ``weight`` of the records for ``hold_minutes``
  (and at least ``min_requests``); then its error rate and p99 latency across every replica
  (``monitoring.canary``: Prometheus or each replica's ``/metrics``, outcomes a model caused
  only) and its live quality are compared with the champion's over the same period. A step
  that needs quality waits for late labels up to ``timeout_minutes``; the 100% step compares
  with the champion's rows from before the canary began. Worse beyond the spec's limits ->
  automatic rollback: weight 0, ``challenger`` alias removed, the champion untouched.
- **promoted**: ``kubeloop.registry.promote`` moves ``champion`` (approval recorded), the
  lineage record is frozen, the previous champion is marked retired.

The server is driven through ``ServerAdmin`` (its admin endpoint) and observed through a
``canary.MetricsSource``; the prediction log gives the paired predictions and the feedback.
"""

from __future__ import annotations

import abc
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd

from kubeloop import registry
from kubeloop.spec import LOWER_IS_BETTER, ProjectSpec
from monitoring import lineage, report
from monitoring.canary import MetricsSource, VersionStats, judge
from monitoring.drift import live_quality
from monitoring.errors import RolloutError
from monitoring.stress import StressResult
from monitoring.window import ACTUAL, PREDICTION, PROBABILITIES, read_paired

log = logging.getLogger(__name__)

P = "kubeloop.rollout."
STATE_TAG = registry.TAG_ROLLOUT_STATE
SHADOW, AWAITING, APPROVED, CANARY = "shadow", "awaiting_approval", "approved", "canary"
PROMOTED, ROLLED_BACK, RELEASED = "promoted", "rolled_back", "released"
TERMINAL = (PROMOTED, ROLLED_BACK, RELEASED)
PHASES = ("all", "staging", "production")


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="seconds")


def _parse(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


# -- the server ------------------------------------------------------------------------------
class ServerAdmin(abc.ABC):
    """What the rollout needs from the model server."""

    @abc.abstractmethod
    def status(self) -> dict[str, Any]:
        """The server's rollout status (champion, candidate, canary weight, shadow)."""

    @abc.abstractmethod
    def set_canary_weight(self, weight: float) -> None:
        """Route ``weight`` of the records to the candidate (0: none)."""

    def reload(self) -> None:  # noqa: B027 - optional: servers also poll the registry
        """Ask the server to re-read the registry now."""


class HttpServerAdmin(ServerAdmin):
    """The model server's admin routes and ``/metrics`` over HTTP (bearer token)."""

    def __init__(self, url: str, token: str | None, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def _call(self, method: str, path: str, body: dict | None = None) -> bytes:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            response = httpx.request(
                method, self.url + path, json=body, headers=headers, timeout=self.timeout
            )
        except httpx.HTTPError as exc:
            raise RolloutError(
                f"the model server at {self.url} is unreachable ({exc}); set "
                "KUBELOOP_SERVER_URL and KUBELOOP_API_TOKEN"
            ) from exc
        if response.is_error:
            detail = response.text[:300]
            raise RolloutError(f"{method} {self.url}{path}: HTTP {response.status_code} {detail}")
        return response.content

    def status(self) -> dict[str, Any]:
        return json.loads(self._call("GET", "/admin/rollout"))

    def set_canary_weight(self, weight: float) -> None:
        self._call("PUT", "/admin/canary", {"weight": weight})

    def reload(self) -> None:
        self._call("POST", "/admin/reload")


# -- verdicts ---------------------------------------------------------------------------------
def relative_loss(candidate: float, champion: float, metric: str) -> float:
    """How much worse the candidate is (0.1 = 10%; negative = better)."""
    if champion == 0:
        return 0.0 if candidate == champion else float("inf")
    change = (candidate - champion) / abs(champion)
    return change if metric in LOWER_IS_BETTER else -change


@dataclass(frozen=True)
class Comparison:
    """The candidate next to the champion over the same period.

    ``mean_abs_diff``/``max_abs_diff``: how far apart the two answers were; for a classifier the
    answer is a class, so the difference is 1 where the classes differ: the mean is the share
    of requests the two disagree on (0 for both: identical answers).
    """

    pairs: int  # requests both answered (shadow) or rows each answered (canary)
    labelled: int
    candidate: dict[str, float]
    champion: dict[str, float]
    mean_abs_diff: float | None = None
    max_abs_diff: float | None = None
    quality_loss: float | None = None
    champion_labelled: int | None = None
    source: str | None = None  # where the rows came from (prediction log windows)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}


MIN_LABELLED = 20  # shadow: fewer labelled requests and quality is reported, not judged


def compare_shadow(
    pairs: pd.DataFrame, candidate_version: str, champion_version: str, task: str, metric: str
) -> tuple[Comparison, pd.DataFrame]:
    """Champion and shadow predictions of the same requests; returns the joined rows too."""
    champ = pairs[(pairs.role == "champion") & (pairs.model_version == champion_version)]
    shadow = pairs[(pairs.role == "shadow") & (pairs.model_version == candidate_version)]
    taken = [c for c in (PREDICTION, PROBABILITIES) if c in shadow]
    joined = champ.merge(
        shadow[["request_id", *taken]], on="request_id", suffixes=("_champion", "_candidate")
    )
    new, old = joined[f"{PREDICTION}_candidate"], joined[f"{PREDICTION}_champion"]
    diff = (new != old).astype(float) if task == "classification" else (new - old).abs()
    labelled = joined[joined[ACTUAL].notna()]
    y = labelled[ACTUAL].to_numpy()

    def quality(side: str) -> dict[str, float]:
        proba = labelled.get(f"{PROBABILITIES}_{side}")
        return live_quality(task, y, labelled[f"{PREDICTION}_{side}"].to_numpy(), proba)

    cand, champ_q = quality("candidate"), quality("champion")
    loss = (
        relative_loss(cand[metric], champ_q[metric], metric)
        if len(labelled) >= MIN_LABELLED and metric in cand
        else None
    )
    return Comparison(
        pairs=len(joined),
        labelled=len(labelled),
        candidate=cand,
        champion=champ_q,
        mean_abs_diff=float(diff.mean()) if len(diff) else None,
        max_abs_diff=float(diff.max()) if len(diff) else None,
        quality_loss=loss,
    ), joined


def compare_served(
    rows: pd.DataFrame,
    candidate_version: str,
    champion_version: str,
    task: str,
    metric: str,
    *,
    min_labelled: int = MIN_LABELLED,
    champion_rows: pd.DataFrame | None = None,
    source: str | None = None,
) -> Comparison:
    """Live quality of the rows each model answered during a canary step; the champion's from
    ``champion_rows`` instead when given (the 100% step, where it answers nothing)."""
    champion_rows = rows if champion_rows is None else champion_rows
    cand = rows[(rows.role == "canary") & (rows.model_version == candidate_version)]
    champ = champion_rows[
        (champion_rows.role == "champion") & (champion_rows.model_version == champion_version)
    ]
    cl, hl = cand[cand[ACTUAL].notna()], champ[champ[ACTUAL].notna()]
    cq = live_quality(task, cl[ACTUAL].to_numpy(), cl[PREDICTION].to_numpy(), cl.get(PROBABILITIES))
    hq = live_quality(task, hl[ACTUAL].to_numpy(), hl[PREDICTION].to_numpy(), hl.get(PROBABILITIES))
    enough = min(len(cl), len(hl)) >= max(1, min_labelled)
    judged = enough and metric in cq and metric in hq
    return Comparison(
        pairs=len(cand),
        labelled=len(cl),
        candidate=cq,
        champion=hq,
        quality_loss=relative_loss(cq[metric], hq[metric], metric) if judged else None,
        champion_labelled=len(hl),
        source=source,
    )


def _shown(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def shadow_report(
    joined: pd.DataFrame,
    path: Path,
    task: str,
    comparison: Comparison,
    title: str,
    verdict: tuple[str, str, list[str]],
) -> Path:
    """Evidently report (the champion's answers as reference, the candidate's as current)
    under a summary: ``title`` names the two versions, ``verdict`` is (what was decided, its
    tone ok/warn/fail, why), then the request and label counts and the quality of each."""
    import warnings

    from evidently import DataDefinition, Dataset, Regression, Report
    from evidently import metrics as em

    def frame(side: str) -> pd.DataFrame:
        return pd.DataFrame(
            {
                PREDICTION: joined[f"{PREDICTION}_{side}"].to_numpy(),
                "target": joined[ACTUAL].to_numpy(),
            }
        )

    labelled = joined[ACTUAL].notna().sum() >= 2 and task == "regression"
    if task == "classification":  # classes: the drift of their distribution, categorical
        definition = DataDefinition(categorical_columns=[PREDICTION, "target"])
    else:
        definition = DataDefinition(
            numerical_columns=[PREDICTION, "target"],
            regression=[Regression(target="target", prediction=PREDICTION)] if labelled else None,
        )
    items: list[Any] = [em.ValueDrift(column=PREDICTION)]
    if labelled:
        items += [em.RMSE(), em.MAE(), em.R2Score(), em.MeanError()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        snapshot = Report(items).run(
            Dataset.from_pandas(frame("candidate"), data_definition=definition),
            Dataset.from_pandas(frame("champion"), data_definition=definition),
        )
    decided, tone, reasons = verdict
    if comparison.pairs and not comparison.max_abs_diff:
        reasons = [*reasons, "the two models gave identical predictions on every request"]
    difference = (
        ("share of requests answered with another class", _shown(comparison.mean_abs_diff, ".1%"))
        if task == "classification"
        else (
            "mean / max absolute difference",
            f"{_shown(comparison.mean_abs_diff, '.4g')} / {_shown(comparison.max_abs_diff, '.4g')}",
        )
    )
    facts: list[tuple[str, object]] = [
        ("requests both answered", comparison.pairs),
        ("of them labelled", comparison.labelled),
        difference,
        *[
            (
                f"{name}: candidate / champion",
                f"{value:.4g} / {comparison.champion.get(name, float('nan')):.4g}",
            )
            for name, value in sorted(comparison.candidate.items())
        ],
    ]
    summary = report.summary_html(title, decided, tone, reasons, facts)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(report.with_summary(snapshot.get_html_str(as_iframe=False), summary))
    return path


# -- the state machine ------------------------------------------------------------------------
@dataclass
class Step:
    """What one call of ``Rollout.step`` did."""

    state: str
    message: str
    wait_seconds: float | None = None  # how long until the next decision; None: terminal/human
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def done(self) -> bool:
        return self.state in TERMINAL


class Rollout:
    """Walk one candidate version through shadow, approval and canary to champion.

    Args:
        client: MLflow client (registry).
        spec: The project spec (``rollout`` section, model name, primary metric).
        server: The model server (admin endpoint).
        engine: SQLAlchemy engine on the prediction log.
        metrics: Per-version requests, errors and latency across every replica.
        stress: Runs the stress gate's load against a candidate version (``None``: the gate
            must be off in the spec).
        phase: ``all``, ``staging`` (shadow, stress, approval that releases to
            ``rollout.production_model``) or ``production`` (canary of released versions).
        env: Deployment environment (auto-approval only in ``dev``).
        reports_dir: Where shadow reports are written.
        clock: Current time (tests pass a fake clock).
    """

    def __init__(
        self,
        client,
        spec: ProjectSpec,
        server: ServerAdmin,
        engine,
        *,
        env: str,
        reports_dir: Path,
        metrics: MetricsSource,
        stress: Callable[[str, datetime], StressResult] | None = None,
        phase: str = "all",
        clock: Callable[[], datetime] = _now,
    ) -> None:
        if phase not in PHASES:
            raise RolloutError(f"unknown rollout phase {phase!r}: one of {', '.join(PHASES)}")
        production = spec.rollout.production_model
        if phase != "all" and not production:
            raise RolloutError(
                f"the {phase} phase needs rollout.production_model in the spec (the registered "
                "model production serves)"
            )
        self.phase = phase
        self.client = client
        self.spec = spec
        self.name: str = str(production) if phase == "production" else spec.model_name
        self.server = server
        self.engine = engine
        self.env = env
        self.reports_dir = reports_dir
        self.metrics = metrics
        self.stress = stress
        self.clock = clock

    # registry helpers
    def candidate(self, ref: str | None = None):
        """The version to roll out: ``ref`` or the ``challenger``; must not be the champion."""
        if ref:
            return registry.find_version(self.client, self.name, ref)
        version = registry.by_alias(self.client, self.name, registry.CHALLENGER)
        if version is None:
            raise RolloutError(
                f"{self.name} has no challenger: nothing to roll out (train one "
                "with `kubeloop run training` or let `kubeloop monitor` do it)"
            )
        return version

    def _released_copy(self, version):
        if self.phase != "staging":
            return None
        return registry.released_copy(
            self.client, self.name, str(version.version), str(self.spec.rollout.production_model)
        )

    def champion(self):
        return registry.by_alias(self.client, self.name, registry.CHAMPION)

    def _tags(self, version) -> dict[str, str]:
        return dict(self.client.get_model_version(self.name, version.version).tags)

    def _tag(self, version, **values: Any) -> None:
        for key, value in values.items():
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            self.client.set_model_version_tag(self.name, version.version, P + key, text)

    def status(self, ref: str | None = None) -> dict[str, Any]:
        version = self.candidate(ref)
        tags = self._tags(version)
        status = {
            "model": self.name,
            "version": str(version.version),
            "label": tags.get(registry.TAG_NAME),
            "state": tags.get(STATE_TAG, "not started"),
            **{k.removeprefix(P): v for k, v in tags.items() if k.startswith(P)},
        }
        released = self._released_copy(version) if status["state"] == AWAITING else None
        if released is not None:  # released by an approver; the controller tags it next step
            status.update(self._release_record(released))
        return status

    # actions
    def approve(self, ref: str | None = None) -> dict[str, Any]:
        """Record approval of the candidate, by the identity the registry authenticated. In
        the staging phase this releases it to production, so the candidate must have passed
        shadow and the stress test, and the caller must be allowed to edit the production
        model (approvers only)."""
        version = self.candidate(ref)
        state = self._tags(version).get(STATE_TAG)
        self._refuse_the_champion(version, "approve")
        if state in TERMINAL:
            raise RolloutError(
                f"{self.name} version {version.version} is {state}: nothing to approve"
            )
        if state is None and not self._is_challenger(version):
            raise RolloutError(
                f"{self.name} version {version.version} is not being rolled out: approve the "
                "challenger, or a version in shadow or awaiting approval (`kubeloop rollout "
                "status`)"
            )
        from mlflow.exceptions import MlflowException

        now = _iso(self.clock())
        if self.phase != "staging":
            # Ahead of shadow too: the shadow and stress gates still decide before any canary.
            who = registry.approver_identity(self.client)
            self._tag(version, approved_by=who, approved_at=now)
            return self.status(str(version.version))
        if state != AWAITING:
            raise RolloutError(
                f"{self.name} version {version.version} is {state or 'not started'}: it is "
                "released to production only once shadow and the stress test passed"
            )
        released = registry.release(
            self.client,
            self.name,
            str(version.version),
            str(self.spec.rollout.production_model),
            state_tags={STATE_TAG: APPROVED},
        )
        try:
            self._tag(version, **self._release_record(released))
        except MlflowException as exc:
            if registry.refusal(exc) is None:
                raise
            # Approvers only read the project's model: staging's controller, which edits it,
            # marks the version released at its next step (``step``).
            log.info("version %s is left to staging's controller to mark released", version)
        return self.status(str(version.version))

    def _release_record(self, released) -> dict[str, str]:
        production = str(self.spec.rollout.production_model)
        return {
            "state": RELEASED,
            "approved_by": released.tags.get(registry.TAG_APPROVED_BY, "-"),
            "approved_at": released.tags.get("kubeloop.approved_at", "-"),
            "released_as": f"{production}/{released.version}",
        }

    def _approved_ahead(self, tags: dict[str, str]) -> bool:
        """An approval recorded before shadow passed. Never in staging, where only a release
        (by an approver, into production) approves: the project's model is editable by anyone
        who may register, so a tag on it proves nothing."""
        return self.phase != "staging" and bool(tags.get(P + "approved_by"))

    def _is_challenger(self, version) -> bool:
        challenger = registry.by_alias(self.client, self.name, registry.CHALLENGER)
        return challenger is not None and str(challenger.version) == str(version.version)

    def _refuse_the_champion(self, version, action: str) -> None:
        champion = self.champion()
        if champion is not None and str(champion.version) == str(version.version):
            raise RolloutError(
                f"{self.name} version {version.version} "
                f"({version.tags.get(registry.TAG_NAME)}) is the champion: nothing to {action} "
                "(to serve another version: `kubeloop promote <version> --approve`)"
            )

    def rollback(self, version, reason: str) -> Step:
        """Stop sending traffic to the candidate; the champion alias is never touched (the
        champion itself is never rolled back: it has no champion to fall back to)."""
        self._refuse_the_champion(version, "roll back")
        now = self.clock()
        try:
            self.server.set_canary_weight(0.0)
        except RolloutError as exc:
            # Stored on the registry as well below: servers pick weight 0 up at their next poll.
            log.warning("could not reset the canary weight on the server: %s", exc)
        from mlflow.exceptions import MlflowException

        from kubeloop.registry import CANARY_TAG

        self.client.set_registered_model_tag(
            self.name, CANARY_TAG, json.dumps({"weight": 0.0, "version": str(version.version)})
        )
        challenger = registry.by_alias(self.client, self.name, registry.CHALLENGER)
        if challenger is not None and str(challenger.version) == str(version.version):
            try:
                self.client.delete_registered_model_alias(self.name, registry.CHALLENGER)
            except MlflowException as exc:
                log.warning("could not remove the challenger alias: %s", exc)
        self._tag(version, state=ROLLED_BACK, rolled_back_at=_iso(now), rollback_reason=reason)
        log.warning("%s version %s rolled back: %s", self.name, version.version, reason)
        return Step(ROLLED_BACK, f"rolled back: {reason}")

    def follow_production(self) -> None:
        """Staging: make production's champion staging's too (``registry.follow_production``)
        before anything is compared with the champion, and tell the server at once."""
        if self.phase != "staging":
            return
        moved = registry.follow_production(
            self.client, self.name, str(self.spec.rollout.production_model)
        )
        if moved is None:
            return
        lineage.record_after_promotion(self.client, self.name, str(moved.version))
        log.info(
            "%s: champion follows production: %s (version %s)",
            self.name,
            moved.tags.get(registry.TAG_NAME),
            moved.version,
        )
        try:
            self.server.reload()
        except RolloutError as exc:
            log.info("server not updated at once (it follows at its next poll): %s", exc)

    def step(self, ref: str | None = None) -> Step:
        """Advance the rollout by at most one transition."""
        self.follow_production()
        version = self.candidate(ref)
        tags = self._tags(version)
        state = tags.get(STATE_TAG)
        champion = self.champion()
        if state in TERMINAL:
            return Step(state, f"{tags.get(registry.TAG_NAME)} is {state}")
        if champion is not None and str(champion.version) == str(version.version):
            self._tag(version, state=PROMOTED)
            return Step(PROMOTED, "the candidate is the champion already (promoted by hand)")
        if champion is None:
            raise RolloutError(
                f"{self.name} has no champion to compare with: promote the first "
                "version by hand (`kubeloop promote <version> --approve`)"
            )
        if state is None:
            if self.phase == "production":
                raise RolloutError(
                    f"{self.name} version {version.version} was not released from staging: "
                    "production takes only versions an approver released (`kubeloop rollout "
                    "approve` in staging)"
                )
            return self._start_shadow(version)
        if state == SHADOW:
            return self._judge_shadow(version, champion, tags)
        if state == AWAITING:
            released = self._released_copy(version)
            if released is not None:  # an approver released it; approvers cannot tag here
                self._tag(version, **self._release_record(released))
                return Step(
                    RELEASED, f"released as {self._release_record(released)['released_as']}"
                )
            if self._approved_ahead(tags):
                self._tag(version, state=APPROVED)
                return Step(APPROVED, f"approved by {tags[P + 'approved_by']}", 0.0)
            return Step(
                AWAITING,
                f"waiting for approval: review the shadow report (`kubeloop rollout report "
                f"{tags.get(registry.TAG_NAME)}`) and run `kubeloop rollout "
                f"approve {tags.get(registry.TAG_NAME)}`",
            )
        if state == APPROVED:
            if self.phase == "staging":  # staging never sends canary traffic
                self._tag(version, state=AWAITING)
                return Step(AWAITING, "staging releases through `kubeloop rollout approve`")
            return self._start_canary(version, 0)
        if state == CANARY:
            return self._judge_canary(version, champion, tags)
        raise RolloutError(f"unknown rollout state {state!r} on version {version.version}")

    def _start_shadow(self, version) -> Step:
        status = self.server.status()
        candidate = status.get("candidate") or {}
        if self.spec.rollout.shadow_min_requests and not (
            status.get("shadow") and str(candidate.get("version")) == str(version.version)
        ):
            raise RolloutError(
                f"the model server does not shadow version {version.version} (status: "
                f"shadow={status.get('shadow')}, candidate={candidate.get('label')}); start it "
                "with --shadow (KUBELOOP_SHADOW_ENABLED=true) and wait for its registry poll"
            )
        now = self.clock()
        self._tag(version, state=SHADOW, shadow_started_at=_iso(now))
        return Step(
            SHADOW, f"shadowing {version.tags.get(registry.TAG_NAME)}", self._poll_seconds()
        )

    def _poll_seconds(self) -> float:
        steps = [s.hold_minutes for s in self.spec.rollout.steps]
        return max(
            1.0, min(30.0, 60 * min([*steps, self.spec.rollout.shadow_hold_minutes or 1]) / 4)
        )

    def _timed_out(self, since: datetime, now: datetime) -> bool:
        return now - since > timedelta(minutes=self.spec.rollout.timeout_minutes)

    def _judge_shadow(self, version, champion, tags: dict[str, str]) -> Step:
        rollout = self.spec.rollout
        now = self.clock()
        since = _parse(tags.get(P + "shadow_started_at")) or now
        pairs = read_paired(
            self.engine,
            self.name,
            since - timedelta(seconds=5),
            now + timedelta(seconds=1),
            ["champion", "shadow"],
            self.spec.task,
        )
        metric = self.spec.evaluation.primary_metric
        comparison, joined = compare_shadow(
            pairs, str(version.version), str(champion.version), self.spec.task, metric
        )
        held = now - since >= timedelta(minutes=rollout.shadow_hold_minutes)
        if comparison.pairs < rollout.shadow_min_requests or not held:
            if self._timed_out(since, now):
                return self.rollback(
                    version,
                    f"shadow: only {comparison.pairs} shadowed "
                    f"requests in {rollout.timeout_minutes:g} minutes",
                )
            return Step(
                SHADOW,
                f"shadow: {comparison.pairs}/{rollout.shadow_min_requests} requests",
                self._poll_seconds(),
                comparison.to_dict(),
            )
        stamp = now.strftime("%Y%m%d-%H%M%S")
        label, champion_label = (
            version.tags.get(registry.TAG_NAME),
            champion.tags.get(registry.TAG_NAME),
        )
        worse = (
            comparison.quality_loss is not None
            and comparison.quality_loss > rollout.max_quality_loss
        )
        if worse:
            verdict = ("Rolled back", "fail", [f"{metric} {comparison.quality_loss:.0%} worse"])
        elif comparison.quality_loss is None:
            verdict = (
                "Shadow passed: ready for approval",
                "warn",
                [f"fewer than {MIN_LABELLED} labelled requests: quality not judged"],
            )
        else:
            verdict = ("Shadow passed: ready for approval", "ok", [])
        shadow_file = shadow_report(
            joined,
            self.reports_dir / self.name / f"shadow-{label}-{stamp}.html",
            self.spec.task,
            comparison,
            f"Shadow of {self.name}: candidate {label} (version {version.version}) against "
            f"champion {champion_label} (version {champion.version}), "
            f"{since:%Y-%m-%d %H:%M:%S} to {now:%Y-%m-%d %H:%M:%S} UTC",
            verdict,
        )
        logged = self._log_artifact(version, shadow_file)
        self._tag(
            version,
            shadow_result=comparison.to_dict(),
            shadow_report=str(shadow_file),
            **({"shadow_report_uri": logged} if logged else {}),
        )
        if worse:
            return self.rollback(
                version,
                f"shadow: {metric} {comparison.quality_loss:.0%} worse "
                f"than the champion on {comparison.labelled} labelled requests",
            )
        failed = self._stress_gate(version)
        if failed is not None:
            return failed
        if self.env == "dev" and rollout.auto_approve_dev:
            self._tag(version, state=APPROVED, approved_by="auto", approved_at=_iso(now))
            return Step(APPROVED, "shadow passed; auto-approved (dev)", 0.0, comparison.to_dict())
        if self._approved_ahead(tags):
            self._tag(version, state=APPROVED)
            return Step(APPROVED, f"shadow passed; approved by {tags[P + 'approved_by']}", 0.0)
        self._tag(version, state=AWAITING)
        return Step(
            AWAITING,
            f"shadow passed ({comparison.pairs} requests); review the shadow report "
            f"(`kubeloop rollout report {label}`), then approve: `kubeloop rollout approve "
            f"{label}`",
            None,
            comparison.to_dict(),
        )

    def _log_artifact(self, version, path: Path) -> str | None:
        """Log a report to the candidate's run: on a cluster the controller's disk is its pod's,
        so MLflow is where an approver reads it (``kubeloop rollout report``). Returns its
        ``runs:/`` URI, or None when MLflow refused (the report is on disk still)."""
        try:
            self.client.log_artifact(version.run_id, str(path), artifact_path="rollout")
        except Exception as exc:  # noqa: BLE001 - the report is on disk already
            log.warning("could not log %s to MLflow: %s", path.name, exc)
            return None
        return f"runs:/{version.run_id}/rollout/{path.name}"

    def _stress_gate(self, version) -> Step | None:
        """The bounded load test before any traffic; a rollback Step when the candidate
        misses it, None when it passes (or the gate is off)."""
        if not self.spec.rollout.stress.enabled:
            return None
        if self.stress is None:
            raise RolloutError(
                "rollout.stress is enabled but this controller has no load runner: set "
                "KUBELOOP_SERVER_URL (or turn the gate off in the spec)"
            )
        result = self.stress(str(version.version), self.clock())
        self._tag(version, stress_result=result.to_dict())
        log.info("stress test of version %s: %s", version.version, result.summary)
        if not result.passed:
            return self.rollback(version, f"stress test: {'; '.join(result.reasons)}")
        return None

    def _start_canary(self, version, index: int) -> Step:
        step = self.spec.rollout.steps[index]
        self.server.set_canary_weight(step.weight)
        now = self.clock()
        champion = self.champion()
        versions = [str(version.version), str(champion.version) if champion else ""]
        values: dict[str, Any] = {
            "state": CANARY,
            "step": str(index),
            "step_started_at": _iso(now),
            "step_baseline": self.metrics.baseline(versions),
            f"canary_{round(step.weight * 100)}_started_at": _iso(now),
        }
        if index == 0:
            values["canary_started_at"] = _iso(now)
        self._tag(version, **values)
        return Step(
            CANARY,
            f"canary {step.weight:.0%} for {step.hold_minutes:g} min",
            max(1.0, 60 * step.hold_minutes),
        )

    def _earlier_champion(self, tags: dict[str, str], index: int) -> tuple[VersionStats, str]:
        """The champion's figures from the last step it answered (the 100% step has none)."""
        for earlier in reversed(self.spec.rollout.steps[:index]):
            name = f"canary {earlier.weight:.0%} step"
            result = json.loads(tags.get(f"{P}canary_{round(earlier.weight * 100)}_result", "{}"))
            stats = VersionStats.from_dict(result.get("analysis", {}).get("champion", {}))
            if stats.requests:
                return stats, name
        return VersionStats(), "no step in which the champion answered"

    def _served_quality(self, version, champion, since, now, step, tags) -> Comparison:
        """Quality of the step's rows; at 100% the champion's rows come from the window of
        ``rollout.baseline_minutes`` before the canary began."""
        rows = read_paired(
            self.engine,
            self.name,
            since - timedelta(seconds=1),
            now + timedelta(seconds=1),
            ["champion", "canary"],
            self.spec.task,
        )
        champion_rows, source = None, f"prediction log {_iso(since)} to {_iso(now)}"
        began = _parse(tags.get(P + "canary_started_at"))
        if step.weight >= 1.0 and began is not None:
            start = began - timedelta(minutes=self.spec.rollout.baseline_minutes)
            champion_rows = read_paired(
                self.engine, self.name, start, began, ["champion"], self.spec.task
            )
            source += f"; champion: {_iso(start)} to {_iso(began)}, before the canary began"
        return compare_served(
            rows,
            str(version.version),
            str(champion.version),
            self.spec.task,
            self.spec.evaluation.primary_metric,
            min_labelled=step.min_labelled,
            champion_rows=champion_rows,
            source=source,
        )

    def _judge_canary(self, version, champion, tags: dict[str, str]) -> Step:
        rollout = self.spec.rollout
        index = int(tags[P + "step"])
        step = rollout.steps[index]
        now = self.clock()
        since = _parse(tags[P + "step_started_at"]) or now
        name = f"canary {step.weight:.0%}"
        cand_v, champ_v = str(version.version), str(champion.version)
        baseline = json.loads(tags.get(P + "step_baseline", "{}"))
        measured = self.metrics.measure(baseline, since, now, [cand_v, champ_v])
        champ, champion_from = measured[champ_v], "this step"
        if champ.requests < max(1, step.min_requests):
            # Too few champion requests in the step for a p99 (at 100%, the stragglers of
            # replicas that had not yet taken the new weight): an earlier step's figures, which
            # counted more, are the baseline.
            earlier, where = self._earlier_champion(tags, index)
            if not champ.requests or earlier.requests > champ.requests:
                champ, champion_from = earlier, where
        verdict = judge(
            measured[cand_v],
            champ,
            max_error_rate_increase=rollout.max_error_rate_increase,
            analysis=rollout.analysis,
            min_requests=step.min_requests,
            champion_from=champion_from,
        )
        quality = self._served_quality(version, champion, since, now, step, tags)
        result = {
            "weight": step.weight,
            "analysis": verdict.to_dict(),
            "quality": quality.to_dict(),
        }
        # The latest judgement is recorded at every look, so `rollout status` shows progress.
        self._tag(version, **{f"canary_{round(step.weight * 100)}_result": result})
        # Errors and latency roll back at once: waiting only exposes more callers.
        for problem in (verdict.errors, verdict.latency):
            if problem:
                return self.rollback(version, f"{name}: {problem}")
        metric = self.spec.evaluation.primary_metric
        if quality.quality_loss is not None and quality.quality_loss > rollout.max_quality_loss:
            return self.rollback(
                version,
                f"{name}: {metric} {quality.quality_loss:.0%} worse than the champion on "
                f"{quality.labelled} labelled rows",
            )
        remaining = (since + timedelta(minutes=step.hold_minutes) - now).total_seconds()
        if remaining > 0 or quality.pairs < step.min_requests:
            if self._timed_out(since, now):
                return self.rollback(
                    version,
                    f"{name}: only {quality.pairs} candidate predictions in "
                    f"{rollout.timeout_minutes:g} minutes",
                )
            return Step(
                CANARY,
                f"{name}: {quality.pairs}/{step.min_requests} candidate predictions, "
                f"{max(0.0, remaining):.0f}s to hold",
                max(1.0, min(remaining, self._poll_seconds())),
                result,
            )
        # Latency and quality are waited for, never skipped: a step passes only once both
        # were judged, and rolls back when they cannot be within rollout.timeout_minutes.
        missing = []
        if verdict.latency_wait:
            missing.append(("latency", verdict.latency_wait))
        if step.min_labelled and quality.quality_loss is None:
            missing.append(
                (
                    "labels",
                    f"{quality.labelled}/{step.min_labelled} labelled candidate rows, "
                    f"{quality.champion_labelled}/{step.min_labelled} champion rows",
                )
            )
        if missing:
            if self._timed_out(since, now):
                judged = {"latency": "latency", "labels": "quality"}
                return self.rollback(
                    version,
                    f"{name}: "
                    + "; ".join(
                        f"{judged[what]} could not be judged ({why})" for what, why in missing
                    )
                    + f" in {rollout.timeout_minutes:g} minutes",
                )
            left = (since + timedelta(minutes=rollout.timeout_minutes) - now).total_seconds()
            return Step(
                CANARY,
                f"{name}: waiting for "
                + " and ".join(f"{what} ({why})" for what, why in missing)
                + f"; up to {left:.0f}s more",
                self._poll_seconds(),
                result,
            )
        if index + 1 < len(rollout.steps):
            return self._start_canary(version, index + 1)
        return self._promote(version, champion, tags)

    def _promote(self, version, champion, tags: dict[str, str]) -> Step:
        # Production: the approval the release recorded (the authenticated approver); a
        # single environment: its own rollout's approval.
        if self.phase == "production":
            approver = tags.get(registry.TAG_APPROVED_BY) or "auto"
        else:
            approver = tags.get(P + "approved_by") or tags.get(registry.TAG_APPROVED_BY) or "auto"
        registry.promote(
            self.client, self.name, str(version.version), approve=True, approver=approver
        )
        self._tag(version, state=PROMOTED, promoted_at=_iso(self.clock()))
        record = lineage.record(self.client, self.name, str(version.version))
        for action in (lambda: self.server.set_canary_weight(0.0), self.server.reload):
            try:
                action()
            except RolloutError as exc:
                log.info("server not updated at once (it follows at its next poll): %s", exc)
        return Step(
            PROMOTED,
            f"{record['label']} is the champion (was {champion.tags.get(registry.TAG_NAME)})",
            None,
            record,
        )

    def run(
        self,
        ref: str | None = None,
        *,
        max_seconds: float | None = None,
        sleep: Callable[[float], None] = time.sleep,
        progress: Callable[[Step], None] | None = None,
    ) -> Step:
        """Step until promoted, rolled back, waiting for a person, or ``max_seconds`` pass."""
        version = self.candidate(ref)
        ref = str(version.version)
        deadline = None if max_seconds is None else time.monotonic() + max_seconds
        while True:
            result = self.step(ref)
            if progress:
                progress(result)
            if result.done or result.wait_seconds is None:
                return result
            if deadline is not None and time.monotonic() + result.wait_seconds > deadline:
                return result
            sleep(result.wait_seconds)


def describe_comparison(comparison: dict[str, Any], metric: str) -> str:
    cand = comparison.get("candidate", {}).get(metric)
    champ = comparison.get("champion", {}).get(metric)
    if cand is None or champ is None or not np.isfinite(cand):
        return f"{comparison.get('pairs', 0)} requests, no labels yet"
    return (
        f"{comparison.get('pairs', 0)} requests, {metric} candidate {cand:.3g} vs champion "
        f"{champ:.3g} on {comparison.get('labelled', 0)} labelled"
    )


def relative_to_champion(loss: float) -> str:
    """A relative quality loss in words: ``loss`` > 0 is worse than the champion."""
    if abs(loss) < 0.0005:
        return "as good as the champion"
    return f"{abs(loss):.1%} {'worse' if loss > 0 else 'better'} than the champion"


def shadow_report_file(status: dict[str, Any], folder: Path) -> Path:
    """A version's shadow report as a file here: where the controller wrote it, when that is
    this machine, else downloaded into ``folder`` from the candidate's MLflow run (on a
    cluster the controller's disk is its pod's)."""
    written = status.get("shadow_report")
    if written and Path(written).is_file():
        return Path(written)
    if uri := status.get("shadow_report_uri"):
        import mlflow

        folder.mkdir(parents=True, exist_ok=True)
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(folder)))
    raise RolloutError(
        f"{status['model']} {status.get('label')} (version {status['version']}) has no shadow "
        f"report{' in MLflow' if written else ''} (rollout state: {status['state']})"
    )


def step_rows(
    status: dict[str, Any], metric: str, task: str = "regression"
) -> list[dict[str, str]]:
    """One row per judged stage (shadow, stress test, canary steps) for ``kubeloop rollout
    status``: the counts, latency and quality it judged, and where each came from."""
    rows = []
    if shadow := status.get("shadow_result"):
        s = json.loads(shadow)
        loss = s.get("quality_loss")
        diff = s.get("mean_abs_diff")
        if diff is None:
            apart = "-"
        elif task == "classification":  # a difference is 1 where the classes differ
            apart = f"{diff:.1%} answered with another class"
        else:
            apart = f"mean |difference| {diff:.3g}"
        rows.append(
            {
                "step": "shadow",
                "candidate": f"{s.get('pairs', 0)} requests both answered, {apart}",
                "champion": "the same requests",
                "quality": describe_comparison(s, metric),
                "source": f"prediction log, champion and shadow rows since "
                f"{status.get('shadow_started_at', '-')}",
                "verdict": f"{metric} {relative_to_champion(loss)}"
                if loss is not None
                else f"quality not judged (fewer than {MIN_LABELLED} labelled requests)",
            }
        )
    if stress := status.get("stress_result"):
        s = json.loads(stress)
        rows.append(
            {
                "step": "stress test",
                "candidate": f"{s['answered']}/{s['sent'] + s['skipped']} answered, "
                f"{s['error_rate']:.1%} errors, p99 {s['p99_ms']} ms",
                "champion": "-",
                "quality": "-",
                "source": f"{s['target_rps']:g} rps for {s['duration_seconds']:g}s to {s['url']}",
                "verdict": "passed" if s["passed"] else "; ".join(s["reasons"]),
            }
        )
    for key in sorted(
        (k for k in status if k.startswith("canary_") and k.endswith("_result")),
        key=lambda k: int(k.split("_")[1]),
    ):
        result = json.loads(status[key])
        analysis, quality = result.get("analysis", {}), result.get("quality", {})
        cand, champ = analysis.get("candidate", {}), analysis.get("champion", {})

        def side(stats: dict[str, Any]) -> str:
            return (
                f"{stats.get('requests', 0)} requests, {stats.get('errors', 0)} errors, "
                f"p99 {stats.get('p99_ms')} ms"
            )

        problems = [p for p in (analysis.get("errors"), analysis.get("latency")) if p]
        if not problems and analysis.get("latency_wait"):
            problems = [f"waiting for latency: {analysis['latency_wait']}"]
        if not problems and analysis.get("latency_note"):
            problems = [f"ok; {analysis['latency_note']}"]
        limit = analysis.get("latency_limit_ms")
        rows.append(
            {
                "step": f"canary {result['weight']:.0%}",
                "candidate": side(cand) + ("" if limit is None else f" (limit {limit:g} ms)"),
                "champion": f"{side(champ)} ({analysis.get('champion_from', 'this step')})",
                "quality": describe_comparison(quality, metric),
                "source": f"{cand.get('source', '-')}; quality: {quality.get('source', '-')}",
                "verdict": "; ".join(problems) or "ok",
            }
        )
    return rows
