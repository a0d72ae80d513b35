"""The rollout controller as the settings describe it: registry, server, metrics, stress gate.

``kubeloop rollout ...`` and the rollout CronJob build their ``Rollout`` here, so the source of
the canary figures (Prometheus when ``KUBELOOP_PROMETHEUS_URL`` is set, else every replica's
``/metrics``) and the stress gate's target are chosen in one place.
"""

from __future__ import annotations

from datetime import datetime
from functools import partial

from kubeloop.spec import ProjectSpec
from monitoring.canary import MetricsSource, PrometheusSource, ReplicaScrape
from monitoring.rollout import HttpServerAdmin, Rollout
from monitoring.settings import MonitoringSettings
from monitoring.stress import StressResult, stress_candidate
from monitoring.window import open_log


def metrics_source(settings: MonitoringSettings, spec: ProjectSpec) -> MetricsSource:
    if settings.prometheus_url:
        return PrometheusSource(settings.prometheus_url, spec.rollout.analysis)
    return ReplicaScrape(settings.replica_urls)


def build(settings: MonitoringSettings, spec: ProjectSpec) -> Rollout:
    from kubeloop import model_store

    engine = open_log(settings.log_url)

    def stress(version: str, now: datetime) -> StressResult:
        run = partial(stress_candidate, settings.server_url, settings.load_token, engine)
        return run(spec.model_name, version, spec.rollout.stress, now)

    return Rollout(
        model_store.configure(settings),
        spec,
        HttpServerAdmin(settings.server_url, settings.token),
        engine,
        env=settings.env,
        reports_dir=settings.reports_path,
        metrics=metrics_source(settings, spec),
        stress=stress,
        phase=settings.rollout_phase,
    )
