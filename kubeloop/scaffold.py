"""``kubeloop init``: a project spec inferred from a CSV or Parquet file.

A new user has a table, not a spec. ``infer`` reads the table once and proposes everything a
spec needs: column types and quality rules, the entity key and timestamp, the task from the
target, declared features (numbers as they are, short string columns one-hot) and how long they
stay fresh, an estimator and the evaluation metric. It also says what it inferred and what a
person should check, because a guess about data is only a starting point. ``write_project``
writes the spec where the next command (``kubeloop run training``) reads it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from kubeloop.declared_features import names_of
from kubeloop.errors import SpecError
from kubeloop.spec import FeatureSpec, MonitoringSpec, parse_spec

MAX_CATEGORIES = 20  # string columns with more distinct values are not one-hot encoded
MAX_CLASSES = 20  # an integer target with at most this many values is a class label
SAMPLE_ROWS = 200_000  # inference reads at most this many rows
# Written out with their defaults, to be read and tuned: when monitoring calls for retraining.
MONITORING_KEYS = (
    "window_hours",
    "min_rows",
    "drift_share",
    "quality_loss",
    "min_labelled_rows",
    "cooldown_minutes",
)


@dataclass
class Inference:
    """The proposed spec (plain data, as YAML would hold it) and what a person should read."""

    spec: dict[str, Any]
    inferred: list[str] = field(default_factory=list)
    check: list[str] = field(default_factory=list)


def read_table(path: Path) -> pd.DataFrame:
    """The first ``SAMPLE_ROWS`` rows of a CSV or Parquet file."""
    if not path.exists():
        raise SpecError(f"--data: no file at {path}", field="data")
    if path.suffix.lower() == ".parquet":
        return pd.read_parquet(path).head(SAMPLE_ROWS)
    if path.suffix.lower() == ".csv":
        return pd.read_csv(path, nrows=SAMPLE_ROWS)
    raise SpecError(f"--data: {path.name} is neither .csv nor .parquet", field="data")


def column_type(values: pd.Series) -> str:
    """The spec type of a column: bool, int, float, datetime or string."""
    if pd.api.types.is_bool_dtype(values):
        return "bool"
    if pd.api.types.is_integer_dtype(values):
        return "int"
    if pd.api.types.is_float_dtype(values):
        present = values.dropna()
        whole = len(present) > 0 and bool((present == present.round()).all())
        return (
            "int" if whole and values.isna().sum() == 0 and present.abs().max() < 2**53 else "float"
        )
    if pd.api.types.is_datetime64_any_dtype(values):
        return "datetime"
    present = values.dropna().astype(str)
    if len(present):
        parsed = pd.to_datetime(present, errors="coerce", utc=True, format="mixed")
        if (
            parsed.notna().mean() > 0.95
            and present.str.contains(r"\d{4}-\d{2}-\d{2}").mean() > 0.95
        ):
            return "datetime"
    return "string"


def quality_rule(values: pd.Series, kind: str) -> dict[str, Any]:
    """Rules the data already meets, with room for honest variation: nulls only where seen,
    numeric ranges widened by half their span (never below zero for a column that never was)."""
    rule: dict[str, Any] = {"type": kind}
    nulls = float(values.isna().mean())
    if nulls == 0:
        rule["nullable"] = False
    else:
        rule["max_null_fraction"] = round(min(1.0, max(0.05, 2 * nulls)), 3)
    if kind in ("int", "float"):
        numbers = pd.to_numeric(values, errors="coerce").dropna()
        if len(numbers):
            low, high = float(numbers.min()), float(numbers.max())
            margin = (high - low) / 2 or abs(high) / 2 or 1.0
            rule["min"] = _round(0.0 if low >= 0 and low - margin < 0 else low - margin)
            rule["max"] = _round(high + margin)
    return rule


def freshness_days(stamps: pd.Series) -> float:
    """A ``features.ttl_days`` under which every entity of the table can be served by id: its
    time span in whole days, plus one, and at least the default week. Materialization loads
    only the rows within the TTL of the newest one, so under the default week an entity last
    seen earlier in a table of several months could not be looked up."""
    default = float(FeatureSpec.model_fields["ttl_days"].default)
    times = pd.to_datetime(stamps, errors="coerce", utc=True, format="mixed").dropna()
    if times.empty:
        return default
    span = (times.max() - times.min()) / pd.Timedelta(days=1)
    return float(max(default, math.ceil(span) + 1))


def _round(value: float) -> float:
    return float(f"{value:.6g}")


def _pick(
    frame: pd.DataFrame, types: dict[str, str], given: str | None, role: str, wanted: set[str]
) -> str:
    if given is not None:
        if given not in frame.columns:
            raise SpecError(f"--{role}: no column '{given}' in the data", field=role)
        return given
    candidates = [c for c in frame.columns if types[c] in wanted]
    if role == "entity":
        candidates = [c for c in candidates if c.lower() == "id" or c.lower().endswith("_id")]
    if not candidates:
        what = "a datetime column" if role == "timestamp" else "an id column (name ending in _id)"
        raise SpecError(
            f"no {role} found: the data needs {what}; name one with --{role}", field=role
        )
    return candidates[0]


def infer(
    frame: pd.DataFrame,
    name: str,
    source: str,
    target: str,
    *,
    entity: str | None = None,
    timestamp: str | None = None,
    task: str | None = None,
) -> Inference:
    """A spec for ``frame`` with ``target`` as the label; see the module docstring."""
    if target not in frame.columns:
        raise SpecError(
            f"--target: no column '{target}' in the data (columns: {', '.join(frame.columns)})",
            field="target",
        )
    if task not in (None, "regression", "classification"):
        raise SpecError(f"--task: '{task}' is neither regression nor classification", field="task")
    types = {str(c): column_type(frame[c]) for c in frame.columns}
    entity = _pick(frame, types, entity, "entity", {"int", "string"})
    timestamp = _pick(frame, types, timestamp, "timestamp", {"datetime"})
    out = Inference(spec={})
    labels = frame[target].dropna()
    if task is None:
        few = labels.nunique() <= MAX_CLASSES
        task = (
            "classification"
            if types[target] in ("string", "bool") or (types[target] == "int" and few)
            else "regression"
        )
        out.inferred.append(
            f"task: {task} (target '{target}' is {types[target]} with "
            f"{labels.nunique()} distinct values)"
        )
    columns = {str(c): quality_rule(frame[c], types[str(c)]) for c in frame.columns}
    columns[target]["nullable"] = False
    columns[target].pop("max_null_fraction", None)
    if task == "classification":  # classes are labels, not a range (0..1.5 for 0/1)
        columns[target].pop("min", None)
        columns[target].pop("max", None)
    columns[entity] = {"type": types[entity], "nullable": False}  # an id has no range
    columns[timestamp]["nullable"] = False
    declared: list[dict[str, Any]] = []
    for column, kind in types.items():
        if column in (entity, timestamp, target):
            continue
        if kind in ("int", "float", "bool"):
            declared.append({"column": column})
        elif kind == "string":
            categories = sorted(frame[column].dropna().astype(str).unique().tolist())
            if len(categories) <= MAX_CATEGORIES:
                declared.append({"column": column, "encode": "one_hot", "categories": categories})
            else:
                out.check.append(
                    f"'{column}' has {len(categories)} distinct strings: left out (more than "
                    f"{MAX_CATEGORIES}); add it with a transform module if it matters"
                )
        elif kind == "datetime":
            declared.append(
                {"column": column, "encode": "date_parts", "parts": ["month", "dayofweek"]}
            )
    if not declared:
        raise SpecError("no column can be a feature besides the keys and the target")
    estimator = (
        "sklearn.ensemble.HistGradientBoostingClassifier"
        if task == "classification"
        else "sklearn.ensemble.HistGradientBoostingRegressor"
    )
    metric = "f1" if task == "classification" else "rmse"
    ttl_days = freshness_days(frame[timestamp])
    monitoring = MonitoringSpec()  # its defaults
    out.spec = {
        "name": name,
        "task": task,
        "entity_key": entity,
        "timestamp": timestamp,
        "target": target,
        "data": {
            "source": source,
            "min_rows": max(100, min(len(frame) // 2, 10_000)),
            "columns": columns,
        },
        "features": {"declared": declared, "ttl_days": ttl_days},
        "model": {
            "tag": 1,
            "manual_revision": 0,
            "estimator": {"class": estimator, "params": {"random_state": 0}},
        },
        "evaluation": {"test_fraction": 0.2, "primary_metric": metric, "thresholds": {}},
        "monitoring": {key: getattr(monitoring, key) for key in MONITORING_KEYS},
    }
    out.inferred += [
        f"entity key: '{entity}', timestamp: '{timestamp}', target: '{target}'",
        f"{len(columns)} columns: " + ", ".join(f"{c} ({columns[c]['type']})" for c in columns),
        f"{len(declared)} declared features; estimator {estimator.rsplit('.', 1)[1]}; "
        f"gate on {metric}",
        f"features.ttl_days: {ttl_days:g} (the data's time span: every entity can be served by id)",
    ]
    out.check += [
        "quality rules (data.columns): ranges are the observed ones widened by half their span",
        "evaluation.thresholds is empty: add the quality a model must reach to be registered",
        "monitoring: the defaults of when monitoring calls for retraining (every key and the "
        "rollout's are described in kubeloop/spec.py)",
        f"one-hot categories are fixed as seen in the first {SAMPLE_ROWS:,} rows",
        "features.ttl_days: an entity whose newest row is older than this before the newest "
        "data is not served by id; with live data, lower it to how long a row stays true",
    ]
    proposed = parse_spec(out.spec, origin="the inferred spec")  # it must be a valid spec
    renamed = [
        f"'{f.column}' as {name}"
        for f in proposed.features.declared or []
        if f.encode == "raw" and (name := names_of(f)[0]) != f.column
    ]
    if renamed:
        out.inferred.append(
            "feature names (requests use them): "
            + ", ".join(renamed[:5])
            + (f" and {len(renamed) - 5} more" if len(renamed) > 5 else "")
        )
    return out


def write_project(folder: Path, inference: Inference) -> Path:
    """``folder/spec.yaml``, with a header saying where it came from; refuses to overwrite."""
    path = folder / "spec.yaml"
    if path.exists():
        raise SpecError(f"{path} exists already: remove it or choose another project name")
    folder.mkdir(parents=True, exist_ok=True)
    header = (
        "# kubeloop project spec, inferred by `kubeloop init` from the data: read the\n"
        "# quality rules and add evaluation thresholds before trusting it (docs/your-project.md).\n"
    )
    path.write_text(header + yaml.safe_dump(inference.spec, sort_keys=False))
    return path
