"""The rollout state machine: shadow, stress gate, approval, canary steps, promotion and
automatic rollback.

The registry is a real MLflow store (SQLite in the test's work folder, versions without
artifacts); the model server is a fake that records the weights it is given, the metrics source
a fake that counts what the test says each version served (the real sources are tested in
test_monitoring_canary.py and, across two real replicas and Prometheus, in
tests/integration/test_rollout_replicas.py); the prediction log is SQLite.
"""

from __future__ import annotations

import getpass
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kubeloop import model_store, registry
from kubeloop.settings import PlatformSettings
from kubeloop.spec import CanaryStep, RolloutSpec
from monitoring import lineage
from monitoring.canary import MetricsSource, VersionStats
from monitoring.errors import RolloutError
from monitoring.rollout import (
    APPROVED,
    AWAITING,
    CANARY,
    PROMOTED,
    ROLLED_BACK,
    SHADOW,
    Rollout,
    ServerAdmin,
    relative_to_champion,
    step_rows,
)
from monitoring.stress import StressResult
from monitoring.window import open_log
from tests.utils.factories import example_spec
from tests.utils.monitoring import log_feedback, log_rows

FEATURES = ["x"]
T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


class FakeServer(ServerAdmin):
    """Records the weights it is given."""

    def __init__(self, shadow: bool = True) -> None:
        self.shadow = shadow
        self.candidate_version = "2"
        self.weights: list[float] = []
        self.reloads = 0

    def status(self) -> dict:
        return {
            "shadow": self.shadow,
            "candidate": {"version": self.candidate_version, "label": "V1.0.1"},
        }

    def set_canary_weight(self, weight: float) -> None:
        self.weights.append(weight)

    def reload(self) -> None:
        self.reloads += 1


class FakeMetrics(MetricsSource):
    """Cumulative requests and errors per version as the test says they were served; the p99
    of each version is whatever the test sets."""

    def __init__(self) -> None:
        self.totals: dict[str, list[float]] = {}
        self.p99: dict[str, float | None] = {"1": 0.010, "2": 0.011}

    def served(self, version: str, requests: int, errors: int = 0) -> None:
        total = self.totals.setdefault(version, [0, 0])
        total[0] += requests
        total[1] += errors

    def baseline(self, versions) -> dict:
        return {v: list(self.totals.get(v, [0, 0])) for v in versions}

    def measure(self, baseline, since, now, versions) -> dict[str, VersionStats]:
        out = {}
        for v in versions:
            now_r, now_e = self.totals.get(v, [0, 0])
            was_r, was_e = baseline.get(v, [0, 0])
            seen = now_r - was_r
            out[v] = VersionStats(seen, now_e - was_e, self.p99[v] if seen else None, "fake")
        return out


class FakeStress:
    """The stress gate's load runner: passes unless told to fail."""

    def __init__(self) -> None:
        self.passes = True
        self.calls: list[str] = []

    def __call__(self, version: str, now: datetime) -> StressResult:
        self.calls.append(version)
        reasons = [] if self.passes else ["p99 900.0 ms above 250 ms"]
        return StressResult(
            url="http://127.0.0.1/v2/models/m/versions/2/infer",
            version=version,
            target_rps=20,
            duration_seconds=10,
            sent=200,
            answered=200,
            errors=0,
            skipped=0,
            achieved_rps=20.0,
            p50_ms=3.0,
            p99_ms=9.0 if self.passes else 900.0,
            error_rate=0.0,
            passed=self.passes,
            reasons=reasons,
            at=now.isoformat(),
        )


