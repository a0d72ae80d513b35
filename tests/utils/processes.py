"""Processes the tests start (an MLflow server, moto's S3, a CPU burner): wait for them, stop
them."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator


def wait_until_answers(
    url: str, proc: subprocess.Popen, seconds: float, why: Callable[[], str], poll: float = 0.2
) -> None:
    """Until ``url`` answers HTTP; a RuntimeError with ``why()`` if ``proc`` exits first or
    ``seconds`` pass."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(why()) from None
            time.sleep(poll)


def stop(proc: subprocess.Popen, grace: float = 20) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()


# One busy loop per process until its deadline: it stops by itself even if nobody stops it.
_BURN = (
    "import sys, time\n"
    "end = time.monotonic() + float(sys.argv[1])\n"
    "while time.monotonic() < end:\n"
    "    pass\n"
)


@contextlib.contextmanager
def cpu_burner(seconds: float, processes: int = 2) -> Iterator[list[subprocess.Popen]]:
    """A busy machine, as CI's shared runners are: ``processes`` CPU-bound loops (no network)
    for at most ``seconds``; stopped, by their ids, when the block ends."""
    procs = [
        subprocess.Popen([sys.executable, "-c", _BURN, str(seconds)]) for _ in range(processes)
    ]
    try:
        yield procs
    finally:
        for proc in procs:
            stop(proc, grace=5)
