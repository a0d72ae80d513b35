"""The stress gate: a bounded load test against the candidate before it takes any traffic.

Logged requests (the features the champion saw lately) are replayed through the server's route
pinned to the candidate, ``POST /v2/models/{name}/versions/{version}/infer``, at the spec's rate
for the spec's time (``rollout.stress``). The load is open-loop: requests leave on schedule
whether or not earlier ones have answered, so a server that cannot keep up shows as latency and
as requests it never got (beyond ``max_in_flight`` outstanding), not as a politely lower rate.
It stops by itself: nothing is sent after ``duration_seconds`` and nothing is awaited longer
than the request timeout after that.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
import numpy as np
import orjson

from kubeloop.spec import StressSpec
from monitoring.errors import RolloutError
from monitoring.window import read_window

REPLAY_ROWS = 500  # distinct logged rows cycled through by the load
REPLAY_HOURS = 24.0  # how far back the rows to replay may come from
REQUEST_TIMEOUT = 5.0


@dataclass(frozen=True)
class Load:
    """What a load run saw: one latency per answered request, and what went wrong."""

    sent: int
    latencies: list[float]  # seconds, answered with 200
    errors: int  # answered with another status, or failed (timeout, connection)
    skipped: int  # never sent: max_in_flight requests were outstanding
    seconds: float


@dataclass(frozen=True)
class StressResult:
    """The gate's verdict, as recorded on the version and in its lineage."""

    url: str
    version: str
    target_rps: float
    duration_seconds: float
    sent: int
    answered: int
    errors: int
    skipped: int
    achieved_rps: float
    p50_ms: float | None
    p99_ms: float | None
    error_rate: float
    passed: bool
    reasons: list[str]
    at: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def summary(self) -> str:
        return (
            f"{self.answered}/{self.sent + self.skipped} answered at {self.achieved_rps:.1f} rps "
            f"(target {self.target_rps:g}), p99 {self.p99_ms} ms, errors {self.error_rate:.1%}"
        )


def infer_body(row: Sequence[float]) -> bytes:
    return orjson.dumps(
        {"inputs": [{"name": "input-0", "shape": [1, len(row)], "datatype": "FP64", "data": row}]}
    )


def model_features(url: str, model: str, version: str, timeout: float = 10.0) -> list[str]:
    """The candidate's input features in order, from the server's V2 metadata."""
    try:
        response = httpx.get(f"{url}/v2/models/{model}/versions/{version}", timeout=timeout)
        response.raise_for_status()
        return list(response.json()["inputs"][0]["parameters"]["features"])
    except (httpx.HTTPError, KeyError, IndexError, ValueError) as exc:
        raise RolloutError(
            f"the server at {url} does not describe {model} version {version} ({exc}): is the "
            "candidate loaded?"
        ) from exc


def replay_bodies(engine, model: str, features: Sequence[str], now: datetime) -> list[bytes]:
    """V2 infer bodies of the most recent logged requests (complete rows only)."""
    window = read_window(engine, model, features, now - timedelta(hours=REPLAY_HOURS), now)
    rows = window.frame[list(features)].dropna().to_numpy()[-REPLAY_ROWS:]
    if not len(rows):
        raise RolloutError(
            f"no logged requests of {model} in the last {REPLAY_HOURS:g} hours to replay in the "
            "stress test"
        )
    return [infer_body(row.tolist()) for row in rows]


async def _load(
    url: str, bodies: Sequence[bytes], headers: dict[str, str], spec: StressSpec
) -> Load:
    total = max(1, round(spec.rps * spec.duration_seconds))
    latencies: list[float] = []
    failed = skipped = 0
    in_flight = 0
    limits = httpx.Limits(max_connections=spec.max_in_flight, max_keepalive_connections=64)

    async with httpx.AsyncClient(limits=limits, timeout=REQUEST_TIMEOUT) as client:

        async def one(body: bytes) -> None:
            nonlocal failed, in_flight
            started = time.perf_counter()
            try:
                response = await client.post(url, content=body, headers=headers)
                if response.status_code == 200:
                    latencies.append(time.perf_counter() - started)
                else:
                    failed += 1
            except httpx.HTTPError:
                failed += 1
            finally:
                in_flight -= 1

        tasks = []
        start = time.perf_counter()
        for i in range(total):
            delay = start + i / spec.rps - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if in_flight >= spec.max_in_flight:
                skipped += 1
                continue
            in_flight += 1
            tasks.append(asyncio.create_task(one(bodies[i % len(bodies)])))
        await asyncio.gather(*tasks)
        seconds = time.perf_counter() - start
    return Load(len(tasks), latencies, failed, skipped, seconds)


def run_load(url: str, bodies: Sequence[bytes], token: str | None, spec: StressSpec) -> Load:
    """Send the bounded load (blocks for about ``duration_seconds``)."""
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return asyncio.run(_load(url, bodies, headers, spec))


def judge_load(load: Load, spec: StressSpec, *, url: str, version: str, at: str) -> StressResult:
    """Pass or fail against the spec's limits, with the reasons."""
    answered = len(load.latencies)
    attempted = load.sent + load.skipped
    error_rate = (load.errors + load.skipped) / attempted if attempted else 1.0
    p50, p99 = (
        (round(1000 * float(np.quantile(load.latencies, q)), 2) for q in (0.5, 0.99))
        if answered
        else (None, None)
    )
    achieved = answered / spec.duration_seconds
    reasons = []
    if p99 is None or p99 > spec.max_p99_ms:
        reasons.append(f"p99 {p99} ms above {spec.max_p99_ms:g} ms")
    if error_rate > spec.max_error_rate:
        reasons.append(
            f"{load.errors} errors and {load.skipped} requests not sent of {attempted} "
            f"({error_rate:.1%} > {spec.max_error_rate:.1%})"
        )
    if achieved < spec.min_achieved_share * spec.rps:
        reasons.append(f"served {achieved:.1f} rps of the {spec.rps:g} targeted")
    return StressResult(
        url=url,
        version=version,
        target_rps=spec.rps,
        duration_seconds=spec.duration_seconds,
        sent=load.sent,
        answered=answered,
        errors=load.errors,
        skipped=load.skipped,
        achieved_rps=round(achieved, 2),
        p50_ms=p50,
        p99_ms=p99,
        error_rate=round(error_rate, 5),
        passed=not reasons,
        reasons=reasons,
        at=at,
    )


def stress_candidate(
    server_url: str,
    token: str | None,
    engine,
    model: str,
    version: str,
    spec: StressSpec,
    now: datetime,
) -> StressResult:
    """Replay logged requests against ``version`` through its pinned route and judge it."""
    server_url = server_url.rstrip("/")
    features = model_features(server_url, model, version)
    bodies = replay_bodies(engine, model, features, now)
    url = f"{server_url}/v2/models/{model}/versions/{version}/infer"
    load = run_load(url, bodies, token, spec)
    return judge_load(load, spec, url=url, version=version, at=now.isoformat(timespec="seconds"))
