"""One monitoring run: window -> Evidently -> report and metrics -> decision -> launch.

``run_monitor`` is what ``kubeloop monitor`` and the CronJob run. It reads the predictions of
the champion of the model its environment serves (``KUBELOOP_SERVED_MODEL``: the project's
model, or in production ``rollout.production_model``) of the last ``monitoring.window_hours``
with their feedback, compares them with the champion's reference sample, writes the HTML
report (also logged to the champion's MLflow run) and a JSON summary, exports the figures as
Prometheus metrics labelled with that model, and, when a threshold is crossed, claims the
launch slot (cooldown, one run at a time) and launches retraining.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from kubeloop import model_store
from kubeloop.spec import MonitoringSpec, ProjectSpec
from monitoring import exporter, report, state
from monitoring.decide import NOT_JUDGED, Verdict, decide
from monitoring.drift import Analysis, analyze
from monitoring.errors import LaunchError, SupersededWhileStarting
from monitoring.launch import Launched, Launcher, make_launcher
from monitoring.lineage import tag_supersedes
from monitoring.reference import Baseline, describe, load_baseline, reference_text
from monitoring.settings import MonitoringSettings
from monitoring.window import count_labelled_since, open_log, read_window

log = logging.getLogger(__name__)


@dataclass
class MonitorOutcome:
    """What a monitoring run found and did."""

    model_name: str
    version: str  # registry number of the monitored champion
    label: str  # its V-name
    start: datetime
    end: datetime
    rows: int
    labelled_rows: int
    new_labels: int
    analysis: Analysis
    verdict: Verdict
    report: Path
    summary: Path
    metrics_target: str
    reference: dict[str, Any]  # reference.describe: what the window was compared with
    duration_seconds: float = 0.0
    claim: state.Claim | None = None
    launched: Launched | None = None
    launch_error: str | None = None
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage

    def to_dict(self) -> dict[str, Any]:
        drift = self.analysis.drift
        quality = self.analysis.quality
        return {
            "model": self.model_name,
            "version": self.version,
            "label": self.label,
            "window": {"start": self.start.isoformat(), "end": self.end.isoformat()},
            "reference": self.reference,
            "rows": self.rows,
            "compared_rows": self.analysis.compared_rows,
            "labelled_rows": self.labelled_rows,
            "new_labelled_rows": self.new_labels,
            "drift": {
                "share": drift.share,
                "drifted": drift.drifted,
                "features": {
                    c.column: {
                        "score": c.score,
                        "method": c.method,
                        "threshold": c.threshold,
                        "drifted": c.drifted,
                    }
                    for c in drift.features
                },
                "prediction": None
                if drift.prediction is None
                else {
                    "score": drift.prediction.score,
                    "method": drift.prediction.method,
                    "drifted": drift.prediction.drifted,
                },
            },
            "quality": {
                "live": quality.current,
                "baseline": quality.baseline,
                "primary": quality.primary,
                "loss": quality.loss,
            },
            "decision": {
                "retrain": self.verdict.retrain,
                "reason": self.verdict.reason,
                "notes": self.verdict.notes,
            },
            "claim": None
            if self.claim is None
            else {"granted": self.claim.granted, "why": self.claim.why},
            "launched": None
            if self.launched is None
            else {
                "run_id": self.launched.run_id,
                "finished": self.launched.finished,
                "succeeded": self.launched.succeeded,
                "version": self.launched.version,
                "detail": self.launched.detail,
            },
            "launch_error": self.launch_error,
            "report": str(self.report),
            "metrics": self.metrics_target,
            "duration_seconds": self.duration_seconds,
            "timings": self.timings,
        }


def samples(
    outcome: MonitorOutcome, baseline: Baseline, spec: ProjectSpec, last_launch: datetime | None
) -> list[exporter.Sample]:
    """The run's figures as Prometheus samples (names in ``exporter.METRIC_NAMES``)."""
    S = exporter.Sample
    drift, quality = outcome.analysis.drift, outcome.analysis.quality
    kinds = {t.kind for t in outcome.verdict.triggers}
    out = [
        S("kubeloop_monitor_last_run_timestamp_seconds", time.time()),
        S("kubeloop_monitor_duration_seconds", outcome.duration_seconds),
        S("kubeloop_monitor_window_rows", outcome.rows),
        S("kubeloop_monitor_labelled_rows", outcome.labelled_rows),
        S("kubeloop_drift_share", drift.share),
        S("kubeloop_drift_share_threshold", spec.monitoring.drift_share),
        S("kubeloop_quality_loss_threshold", spec.monitoring.quality_loss),
        # the verdict's: a window too small to judge (min_rows) is measured, never detected
        S("kubeloop_drift_detected", float("drift" in kinds)),
        S("kubeloop_drifted_features", len(drift.drifted)),
        S("kubeloop_new_labelled_rows", outcome.new_labels),
        S("kubeloop_model_trained_timestamp_seconds", baseline.trained_at.timestamp()),
        S("kubeloop_retrain_launched", float(bool(outcome.launched))),
    ]
    for column in drift.features:
        out.append(
            S(
                "kubeloop_feature_drift_score",
                column.score,
                {"feature": column.column, "method": column.method},
            )
        )
        out.append(S("kubeloop_feature_drifted", float(column.drifted), {"feature": column.column}))
    if drift.prediction is not None:
        out.append(
            S(
                "kubeloop_prediction_drift_score",
                drift.prediction.score,
                {"method": drift.prediction.method},
            )
        )
        out.append(S("kubeloop_prediction_drifted", float(drift.prediction.drifted)))
    for dataset, figures in (("live", quality.current), ("baseline", quality.baseline)):
        for metric, value in figures.items():
            if metric in exporter.QUALITY_METRICS:
                out.append(S(f"kubeloop_model_{metric}", value, {"dataset": dataset}))
        if quality.primary in figures:
            labels = {"dataset": dataset, "metric": quality.primary}
            out.append(S("kubeloop_model_primary_metric", figures[quality.primary], labels))
    if quality.loss is not None:
        out.append(S("kubeloop_quality_loss_ratio", quality.loss, {"metric": quality.primary}))
    for kind in ("drift", "quality", "new_labels"):
        out.append(S("kubeloop_retrain_triggered", float(kind in kinds), {"reason": kind}))
    if last_launch is not None:
        out.append(S("kubeloop_retrain_last_launch_timestamp_seconds", last_launch.timestamp()))
    return out


