"""Schema and quality rules for raw datasets.

Every rule that breaks is reported (rule, column, count, a few offending rows), not only the
first, so one failed run tells the data engineer everything to fix.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd
from pandas.api import types as ptypes

from kubeloop.spec import ColumnRule, ProjectSpec

EXAMPLE_ROWS = 3


@dataclass(frozen=True)
class Violation:
    rule: str
    column: str
    count: int
    detail: str
    examples: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class QualityReport:
    rows: int
    violations: list[Violation]

    @property
    def passed(self) -> bool:
        return not self.violations

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "passed": self.passed,
            "violations": [asdict(v) for v in self.violations],
        }

    def render(self) -> str:
        """Plain-text table for logs and the CLI."""
        if self.passed:
            return f"data quality: {self.rows} rows, all rules passed"
        lines = [f"data quality: {self.rows} rows, {len(self.violations)} rule(s) broken"]
        for v in self.violations:
            lines.append(f"  - {v.rule} [{v.column}]: {v.count} row(s): {v.detail}")
            for example in v.examples:
                lines.append(f"      e.g. {example}")
        return "\n".join(lines)


def _examples(df: pd.DataFrame, mask: pd.Series) -> list[dict[str, Any]]:
    rows = df.loc[mask].head(EXAMPLE_ROWS)
    return [
        {"row": int(idx), **{k: (None if pd.isna(v) else str(v)) for k, v in row.items()}}
        for idx, row in rows.iterrows()
    ]


def _type_mask(series: pd.Series, expected: str) -> pd.Series | None:
    """Rows whose value does not have the expected type; None when the whole dtype is wrong."""
    present = series.notna()
    if expected == "float":
        if ptypes.is_bool_dtype(series):
            return None
        if ptypes.is_numeric_dtype(series):
            return pd.Series(False, index=series.index)
        return present & pd.to_numeric(series, errors="coerce").isna()
    if expected == "int":
        if ptypes.is_integer_dtype(series):
            return pd.Series(False, index=series.index)
        numeric = pd.to_numeric(series, errors="coerce")
        return present & (numeric.isna() | (numeric % 1 != 0))
    if expected == "datetime":
        if ptypes.is_datetime64_any_dtype(series):
            return pd.Series(False, index=series.index)
        parsed = pd.to_datetime(series, errors="coerce", utc=True, format="mixed")
        return present & parsed.isna()
    if expected == "bool":
        if ptypes.is_bool_dtype(series):
            return pd.Series(False, index=series.index)
        return present & ~series.isin([True, False, 0, 1, "true", "false", "True", "False"])
    if expected == "string":
        if ptypes.is_object_dtype(series) or ptypes.is_string_dtype(series):
            return pd.Series(False, index=series.index)
        return None
    raise ValueError(f"unknown column type {expected}")


def _check_column(df: pd.DataFrame, name: str, rule: ColumnRule) -> list[Violation]:
    series = df[name]
    found: list[Violation] = []
    nulls = series.isna()
    n_null = int(nulls.sum())
    if n_null and not rule.nullable:
        found.append(
            Violation(
                "not_null", name, n_null, "nulls in a non-nullable column", _examples(df, nulls)
            )
        )
    elif len(df) and n_null / len(df) > rule.max_null_fraction:
        found.append(
            Violation(
                "max_null_fraction",
                name,
                n_null,
                f"{n_null / len(df):.1%} nulls, at most {rule.max_null_fraction:.1%} allowed",
                _examples(df, nulls),
            )
        )

    bad_type = _type_mask(series, rule.type)
    if bad_type is None:
        found.append(
            Violation(
                "type",
                name,
                int(series.notna().sum()),
                f"expected {rule.type}, column has dtype {series.dtype}",
                _examples(df, series.notna()),
            )
        )
        return found
    if bad_type.any():
        found.append(
            Violation(
                "type",
                name,
                int(bad_type.sum()),
                f"values that are not {rule.type}",
                _examples(df, bad_type),
            )
        )

    if rule.type in ("int", "float") and (rule.min is not None or rule.max is not None):
        numeric = pd.to_numeric(series, errors="coerce")
        out = pd.Series(False, index=df.index)
        if rule.min is not None:
            out |= numeric < rule.min
        if rule.max is not None:
            out |= numeric > rule.max
        if out.any():
            found.append(
                Violation(
                    "range",
                    name,
                    int(out.sum()),
                    f"outside [{rule.min}, {rule.max}]",
                    _examples(df, out),
                )
            )
    return found


def check_quality(df: pd.DataFrame, spec: ProjectSpec) -> QualityReport:
    """Check a raw dataset against the spec's columns, types, nulls, ranges, keys and size."""
    return check_rules(
        df, spec.data.columns, min_rows=spec.data.min_rows, keys=[spec.entity_key, spec.timestamp]
    )


def check_rules(
    df: pd.DataFrame,
    rules: Mapping[str, ColumnRule],
    *,
    min_rows: int = 0,
    keys: Sequence[str] = (),
) -> QualityReport:
    """Check ``df`` against column rules, a least row count and a unique key (none: empty)."""
    violations: list[Violation] = []
    if len(df) < min_rows:
        violations.append(
            Violation("min_rows", "*", len(df), f"{len(df)} rows, at least {min_rows} required")
        )
    for name, rule in rules.items():
        if name not in df.columns:
            violations.append(
                Violation("missing_column", name, len(df), "column declared in the spec is absent")
            )
            continue
        violations.extend(_check_column(df, name, rule))

    keys = list(keys)
    if keys and all(k in df.columns for k in keys):
        dup = df.duplicated(keys, keep=False)
        if dup.any():
            violations.append(
                Violation(
                    "duplicate_key",
                    "+".join(keys),
                    int(dup.sum()),
                    "rows share an entity and timestamp",
                    _examples(df, dup),
                )
            )
    return QualityReport(rows=len(df), violations=violations)


def normalize(df: pd.DataFrame, spec: ProjectSpec) -> pd.DataFrame:
    """Cast a dataset that passed the checks to the spec's types (UTC timestamps)."""
    out = df[list(spec.data.columns)].copy()
    for name, rule in spec.data.columns.items():
        if rule.type == "datetime":
            # Microseconds: what Parquet readers (DuckDB, Spark) all accept.
            out[name] = pd.to_datetime(out[name], utc=True, format="mixed").dt.as_unit("us")
        elif rule.type == "float":
            out[name] = pd.to_numeric(out[name]).astype("float64")
        elif rule.type == "int" and not out[name].isna().any():
            out[name] = pd.to_numeric(out[name]).astype("int64")
        elif rule.type == "string":
            out[name] = out[name].astype("string")
    return out.sort_values([spec.timestamp, spec.entity_key], ignore_index=True)
