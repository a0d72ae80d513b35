"""Evaluate step: decide whether a trained model may enter the registry.

A candidate passes when every threshold in the spec holds and, if a champion exists, it is no
worse than the champion on the same held-out rows (within the spec's tolerance).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field

import pandas as pd

from kubeloop.metrics import score
from kubeloop.spec import LOWER_IS_BETTER, ProjectSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Decision:
    passed: bool
    reasons: list[str]
    metrics: dict[str, float]
    champion: dict[str, float] | None = None
    champion_version: str | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def verdict(self, run_id: str) -> str:
        """The pipeline run's output: KFP shows it on the run, so a rejection reads as one there
        (the register step is skipped), and launchers find the candidate's MLflow run in it."""
        import json

        return json.dumps({"passed": self.passed, "reasons": self.reasons, "mlflow_run_id": run_id})


def threshold_failures(metrics: dict[str, float], spec: ProjectSpec) -> list[str]:
    reasons = []
    for name, bound in spec.evaluation.thresholds.items():
        if name not in metrics:
            reasons.append(f"{name}: threshold set but the metric is not computed for this task")
            continue
        value = metrics[name]
        if bound.min is not None and value < bound.min:
            reasons.append(f"{name} {value:.4f} is below the minimum {bound.min}")
        if bound.max is not None and value > bound.max:
            reasons.append(f"{name} {value:.4f} is above the maximum {bound.max}")
    return reasons


def champion_failure(
    candidate: dict[str, float], champion: dict[str, float], spec: ProjectSpec
) -> str | None:
    """A reason when the candidate is worse than the champion beyond the tolerance."""
    metric = spec.evaluation.primary_metric
    new, old = candidate[metric], champion[metric]
    slack = spec.evaluation.champion_tolerance * abs(old)
    worse = new > old + slack if metric in LOWER_IS_BETTER else new < old - slack
    if worse:
        return (
            f"{metric} {new:.4f} is worse than the champion's {old:.4f} on the same "
            f"held-out rows (tolerance {spec.evaluation.champion_tolerance:.0%})"
        )
    return None


def evaluate(
    model,
    test: pd.DataFrame,
    features: list[str],
    spec: ProjectSpec,
    champion=None,
    champion_version: str | None = None,
) -> Decision:
    """Score the candidate (and the champion) on the held-out rows and decide."""
    y = test[spec.target].to_numpy()
    metrics = score(spec.task, model, test[features].to_numpy(dtype="float64"), y)
    reasons = threshold_failures(metrics, spec)
    notes: list[str] = []
    champion_metrics = None
    if champion is not None:
        champ_features = champion.metadata_features
        if set(champ_features) <= set(test.columns):
            champion_metrics = score(
                spec.task, champion.model, test[champ_features].to_numpy(dtype="float64"), y
            )
            failure = champion_failure(metrics, champion_metrics, spec)
            if failure:
                reasons.append(failure)
        else:
            notes.append("champion uses features absent from this training set: not compared")
    else:
        notes.append("no champion yet: thresholds only")
    decision = Decision(
        passed=not reasons,
        reasons=reasons,
        metrics=metrics,
        champion=champion_metrics,
        champion_version=champion_version,
        notes=notes,
    )
    log.info(
        "evaluation %s: %s",
        "passed" if decision.passed else "FAILED",
        "; ".join(reasons) or "all checks hold",
    )
    return decision


def run_step(
    spec,
    settings,
    run_id: str,
    model_uri: str,
    test_path: str,
    decision_path: str,
    pipeline_run: str = "",
) -> Decision:
    """The evaluate step as a pipeline sees it: candidate and held-out rows in, decision out.

    Metrics and the decision are logged to the candidate's MLflow run as well, tagged with the
    pipeline run's id, so whoever launched the run reads its outcome from MLflow.
    """
    import json
    from pathlib import Path

    import mlflow
    from mlflow.models import get_model_info

    from kubeloop import model_store, registry

    client = model_store.configure(settings)
    features = list((get_model_info(model_uri).metadata or {})["features"])
    model = model_store.load_model(model_uri)
    champion = registry.load_alias(client, spec.model_name, registry.CHAMPION)
    decision = evaluate(
        model,
        pd.read_parquet(test_path),
        features,
        spec,
        champion=champion,
        champion_version=champion.label if champion else None,
    )
    with mlflow.start_run(run_id=run_id):
        mlflow.log_metrics({f"test_{k}": v for k, v in decision.metrics.items()})
        if decision.champion:
            mlflow.log_metrics({f"champion_{k}": v for k, v in decision.champion.items()})
        mlflow.set_tags(
            {
                registry.GATE_TAG: "passed" if decision.passed else "failed",
                registry.GATE_REASONS_TAG: "; ".join(decision.reasons)[:5000],
                **({registry.PIPELINE_RUN_TAG: pipeline_run} if pipeline_run else {}),
            }
        )
        mlflow.log_dict(decision.to_dict(), "evaluation/decision.json")
    Path(decision_path).parent.mkdir(parents=True, exist_ok=True)
    Path(decision_path).write_text(json.dumps(decision.to_dict(), indent=2))
    return decision
