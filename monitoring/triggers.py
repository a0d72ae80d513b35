"""Every way a training run starts, through one launch slot per model.

The requirements name five triggers: manual (``kubeloop run training``), a schedule (the chart's
CronJob, ``kubeloop trigger schedule``), enough new rows at the data source (``kubeloop trigger
new-data``, threshold ``monitoring.new_source_rows`` in the spec, counted by
``pipelines.new_data``), monitoring (``kubeloop
monitor``) and a merge to main (the GitHub workflow, ``kubeloop trigger merge``). Each claims the
slot in ``monitoring.state``; a run in progress for the same model is terminated and the newer
one starts (``monitoring.job.launch_superseding``). Only monitoring keeps a cooldown: the others
are deliberate, so they always win.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

from kubeloop.spec import ProjectSpec
from monitoring import state
from monitoring.launch import Launched, Launcher
from monitoring.settings import MonitoringSettings

log = logging.getLogger(__name__)

Trigger = Literal["manual", "schedule", "new_data", "monitoring", "merge"]


@dataclass(frozen=True)
class Triggered:
    claim: state.Claim
    launched: Launched | None  # None when the claim was refused


def trigger_run(
    spec: ProjectSpec,
    settings: MonitoringSettings,
    launcher: Launcher,
    *,
    trigger: Trigger,
    reason: str,
    source: str | None = None,
    cooldown: timedelta = timedelta(0),
    engine=None,
) -> Triggered:
    """Claim the slot for ``trigger`` and start the run, superseding the one in progress."""
    from monitoring.job import launch_superseding, settle_launch
    from monitoring.window import open_log

    engine = engine or open_log(settings.log_url)
    now = state.utcnow()
    claim = state.claim(
        engine,
        spec.model_name,
        now=now,
        cooldown=cooldown,
        run_timeout=timedelta(hours=settings.run_timeout_hours),
        launcher=launcher.name,
        reason=f"{trigger}: {reason}",
        trigger=trigger,
    )
    if not claim.granted:
        return Triggered(claim, None)
    launched = launch_superseding(engine, launcher, spec, claim, reason=reason, source=source)
    from kubeloop import model_store

    settle_launch(
        engine, lambda: model_store.configure(settings), spec, launched, f"{trigger}: {reason}"
    )
    return Triggered(claim, launched)
