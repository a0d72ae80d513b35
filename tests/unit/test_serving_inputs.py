"""Request bodies to feature matrices: strict validation that names the bad field."""

from __future__ import annotations

import json

import numpy as np
import orjson
import pytest

from serving import inputs
from serving.errors import InvalidFeature, InvalidField, InvalidRequest, PayloadTooLarge
from serving.inputs import loads, parse_body, parse_predict, parse_records, records_of

NAMES = ("a", "b", "c")


def entity(raw, field):
    if type(raw) is not int:
        raise InvalidField(f"{field} must be an integer", field=field)
    return raw


def parse(body: bytes | str, limit: int = 100):
    """What ``POST /predict`` does with a body: the typed decoder, else the checking path."""
    raw = body.encode() if isinstance(body, str) else body
    return parse_predict(raw, NAMES, entity, limit)


def features(**values):
    return {"records": [{"features": {"a": 1.0, "b": 2, "c": -3.5, **values}}]}


def test_parse_records_builds_float64_matrix_in_model_order():
    body = orjson.dumps(
        {
            "records": [
                {"features": {"c": 3, "a": 1.5, "b": 2.0}},
                {"features": {"b": 0, "c": 0, "a": -1}},
            ]
        }
    )
    batch = parse(body)
    assert batch.X.dtype == np.float64
    assert batch.X.tolist() == [[1.5, 2.0, 3.0], [-1.0, 0.0, 0.0]]
    assert batch.entity_positions == [] and batch.keys == [None, None]


def test_records_by_entity_leave_rows_for_the_lookup_and_key_by_entity():
    body = orjson.dumps(
        {
            "records": [
                {"entity_id": 7},
                {"features": {"a": 1, "b": 2, "c": 3}},
                {"entity_id": 8, "key": "user-1"},
            ]
        }
    )
    batch = parse(body)
    assert batch.entity_positions == [0, 2]
    assert batch.entity_ids == [7, None, 8]
    assert batch.keys == ["7", None, "user-1"]
    assert batch.X[1].tolist() == [1.0, 2.0, 3.0]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (features(b=None), "records[0].features.b"),
        (features(b="2.0"), "records[0].features.b"),
        (features(c=True), "records[0].features.c"),
        (features(a=[1.0]), "records[0].features.a"),
    ],
)
def test_predict_rejects_wrong_typed_feature(body, field):
    with pytest.raises(InvalidFeature) as err:
        parse(orjson.dumps(body))
    assert err.value.field == field
    assert err.value.status_code == 422


def test_the_message_says_what_was_sent_in_json_terms():
    with pytest.raises(InvalidFeature, match=r"features\.b must be a number, got null$"):
        parse(orjson.dumps(features(b=None)))
    with pytest.raises(InvalidFeature, match=r"got str '2\.0'$"):
        parse(orjson.dumps(features(b="2.0")))


def test_a_body_without_records_says_which_shapes_are_taken_and_what_came():
    """A KServe V1 body (``instances``) sent to ``/predict``."""
    with pytest.raises(InvalidField) as err:
        parse(orjson.dumps({"instances": [[1.0, 2.0, 3.0]]}))
    assert err.value.field == "records"
    assert '"records"' in str(err.value) and '"rows"' in str(err.value)
    assert "it has 'instances'" in str(err.value)


def test_predict_rejects_nan_feature():
    body = json.dumps(features(a=float("nan")))  # Python clients write the NaN literal
    assert "NaN" in body
    with pytest.raises(InvalidFeature) as err:
        parse(body)
    assert err.value.field == "records[0].features.a"
    assert "finite" in err.value.message


@pytest.mark.parametrize("literal", ["Infinity", "-Infinity", "1e999"])
def test_predict_rejects_infinite_feature(literal):
    body = '{"records": [{"features": {"a": 1, "b": LITERAL, "c": 2}}]}'.replace("LITERAL", literal)
    with pytest.raises(InvalidFeature) as err:
        parse(body)
    assert err.value.field == "records[0].features.b"


