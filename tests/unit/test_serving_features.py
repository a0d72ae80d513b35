"""Online feature lookups: batched store reads that never block the event loop, arrays in
model order, clear errors."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest

from serving.errors import EntityNotFound, InvalidField, Unavailable
from serving.feature_layout import EntityRow, FeatureLayout, parse_entity_id
from serving.features import OnlineFeatures
from serving.online_lookup import OnlineLookup, ThreadedLookup
from serving.redis_lookup import RedisLookup, field_hash, parse_connection_string

NAMES = ("a", "b", "c")
LAYOUT = FeatureLayout(
    project="p",
    join_key="id",
    value_type="INT64",
    views=(("v1", ("a", "b")), ("v2", ("c",))),
    serialization_version=3,
)


def row(e: int) -> EntityRow | None:
    return EntityRow([e, e * 10.0, e * 100.0], None) if e < 100 else None


class SlowStore(ThreadedLookup):
    """A blocking store client (read on the lookup's thread) that waits for ``gate``."""

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
        return [row(e) for e in entities]


class AsyncStore(OnlineLookup):
    """An asynchronous store client (read on the event loop, as Redis is)."""

    backend = "test"

    def __init__(self, fail: bool = False):
        super().__init__(LAYOUT)
        self.calls: list[list[int]] = []
        self.fail = fail

    async def read_rows(self, entities):
        self.calls.append(list(entities))
        await asyncio.sleep(0.01)
        if self.fail:
            raise TimeoutError("store down")
        return [row(e) for e in entities]

    async def close(self) -> None:
        pass


def features_over(store: OnlineLookup) -> OnlineFeatures:
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


def test_requests_of_one_loop_iteration_share_one_read():
    store = AsyncStore()
    features = features_over(store)

    async def many():
        return await asyncio.gather(*(features.read([e]) for e in (1, 2, 3)))

    rows = asyncio.run(many())
    assert store.calls == [[1, 2, 3]]
    assert [r[0].values[0] for r in rows] == [1, 2, 3]


def test_a_store_that_times_out_is_not_asked_again_at_once():
    store = AsyncStore(fail=True)
    features = features_over(store)
    for _ in range(3):
        with pytest.raises(Unavailable, match="store down"):
            asyncio.run(features.read([1]))
    assert len(store.calls) == 1  # backed off: the next requests failed fast


def test_a_hung_redis_never_blocks_the_event_loop():
    """A real socket that accepts and never answers: the read times out after its timeout
    while the loop keeps serving everything else."""
    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(8)
        port = hung.getsockname()[1]
        features = features_over(RedisLookup(LAYOUT, f"127.0.0.1:{port}", timeout=0.5))

        async def read_while_ticking():
            ticks = 0

            async def tick():
                nonlocal ticks
                while True:
                    await asyncio.sleep(0.01)
                    ticks += 1

            ticker = asyncio.create_task(tick())
            started = time.monotonic()
            with pytest.raises(Unavailable, match="Timeout"):
                await features.read([1])
            waited = time.monotonic() - started
            ticker.cancel()
            await features.close()
            return ticks, waited

        ticks, waited = asyncio.run(read_while_ticking())
    assert 0.4 < waited < 3
    assert ticks >= waited / 0.01 / 3  # the loop ran all along (a blocked loop ticks ~0 times)


def test_redis_connection_strings_are_read_as_feast_writes_them():
    assert parse_connection_string("redis:6379,db=14,password=pw") == (
        "redis",
        6379,
        {"db": "14", "password": "pw"},
    )
    for unsupported in ("a:1,b:2", "redis:6379,ssl=true", "redis"):
        with pytest.raises(ValueError, match="Redis"):
            parse_connection_string(unsupported)


def test_field_hashes_are_feasts():
    from feast.infra.online_stores.helpers import _mmh3  # only to check the public mmh3 use

    assert field_hash("view", "feature") == _mmh3("view:feature")


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
        ("-9223372036854775808", "INT64", -(2**63)),
        ("abc", "STRING", "abc"),
        (12, "STRING", "12"),
    ],
)
def test_entity_ids_take_the_join_keys_type(raw, kind, expected):
    assert parse_entity_id(raw, kind, "f") == expected


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        ("x1", "INT64"),
        (1.5, "INT64"),
        (None, "STRING"),
        ([1], "STRING"),
        (True, "INT64"),
        # digits str.isdigit() takes and int() does not, or out of the key type's range: these
        # were a 500 and a 503 that told the client to retry
        ("--5", "INT64"),
        ("\u00b2", "INT64"),
        ("9999999999999999999", "INT64"),
        (2**63, "INT64"),
        ("2147483648", "INT32"),
    ],
)
def test_bad_entity_ids_are_422(raw, kind):
    with pytest.raises(InvalidField):
        parse_entity_id(raw, kind, "records[0].entity_id")
