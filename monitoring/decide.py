"""The retraining decision: which thresholds of the spec a monitoring run crossed.

Any one trigger is enough: the share of drifted features, the loss of the primary metric against
the baseline, or the number of labelled rows that arrived since the champion was trained. A
window too small to judge (``min_rows``, ``min_labelled_rows``) never triggers: it is reported
with a note instead, so a quiet night does not retrain on noise. Whether a triggered run may
launch (cooldown, a run in progress) is ``monitoring.state``'s business.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from kubeloop.spec import MonitoringSpec

TriggerKind = Literal["drift", "quality", "new_labels"]


@dataclass(frozen=True)
class Trigger:
    kind: TriggerKind
    detail: str


# Beside a figure measured on a window too small to judge by, wherever it is shown.
NOT_JUDGED = " (measured, not judged)"


@dataclass(frozen=True)
class Verdict:
    triggers: list[Trigger] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # False when the window held too little to judge by (the notes say why): the figures were
    # measured, but a reader must not take them for a verdict.
    drift_judged: bool = True
    quality_judged: bool = True

    @property
    def retrain(self) -> bool:
        return bool(self.triggers)

    @property
    def reason(self) -> str:
        return "; ".join(t.detail for t in self.triggers)


def decide(
    spec: MonitoringSpec,
    *,
    window_rows: int,
    drift_share: float,
    drifted: list[str],
    labelled_rows: int,
    quality_loss: float | None,
    primary_metric: str,
    new_labels: int,
) -> Verdict:
    """Compare a run's figures with the spec's thresholds.

    Args:
        spec: The ``monitoring`` section of the project spec.
        window_rows: Predictions in the window.
        drift_share: Share of features that drifted.
        drifted: Names of the drifted features (for the reason text).
        labelled_rows: Predictions in the window with ground truth.
        quality_loss: Relative loss of the primary metric (None: not measurable).
        primary_metric: Its name (for the reason text).
        new_labels: Labelled rows since the champion was trained.

    Returns:
        The triggers crossed and notes on what could not be judged.
    """
    triggers: list[Trigger] = []
    notes: list[str] = []
    drift_judged = quality_judged = True
    if window_rows < spec.min_rows:
        drift_judged = False
        notes.append(f"drift not judged: {window_rows} rows in the window, {spec.min_rows} needed")
    elif drift_share >= spec.drift_share:
        triggers.append(
            Trigger(
                "drift",
                f"{drift_share:.0%} of features drifted ({', '.join(drifted)}), threshold "
                f"{spec.drift_share:.0%}",
            )
        )
    if labelled_rows < spec.min_labelled_rows:
        quality_judged = False
        notes.append(
            f"quality not judged: {labelled_rows} labelled rows, {spec.min_labelled_rows} needed"
        )
    elif quality_loss is None:
        quality_judged = False
        notes.append("quality not judged: no baseline figure to compare with")
    elif quality_loss >= spec.quality_loss:
        triggers.append(
            Trigger(
                "quality",
                f"{primary_metric} {quality_loss:.0%} worse than the baseline, threshold "
                f"{spec.quality_loss:.0%}",
            )
        )
    if spec.new_labels is not None and new_labels >= spec.new_labels:
        triggers.append(
            Trigger(
                "new_labels",
                f"{new_labels} labelled rows since the last training, threshold {spec.new_labels}",
            )
        )
    elif spec.new_labels is not None:
        notes.append(
            f"{new_labels} labelled rows since the last training; new_labels retrains at "
            f"{spec.new_labels}"
        )
    return Verdict(triggers, notes, drift_judged, quality_judged)