class World:
    """Registry with a champion (version 1) and a challenger (version 2), log, server, clock."""

    def __init__(
        self, settings: PlatformSettings, tmp: Path, rollout: RolloutSpec, env: str = "dev"
    ) -> None:
        self.client = model_store.configure(settings)
        self.spec = example_spec().model_copy(update={"rollout": rollout})
        self.name = self.spec.model_name
        self.client.create_registered_model(self.name)
        for auto in (0, 1):
            self.client.create_model_version(
                self.name,
                source=str(tmp / f"model-{auto}"),
                run_id=self.client.create_run("0").info.run_id,  # where reports are logged
                tags={registry.TAG_NAME: f"V1.0.{auto}"},
            )
        registry.promote(self.client, self.name, "1", approve=True, approver="tests")
        self.client.set_registered_model_alias(self.name, registry.CHALLENGER, "2")
        self.engine = open_log(f"sqlite:///{tmp / 'predictions.db'}")
        self.server = FakeServer()
        self.metrics = FakeMetrics()
        self.stress = FakeStress()
        self.clock = Clock()
        self.rng = np.random.default_rng(0)
        self.rollout = Rollout(
            self.client,
            self.spec,
            self.server,
            self.engine,
            env=env,
            reports_dir=tmp / "reports",
            metrics=self.metrics,
            stress=self.stress,
            clock=self.clock,
        )
        self.requests = 0
        self.tmp = tmp

    def in_phase(self, env: str, phase: str, *, stress: bool = False) -> Rollout:
        """A controller of one environment's half (staging or production) on this world."""
        return Rollout(
            self.client,
            self.spec,
            self.server,
            self.engine,
            env=env,
            reports_dir=self.tmp / "reports",
            metrics=self.metrics,
            stress=self.stress if stress else None,
            phase=phase,
            clock=self.clock,
        )

    def champion(self) -> str:
        return str(self.client.get_model_version_by_alias(self.name, "champion").version)

    def tags(self, version: str = "2") -> dict[str, str]:
        return self.client.get_model_version(self.name, version).tags

    def _log(
        self,
        n: int,
        role: str,
        version: str,
        noise: float,
        ids: list[str] | None = None,
        actual: np.ndarray | None = None,
        label: bool = True,
    ) -> list[str]:
        """Log n predictions of one model; feedback too (when ``label``) unless the requests
        have it already."""
        labelled = actual is not None
        actual = actual if labelled else self.rng.normal(100, 10, n)
        frame = pd.DataFrame({"x": actual, "prediction": actual + self.rng.normal(0, noise, n)})
        ids = ids or [f"r{self.requests + i}" for i in range(n)]
        log_rows(
            self.engine,
            frame,
            FEATURES,
            model_name=self.name,
            version=version,
            label=f"V1.0.{int(version) - 1}",
            start=self.clock.now,
            role=role,
            spacing=timedelta(milliseconds=1),
            request_ids=ids,
        )
        if not labelled and label:
            log_feedback(self.engine, ids, actual.tolist(), self.clock.now)
        self.last_actual = actual
        return ids

    def shadow_traffic(self, n: int, candidate_noise: float = 4.0) -> None:
        ids = self._log(n, "champion", "1", 5.0)
        self._log(n, "shadow", "2", candidate_noise, ids=ids, actual=self.last_actual)
        self.requests += n
        self.metrics.served("1", n)

    def canary_traffic(
        self,
        n: int,
        weight: float,
        *,
        errors: float = 0.0,
        champion_errors: float = 0.0,
        candidate_noise: float = 4.0,
        label: bool = True,
    ) -> list[str]:
        """n records split by weight; returns the candidate's request ids (whose labels come
        later when not ``label``)."""
        k = int(n * weight)
        failed = int(k * errors)
        champion_failed = int((n - k) * champion_errors)
        if n - k - champion_failed:
            self._log(n - k - champion_failed, "champion", "1", 5.0)
            self.requests += n - k - champion_failed
        ids: list[str] = []
        if k - failed:
            ids = self._log(k - failed, "canary", "2", candidate_noise, label=label)
            self.requests += k - failed
        self.metrics.served("1", n - k, champion_failed)
        self.metrics.served("2", k, failed)
        return ids


STEPS = (
    CanaryStep(weight=0.1, hold_minutes=1, min_requests=20),
    CanaryStep(weight=0.5, hold_minutes=1, min_requests=20),
    CanaryStep(weight=1.0, hold_minutes=1, min_requests=20),
)


@pytest.fixture
def world(settings: PlatformSettings, tmp_path: Path) -> World:
    return World(
        settings,
        tmp_path,
        RolloutSpec(
            shadow_min_requests=50, steps=STEPS, auto_approve_dev=False, timeout_minutes=30
        ),
    )


def through_shadow(world: World) -> None:
    assert world.rollout.step().state == SHADOW
    world.shadow_traffic(60)
    world.clock.advance(seconds=5)


def test_a_good_candidate_walks_through_shadow_approval_and_canary_to_champion(world) -> None:
    through_shadow(world)
    waiting = world.rollout.step()
    assert waiting.state == AWAITING and "kubeloop rollout approve V1.0.1" in waiting.message
    assert world.rollout.step().state == AWAITING  # nothing happens without a person
    world.rollout.approve()
    assert world.rollout.step().state == APPROVED
    for i, step in enumerate(STEPS):
        started = world.rollout.step()
        assert started.state == CANARY and world.server.weights[-1] == step.weight
        world.canary_traffic(200, step.weight)
        world.clock.advance(seconds=30)
        assert world.rollout.step().state == CANARY  # held for less than a minute
        assert world.champion() == "1"
        world.clock.advance(seconds=31)
        if i < len(STEPS) - 1:
            world.clock.advance(seconds=0)
    done = world.rollout.step()
    assert done.state == PROMOTED and world.champion() == "2"
    assert world.server.weights == [0.1, 0.5, 1.0, 0.0]
    tags = world.tags()
    assert tags["kubeloop.rollout.state"] == PROMOTED
    # promote() records the rollout's approver: without registry authentication, the OS user
    assert tags["kubeloop.approved_by"] == getpass.getuser()
    assert {
        "kubeloop.rollout.shadow_started_at",
        "kubeloop.rollout.canary_started_at",
        "kubeloop.rollout.canary_10_result",
        "kubeloop.rollout.canary_100_result",
        "kubeloop.champion_since",
        "kubeloop.lineage",
    } <= set(tags)
    shadow_html = Path(tags["kubeloop.rollout.shadow_report"]).read_text()
    summary = shadow_html[shadow_html.index("kubeloop-summary") :].split("</section>")[0]
    assert "candidate V1.0.1 (version 2) against champion V1.0.0 (version 1)" in summary
    assert "Shadow passed: ready for approval" in summary and "requests both answered" in summary
    assert not re.search(r"\d\.\d{6,}", summary), summary  # figures rounded for reading
    assert "kubeloop.retired_at" in world.tags("1")


