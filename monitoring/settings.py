"""Settings of the monitoring job and the rollout controller (``KUBELOOP_*`` variables).

Built in the entry point (``kubeloop monitor``, ``kubeloop rollout``, ``python -m monitoring``),
never at import time. The platform part (work folder, MLflow, Feast backends) comes from
``PlatformSettings``; MLflow reads ``MLFLOW_TRACKING_URI`` itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator

from kubeloop.settings import PlatformSettings


class MonitoringSettings(PlatformSettings):
    """Where the prediction log is, where figures and reports go, how retraining is launched."""

    pushgateway_url: str | None = Field(
        None,
        description="Prometheus Pushgateway the job pushes its metrics to (http://host:9091); "
        "default: none, the metrics go to a textfile in the work folder.",
    )
    pushgateway_job: str = Field("kubeloop-monitor", description="Pushgateway job label.")
    metrics_dir: Path | None = Field(
        None,
        description="Folder of the Prometheus textfiles the job writes when no Pushgateway is "
        "set (one <model>.prom per model; node-exporter textfile format, also served by "
        "`kubeloop monitor --serve-metrics PORT`); default: <work_dir>/metrics.",
    )
    reports_dir: Path | None = Field(
        None, description="Where HTML reports are written; default: <work_dir>/reports."
    )
    drift_sample_rows: int | None = Field(
        100_000,
        ge=1_000,
        description="Windows larger than this reach Evidently as a uniform random sample of "
        "this many rows (drift scores and the report); quality figures always use every "
        "labelled row. Unset: every row (Evidently's cost grows with it).",
    )
    launcher: Literal["auto", "local", "kfp", "none"] = Field(
        "auto",
        description="How retraining is launched: kfp.local in this process's environment, a KFP "
        "API server, or not at all (report only); auto: kfp when KUBELOOP_KFP_HOST is set, "
        "else local.",
    )
    retrain_source: str | None = Field(
        None,
        description="Data a retraining run reads (a newer data drop: path or object-store URL); "
        "default: the spec's data.source.",
    )
    kfp_host: str | None = Field(
        None, description="KFP API server URL that retraining runs are submitted to."
    )
    kfp_experiment: str = Field("kubeloop", description="KFP experiment of retraining runs.")
    kfp_token: SecretStr | None = Field(
        None,
        description="Bearer token for the KFP API server (from a Kubernetes Secret); default: "
        "none, or the pod's service account where kfp finds one.",
    )
    run_timeout_hours: float = Field(
        6.0,
        gt=0,
        description="A launched retraining not finished after this long counts as failed and no "
        "longer blocks new launches.",
    )
    server_url: str = Field(
        "http://127.0.0.1:8080",
        description="Model server the rollout controller drives (canary weight, health).",
    )
    server_replica_urls: str | None = Field(
        None,
        description="Every server replica the canary analysis reads /metrics from, comma "
        "separated; a name with several addresses (the server's headless Service) counts "
        "each address. Default: KUBELOOP_SERVER_URL. Ignored when KUBELOOP_PROMETHEUS_URL "
        "is set.",
    )
    rollout_phase: Literal["all", "staging", "production"] = Field(
        "all",
        description="Which half of the rollout this environment runs: staging (shadow, stress "
        "test, approval releasing to rollout.production_model), production (canary of "
        "released versions), or all (dev). Default: production where KUBELOOP_SERVED_MODEL "
        "is production, else all.",
    )
    prometheus_url: str | None = Field(
        None,
        description="Prometheus that scrapes every server replica: the canary analysis runs "
        "the spec's PromQL (rollout.analysis) there; default: none, read the replicas.",
    )
    predict_token: SecretStr | None = Field(
        None,
        description="Bearer token of the server's prediction routes, for the stress test's "
        "load on the candidate (staging); default: KUBELOOP_API_TOKEN. Never logged.",
    )
    api_token: SecretStr | None = Field(
        None,
        description="Bearer token of the model server's admin routes (the server's "
        "KUBELOOP_API_TOKEN); never logged.",
    )

    @property
    def metrics_path(self) -> Path:
        return self.metrics_dir or self.work_dir / "metrics"

    @property
    def reports_path(self) -> Path:
        return self.reports_dir or self.work_dir / "reports"

    @property
    def launcher_name(self) -> str:
        if self.launcher != "auto":
            return self.launcher
        return "kfp" if self.kfp_host else "local"

    @property
    def replica_urls(self) -> list[str]:
        given = [u.strip() for u in (self.server_replica_urls or "").split(",") if u.strip()]
        return given or [self.server_url]

    @property
    def load_token(self) -> str | None:
        secret = self.predict_token or self.api_token
        return secret.get_secret_value() if secret else None

    @property
    def token(self) -> str | None:
        return self.api_token.get_secret_value() if self.api_token else None

    @model_validator(mode="after")
    def _phase_follows_the_served_model(self) -> MonitoringSettings:
        """Where production's model is served, ``kubeloop rollout status`` (or rollback) acts
        on production's rollout unless told otherwise: on-call sets one variable, not two."""
        if "rollout_phase" not in self.model_fields_set and self.served_model == "production":
            self.rollout_phase = "production"
        return self
