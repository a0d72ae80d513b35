"""The project spec: how a user brings their own data and model to kubeloop.

A small YAML file validated by pydantic with ``extra="forbid"`` so a typo fails with the key's
name. Every step of the loop reads its part of the spec; the bundled example
(``examples/building_energy/spec.yaml``) is just one spec.
"""

from __future__ import annotations

import importlib
import os
import string
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from kubeloop.errors import SpecError

if TYPE_CHECKING:
    from kubeloop.settings import PlatformSettings


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ColumnRule(_Strict):
    """Schema and quality rules for one raw column."""

    type: Literal["int", "float", "string", "datetime", "bool"]
    nullable: bool = Field(True, description="False: any null breaks the rule.")
    max_null_fraction: float = Field(0.05, ge=0, le=1, description="Largest share of nulls.")
    min: float | None = Field(None, description="Smallest allowed value (numeric columns).")
    max: float | None = Field(None, description="Largest allowed value (numeric columns).")


class DataSpec(_Strict):
    """Where the raw data is and what it must look like."""

    source: str = Field(
        description="CSV or Parquet: a local path or an object-store URL (s3://...); or a "
        "database's SQLAlchemy URL with data.table or data.query. ${VAR} placeholders resolve "
        "where the data is read (the pipeline step); a password is only ever a placeholder."
    )
    columns: dict[str, ColumnRule] = Field(min_length=1)
    min_rows: int = Field(100, ge=1)
    table: str | None = Field(
        None,
        description="Database source: the table to read, optionally schema-qualified "
        "(schema.table). Give table or query when data.source is a SQLAlchemy URL.",
    )
    query: str | None = Field(
        None, description="Database source: a SELECT whose rows are the raw data."
    )
    chunk_rows: int = Field(
        50_000, ge=1, description="Database source: rows fetched per chunk (bounds memory)."
    )

    @model_validator(mode="after")
    def _a_database_needs_a_table_or_a_query(self) -> DataSpec:
        given = [key for key in ("table", "query") if getattr(self, key) is not None]
        database = is_database_url(self.source)
        if len(given) > 1:
            raise ValueError("give data.table or data.query, not both")
        if database and not given:
            raise ValueError("data.source is a database URL: give data.table or data.query")
        if database is False and given:
            raise ValueError(f"data.{given[0]} needs a database URL in data.source, not a file")
        password = urlsplit(self.source).password if database else None
        if password and "${" not in password:
            raise ValueError(
                "data.source: no password in the spec; write ${VAR} in its place, resolved "
                "from the environment where the data is read"
            )
        return self


def is_database_url(source: str) -> bool | None:
    """Whether ``data.source`` is a SQLAlchemy URL (``dialect[+driver]://``) rather than a
    path or a file-system URL that fsspec reads (``s3://``, ``gs://``, ``file://``...).

    None when a ``${VAR}`` placeholder hides the scheme: data.table or data.query then decide.
    """
    from fsspec.registry import known_implementations  # ~0.2 s: only when a spec is checked

    scheme, found, _ = source.partition("://")
    if "$" in (scheme if found else source.split("/")[0]):
        return None
    if not found or "::" in scheme:  # a path, or an fsspec chain (simplecache::s3://)
        return False
    return scheme.lower() not in known_implementations


DatePart = Literal["hour", "hour_sin", "hour_cos", "dayofweek", "is_weekend", "month"]


class DeclaredFeature(_Strict):
    """One model feature made from raw columns, declared instead of programmed.

    ``raw`` passes a numeric (or bool) column through, ``log`` takes ``log1p`` of it,
    ``one_hot`` makes one 0/1 feature per category of a string column (categories fixed in the
    spec, so training and serving agree; ``kubeloop init`` fills them from the data), ``ratio``
    divides the column by ``denominator``, ``date_parts`` takes calendar parts of a datetime.
    """

    column: str = Field(description="The raw column (declared in data.columns).")
    encode: Literal["raw", "log", "one_hot", "ratio", "date_parts"] = "raw"
    name: str | None = Field(
        None, description="Feature name (raw, log, ratio); default: derived from the column."
    )
    categories: list[str] | None = Field(None, description="one_hot: the column's categories.")
    denominator: str | None = Field(None, description="ratio: the column to divide by.")
    parts: list[DatePart] | None = Field(None, description="date_parts: which parts.")

    @model_validator(mode="after")
    def _options_fit_the_encoding(self) -> DeclaredFeature:
        needs = {"one_hot": "categories", "ratio": "denominator", "date_parts": "parts"}
        for option in ("categories", "denominator", "parts"):
            given = getattr(self, option) is not None
            if given != (needs.get(self.encode) == option):
                state = "needs" if not given else "does not take"
                raise ValueError(f"encode '{self.encode}' {state} '{option}'")
        if self.name is not None and self.encode in ("one_hot", "date_parts"):
            raise ValueError(f"encode '{self.encode}' makes several features: no 'name'")
        return self


