"""Reports open with a summary: what was compared, the verdict and why, then the details."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd

from monitoring.reference import Baseline, describe, reference_text
from monitoring.report import summary_html, with_summary


def test_the_summary_comes_first_inside_the_body() -> None:
    page = "<html><head><title>x</title></head><body class='e'><div>plots</div></body></html>"
    summary = summary_html("Shadow", "Passed", "ok", ["no loss"], [("requests", 1200)])
    out = with_summary(page, summary)
    assert out.index("kubeloop-summary") < out.index("plots")
    assert out.index("<body class='e'>") < out.index("kubeloop-summary")
    assert "1,200" in out and "<li>no loss</li>" in out


def test_text_from_data_is_escaped() -> None:
    summary = summary_html("<b>m</b>", "Rolled back", "fail", ["x < y"], [("f<1>", "a&b")])
    assert "<b>m</b>" not in summary and "&lt;b&gt;m&lt;/b&gt;" in summary
    assert "x &lt; y" in summary and "a&amp;b" in summary


def test_a_page_without_a_body_gets_the_summary_in_front() -> None:
    assert with_summary("<div>plots</div>", "<section>s</section>").startswith("<section>")


def test_a_shadow_report_says_when_both_models_answered_identically(tmp_path) -> None:
    import numpy as np
    import pandas as pd

    from monitoring.rollout import compare_shadow, shadow_report

    rng = np.random.default_rng(3)
    preds = rng.normal(50, 10, 200)
    pairs = pd.DataFrame(
        {
            "request_id": [f"r{i}" for i in range(200)] * 2,
            "role": ["champion"] * 200 + ["shadow"] * 200,
            "model_version": ["1"] * 200 + ["2"] * 200,
            "prediction": np.concatenate([preds, preds]),
            "actual": np.concatenate([preds + rng.normal(0, 1, 200), [np.nan] * 200]),
        }
    )
    comparison, joined = compare_shadow(pairs, "2", "1", "regression", "rmse")
    path = shadow_report(
        joined, tmp_path / "s.html", "regression", comparison, "Shadow", ("Passed", "ok", [])
    )
    summary = path.read_text().split("kubeloop-summary")[1].split("</section>")[0]
    assert "identical predictions on every request" in summary
    assert "200" in summary  # requests both answered


def _baseline(reference: pd.DataFrame, source: str = "held-out") -> Baseline:
    return Baseline(
        model_name="churn",
        version="3",
        label="V1.0.3",
        run_id="8f2c0d1e",
        features=["x"],
        target="y",
        reference=reference,
        metrics={"rmse": 1.0},
        metrics_source=source,
        trained_at=datetime(2026, 11, 30, 6, 0, tzinfo=UTC),
    )


def test_the_summary_names_the_reference_it_compared_with() -> None:
    times = pd.to_datetime(["2026-11-02 10:00", "2026-11-20 18:30", "2026-11-10 00:00"], utc=True)
    reference = pd.DataFrame({"ts": times, "x": [1.0, 2.0, 3.0], "y": [1.0, 2.0, 3.0]})
    described = describe(_baseline(reference), "ts")
    assert described["rows"] == 3 and described["run_id"] == "8f2c0d1e"
    assert described["from"].startswith("2026-11-02T10:00") and described["to"].startswith(
        "2026-11-20T18:30"
    )
    assert reference_text(described) == (
        "a sample of 3 rows (training run 8f2c0d1e, 2026-11-02 10:00 to 2026-11-20 18:30 UTC); "
        "trained 2026-11-30 06:00 UTC; quality baseline: held-out metrics"
    )


def test_a_reference_without_times_or_held_out_metrics_says_so() -> None:
    expected = (
        "a sample of 1 row (training run 8f2c0d1e); trained 2026-11-30 06:00 UTC; quality "
        "baseline: the reference's own figures (no held-out metrics logged)"
    )
    for ts in (None, pd.Series([pd.NaT], dtype="datetime64[ns, UTC]"), [1_700_000_000]):
        reference = pd.DataFrame({"x": [1.0], "y": [1.0]})
        if ts is not None:  # no column, only missing times, numbers that are not times
            reference["ts"] = ts
        text = reference_text(describe(_baseline(reference, source="reference"), "ts"))
        assert text == expected, ts
