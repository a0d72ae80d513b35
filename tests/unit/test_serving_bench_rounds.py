"""The serving benchmark's rounds: interleaved so drift weighs on every server alike, and
reported as the median round with the rows of all rounds."""

from __future__ import annotations

from bench.serving.run import Result, combined, interleaved


def test_rounds_alternate_the_order_of_the_servers():
    assert interleaved(["kubeloop", "mlflow", "kserve"], 3) == [
        *("kubeloop", "mlflow", "kserve"),
        *("kserve", "mlflow", "kubeloop"),
        *("kubeloop", "mlflow", "kserve"),
    ]
    assert interleaved(["kubeloop"], 1) == ["kubeloop"]


def run(rps: float, p99: float, rss: float, answered: int, logged: int) -> Result:
    result = Result("kubeloop", "100 rows", 8, rps, p99 / 2, p99, 0, rss)
    result.rows_answered, result.rows_logged = answered, logged
    result.rows_dropped, result.log_drain_seconds = max(0, answered - logged), rps / 100
    return result


def test_a_scenario_reports_its_median_round_and_the_rows_of_every_round():
    slow, median, fast = (
        run(1_500, 15.0, 600, 100, 100),
        run(2_000, 12.0, 700, 200, 190),
        run(2_400, 11.0, 650, 300, 300),
    )
    out = combined([fast, slow, median])
    assert (out.rps, out.p99_ms) == (2_000, 12.0)  # the median round's figures, together
    assert out.rps_runs == [2_400, 1_500, 2_000]  # in the order they ran
    assert out.rss_mb == 700
    assert (out.rows_answered, out.rows_logged, out.rows_dropped) == (600, 590, 10)
    assert out.log_drain_seconds == 24


def test_a_peer_without_a_log_has_no_rows():
    peer = Result("kserve", "100 rows", 8, 700, 11.0, 17.0, 1, 216)
    out = combined([peer, Result("kserve", "100 rows", 8, 650, 12.0, 18.0, 2, 218)])
    assert out.rps == 650  # of two, the slower: a median never flatters
    assert out.errors == 3
    assert out.rows_answered is None