GENERATED_SERVICE = "model_inputs"


class FeatureSpec(_Strict):
    """The Feast side: either declared features (the platform writes the transform and the
    Feast definitions) or a definitions module, a feature service and a transform function."""

    declared: list[DeclaredFeature] | None = Field(
        None, min_length=1, description="Features made from raw columns, in model order."
    )
    ttl_days: float = Field(
        7.0, gt=0, description="Declared features: how long an entity's features stay fresh."
    )
    definitions: str | None = Field(
        None, description="Module holding the Feast objects (feature_repo.<name>)."
    )
    service: str = Field(
        GENERATED_SERVICE, description="Name of the Feast feature service the model consumes."
    )
    transform: str | None = Field(
        None, description="'module:function' turning raw rows into feature rows."
    )

    @model_validator(mode="after")
    def _one_way_to_features(self) -> FeatureSpec:
        custom = [k for k in ("definitions", "transform") if getattr(self, k) is not None]
        if self.declared is not None and custom:
            raise ValueError(f"declared features leave out {' and '.join(custom)}")
        if self.declared is None and len(custom) < 2:
            raise ValueError(
                "declare the features (features.declared) or give definitions, service and "
                "transform"
            )
        return self


class EstimatorSpec(_Strict):
    """A scikit-learn estimator by import path, with its parameters."""

    import_path: str = Field(
        alias="class", description="e.g. sklearn.ensemble.RandomForestRegressor"
    )
    params: dict[str, Any] = Field(default_factory=dict)

    def build(self) -> Any:
        """Instantiate the estimator; an unknown class or parameter is a SpecError."""
        module_name, _, class_name = self.import_path.rpartition(".")
        try:
            cls = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError, ValueError) as exc:
            raise SpecError(
                f"model.estimator.class: cannot import '{self.import_path}' ({exc})",
                field="model.estimator.class",
            ) from exc
        try:
            return cls(**self.params)
        except TypeError as exc:
            raise SpecError(
                f"model.estimator.params: {exc}", field="model.estimator.params"
            ) from exc


class ModelSpec(_Strict):
    """Registered model name and the V<tag>.<manual>.<auto> versioning inputs."""

    name: str | None = Field(None, description="Registry name; defaults to the spec's name.")
    tag: int = Field(1, ge=0, description="Model family tag: the V<tag> of the version name.")
    manual_revision: int = Field(
        0, ge=0, description="Raised by a data scientist who revises the model; resets auto."
    )
    estimator: EstimatorSpec


Metric = Literal["mse", "rmse", "mae", "r2", "accuracy", "f1", "roc_auc", "log_loss"]
LOWER_IS_BETTER = {"mse", "rmse", "mae", "log_loss"}
TASK_METRICS = {
    "regression": {"mse", "rmse", "mae", "r2"},
    "classification": {"accuracy", "f1", "roc_auc", "log_loss"},
}


class Threshold(_Strict):
    min: float | None = None
    max: float | None = None


class EvaluationSpec(_Strict):
    """The gate a model must pass before it reaches the registry."""

    test_fraction: float = Field(0.2, gt=0, lt=1)
    primary_metric: Metric = "rmse"
    thresholds: dict[Metric, Threshold] = Field(default_factory=dict)
    champion_tolerance: float = Field(
        0.0,
        ge=0,
        description="Relative slack allowed against the champion on the primary metric "
        "(0.01 = may be 1% worse).",
    )


# Evidently drift tests that accept numerical features (the model's inputs are numbers).
DriftMethod = Literal[
    "wasserstein",
    "ks",
    "psi",
    "jensenshannon",
    "kl_div",
    "hellinger",
    "anderson",
    "cramer_von_mises",
    "ed",
    "es",
    "mannw",
    "t_test",
    "empirical_mmd",
]


