"""The spec's feature engineering, loaded and applied: one function for training, the demo and
the tests, so features are always computed the same way."""

from __future__ import annotations

import importlib
from collections.abc import Callable

import pandas as pd

from kubeloop.errors import SpecError
from kubeloop.spec import ProjectSpec


def load_transform(spec: ProjectSpec) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """The spec's feature-engineering function: generated from ``features.declared``, or the
    ``module:function`` of ``features.transform``."""
    if spec.features.declared is not None:
        from kubeloop.declared_features import transform

        return transform(spec)
    module_name, _, func_name = (spec.features.transform or "").partition(":")
    try:
        return getattr(importlib.import_module(module_name), func_name)
    except (ImportError, AttributeError) as exc:
        raise SpecError(
            f"features.transform: cannot load '{spec.features.transform}' ({exc})",
            field="features.transform",
        ) from exc


def feature_frame(raw: pd.DataFrame, spec: ProjectSpec) -> pd.DataFrame:
    """The spec's transform applied to raw readings, with the target kept."""
    frame = load_transform(spec)(raw)
    frame[spec.target] = raw[spec.target].to_numpy()
    return frame