def test_an_approver_elsewhere_fetches_the_shadow_report_from_mlflow(world) -> None:
    """On a cluster the controller writes the report in its pod: the path it tags is nobody
    else's; the copy logged to the candidate's run is what an approver reads."""
    from monitoring.rollout import shadow_report_file

    through_shadow(world)
    waiting = world.rollout.step()
    assert "`kubeloop rollout report V1.0.1`" in waiting.message
    status = world.rollout.status()
    written = Path(status["shadow_report"])
    summary = written.read_text()
    written.unlink()  # the controller's pod is gone
    fetched = shadow_report_file(status, world.tmp / "approver")
    assert fetched.parent == world.tmp / "approver" and fetched.read_text() == summary
    assert status["shadow_report_uri"].startswith("runs:/")
    with pytest.raises(RolloutError, match="has no shadow report"):
        shadow_report_file(world.in_phase("dev", "all").status("1"), world.tmp)


def test_a_staging_approval_tag_never_stands_for_the_releases(settings, tmp_path) -> None:
    """The copy into production carries the staging version's tags; a
    ``kubeloop.rollout.approved_by`` anyone who may register can write must not become the
    production champion's approver."""
    world = World(settings, tmp_path, RolloutSpec(steps=STEPS, production_model=PRODUCTION))
    world.client.set_model_version_tag(world.name, "2", "kubeloop.rollout.approved_by", "mallory")
    released = registry.release(world.client, world.name, "2", PRODUCTION, state_tags={})
    assert "kubeloop.rollout.approved_by" not in released.tags
    assert released.tags[registry.TAG_APPROVED_BY] == getpass.getuser()
    # in staging such a tag does not approve either: only a release does
    staging = world.in_phase("staging", "staging")
    world.client.set_model_version_tag(world.name, "2", registry.TAG_ROLLOUT_STATE, AWAITING)
    assert not staging._approved_ahead(world.tags("2"))


def test_a_release_that_failed_halfway_leaves_no_copy_and_a_retry_completes_it(
    world, monkeypatch
) -> None:
    """A copy whose alias was never set was found by the retry and taken as released:
    production's canary never started."""
    from mlflow.exceptions import MlflowException

    real = world.client.set_registered_model_alias
    calls = []

    def flaky(name, alias, version):
        calls.append(name)
        if name == PRODUCTION and len(calls) == 1:
            raise MlflowException("registry unavailable")
        return real(name, alias, version)

    monkeypatch.setattr(world.client, "set_registered_model_alias", flaky)
    with pytest.raises(MlflowException, match="unavailable"):
        registry.release(world.client, world.name, "2", PRODUCTION, state_tags={})
    assert registry.all_versions(world.client, PRODUCTION) == []  # the half copy is gone
    released = registry.release(world.client, world.name, "2", PRODUCTION, state_tags={})
    challenger = registry.by_alias(world.client, PRODUCTION, registry.CHALLENGER)
    assert str(challenger.version) == str(released.version)
    assert released.tags[registry.TAG_RELEASED_FROM] == f"{world.name}/2"


def test_the_champion_is_never_rolled_back_or_approved(world) -> None:
    """After a promotion the challenger alias still names the champion: ``rollout rollback``
    marked the serving champion rolled back."""
    world.client.set_registered_model_alias(world.name, registry.CHALLENGER, "1")
    for action in (
        lambda: world.rollout.rollback(world.rollout.candidate(), "by hand"),
        world.rollout.approve,
    ):
        with pytest.raises(RolloutError, match="is the champion: nothing to"):
            action()
    assert "kubeloop.rollout.state" not in world.tags("1")
    assert world.server.weights == []


def test_only_a_version_being_rolled_out_is_approved(world) -> None:
    """An old version that is neither the challenger nor in a rollout step has nothing to
    approve (it was accepted, and the approval waited for a shadow that never started)."""
    world.client.create_model_version(
        world.name, source=str(world.tmp / "model-2"), tags={registry.TAG_NAME: "V1.0.2"}
    )
    with pytest.raises(RolloutError, match="is not being rolled out"):
        world.rollout.approve("3")
    world.rollout.approve()  # the challenger, ahead of its shadow: the gates still decide
    assert world.tags()["kubeloop.rollout.approved_by"]