class MonitoringSpec(_Strict):
    """When the monitoring job calls for retraining, and how often at most (``kubeloop monitor``).

    Any one trigger is enough: drifted features, lost quality, or enough new labelled rows.
    """

    window_hours: float = Field(
        24, gt=0, description="The job compares the predictions of the last this many hours."
    )
    min_rows: int = Field(
        100, ge=1, description="Smaller windows are reported but never trigger retraining."
    )
    drift_share: float = Field(
        0.5, gt=0, le=1, description="Retrain when at least this share of the features drifted."
    )
    drift_method: DriftMethod | None = Field(
        None,
        description="Evidently drift test for every feature; default: Evidently picks one per "
        "column (Wasserstein distance for numbers, Jensen-Shannon for few values).",
    )
    drift_threshold: float | None = Field(
        None, gt=0, description="Threshold of that test; default: the test's own."
    )
    quality_loss: float = Field(
        0.2,
        gt=0,
        description="Retrain when the live primary metric is this much worse than the model's "
        "held-out baseline (relative: 0.2 = 20% worse).",
    )
    min_labelled_rows: int = Field(
        50, ge=1, description="With fewer labelled rows quality is reported, never judged."
    )
    new_labels: int | None = Field(
        None,
        ge=1,
        description="Retrain when this many labelled rows arrived since the champion was "
        "trained; unset: never for this reason.",
    )
    new_source_rows: int | None = Field(
        None,
        ge=1,
        description="Retrain when the data source holds this many more rows than the data "
        "version the newest registered model was trained on (`kubeloop trigger new-data`, the "
        "chart's new-data CronJob); unset: never for this reason.",
    )
    cooldown_minutes: float = Field(
        360,
        ge=0,
        description="After a monitoring launch, no other monitoring launch for this "
        "long, whatever happens (manual, scheduled, new-data and merge triggers are not held).",
    )


class RetrainingSpec(_Strict):
    """What a training run trains on besides the data source: production's labelled rows."""

    labelled_hours: float | None = Field(
        None,
        gt=0,
        description="Also train on the predictions of the last this many hours that have "
        "ground truth (the prediction log joined with feedback by request id; champion and "
        "canary rows), with the features the model saw, de-duplicated by entity and time; "
        "they pass the data-quality gate and are versioned with the dataset. Unset: the data "
        "source only.",
    )


class CanaryStep(_Strict):
    """One canary step: the candidate answers ``weight`` of the traffic for ``hold_minutes``."""

    weight: float = Field(gt=0, le=1, description="Share of records the candidate answers.")
    hold_minutes: float = Field(5, ge=0, description="How long the step lasts before judging.")
    min_requests: int = Field(
        20, ge=0, description="Candidate predictions needed before the step can pass."
    )
    min_labelled: int = Field(
        20,
        ge=0,
        description="Labelled rows each side needs before the step can pass: the step waits "
        "for late labels up to rollout.timeout_minutes (then rolls back), never skips the "
        "quality check; 0: this step does not judge quality.",
    )


# PromQL over every replica (Prometheus sums the pods). $version is the registry version,
# $window the step's age ("93s"). Only samples a model answered carry a version: requests
# that never reached one are labelled model_version="none" and fall out of every query.
PREDICT_ROUTES = 'route=~"/predict|/v2/models/.+"'
REQUESTS_QUERY = (
    f'sum(increase(kubeloop_requests_total{{{PREDICT_ROUTES},model_version="$version"}}[$window]))'
)
ERRORS_QUERY = (
    "sum(increase(kubeloop_requests_total"
    f'{{{PREDICT_ROUTES},model_version="$version",status=~"5.."}}[$window]))'
)
LATENCY_QUERY = (
    "histogram_quantile(0.99, sum by (le) (rate(kubeloop_request_duration_seconds_bucket"
    f'{{{PREDICT_ROUTES},model_version="$version"}}[$window])))'
)
LATENCY_BUCKETS_QUERY = (
    "sum by (le) (increase(kubeloop_request_duration_seconds_bucket"
    f'{{{PREDICT_ROUTES},model_version="$version"}}[$window]))'
)


