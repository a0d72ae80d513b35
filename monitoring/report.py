"""HTML reports that open with what a person wants first: what was compared, the verdict, why.

Evidently's report starts straight with per-column plots; a reader then has to guess which
versions and which window were compared, and what was decided. ``with_summary`` puts a short
summary (title, verdict, the reasons, a table of facts) above Evidently's HTML, so every report
the platform writes (monitoring runs, shadow comparisons) reads top-down.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Sequence

_STYLE = (
    "font-family:system-ui,sans-serif;max-width:960px;margin:16px auto;padding:16px 20px;"
    "border:1px solid #ccc;border-radius:6px;background:#fafafa"
)
_VERDICT_COLOURS = {"ok": "#1a7f37", "warn": "#9a6700", "fail": "#cf222e"}


def summary_html(
    title: str,
    verdict: str,
    tone: str,
    reasons: Iterable[str],
    facts: Sequence[tuple[str, object]],
) -> str:
    """The summary block: a heading, the verdict in its tone (ok, warn, fail), the reasons as a
    list and the facts (what was compared, windows, row counts) as a two-column table."""
    colour = _VERDICT_COLOURS[tone]
    items = "".join(f"<li>{html.escape(reason)}</li>" for reason in reasons)
    rows = "".join(
        f"<tr><th style='text-align:left;padding:2px 12px 2px 0'>{html.escape(key)}</th>"
        f"<td>{html.escape(_text(value))}</td></tr>"
        for key, value in facts
    )
    return (
        f"<section id='kubeloop-summary' style='{_STYLE}'>"
        f"<h1 style='margin:0 0 8px;font-size:1.4em'>{html.escape(title)}</h1>"
        f"<p style='font-size:1.15em;margin:4px 0;color:{colour}'>"
        f"<strong>{html.escape(verdict)}</strong></p>"
        + (f"<ul style='margin:4px 0 12px'>{items}</ul>" if items else "")
        + f"<table style='border-collapse:collapse'>{rows}</table>"
        "<p style='color:#666;margin:12px 0 0'>The details (Evidently) follow below.</p>"
        "</section>"
    )


def with_summary(report_html: str, summary: str) -> str:
    """``summary`` placed first inside the report's ``<body>`` (or before it, if it has none)."""
    match = re.search(r"<body[^>]*>", report_html, re.IGNORECASE)
    if match is None:
        return summary + report_html
    return report_html[: match.end()] + summary + report_html[match.end() :]


def _text(value: object) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)
