"""Online feature lookups: batched store reads, arrays in model order, clear errors."""

from __future__ import annotations

import asyncio
import threading

import pytest

from serving.errors import EntityNotFound, InvalidField, Unavailable
from serving.features import (
    EntityRow,
    FeatureLayout,
    OnlineFeatures,
    OnlineLookup,
    parse_entity_id,
)

NAMES = ("a", "b", "c")
LAYOUT = FeatureLayout(
    project="p",
    join_key="id",
    value_type="INT64",
    views=(("v1", ("a", "b")), ("v2", ("c",))),
    serialization_version=3,
)


class SlowStore(OnlineLookup):
    backend = "test"

    def __init__(self, fail: bool = False):
        super().__init__(LAYOUT)
        self.calls: list[list[int]] = []
        self.fail = fail
        self.gate = threading.Event()

    def read_sync(self, entities):
        self.calls.append(list(entities))
        self.gate.wait(2)
        if self.fail:
            raise TimeoutError("store down")
        return [EntityRow([e, e * 10.0, e * 100.0], None) if e < 100 else None for e in entities]


def features_over(store: SlowStore) -> OnlineFeatures:
    features = OnlineFeatures(lambda: (LAYOUT, store))
    assert features.open()
    return features


def test_concurrent_lookups_share_store_reads():
    store = SlowStore()
    features = features_over(store)

    async def many():
        first = asyncio.create_task(features.read([1]))
        await asyncio.sleep(0.05)  # the first read is under way: the next ones wait together
        rest = [asyncio.create_task(features.read([e, 2])) for e in (3, 4, 5)]
        await asyncio.sleep(0.05)
        store.gate.set()
        return await first, await asyncio.gather(*rest)

    first, rest = asyncio.run(many())
    assert store.calls == [[1], [3, 2, 4, 5]]
    assert first[0].values == [1, 10.0, 100.0]
    assert [[row.values[0] for row in rows] for rows in rest] == [[3, 2], [4, 2], [5, 2]]


class InlineStore(SlowStore):
    inline = True


def test_inline_stores_serve_each_loop_iteration_with_one_read():
    store = InlineStore()
    store.gate.set()
    features = features_over(store)

    async def many():
        return await asyncio.gather(*(features.read([e]) for e in (1, 2, 3)))

    rows = asyncio.run(many())
    assert store.calls == [[1, 2, 3]]
    assert [r[0].values[0] for r in rows] == [1, 2, 3]


def test_an_inline_store_that_fails_is_not_asked_again_at_once():
    store = InlineStore(fail=True)
    store.gate.set()
    features = features_over(store)
    for _ in range(3):
        with pytest.raises(Unavailable, match="store down"):
            asyncio.run(features.read([1]))
    assert len(store.calls) == 1  # backed off: the next requests failed fast


def test_matrix_follows_the_requested_order_and_names_unknown_entities():
    store = SlowStore()
    store.gate.set()
    features = features_over(store)
    X = asyncio.run(features.matrix([7, 8, 7], ("c", "a"), ["r0", "r1", "r2"]))
    assert X.tolist() == [[700.0, 7.0], [800.0, 8.0], [700.0, 7.0]]
    with pytest.raises(EntityNotFound) as err:
        asyncio.run(
            features.matrix([1, 123], NAMES, ["records[0].entity_id", "records[1].entity_id"])
        )
    assert err.value.field == "records[1].entity_id" and "123" in err.value.message


def test_a_store_outage_is_a_503_not_a_crash():
    store = SlowStore(fail=True)
    store.gate.set()
    features = features_over(store)
    with pytest.raises(Unavailable):
        asyncio.run(features.read([1]))


def test_a_store_that_never_opened_is_a_503_that_says_so():
    def broken():
        raise FileNotFoundError("registry.db")

    features = OnlineFeatures(broken, retry_seconds=3600)
    assert not features.open()
    with pytest.raises(Unavailable, match="registry.db"):
        features.parse_entity(1, "records[0].entity_id")


@pytest.mark.parametrize(
    ("raw", "kind", "expected"),
    [
        (7, "INT64", 7),
        ("7", "INT64", 7),
        ("-3", "INT32", -3),
        ("abc", "STRING", "abc"),
        (12, "STRING", "12"),
    ],
)
def test_entity_ids_take_the_join_keys_type(raw, kind, expected):
    assert parse_entity_id(raw, kind, "f") == expected


@pytest.mark.parametrize(
    ("raw", "kind"),
    [("x1", "INT64"), (1.5, "INT64"), (None, "STRING"), ([1], "STRING"), (True, "INT64")],
)
def test_bad_entity_ids_are_422(raw, kind):
    with pytest.raises(InvalidField):
        parse_entity_id(raw, kind, "records[0].entity_id")