class AnalysisSpec(_Strict):
    """Canary analysis, as Argo Rollouts and Flagger do it: success rate and p99 latency per
    model version over the step, from Prometheus (these queries) or, without one, from every
    replica's /metrics summed by the controller."""

    requests_query: str = Field(REQUESTS_QUERY, description="PromQL: requests of $version.")
    errors_query: str = Field(ERRORS_QUERY, description="PromQL: 5xx a model caused.")
    latency_query: str = Field(LATENCY_QUERY, description="PromQL: p99 seconds of $version.")
    latency_buckets_query: str = Field(
        LATENCY_BUCKETS_QUERY,
        description="PromQL: $version's latency histogram over the step, by le: how many "
        "requests were slower than a p99 limit, so that a p99 above it rolls back only when "
        "that is more than chance (see monitoring/canary.py).",
    )
    max_p99_latency_ms: float | None = Field(
        None, gt=0, description="Roll back when the candidate's p99 exceeds this; unset: no cap."
    )
    max_latency_increase: float = Field(
        0.5,
        ge=0,
        description="Roll back when the candidate's p99 exceeds the champion's by more than "
        "this share (0.5 = 50% slower) plus latency_slack_ms.",
    )
    latency_slack_ms: float = Field(
        5, ge=0, description="Absolute p99 difference always tolerated (sub-ms noise)."
    )
    latency_significance: float = Field(
        0.001,
        gt=0,
        lt=1,
        description="A p99 above a limit rolls back only when that many of the candidate's "
        "requests slower than the limit had less than this chance with a p99 within it "
        "(binomial). The step is looked at every few seconds, so it is small: a healthy "
        "candidate's rollback stays rare over all of a rollout's looks. Raise it to roll back "
        "on thinner evidence.",
    )


class StressSpec(_Strict):
    """A bounded load test against the candidate before it takes any traffic (it replays
    logged requests through the server's pinned-version route); missing it rolls back."""

    enabled: bool = True
    rps: float = Field(20, gt=0, le=5000, description="Target requests per second.")
    duration_seconds: float = Field(10, gt=0, le=600, description="How long the load lasts.")
    max_in_flight: int = Field(64, ge=1, le=1024, description="Concurrent requests at most.")
    max_p99_ms: float = Field(250, gt=0, description="Fail when p99 latency is above this.")
    max_error_rate: float = Field(0.01, ge=0, le=1, description="Fail above this error share.")
    min_achieved_share: float = Field(
        0.9, gt=0, le=1, description="Fail when fewer than this share of the target were served."
    )


def _default_steps() -> tuple[CanaryStep, ...]:
    return (CanaryStep(weight=0.1), CanaryStep(weight=0.5), CanaryStep(weight=1.0))


class RolloutSpec(_Strict):
    """How a challenger reaches production (``kubeloop rollout``): shadow, approval, canary."""

    shadow_min_requests: int = Field(
        100, ge=0, description="Requests scored by both models before the shadow step passes."
    )
    shadow_hold_minutes: float = Field(0, ge=0, description="Shortest time in shadow.")
    auto_approve_dev: bool = Field(
        False,
        description="In the dev environment, approve the candidate after shadow without a "
        "person (recorded as approved by 'auto'); staging and prod always need --approve.",
    )
    steps: tuple[CanaryStep, ...] = Field(default_factory=_default_steps, min_length=1)
    max_error_rate_increase: float = Field(
        0.01,
        ge=0,
        description="Roll back when the candidate's error rate exceeds the champion's by more "
        "(absolute: 0.01 = one point).",
    )
    max_quality_loss: float = Field(
        0.1,
        ge=0,
        description="Roll back when the candidate's live primary metric is this much worse than "
        "the champion's on the same window (relative).",
    )
    timeout_minutes: float = Field(
        60,
        gt=0,
        description="A step that never gathers its requests or labels in this time rolls back.",
    )
    production_model: str | None = Field(
        None,
        description="Registered model production serves, in the same central registry: the "
        "staging half's approval copies the version there (only approvers may edit it). "
        "Unset: one environment runs the whole rollout.",
    )
    baseline_minutes: float = Field(
        60,
        gt=0,
        description="The 100% step, where the champion answers nothing, compares the "
        "candidate's quality with the champion's rows of this many minutes before the canary.",
    )
    analysis: AnalysisSpec = Field(default_factory=AnalysisSpec)
    stress: StressSpec = Field(default_factory=StressSpec)

    @model_validator(mode="after")
    def _weights_rise(self) -> RolloutSpec:
        weights = [s.weight for s in self.steps]
        if weights != sorted(set(weights)):
            raise ValueError(f"rollout.steps: weights must strictly increase, got {weights}")
        return self