def registry_samples(client, model_name: str) -> list[exporter.Sample]:
    """The registry's side of the loop as samples: the versions behind ``champion`` and
    ``challenger`` and since when, and when the newest version was registered. Empty (with a
    warning) when the registry cannot be read: these figures never fail a monitoring run."""
    from kubeloop import registry

    S = exporter.Sample
    out: list[exporter.Sample] = []
    try:
        versions = registry.all_versions(client, model_name)
        champion = None
        for alias in (registry.CHAMPION, registry.CHALLENGER):
            version = registry.by_alias(client, model_name, alias)
            if version is None:
                continue
            if alias == registry.CHAMPION:
                champion = str(version.version)
            elif str(version.version) == champion:
                continue  # promoted: the alias stays on the champion, which is no challenger
            tags = dict(version.tags or {})
            out.append(
                S(
                    "kubeloop_registry_alias_info",
                    1.0,
                    {
                        "alias": alias,
                        "model_version": str(version.version),
                        "model_label": tags.get(registry.TAG_NAME, ""),
                    },
                )
            )
            since = tags.get(f"kubeloop.{alias}_since")
            stamp = (
                datetime.fromisoformat(since).timestamp()
                if since
                else version.creation_timestamp / 1000
            )
            out.append(
                S("kubeloop_registry_alias_since_timestamp_seconds", stamp, {"alias": alias})
            )
        if versions:
            newest = max(v.creation_timestamp for v in versions) / 1000
            out.append(S("kubeloop_registry_latest_version_timestamp_seconds", newest))
    except Exception as exc:  # noqa: BLE001 - lineage figures, never worth failing the run
        log.warning("registry figures not exported: %s", exc)
        return []
    return out


def log_samples(engine) -> list[exporter.Sample]:
    """The prediction log's day partitions as samples (PostgreSQL): how many days from today
    have their partition, and the rows that went to the default partition instead. Empty on a
    log without partitions, and (with a warning) when it cannot be read: these figures never
    fail a monitoring run."""
    from kubeloop import log_partitions

    try:
        found = log_partitions.coverage(engine)
    except Exception as exc:  # noqa: BLE001 - log figures, never worth failing the run
        log.warning("prediction log figures not exported: %s", exc)
        return []
    if found is None:
        return []
    S = exporter.Sample
    return [
        S("kubeloop_prediction_log_partition_days_ahead", found.days_ahead),
        S("kubeloop_prediction_log_default_partition_rows", found.default_rows),
    ]