def test_a_promotion_by_hand_retires_the_old_champion_and_clears_a_comeback(world) -> None:
    """The runbooks' rollback is ``kubeloop promote <previous>``: the champion history must
    read as the rollout's does."""
    registry.promote(world.client, world.name, "2", approve=True, approver="oncall")
    assert "kubeloop.retired_at" in world.tags("1")
    registry.promote(world.client, world.name, "1", approve=True, approver="oncall")
    assert "kubeloop.retired_at" not in world.tags("1")
    assert "kubeloop.retired_at" in world.tags("2")


def test_a_canary_whose_candidate_returns_errors_is_rolled_back_and_the_champion_never_moved(
    world,
) -> None:
    through_shadow(world)
    world.rollout.approve()
    champions = []
    for _ in range(3):
        world.rollout.step()
        champions.append(world.champion())
    assert world.server.weights == [0.1]
    world.canary_traffic(400, 0.1, errors=0.3)  # 12 of 40 candidate requests fail
    world.clock.advance(seconds=10)  # errors roll back at once, before the hold time
    result = world.rollout.step()
    champions.append(world.champion())
    assert result.state == ROLLED_BACK and "error rate 30.0%" in result.message
    assert champions == ["1"] * 4
    assert world.server.weights == [0.1, 0.0]
    assert registry.by_alias(world.client, world.name, registry.CHALLENGER) is None
    tags = world.tags()
    assert tags["kubeloop.rollout.state"] == ROLLED_BACK
    assert "error rate" in tags["kubeloop.rollout.rollback_reason"]
    assert "kubeloop.champion_since" not in tags
    canary_tag = world.client.get_registered_model(world.name).tags["kubeloop.canary"]
    assert '"weight": 0.0' in canary_tag  # every replica follows at its next poll


def test_a_candidate_worse_on_live_labels_is_rolled_back_during_the_canary(world) -> None:
    through_shadow(world)
    world.rollout.approve()
    world.rollout.step()
    world.rollout.step()  # canary 10%
    world.canary_traffic(600, 0.1, candidate_noise=25.0)  # 60 candidate rows, 5x the error
    world.clock.advance(seconds=61)
    result = world.rollout.step()
    assert result.state == ROLLED_BACK and "rmse" in result.message
    assert world.champion() == "1"


def test_shadow_rolls_back_a_candidate_measurably_worse_than_the_champion(world) -> None:
    assert world.rollout.step().state == SHADOW
    world.shadow_traffic(60, candidate_noise=30.0)
    world.clock.advance(seconds=5)
    result = world.rollout.step()
    assert result.state == ROLLED_BACK and "shadow: rmse" in result.message
    assert world.server.weights == [0.0] and world.champion() == "1"


def test_dev_may_auto_approve_but_prod_always_waits_for_a_person(settings, tmp_path) -> None:
    spec = RolloutSpec(shadow_min_requests=50, steps=STEPS, auto_approve_dev=True)
    dev = World(settings, tmp_path / "dev", spec, env="dev")
    through_shadow(dev)
    assert dev.rollout.step().state == APPROVED
    assert dev.tags()["kubeloop.rollout.approved_by"] == "auto"


def test_prod_waits_for_approval_even_when_dev_would_not(settings, tmp_path) -> None:
    spec = RolloutSpec(shadow_min_requests=50, steps=STEPS, auto_approve_dev=True)
    prod = World(settings, tmp_path / "prod", spec, env="prod")
    through_shadow(prod)
    assert prod.rollout.step().state == AWAITING


def test_a_step_that_never_gets_traffic_rolls_back_after_the_timeout(world) -> None:
    through_shadow(world)
    world.rollout.approve()
    world.rollout.step()
    world.rollout.step()  # canary 10%, but no requests arrive
    world.clock.advance(minutes=10)
    assert world.rollout.step().state == CANARY
    world.clock.advance(minutes=21)
    result = world.rollout.step()
    assert result.state == ROLLED_BACK and "only 0 candidate predictions" in result.message


def test_the_rollout_refuses_to_start_when_the_server_does_not_shadow(world) -> None:
    world.server.shadow = False
    with pytest.raises(RolloutError, match="--shadow"):
        world.rollout.step()
    assert "kubeloop.rollout.state" not in world.tags()


def test_a_hand_promotion_ends_the_rollout(world) -> None:
    through_shadow(world)
    registry.promote(world.client, world.name, "2", approve=True, approver="bob")
    assert world.rollout.step().state == PROMOTED


def test_run_drives_the_steps_until_a_person_is_needed(world) -> None:
    def sleep(seconds: float) -> None:
        world.shadow_traffic(20)
        world.clock.advance(seconds=seconds)

    seen = []
    result = world.rollout.run(sleep=sleep, progress=lambda s: seen.append(s.state))
    assert result.state == AWAITING and seen[0] == SHADOW and seen[-1] == AWAITING