class ProjectSpec(_Strict):
    """One user project: data, features, model, evaluation gate, monitoring, rollout."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]{1,62}$")
    task: Literal["regression", "classification"] = "regression"
    entity_key: str
    timestamp: str
    target: str
    data: DataSpec
    features: FeatureSpec
    model: ModelSpec
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    monitoring: MonitoringSpec = Field(default_factory=MonitoringSpec)
    retraining: RetrainingSpec = Field(default_factory=RetrainingSpec)
    rollout: RolloutSpec = Field(default_factory=RolloutSpec)

    @model_validator(mode="before")
    @classmethod
    def _primary_metric_defaults_to_the_task(cls, data: Any) -> Any:
        """RMSE for regression, weighted F1 for classification, unless the spec names one."""
        if isinstance(data, dict) and data.get("task") == "classification":
            evaluation = data.get("evaluation")
            if evaluation is None or (
                isinstance(evaluation, dict) and "primary_metric" not in evaluation
            ):
                data = {**data, "evaluation": {**(evaluation or {}), "primary_metric": "f1"}}
        return data

    @model_validator(mode="after")
    def _columns_cover_keys(self) -> ProjectSpec:
        for role in ("entity_key", "timestamp", "target"):
            column = getattr(self, role)
            if column not in self.data.columns:
                raise ValueError(f"{role} '{column}' is not declared in data.columns")
        for i, feature in enumerate(self.features.declared or []):
            for column in (feature.column, feature.denominator):
                if column is not None and column not in self.data.columns:
                    raise ValueError(
                        f"features.declared.{i}: column '{column}' is not declared in data.columns"
                    )
            if feature.column == self.target:
                raise ValueError(f"features.declared.{i}: the target cannot be a feature")
        return self

    @model_validator(mode="after")
    def _metrics_fit_the_task(self) -> ProjectSpec:
        allowed = TASK_METRICS[self.task]
        used = {"evaluation.primary_metric": self.evaluation.primary_metric}
        used |= {f"evaluation.thresholds.{m}": m for m in self.evaluation.thresholds}
        for where, metric in used.items():
            if metric not in allowed:
                raise ValueError(
                    f"{where}: '{metric}' is not a {self.task} metric "
                    f"(choose from {', '.join(sorted(allowed))})"
                )
        return self

    @property
    def model_name(self) -> str:
        return self.model.name or self.name

    @property
    def metric_direction(self) -> str:
        return "min" if self.evaluation.primary_metric in LOWER_IS_BETTER else "max"


def format_errors(exc: ValidationError) -> str:
    """One line per error, ``key: message``. A check across keys (a model validator) has no
    location and its message names the keys itself; pydantic's "Value error, " prefix goes."""
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"])
        message = err["msg"]
        if err["type"] == "value_error" and "error" in err.get("ctx", {}):
            message = str(err["ctx"]["error"])
        lines.append(f"  {key}: {message}" if key else f"  {message}")
    return "\n".join(lines)


def parse_spec(raw: dict[str, Any], *, origin: str = "spec") -> ProjectSpec:
    """Validate a spec mapping; errors name every bad key."""
    try:
        return ProjectSpec.model_validate(raw)
    except ValidationError as exc:
        first = ".".join(str(p) for p in exc.errors()[0]["loc"]) or None
        raise SpecError(f"{origin} is invalid:\n{format_errors(exc)}", field=first) from exc


def load_spec(path: str | Path) -> ProjectSpec:
    """Read and validate a spec file. Relative data paths resolve against the spec's folder.

    ``${VAR}`` placeholders in ``data.source`` stay as written: they are resolved where the
    data is read (``resolve_source``), i.e. in the pipeline step's own pod, not on the machine
    that submitted the run.
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError as exc:
        raise SpecError(f"spec file not found: {path}") from exc
    except yaml.YAMLError as exc:
        raise SpecError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise SpecError(f"{path} must hold a mapping at the top level")
    source = raw.get("data", {}).get("source") if isinstance(raw.get("data"), dict) else None
    # A leading ${VAR} names a root that only the reading process knows.
    if (
        isinstance(source, str)
        and not source.startswith("$")
        and "://" not in source
        and not Path(source).is_absolute()
    ):
        raw["data"]["source"] = str((path.parent / source).resolve())
    return parse_spec(raw, origin=str(path))


def resolve_source(source: str, settings: PlatformSettings) -> str:
    """``source`` with its ``${VAR}`` placeholders filled from this process's environment and
    settings (``${KUBELOOP_WORK_DIR}`` is always known). Called where the data is read, so a
    pipeline step resolves them in its own container."""
    environ = {**os.environ, "KUBELOOP_WORK_DIR": str(settings.work_dir)}
    try:
        return string.Template(source).substitute(environ)
    except KeyError as exc:
        raise SpecError(
            f"data.source: ${{{exc.args[0]}}} is not set where the data is read ({source})",
            field="data.source",
        ) from None
    except ValueError as exc:
        raise SpecError(f"data.source: {exc} in {source}", field="data.source") from None


def dump_spec(spec: ProjectSpec) -> dict[str, Any]:
    """The spec as plain JSON-able data (how it travels as a pipeline parameter)."""
    return spec.model_dump(mode="json", by_alias=True, exclude_none=True)
