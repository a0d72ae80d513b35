"""Settings of the model server (``KUBELOOP_*`` environment variables).

Built once in the server's entry point (``python -m serving``, ``kubeloop serve`` or the app
factory of each uvicorn worker), never at import time. Everything the platform shares (work
folder, MLflow, Feast backends, the prediction log, which registered model this environment
serves) comes from ``PlatformSettings``; this class adds what only the server needs.
Libraries read their own variables: ``MLFLOW_TRACKING_URI`` for MLflow and
``PROMETHEUS_MULTIPROC_DIR`` for prometheus-client.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from kubeloop.images import SERVER_PORT
from kubeloop.registry import CHALLENGER
from kubeloop.settings import PlatformSettings

DEFAULT_SPEC = Path("examples/building_energy/spec.yaml")
# Regression outputs of the bundled example fall between a few and a few hundred kWh.
DEFAULT_PREDICTION_BUCKETS = (
    0.0,
    1.0,
    2.5,
    5.0,
    10.0,
    25.0,
    50.0,
    100.0,
    250.0,
    500.0,
    1000.0,
    2500.0,
    5000.0,
    10000.0,
)


class ServingSettings(PlatformSettings):
    """What the model server serves, how it guards itself and where it logs predictions."""

    spec: Path = Field(DEFAULT_SPEC, description="Project spec YAML: model name, feature service.")
    api_token: SecretStr | None = Field(
        None,
        description="Bearer token required on predict, V2 infer, feedback and features (not "
        "on the admin routes). Mandatory outside env=dev (from a Kubernetes Secret); never "
        "logged.",
    )
    admin_token: SecretStr | None = Field(
        None,
        description="Bearer token of the admin routes (/admin/*: canary weight, rollback, "
        "reload), for the rollout controller and approvers only; the predict token is refused "
        "there. Without it the admin routes answer 403, except in env=dev with no token at "
        "all. Must differ from the API token; from its own Kubernetes Secret; never logged.",
    )
    host: str = Field("0.0.0.0", description="Address to listen on.")
    port: int = Field(SERVER_PORT, ge=1, le=65535, description="Port to listen on.")
    workers: int = Field(
        1,
        ge=1,
        le=64,
        description="uvicorn worker processes; on Kubernetes prefer 1 per pod and let the HPA "
        "add pods (each worker loads its own copy of the model).",
    )
    model_threads: int = Field(
        1,
        ge=1,
        le=64,
        description="OpenMP/BLAS threads per predict call (OMP_NUM_THREADS). 1: the server "
        "batches requests instead, and threads contend on small batches (HistGradientBoosting "
        "predicts 3-4x slower with 2 threads on a busy 2-core node).",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Log level of the server (and uvicorn)."
    )
    access_log: bool = Field(False, description="uvicorn access log (costs ~10% throughput).")
    asgi_fast_path: bool = Field(
        True,
        description="Serve POST /predict and V2 infer in the ASGI middleware, without FastAPI's "
        "routing and request objects (same checks, answers and errors; 1.6-2x the 1-row "
        "throughput). false: through the FastAPI routes.",
    )
    opentelemetry: bool = Field(
        False,
        description="FastAPI's native OpenTelemetry spans, metrics and logs, when global OTel "
        "providers are configured. Off by default: its per-request checks alone cost ~10 µs "
        "and Prometheus metrics are always on.",
    )

    champion_alias: str = Field("champion", description="Alias the server answers with.")
    candidate_alias: str = Field(
        CHALLENGER, description="Alias of the candidate scored in shadow or canary mode."
    )
    shadow_enabled: bool = Field(
        False,
        description="Score every request with the candidate too, off the response path, and log "
        "its predictions with role 'shadow' (callers only ever get the champion's answer).",
    )
    canary_weight: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="Share of records answered by the candidate, sticky by key. A weight set "
        "through the admin endpoint is stored on the registered model and takes precedence.",
    )
    startup_wait_seconds: float = Field(
        60.0,
        ge=0,
        description="How long start-up waits for the champion before accepting connections. "
        "With several workers sharing a socket this keeps a loading worker from taking "
        "requests it would answer with 503; past it, the server starts not ready and keeps "
        "trying (readiness tells). Give the liveness probe a startupProbe of this length.",
    )
    gil_switch_ms: float = Field(
        1.0,
        ge=0.0,
        le=100.0,
        description="Python's GIL switch interval (sys.setswitchinterval) in the server: how "
        "long a background thread (a registry poll is ~10 ms of SQLAlchemy) may hold the GIL "
        "while the event loop waits. 0 keeps Python's 5 ms.",
    )
    registry_poll_seconds: float = Field(
        10.0, gt=0, description="How often the registry is checked for moved aliases."
    )

    max_batch_records: int = Field(
        1000, ge=1, description="Largest number of records in one request (else 413)."
    )
    max_body_bytes: int = Field(
        4 * 1024 * 1024, ge=1024, description="Largest request body in bytes (else 413)."
    )
    batch_max_rows: int = Field(
        4096,
        ge=1,
        description="Micro-batching: most rows merged into one predict call (bounds the CPU "
        "time one loop iteration spends predicting: ~4 ms for a 100-tree ensemble).",
    )
    batch_max_wait_ms: float = Field(
        2.0,
        ge=0.0,
        le=50.0,
        description="Micro-batching: longest a request waits for others to share its predict "
        "call. The batcher only waits while traffic is concurrent; a lone request goes at once.",
    )

    log_spool_dir: Path | None = Field(
        None,
        description="Where predictions wait on local disk (Arrow IPC segments) before they are "
        "stored in the log database; default: <work_dir>/prediction-spool. On Kubernetes a "
        "volume that outlives the container (emptyDir), so a restarted server ships what the "
        "killed one spooled.",
    )
    log_spool_max_bytes: int = Field(
        2 * 2**30,
        ge=1,
        description="Disk budget of the spool; when it is full (the database has been down "
        "long enough) new rows are dropped and counted.",
    )
    log_batch_rows: int = Field(
        50_000, ge=1, description="Rows stored per database transaction (one COPY)."
    )
    log_flush_seconds: float = Field(
        0.25,
        gt=0,
        description="How often buffered predictions are written to the spool: the most a "
        "SIGKILL can lose.",
    )
    log_drain_seconds: float = Field(
        15.0,
        ge=0,
        description="On SIGTERM, how long the server keeps storing spooled rows before it exits "
        "(what is left waits on the spool for the next server).",
    )
    log_writer_nice: int = Field(
        19,
        ge=0,
        le=19,
        description="Scheduling niceness of the log shipper process: when CPU is short the "
        "server's predictions go first and the spool grows instead.",
    )
    prediction_buckets: tuple[float, ...] = Field(
        DEFAULT_PREDICTION_BUCKETS, description="Histogram buckets of predicted values."
    )

    @field_validator("spec")
    @classmethod
    def _absolute_spec(cls, value: Path) -> Path:
        # Workers and the log writer are separate processes: pass them an absolute path.
        return value.expanduser().resolve()

    @model_validator(mode="after")
    def _token_outside_dev(self) -> ServingSettings:
        if self.env != "dev" and not (self.api_token and self.api_token.get_secret_value()):
            raise ValueError(
                f"KUBELOOP_API_TOKEN is required when KUBELOOP_ENV={self.env}: mount it from a "
                "Kubernetes Secret (the server refuses to start unguarded outside dev)"
            )
        return self

    @property
    def spool_dir(self) -> Path:
        """Where the prediction log spools rows before storing them."""
        return self.log_spool_dir or self.work_dir / "prediction-spool"

    @model_validator(mode="after")
    def _admin_token_differs(self) -> ServingSettings:
        if self.admin_token is not None and self.admin_token == self.api_token:
            raise ValueError(
                "KUBELOOP_ADMIN_TOKEN must differ from KUBELOOP_API_TOKEN: whoever may predict "
                "must not be able to move the canary"
            )
        return self

    @property
    def token(self) -> str | None:
        return self.api_token.get_secret_value() if self.api_token else None

    @property
    def admin_secret(self) -> str | None:
        return self.admin_token.get_secret_value() if self.admin_token else None