def into_canary(world: World) -> None:
    through_shadow(world)
    world.rollout.approve()
    world.rollout.step()  # approved
    assert world.rollout.step().state == CANARY


def test_a_failing_champion_is_not_blamed_on_the_candidate(world) -> None:
    into_canary(world)
    world.canary_traffic(400, 0.1, champion_errors=0.3)  # the champion fails 108 times
    world.clock.advance(seconds=61)
    result = world.rollout.step()
    assert result.state == CANARY and world.server.weights == [0.1, 0.5]
    judged = json.loads(world.tags()["kubeloop.rollout.canary_10_result"])["analysis"]
    assert judged["candidate"]["errors"] == 0 and judged["champion"]["errors"] == 108
    assert judged["errors"] is None


def test_a_slow_candidate_is_rolled_back_on_latency(world) -> None:
    into_canary(world)
    world.metrics.p99["2"] = 0.200  # 200 ms against the champion's 10 ms
    world.canary_traffic(400, 0.1)
    world.clock.advance(seconds=10)
    result = world.rollout.step()
    assert result.state == ROLLED_BACK
    assert "p99 latency 200.0 ms against the champion's 10.0 ms" in result.message
    assert world.server.weights == [0.1, 0.0] and world.champion() == "1"


def test_latency_is_waited_for_and_a_slow_candidate_found_once_measured(world) -> None:
    """The metrics source has the step's requests but no p99 yet (a short Prometheus window):
    the step does not pass on the prediction log alone; it waits, says so, and judges the
    latency as soon as it is measured."""
    into_canary(world)
    world.metrics.p99["2"] = None
    world.canary_traffic(400, 0.1)
    world.clock.advance(seconds=61)  # held, enough candidate predictions in the log
    waiting = world.rollout.step()
    assert waiting.state == CANARY and world.server.weights == [0.1]
    assert "waiting for latency (no p99 for the candidate yet (40 requests measured))" in (
        waiting.message
    )
    rows = {r["step"]: r for r in step_rows(world.rollout.status("2"), "rmse")}
    assert rows["canary 10%"]["verdict"].startswith("waiting for latency: no p99")
    world.metrics.p99["2"] = 0.200  # measured now: 200 ms against the champion's 10 ms
    world.clock.advance(seconds=5)
    result = world.rollout.step()
    assert result.state == ROLLED_BACK and "p99 latency 200.0 ms" in result.message
    assert world.server.weights == [0.1, 0.0] and world.champion() == "1"


def test_latency_that_is_never_measured_rolls_back_at_the_timeout(world) -> None:
    into_canary(world)
    world.metrics.p99["2"] = None
    world.canary_traffic(400, 0.1)
    world.clock.advance(minutes=31)
    result = world.rollout.step()
    assert result.state == ROLLED_BACK
    assert "latency could not be judged (no p99 for the candidate yet" in result.message


def test_a_candidate_that_misses_the_stress_test_never_takes_traffic(world) -> None:
    world.stress.passes = False
    through_shadow(world)
    result = world.rollout.step()
    assert result.state == ROLLED_BACK and "stress test: p99 900.0 ms" in result.message
    assert world.stress.calls == ["2"] and world.server.weights == [0.0]
    recorded = json.loads(world.tags()["kubeloop.rollout.stress_result"])
    assert recorded["passed"] is False and recorded["p99_ms"] == 900.0
    assert lineage.build(world.client, world.name, "2")["stress_test"]["passed"] is False


def test_the_stress_result_of_a_promoted_version_is_frozen_in_its_lineage(world) -> None:
    through_shadow(world)
    world.rollout.approve()
    while (result := world.rollout.step()).state != PROMOTED:
        assert result.state not in (ROLLED_BACK, AWAITING), result.message
        if result.state == CANARY:
            world.canary_traffic(200, world.server.weights[-1])
            world.clock.advance(seconds=61)
    frozen = json.loads(world.tags()[lineage.LINEAGE_TAG])
    assert frozen["stress_test"]["passed"] is True and frozen["stress_test"]["target_rps"] == 20
    rows = {r["step"]: r for r in step_rows(world.rollout.status("2"), "rmse")}
    assert list(rows) == ["shadow", "stress test", "canary 10%", "canary 50%", "canary 100%"]
    assert rows["shadow"]["candidate"].startswith("60 requests both answered")
    assert rows["shadow"]["quality"].startswith("60 requests, rmse candidate")
    assert "rmse" in rows["shadow"]["verdict"] and "prediction log" in rows["shadow"]["source"]
    # the limit compared: the champion's 10 ms p99, 50% more, plus 5 ms
    assert rows["canary 10%"]["candidate"] == "20 requests, 0 errors, p99 11.0 ms (limit 20 ms)"
    assert rows["canary 10%"]["champion"].endswith("(this step)")
    assert rows["canary 100%"]["champion"].endswith("(canary 50% step)")
    assert "before the canary began" in rows["canary 100%"]["source"]
    assert rows["canary 100%"]["quality"].startswith("200 requests, rmse candidate")
    assert rows["stress test"]["verdict"] == "passed"


