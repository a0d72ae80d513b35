"""Reports open with a summary: what was compared, the verdict and why, then the details."""

from __future__ import annotations

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
