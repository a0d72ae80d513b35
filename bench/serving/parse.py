"""What a /predict body costs to parse, by path: the typed decoder (msgspec) against the checking
path (orjson and the checks that name a bad field), for the serving benchmark's bodies.

Usage (from the repository root; a few seconds)::

    .venv/bin/python bench/serving/parse.py [--rows 1 100 1000]

Prints microseconds per body (best of five rounds) for each body size and path: records and a
table each have a typed decoder; the checking path is what a body with entity ids, keys (for
records) or a bad value takes.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from bench.serving import payloads  # noqa: E402
from serving.inputs import loads, parse_body, parse_predict  # noqa: E402

NAMES = tuple(payloads.FEATURES)


def micros(call: Callable[[], object], seconds: float = 0.3) -> float:
    """Best of five rounds of about ``seconds`` each, in microseconds per call (the garbage
    collector paused while timing)."""
    for _ in range(50):
        call()
    start, n = time.perf_counter(), 0
    while time.perf_counter() - start < seconds / 10:
        call()
        n += 1
    best = float("inf")
    gc.disable()
    try:
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(n * 10):
                call()
            best = min(best, (time.perf_counter() - start) / (n * 10))
    finally:
        gc.enable()
    return best * 1e6


def no_entities(raw, field):
    raise AssertionError("the benchmark's bodies carry no entity ids")


def checking_path(body: bytes) -> object:
    return parse_body(loads(body), NAMES, no_entities, 10_000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 100, 1000])
    args = parser.parse_args()
    print(f"{'body':<22} {'rows':>5} {'typed decoder (us)':>19} {'checking path (us)':>19}")
    for rows in args.rows:
        X = payloads.rows(rows)
        for name, body in (
            ("records", payloads.kubeloop(X)),
            ("table", payloads.kubeloop_table(X)),
        ):
            typed = micros(partial(parse_predict, body, NAMES, no_entities, 10_000))
            checked = micros(partial(checking_path, body))
            print(f"{name:<22} {rows:>5} {typed:>19.1f} {checked:>19.1f}")


if __name__ == "__main__":
    main()