def test_late_labels_are_waited_for_and_the_wait_is_reported(world) -> None:
    into_canary(world)
    ids = world.canary_traffic(400, 0.1, label=False)  # 40 candidate rows, no labels yet
    actual = world.last_actual
    world.clock.advance(seconds=61)
    waiting = world.rollout.step()
    assert waiting.state == CANARY and "waiting for labels" in waiting.message
    assert "0/20 labelled candidate rows" in waiting.message
    assert world.server.weights == [0.1]  # not skipped: the step does not move on
    log_feedback(world.engine, ids, actual.tolist(), world.clock.now)
    world.clock.advance(seconds=5)
    assert world.rollout.step().state == CANARY and world.server.weights == [0.1, 0.5]


def test_labels_that_never_come_roll_back_at_the_timeout(world) -> None:
    into_canary(world)
    world.canary_traffic(400, 0.1, label=False)
    world.clock.advance(minutes=31)
    result = world.rollout.step()
    assert result.state == ROLLED_BACK and "quality could not be judged" in result.message


def test_the_full_step_compares_with_the_champion_before_the_canary_began(world) -> None:
    into_canary(world)
    for weight in (0.1, 0.5):
        world.canary_traffic(200, weight)
        world.clock.advance(seconds=61)
        assert world.rollout.step().state == CANARY
    world.canary_traffic(200, 1.0, candidate_noise=25.0)  # the champion answers nothing
    world.clock.advance(seconds=61)
    result = world.rollout.step()
    assert result.state == ROLLED_BACK and "rmse" in result.message
    quality = json.loads(world.tags()["kubeloop.rollout.canary_100_result"])["quality"]
    assert quality["champion_labelled"] == 60  # the shadow period's champion rows
    assert "before the canary began" in quality["source"]
    analysis = json.loads(world.tags()["kubeloop.rollout.canary_100_result"])["analysis"]
    assert analysis["champion_from"] == "canary 50% step"


def test_the_full_step_judges_latency_against_an_earlier_step_not_a_few_stragglers(
    world,
) -> None:
    """At 100% a few requests still reach the champion (replicas take the new weight at
    different moments). Their p99 is no baseline: on a busy machine 2 fast stragglers made a
    healthy candidate's p99 "45 ms against the champion's 7.5 ms" (CI). The champion's
    figures then come from the last step in which it answered enough requests."""
    into_canary(world)
    world.metrics.p99.update({"1": 0.030, "2": 0.040})  # a busy machine: both slow alike
    for weight in (0.1, 0.5):
        world.canary_traffic(200, weight)
        world.clock.advance(seconds=61)
        assert world.rollout.step().state == CANARY
    world.metrics.p99["1"] = 0.007  # the stragglers were fast
    world.canary_traffic(200, 0.99)  # 2 requests still went to the champion
    world.clock.advance(seconds=61)
    result = world.rollout.step()
    assert result.state == PROMOTED, result.message
    analysis = json.loads(world.tags()["kubeloop.rollout.canary_100_result"])["analysis"]
    assert analysis["champion_from"] == "canary 50% step"
    assert analysis["champion"]["requests"] == 100 and analysis["latency"] is None


def rendered_rollout_env(values_file: str) -> dict[str, str]:
    """The plain environment the chart gives the rollout CronJob for an environment's values."""
    from tests.k8s import chart

    objects = chart.render_scenario(chart.CHART / values_file)
    (cron,) = [
        o for o in chart.kinds(objects, "CronJob") if o["metadata"]["name"].endswith("-rollout")
    ]
    container = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


PRODUCTION = "building-energy-production"