def _write_report(outcome: MonitorOutcome, folder: Path, spec: MonitoringSpec) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    summary = _summary(outcome, spec)
    outcome.report.write_text(report.with_summary(outcome.analysis.html(), summary))
    latest = folder / "latest.html"
    latest.write_text(outcome.report.read_text())


def _summary(outcome: MonitorOutcome, spec: MonitoringSpec) -> str:
    """What this run compared and decided, against which thresholds, for the top of its HTML
    report."""
    drift, quality, verdict = outcome.analysis.drift, outcome.analysis.quality, outcome.verdict
    metric = quality.primary
    live, baseline = quality.current.get(metric), quality.baseline.get(metric)
    if quality.loss is None:
        loss = ""
    else:
        loss = f", {abs(quality.loss):.0%} {'worse' if quality.loss >= 0 else 'better'}"
    prediction = drift.prediction
    facts: list[tuple[str, object]] = [
        ("model", f"{outcome.model_name} {outcome.label} (registry version {outcome.version})"),
        ("compared", "the champion's recent predictions with its training reference"),
        ("reference", reference_text(outcome.reference)),
        ("window", f"{outcome.start:%Y-%m-%d %H:%M} to {outcome.end:%Y-%m-%d %H:%M} UTC"),
        ("predictions in the window", outcome.rows),
        ("of them labelled", outcome.labelled_rows),
        (
            "features drifted",
            f"{len(drift.drifted)} of {len(drift.features)} ({drift.share:.0%}; retrains at "
            f"{spec.drift_share:.0%})" + ("" if verdict.drift_judged else NOT_JUDGED),
        ),
        ("drifted features", ", ".join(drift.drifted) or "none"),
        (
            "predictions drifted",
            "-"
            if prediction is None
            else f"{'yes' if prediction.drifted else 'no'} ({prediction.method} "
            f"{prediction.score:.3g})",
        ),
        (
            f"{metric} live / baseline",
            f"{_number(live)} / {_number(baseline)}{loss} (retrains at "
            f"{spec.quality_loss:.0%} worse)" + ("" if verdict.quality_judged else NOT_JUDGED),
        ),
    ]
    if verdict.retrain:
        tone, title = "fail", "Retraining needed"
        reasons = [t.detail for t in verdict.triggers] + list(verdict.notes)
    elif not (verdict.drift_judged and verdict.quality_judged):
        tone, title = "warn", "No retraining needed so far: not everything could be judged"
        reasons = list(verdict.notes)
    else:
        tone, title = "ok", "No retraining needed"
        reasons = ["no drift or quality threshold of the spec was crossed", *verdict.notes]
    return report.summary_html(
        f"Monitoring {outcome.model_name} {outcome.label}", title, tone, reasons, facts
    )


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _log_to_mlflow(client, run_id: str, outcome: MonitorOutcome, stamp: str) -> None:
    try:
        client.log_artifact(run_id, str(outcome.report), artifact_path=f"monitoring/{stamp}")
        client.log_artifact(run_id, str(outcome.summary), artifact_path=f"monitoring/{stamp}")
    except Exception as exc:  # noqa: BLE001 - the report is on disk; MLflow is a copy
        log.warning("could not log the report to MLflow run %s: %s", run_id, exc)
        outcome.notes.append(f"report not logged to MLflow: {exc}")


def _refresh_running(engine, launcher: Launcher, model_name: str, now: datetime) -> None:
    """Free the slot of a cluster run that ended since the last monitoring run."""
    record = state.read(engine, model_name)
    if record is None or record.status != state.RUNNING or not record.run_id:
        return
    seen = launcher.status(record.run_id, model_name)
    if seen is not None and seen.version:
        client = model_store.configure(launcher.settings)
        tag_supersedes(client, engine, model_name, seen.version, record.run_id)
    if seen is not None and seen.finished:
        state.finish(
            engine,
            model_name,
            now=now,
            outcome=seen.detail,
            failed=not seen.succeeded,
            run_id=record.run_id,
        )


def _tag_retrained(client, spec: ProjectSpec, label: str, reason: str) -> None:
    """Say on the new version why it was trained (read by ``kubeloop lineage``)."""
    from kubeloop import registry
    from monitoring.lineage import RETRAIN_REASON_TAG

    try:
        version = registry.find_version(client, spec.model_name, label)
        client.set_model_version_tag(
            spec.model_name, version.version, RETRAIN_REASON_TAG, reason[:4000]
        )
    except Exception as exc:  # noqa: BLE001 - lineage detail, never worth failing the run
        log.warning("could not tag %s with its retraining reason: %s", label, exc)


