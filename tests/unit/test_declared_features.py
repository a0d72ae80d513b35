"""Features declared in the spec: names, values, Feast objects, and the errors a typo gets."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from kubeloop.declared_features import feast_objects, feature_names, transform
from kubeloop.engineering import load_transform
from kubeloop.errors import SpecError
from kubeloop.spec import parse_spec

COLUMNS = {
    "house_id": {"type": "int"},
    "sold_at": {"type": "datetime"},
    "kind": {"type": "string"},
    "area": {"type": "float"},
    "rooms": {"type": "float"},
    "price": {"type": "float"},
}
DECLARED = [
    {"column": "area"},
    {"column": "area", "encode": "log"},
    {"column": "kind", "encode": "one_hot", "categories": ["flat", "semi-detached"]},
    {"column": "area", "encode": "ratio", "denominator": "rooms", "name": "area_per_room"},
    {"column": "sold_at", "encode": "date_parts", "parts": ["month", "is_weekend"]},
]


def spec_with(declared=DECLARED, **changes):
    raw = {
        "name": "houses",
        "entity_key": "house_id",
        "timestamp": "sold_at",
        "target": "price",
        "data": {"source": "houses.csv", "columns": COLUMNS},
        "features": {"declared": declared},
        "model": {"estimator": {"class": "sklearn.linear_model.Ridge"}},
        **changes,
    }
    return parse_spec(raw)


def test_declared_features_have_names_in_declaration_order() -> None:
    assert feature_names(spec_with()) == [
        "area",
        "log_area",
        "kind_is_flat",
        "kind_is_semi_detached",
        "area_per_room",
        "sold_at_month",
        "sold_at_is_weekend",
    ]


def test_the_generated_transform_computes_each_encoding() -> None:
    raw = pd.DataFrame(
        {
            "house_id": [1, 2],
            "sold_at": ["2026-03-07T10:00:00Z", "2026-04-08T10:00:00Z"],  # a Saturday, a Wed
            "kind": ["semi-detached", None],
            "area": [99.0, 50.0],
            "rooms": [3.0, 0.0],
            "price": [1.0, 2.0],
        }
    )
    out = load_transform(spec_with())(raw)
    assert list(out.columns) == ["house_id", "sold_at", *feature_names(spec_with())]
    assert out["log_area"][0] == pytest.approx(math.log(100.0))
    assert list(out["kind_is_semi_detached"]) == [1.0, 0.0]
    assert list(out["kind_is_flat"]) == [0.0, 0.0]  # a missing category is none of them
    assert out["area_per_room"][0] == pytest.approx(33.0)
    assert math.isnan(out["area_per_room"][1])  # division by zero is missing, not infinite
    assert list(out["sold_at_month"]) == [3.0, 4.0]
    assert list(out["sold_at_is_weekend"]) == [1.0, 0.0]
    assert "price" not in out


def test_feast_objects_follow_the_spec() -> None:
    from feast import Entity, FeatureService, FeatureView, ValueType

    objects = feast_objects(spec_with())
    entity = next(o for o in objects if isinstance(o, Entity))
    view = next(o for o in objects if isinstance(o, FeatureView))
    service = next(o for o in objects if isinstance(o, FeatureService))
    assert entity.join_key == "house_id" and entity.value_type == ValueType.INT64
    assert [f.name for f in view.features] == feature_names(spec_with())
    assert service.name == "model_inputs"
    assert view.batch_source.timestamp_field == "sold_at"


@pytest.mark.parametrize(
    ("declared", "message"),
    [
        ([{"column": "kind", "encode": "one_hot"}], "needs 'categories'"),
        ([{"column": "area", "encode": "ratio"}], "needs 'denominator'"),
        ([{"column": "area", "categories": ["a"]}], "does not take 'categories'"),
        ([{"column": "floor"}], "column 'floor' is not declared in data.columns"),
        ([{"column": "price"}], "the target cannot be a feature"),
        ([{"column": "area", "encode": "square"}], "features.declared.0.encode"),
    ],
)
def test_a_wrong_declaration_names_what_is_wrong(declared, message) -> None:
    with pytest.raises(SpecError) as error:
        spec_with(declared)
    assert message in str(error.value)


def test_declared_features_and_a_transform_module_do_not_mix() -> None:
    with pytest.raises(SpecError, match="declared features leave out transform"):
        parse_spec(
            {
                "name": "houses",
                "entity_key": "house_id",
                "timestamp": "sold_at",
                "target": "price",
                "data": {"source": "houses.csv", "columns": COLUMNS},
                "features": {"declared": DECLARED, "transform": "x:y"},
                "model": {"estimator": {"class": "sklearn.linear_model.Ridge"}},
            }
        )


def test_a_metric_that_does_not_fit_the_task_is_refused() -> None:
    with pytest.raises(SpecError, match="'accuracy' is not a regression metric"):
        spec_with(evaluation={"primary_metric": "accuracy"})
    with pytest.raises(SpecError, match=r"thresholds.rmse: 'rmse' is not a classification"):
        spec_with(task="classification", evaluation={"thresholds": {"rmse": {"max": 1}}})
    assert spec_with(task="classification").evaluation.primary_metric == "f1"


def test_the_transform_keeps_string_entity_ids() -> None:
    columns = {**COLUMNS, "house_id": {"type": "string"}}
    spec = spec_with(data={"source": "houses.csv", "columns": columns})
    raw = pd.DataFrame(
        {"house_id": ["a"], "sold_at": ["2026-01-01"], "kind": ["flat"], "area": [1.0]}
        | {"rooms": [1.0], "price": [1.0]}
    )
    assert transform(spec)(raw)["house_id"].tolist() == ["a"]
    from feast import Entity, ValueType

    [entity] = [o for o in feast_objects(spec) if isinstance(o, Entity)]
    assert entity.value_type == ValueType.STRING