def test_staging_and_production_each_run_their_half_with_the_settings_they_render(
    settings, tmp_path, monkeypatch
) -> None:
    from monitoring.settings import MonitoringSettings

    halves = {}
    for values_file in ("values-staging.yaml", "values-prod.yaml"):
        env = rendered_rollout_env(values_file)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        halves[values_file] = MonitoringSettings()
        assert halves[values_file].prometheus_url  # Prometheus sums every pod there
    assert halves["values-staging.yaml"].rollout_phase == "staging"
    assert halves["values-prod.yaml"].rollout_phase == "production"

    rollout_spec = RolloutSpec(
        shadow_min_requests=50, steps=STEPS, timeout_minutes=30, production_model=PRODUCTION
    )
    world = World(settings, tmp_path, rollout_spec)
    registry.release(world.client, world.name, "1", PRODUCTION, state_tags={})
    registry.promote(world.client, PRODUCTION, "1", approve=True)  # production's champion

    def half(values_file: str) -> Rollout:
        rendered = halves[values_file]
        return world.in_phase(rendered.env, rendered.rollout_phase, stress=True)

    staging, production = half("values-staging.yaml"), half("values-prod.yaml")
    with pytest.raises(RolloutError, match="released to production only once shadow"):
        staging.approve()
    assert staging.step().state == SHADOW
    world.shadow_traffic(60)
    world.clock.advance(seconds=5)
    assert staging.step().state == AWAITING and world.stress.calls == ["2"]
    assert world.server.weights == []  # staging never sends canary traffic
    released = staging.approve()
    assert released["state"] == "released" and released["released_as"] == f"{PRODUCTION}/2"
    assert staging.step().state == "released"

    copy = world.client.get_model_version(PRODUCTION, "2")
    assert copy.tags[registry.TAG_NAME] == "V1.0.1"  # the very same version moves
    assert copy.tags[registry.TAG_APPROVED_BY] == getpass.getuser()
    assert "kubeloop.rollout.stress_result" in copy.tags  # its staging record travels with it
    assert production.step().state == CANARY and world.server.weights == [0.1]
    assert production.status()["model"] == PRODUCTION


def test_staging_shadows_the_next_candidate_against_productions_champion(
    settings, tmp_path
) -> None:
    rollout_spec = RolloutSpec(steps=STEPS, production_model=PRODUCTION)
    world = World(settings, tmp_path, rollout_spec)
    registry.release(world.client, world.name, "1", PRODUCTION, state_tags={})
    registry.promote(world.client, PRODUCTION, "1", approve=True)
    released = registry.release(world.client, world.name, "2", PRODUCTION, state_tags={})
    world.client.set_model_version_tag(world.name, "2", "kubeloop.rollout.state", "released")

    def half(phase: str) -> Rollout:
        return world.in_phase("staging", phase)

    staging = half("staging")
    assert staging.step().state == "released" and world.champion() == "1"  # canary pending
    registry.promote(world.client, PRODUCTION, str(released.version), approve=True)
    half("production").step()  # production's controller never moves staging's aliases
    assert world.champion() == "1"

    # the next retraining's candidate: staging's first step makes V1.0.1 its champion
    world.client.create_model_version(
        world.name, source=str(tmp_path / "model-2"), tags={registry.TAG_NAME: "V1.0.2"}
    )
    world.client.set_registered_model_alias(world.name, registry.CHALLENGER, "3")
    world.server.candidate_version = "3"
    assert staging.step().state == SHADOW
    assert world.champion() == "2" and world.server.reloads == 1
    assert staging.status()["version"] == "3"


def test_production_promotes_with_the_approval_the_release_recorded(settings, tmp_path) -> None:
    """The approver of record on production's champion is the authenticated one the release
    recorded, not ``auto``; staging's champion then follows with that approval."""
    world = World(settings, tmp_path, RolloutSpec(steps=STEPS, production_model=PRODUCTION))
    registry.release(world.client, world.name, "1", PRODUCTION, state_tags={})
    registry.promote(world.client, PRODUCTION, "1", approve=True)
    staging = world.in_phase("staging", "staging")
    world.client.set_model_version_tag(world.name, "2", "kubeloop.rollout.state", AWAITING)
    assert staging.approve("2")["released_as"] == f"{PRODUCTION}/2"
    production = world.in_phase("prod", "production")
    world.name = PRODUCTION  # production's server logs under the production model
    world.canary_traffic(200, 0.0)  # the champion's rows before the canary
    world.clock.advance(seconds=5)
    assert production.step().state == CANARY
    for weight in (0.1, 0.5, 1.0):
        world.canary_traffic(200, weight)
        world.clock.advance(seconds=61)
        result = production.step()
    assert result.state == PROMOTED, result.message
    champion = world.client.get_model_version_by_alias(PRODUCTION, registry.CHAMPION)
    assert champion.tags[registry.TAG_APPROVED_BY] == getpass.getuser()
    staging.step("2")
    followed = world.client.get_model_version_by_alias(world.spec.model_name, registry.CHAMPION)
    assert str(followed.version) == "2"
    assert followed.tags[registry.TAG_APPROVED_BY] == getpass.getuser()


def test_production_refuses_a_version_nobody_released(settings, tmp_path) -> None:
    rollout_spec = RolloutSpec(steps=STEPS, production_model=PRODUCTION)
    world = World(settings, tmp_path, rollout_spec)
    world.client.create_registered_model(PRODUCTION)
    for _ in range(2):
        world.client.create_model_version(PRODUCTION, source=str(tmp_path / "m"))
    registry.promote(world.client, PRODUCTION, "1", approve=True)
    world.client.set_registered_model_alias(PRODUCTION, registry.CHALLENGER, "2")
    production = world.in_phase("prod", "production")
    with pytest.raises(RolloutError, match="was not released from staging"):
        production.step()
    assert world.server.weights == []


