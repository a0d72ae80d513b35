"""kfp.local's output read as a person wants it: a line per step, the failing step's message."""

from __future__ import annotations

import contextlib

from pipelines.progress import StepLog

STREAM = """\
\x1b[0m08:00:01.000 - INFO - Executing task \x1b[96m'ingest'\x1b[0m
08:00:01.001 - INFO - Streamed logs:

    {"spec": "... a very long JSON ..."}
    08:00:02 INFO components.ingest.core: read 442 rows
08:00:03.000 - INFO - Task \x1b[96m'ingest'\x1b[0m finished with status \x1b[92mSUCCESS\x1b[0m
08:00:03.001 - INFO - Executing task 'train'
    Traceback (most recent call last):
      File "/x/components/train/core.py", line 10, in run_step
        raise ValueError("boom")
    ValueError: boom
    During handling of the above exception, another exception occurred:
    Traceback (most recent call last):
      File "/x/kfp/dsl/executor_main.py", line 3, in main
    kubeloop.errors.DataQualityError: ingest stopped: the data breaks 1 rule(s)
    - missing_column [bmi]: 442 row(s)

08:00:09.000 - ERROR - Task 'train' finished with status FAILURE
"""


def test_steps_are_reported_and_the_failing_steps_own_message_is_kept(tmp_path) -> None:
    lines: list[str] = []
    log = StepLog(tmp_path / "logs" / "run.log", lines.append)
    with contextlib.closing(log), contextlib.redirect_stdout(log):
        for chunk in (STREAM[:50], STREAM[50:]):  # writes arrive in arbitrary pieces
            print(chunk, end="")
    assert [line.split(" ")[:2] for line in lines] == [
        ["ingest:", "running"],
        ["ingest:", "done"],
        ["train:", "running"],
        ["train:", "failed"],
    ]
    assert log.failed_step == "train"
    assert log.failure == (
        "ingest stopped: the data breaks 1 rule(s)\n- missing_column [bmi]: 442 row(s)"
    )
    assert "a very long JSON" in (tmp_path / "logs" / "run.log").read_text()


def test_a_callback_that_prints_reaches_the_stdout_outside_the_log(tmp_path, capsys) -> None:
    """A notebook passes ``progress=print``: its lines belong in the cell, not in the log file
    that stdout is redirected to while the steps run."""
    log = StepLog(tmp_path / "run.log", print)
    with contextlib.closing(log), contextlib.redirect_stdout(log):
        print(STREAM.split("08:00:03.001")[0], end="")
    assert capsys.readouterr().out.splitlines()[0] == "ingest: running"
    assert "ingest: running" not in (tmp_path / "run.log").read_text()