def launch_superseding(
    engine,
    launcher: Launcher,
    spec: ProjectSpec,
    claim: state.Claim,
    *,
    reason: str,
    source: str | None,
) -> Launched:
    """Start the run a granted claim allows: terminate the run it supersedes first (a person
    never stops a run; a newer trigger does), record the new run's handle as soon as it exists,
    and which run it superseded. A launch that fails frees its slot with its error and raises
    on; a slot a newer trigger took meanwhile is the newer run's and stays taken. Every trigger
    (monitoring, manual, schedule, new data, merge) launches through here."""
    old = claim.superseded
    if old is not None and old.run_id:
        log.info("superseding: %s", launcher.terminate(old.run_id))
    assert claim.record is not None and claim.record.launched_at is not None
    launched_at = claim.record.launched_at

    def on_start(run_id: str) -> None:
        if not state.started(engine, spec.model_name, run_id, launched_at=launched_at):
            # A newer trigger superseded this run before its handle existed, so the newer one
            # could not terminate it: it stops itself rather than run beside the newer one.
            stopped = launcher.terminate(run_id)
            raise SupersededWhileStarting(
                f"a newer trigger took the launch slot while {run_id} was starting; "
                f"it does not run beside the newer one ({stopped})"
            )
        if old is not None:
            state.superseded(
                engine,
                spec.model_name,
                old_run=old.run_id or "(starting)",
                new_run=run_id,
                now=state.utcnow(),
            )

    try:
        return launcher.launch(spec, reason=reason, source=source, on_start=on_start)
    except Exception as exc:  # a run superseded while starting included: its slot is gone
        state.finish(
            engine,
            spec.model_name,
            now=state.utcnow(),
            outcome=f"failed: {exc}",
            failed=True,
            launched_at=launched_at,
        )
        raise


def settle_launch(
    engine, client_for: Callable[[], Any], spec: ProjectSpec, launched: Launched, reason: str
) -> None:
    """After a launch: the version a run registered says why it was trained and names the run
    it superseded (lineage), and a run that has already ended (a local one) frees the slot
    with its outcome."""
    if launched.version:
        client = client_for()
        _tag_retrained(client, spec, launched.version, reason)
        tag_supersedes(client, engine, spec.model_name, launched.version, launched.run_id)
    if launched.finished:
        state.finish(
            engine,
            spec.model_name,
            now=state.utcnow(),
            outcome=launched.detail,
            failed=not launched.succeeded,
            run_id=launched.run_id,
        )


def _launch(
    client,
    engine,
    launcher: Launcher,
    spec: ProjectSpec,
    settings: MonitoringSettings,
    outcome: MonitorOutcome,
    now: datetime,
) -> None:
    _refresh_running(engine, launcher, spec.model_name, now)
    outcome.claim = state.claim(
        engine,
        spec.model_name,
        now=now,
        cooldown=timedelta(minutes=spec.monitoring.cooldown_minutes),
        run_timeout=timedelta(hours=settings.run_timeout_hours),
        launcher=launcher.name,
        reason=outcome.verdict.reason,
    )
    if not outcome.claim.granted:
        log.info("retraining not launched: %s", outcome.claim.why)
        return
    try:
        launched = launch_superseding(
            engine,
            launcher,
            spec,
            outcome.claim,
            reason=outcome.verdict.reason,
            source=settings.retrain_source,
        )
    except LaunchError as exc:  # the slot is freed (or the newer run's): say why
        outcome.launch_error = exc.message
        return
    outcome.launched = launched
    settle_launch(engine, lambda: client, spec, launched, outcome.verdict.reason)