def test_the_production_cli_looks_for_the_production_models_challenger(
    settings, tmp_path, monkeypatch
) -> None:
    """`kubeloop rollout run` in production: staging's challenger is not production's."""
    from typer.testing import CliRunner

    from kubeloop.cli.main import app
    from tests.utils.factories import REPO

    world = World(settings, tmp_path, RolloutSpec(steps=STEPS, production_model=PRODUCTION))
    registry.release(world.client, world.name, "1", PRODUCTION, state_tags={})
    registry.promote(world.client, PRODUCTION, "1", approve=True)  # production: no challenger
    monkeypatch.setenv("KUBELOOP_ROLLOUT_PHASE", "production")
    spec_file = REPO / "examples" / "building_energy" / "spec.yaml"  # names PRODUCTION
    result = CliRunner().invoke(app, ["rollout", "run", "--spec", str(spec_file)])
    assert result.exit_code == 0, result.output
    assert f"{PRODUCTION} has no challenger besides the champion" in result.output
    assert world.server.weights == []


def test_on_call_rolls_production_back_with_the_same_commands(
    settings, tmp_path, monkeypatch
) -> None:
    """The runbooks' rollback, `kubeloop promote <previous> --approve`, in production
    (KUBELOOP_SERVED_MODEL=production) moves the production model's champion, not staging's."""
    from typer.testing import CliRunner

    from kubeloop.cli.main import app
    from tests.utils.factories import REPO

    world = World(settings, tmp_path, RolloutSpec(steps=STEPS, production_model=PRODUCTION))
    for version in ("1", "2"):
        registry.release(world.client, world.name, version, PRODUCTION, state_tags={})
    registry.promote(world.client, PRODUCTION, "2", approve=True)
    registry.promote(world.client, world.name, "2", approve=True)
    monkeypatch.setenv("KUBELOOP_SERVED_MODEL", "production")
    spec_file = str(REPO / "examples" / "building_energy" / "spec.yaml")  # names PRODUCTION

    result = CliRunner().invoke(app, ["promote", "1", "--approve", "--spec", spec_file])

    assert result.exit_code == 0, result.output
    assert f"{PRODUCTION} champion" in result.output
    champion = world.client.get_model_version_by_alias(PRODUCTION, registry.CHAMPION)
    assert str(champion.version) == "1"
    staging = world.client.get_model_version_by_alias(world.name, registry.CHAMPION)
    assert str(staging.version) == "2"
    listed = CliRunner().invoke(app, ["versions", "--spec", spec_file])
    assert listed.exit_code == 0 and PRODUCTION in listed.output, listed.output
    # The lineage reads as after a rollout: deployed, the old champion retired, by V-name too
    shown = lineage.show(world.client, PRODUCTION, "V1.0.0")
    assert shown["deployed"] and shown["aliases"] == ["champion"]
    assert shown["registry"]["approved_by"] == getpass.getuser()
    assert "kubeloop.retired_at" in world.client.get_model_version(PRODUCTION, "2").tags
    assert "was V1.0.1" in " ".join(result.output.split())


def test_a_classifiers_shadow_step_says_how_often_the_classes_differed():
    status = {"shadow_result": json.dumps({"pairs": 94, "mean_abs_diff": 0.0213})}
    [classifier] = step_rows(status, "f1", "classification")
    assert classifier["candidate"] == "94 requests both answered, 2.1% answered with another class"
    [regressor] = step_rows(status, "rmse")
    assert regressor["candidate"] == "94 requests both answered, mean |difference| 0.0213"


def test_the_shadow_verdict_says_better_or_worse_in_words():
    assert relative_to_champion(0.125) == "12.5% worse than the champion"
    assert relative_to_champion(-0.646) == "64.6% better than the champion"
    assert relative_to_champion(-0.00001) == "as good as the champion"  # not "-0.0%"


def test_the_rollout_phase_follows_the_served_model_unless_set(monkeypatch) -> None:
    """On-call in production sets KUBELOOP_SERVED_MODEL=production for `versions` and
    `promote`; `rollout status` and `rollback` then showed staging's rollout."""
    from monitoring.settings import MonitoringSettings

    monkeypatch.delenv("KUBELOOP_ROLLOUT_PHASE", raising=False)
    monkeypatch.setenv("KUBELOOP_SERVED_MODEL", "production")
    assert MonitoringSettings().rollout_phase == "production"
    monkeypatch.setenv("KUBELOOP_ROLLOUT_PHASE", "staging")
    assert MonitoringSettings().rollout_phase == "staging"
    monkeypatch.delenv("KUBELOOP_SERVED_MODEL")
    monkeypatch.delenv("KUBELOOP_ROLLOUT_PHASE")
    assert MonitoringSettings().rollout_phase == "all"