def test_predict_rejects_missing_feature_naming_it():
    with pytest.raises(InvalidFeature) as err:
        parse(orjson.dumps({"records": [{"features": {"a": 1, "c": 2}}]}))
    assert err.value.field == "records[0].features.b"
    assert "lacks 'b'" in err.value.message
    with pytest.raises(InvalidFeature) as err:
        parse(orjson.dumps({"records": [{"features": {"a": 1, "B ": 0, "c": 2}}]}))
    assert "lacks 'b'; it has 1 the model does not take ('B '...)" in err.value.message


def test_predict_rejects_unknown_feature_naming_it():
    body = {
        "records": [
            {"features": {"a": 1, "b": 2, "c": 3}},
            {"features": {"a": 1, "b": 2, "c": 3, "zzz": 4}},
        ]
    }
    with pytest.raises(InvalidFeature) as err:
        parse(orjson.dumps(body))
    assert err.value.field == "records[1].features.zzz"


def test_predict_rejects_unknown_record_field():
    with pytest.raises(InvalidField) as err:
        parse(orjson.dumps({"records": [{"featurs": {"a": 1}}]}))
    assert err.value.field == "records[0].featurs"


def test_predict_rejects_record_without_entity_or_features():
    with pytest.raises(InvalidField) as err:
        parse(orjson.dumps({"records": [{"key": "x"}]}))
    assert err.value.field == "records[0]"


def test_predict_rejects_wrong_typed_entity_id():
    with pytest.raises(InvalidField) as err:
        parse(orjson.dumps({"records": [{"entity_id": [1]}]}))
    assert err.value.field == "records[0].entity_id"


@pytest.mark.parametrize(
    "record", [{"entity_id": 1}, {"features": {"a": 1, "b": 2, "c": 3}}], ids=["entity", "features"]
)
def test_batch_over_the_limit_is_413(record):
    body = orjson.dumps({"records": [record] * 11})
    with pytest.raises(PayloadTooLarge) as err:
        parse(body, limit=10)
    assert err.value.status_code == 413
    assert len(parse(body, limit=11)) == 11


def test_the_typed_decoder_builds_what_the_checking_path_builds(monkeypatch):
    """Feature names that are not identifiers, integers and floats, any key order."""
    names = ("humidity-pct", "class", "x 1", "a")
    rng = np.random.default_rng(0)
    records = []
    for _ in range(50):
        values = {n: float(v) for n, v in zip(names, rng.normal(size=4), strict=True)}
        values["class"] = int(rng.integers(-5, 5))
        order = [str(n) for n in rng.permutation(list(values))]
        records.append({"features": {n: values[n] for n in order}})
    body = orjson.dumps({"records": records})
    checked = parse_records(records_of(loads(body), 100), names, entity).X

    def no_fallback(*args, **kwargs):
        raise AssertionError("the common batch went through the checking path")

    monkeypatch.setattr(inputs, "parse_body", no_fallback)
    typed = parse_predict(body, names, entity, 100)
    assert typed.X.dtype == np.float64 and typed.X.shape == (50, 4)
    assert np.array_equal(typed.X, checked)
    assert typed.entity_positions == [] and typed.keys == [None] * 50
    assert not typed.has_entity_ids


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[1, 2]",
        b'{"records": {}}',
        b'{"records": []}',
        b'{"records": [1], "extra": 1}',
        b"[" * 100_000,
    ],
)
def test_malformed_bodies_are_client_errors(body):
    with pytest.raises((InvalidRequest, InvalidField)) as err:
        parse(body)
    assert err.value.status_code in (400, 422)


def test_single_feature_models_are_supported():
    batch = parse_records([{"features": {"x": 2.5}}], ("x",), entity)
    assert batch.X.tolist() == [[2.5]]