def run_monitor(
    spec: ProjectSpec,
    settings: MonitoringSettings,
    *,
    now: datetime | None = None,
    launch: bool = True,
    client=None,
    engine=None,
    launcher: Launcher | None = None,
) -> MonitorOutcome:
    """Monitor the champion of ``spec`` over the window ending ``now``.

    Args:
        spec: The project spec (model name, features, monitoring thresholds).
        settings: Where the log, MLflow, reports and metrics are; how to launch.
        now: End of the window (default: the current time, UTC).
        launch: False: decide and record, but never launch (a dry run).
        client: An MLflow client (default: configured from settings).
        engine: A SQLAlchemy engine on the prediction log (default: from settings).
        launcher: The retraining launcher (default: from settings).

    Returns:
        The figures, the decision, what was launched and where the report and metrics went.
    """
    started = time.perf_counter()
    timings: dict[str, float] = {}
    mark = started

    def lap(name: str) -> None:
        nonlocal mark
        timings[name] = time.perf_counter() - mark
        mark = time.perf_counter()

    now = now or state.utcnow()
    client = client or model_store.configure(settings)
    engine = engine or open_log(settings.log_url)
    state.create_all(engine)
    # The model this environment serves (the server's KUBELOOP_SERVED_MODEL): production's
    # predictions are logged under rollout.production_model. Retraining, whatever its trigger,
    # registers into the project's model, whose launch slot this run claims.
    served = settings.model_name(spec)
    baseline = load_baseline(client, spec, served)
    lap("baseline")
    start = now - timedelta(hours=spec.monitoring.window_hours)
    window = read_window(
        engine,
        served,
        baseline.features,
        start,
        now,
        model_version=baseline.version,
        sample_rows=settings.drift_sample_rows,
        task=spec.task,
    )
    lap("read_window")
    log.info(
        "%s %s: %d predictions in the window, %d labelled",
        served,
        baseline.label,
        window.rows,
        len(window.labelled),
    )
    analysis = analyze(
        baseline.reference,
        window.frame,
        baseline.features,
        baseline.target,
        task=spec.task,
        spec=spec.monitoring,
        primary_metric=spec.evaluation.primary_metric,
        baseline_metrics=baseline.metrics,
        sample_rows=settings.drift_sample_rows,
        labelled=window.labelled,
        probabilities=window.probabilities,
    )
    lap("evidently")
    record = state.read(engine, spec.model_name)
    last_launch = record.launched_at if record else None
    since = max(t for t in (baseline.trained_at, last_launch) if t is not None)
    new_labels = count_labelled_since(engine, served, since)
    verdict = decide(
        spec.monitoring,
        window_rows=window.rows,
        drift_share=analysis.drift.share,
        drifted=analysis.drift.drifted,
        labelled_rows=analysis.quality.rows,
        quality_loss=analysis.quality.loss,
        primary_metric=spec.evaluation.primary_metric,
        new_labels=new_labels,
    )
    stamp = now.strftime("%Y%m%d-%H%M%S")
    folder = settings.reports_path / served
    outcome = MonitorOutcome(
        model_name=served,
        version=baseline.version,
        label=baseline.label,
        start=start,
        end=now,
        rows=window.rows,
        labelled_rows=analysis.quality.rows,
        new_labels=new_labels,
        analysis=analysis,
        verdict=verdict,
        report=folder / f"monitor-{stamp}.html",
        summary=folder / f"monitor-{stamp}.json",
        metrics_target="",
        timings=timings,
        reference=describe(baseline, spec.timestamp),
    )
    lap("decide")
    _write_report(outcome, folder, spec.monitoring)
    lap("report")

    def publish() -> None:
        outcome.duration_seconds = time.perf_counter() - started
        current = state.read(engine, spec.model_name)
        registry = exporter.build_registry(
            served,
            baseline.label,
            samples(outcome, baseline, spec, current.launched_at if current else None)
            + registry_samples(client, served)
            + log_samples(engine),
        )
        outcome.metrics_target = exporter.publish(
            registry,
            served,
            pushgateway_url=settings.pushgateway_url,
            job=settings.pushgateway_job,
            folder=settings.metrics_path,
        )
        outcome.summary.write_text(json.dumps(outcome.to_dict(), indent=2, default=str))

    publish()  # the figures are visible while a retraining runs
    lap("publish")
    log.info(
        "drift share %.0f%% (%s); %s",
        100 * analysis.drift.share,
        ", ".join(analysis.drift.drifted) or "none",
        verdict.reason or "no retraining needed",
    )
    launcher = launcher if launcher is not None else make_launcher(settings)
    if verdict.retrain and launch and launcher is not None:
        _launch(client, engine, launcher, spec, settings, outcome, now)
        lap("launch")
        publish()
    _log_to_mlflow(client, baseline.run_id, outcome, stamp)
    lap("mlflow")
    outcome.duration_seconds = time.perf_counter() - started
    return outcome
