"""A kfp.local run as a person wants to read it: one line per step, the full log in a file.

kfp.local prints everything to stdout: the whole spec JSON several times per step, every
step's own log, its outputs. ``StepLog`` takes that stream instead of the terminal: it writes
all of it to a log file and calls ``progress`` with one line when a step starts and one when it
ends, with its time. When a step fails, ``failure`` is the step's own last error message (the
line a traceback ends with), so a command can end on the message rather than on "see above".
"""

from __future__ import annotations

import contextlib
import io
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_START = re.compile(r"Executing task '([^']+)'")
_END = re.compile(r"Task '([^']+)' finished with status (\w+)")
# The line a Python traceback ends with: `package.module.SomeError: what happened`.
_ERROR = re.compile(r"^\s*(?:[\w.]+\.)?(\w*(?:Error|Exception|Failed)\w*): (.+)$")


class StepLog(io.TextIOBase):
    """A text stream (for ``contextlib.redirect_stdout``) that tees kfp.local's output into a
    file and reports each step's start and end through ``progress``."""

    def __init__(self, path: Path, progress: Callable[[str], None]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._file = path.open("w", encoding="utf-8")
        self._progress = progress
        # The stdout before run_local redirects it here: a callback that prints (a notebook's
        # ``progress=print``) must reach it, not this log.
        self._stdout = sys.stdout
        self._pending = ""
        self._started: dict[str, float] = {}
        self._error: list[str] = []  # the last exception's message lines, as the step printed it
        self.failed_step: str | None = None
        self.failure: str | None = None

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._file.write(text)
        self._pending += text
        *lines, self._pending = self._pending.split("\n")
        for line in lines:
            self._read(_ANSI.sub("", line))
        return len(text)

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        if self._pending:
            self._read(_ANSI.sub("", self._pending))
            self._pending = ""
        super().close()  # flushes, so before the file closes
        self._file.close()

    def _report(self, text: str) -> None:
        with contextlib.redirect_stdout(self._stdout):
            self._progress(text)

    def _read(self, line: str) -> None:
        if match := _START.search(line):
            self._started[match.group(1)] = time.perf_counter()
            self._error = []
            self._report(f"{match.group(1)}: running")
        elif match := _END.search(line):
            step, state = match.group(1), match.group(2)
            seconds = time.perf_counter() - self._started.get(step, time.perf_counter())
            if state == "SUCCESS":
                self._report(f"{step}: done in {seconds:.1f} s")
            else:
                self.failed_step = step
                self.failure = "\n".join(self._error) or None
                self._report(f"{step}: failed after {seconds:.1f} s")
        elif "Traceback (most recent call last)" in line:
            self._error = []
        elif match := _ERROR.match(line):
            self._error = [match.group(2).strip()]
        elif self._error and line.strip():
            # A multi-line message (a data-quality report) continues until the step ends.
            self._error.append(line.strip())