def test_huge_integer_is_refused_not_overflowed():
    body = '{"records": [{"features": {"a": 1, "b": HUGE, "c": 2}}]}'.replace("HUGE", str(10**400))
    with pytest.raises((InvalidFeature, InvalidRequest)):
        parse(body)


def table(**changes):
    body = {"columns": ["c", "a", "b"], "rows": [[3, 1.0, 2.0], [6.5, 4, 5]], **changes}
    return parse(orjson.dumps(body))


def test_a_table_body_is_reordered_into_model_order():
    batch = table(keys=["k1", None], entity_ids=[None, 42])
    assert batch.X.tolist() == [[1.0, 2.0, 3.0], [4.0, 5.0, 6.5]]
    assert batch.keys == ["k1", "42"] and batch.entity_ids == [None, "42"]
    assert batch.entity_positions == []


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"keys": ["k1", None], "entity_ids": [None, 42]},
        {"entity_ids": ["e-1", 7]},
        {"keys": [3, "k2"]},
        {"columns": ["a", "b", "c"], "rows": [[1, 2, 3]] * 40},
    ],
)
def test_a_valid_table_is_decoded_typed_into_what_the_checking_path_builds(changes, monkeypatch):
    body = orjson.dumps(
        {"columns": ["c", "a", "b"], "rows": [[3, 1.0, 2.0], [6.5, -4, 5e-3]], **changes}
    )
    checked = parse_body(loads(body), NAMES, entity, 100)

    def no_fallback(*args, **kwargs):
        raise AssertionError("a valid table went through the checking path")

    monkeypatch.setattr(inputs, "parse_body", no_fallback)
    typed = parse(body)
    assert typed.X.dtype == np.float64 and np.array_equal(typed.X, checked.X)
    assert (typed.keys, typed.entity_ids) == (checked.keys, checked.entity_ids)
    assert typed.has_entity_ids == checked.has_entity_ids
    assert typed.entity_positions == []


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"columns": ["a", "b"]}, "columns.c"),
        ({"columns": ["a", "b", "c", "d"], "rows": [[1, 2, 3, 4]]}, "columns.d"),
        ({"columns": ["a", "a", "c"]}, "columns.a"),
        ({"rows": [[1, 2, 3], [1, 2]]}, "rows[1]"),
        ({"rows": [[1, 2, 3], [1, "x", 3]]}, "rows[1].a"),
        ({"rows": [[1, 2, None]]}, "rows[0].b"),
        ({"rows": [[1, True, 3]]}, "rows[0].a"),
        ({"keys": ["only-one"]}, "keys"),
        ({"extra": 1}, "extra"),
    ],
)
def test_a_bad_table_is_refused_naming_the_field(changes, field):
    with pytest.raises((InvalidFeature, InvalidField)) as err:
        table(**changes)
    assert err.value.field == field


def test_a_table_with_nan_is_refused():
    body = '{"columns": ["a", "b", "c"], "rows": [[1, 2, 3], [1, NaN, 3]]}'
    with pytest.raises(InvalidFeature) as err:
        parse_body(loads(body.encode()), NAMES, entity, 100)
    assert err.value.field == "rows[1].b"


def test_a_table_over_the_limit_is_413():
    body = {"columns": list(NAMES), "rows": [[1, 2, 3]] * 11}
    with pytest.raises(PayloadTooLarge):
        parse(orjson.dumps(body), limit=10)
    assert len(parse(orjson.dumps(body), limit=11)) == 11


def test_booleans_hidden_among_zeros_and_ones_are_found():
    body = {
        "records": [
            {"features": {"a": 0.0, "b": 1.0, "c": 1}},
            {"features": {"a": 1, "b": 0, "c": False}},
        ]
    }
    with pytest.raises(InvalidFeature) as err:
        parse(orjson.dumps(body))
    assert err.value.field == "records[1].features.c"
    ok = parse(orjson.dumps({"records": body["records"][:1]}))
    assert ok.X.tolist() == [[0.0, 1.0, 1.0]]
