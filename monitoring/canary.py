"""Canary analysis: how each model version did during a step, across every server replica.

As Argo Rollouts' analysis and Flagger's metric checks do it: the request count, the 5xx count
and the p99 latency of the candidate and of the champion, each by registry version, come from

- **Prometheus** (``PrometheusSource``): the spec's PromQL (``rollout.analysis``), summed over
  pods by Prometheus, over a window as long as the step;
- or, where no Prometheus is configured, **every replica's** ``/metrics`` (``ReplicaScrape``):
  the controller reads each replica (a list of URLs; a headless Service's name resolves to
  every ready pod), sums the counters and histogram buckets and keeps the step's start as a
  baseline.

Only outcomes a model caused are judged: the server labels each request sample with the role
and the registry version that answered, and ``none`` when the request never reached a model
(bad input, auth, feature-store outage, a client that hung up). Those samples have no version
and so fall out of both sides; a failing champion stays the champion's.
"""

from __future__ import annotations

import abc
import math
import socket
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from kubeloop.spec import AnalysisSpec
from monitoring.errors import RolloutError

REQUESTS = "kubeloop_requests"  # counter family (samples kubeloop_requests_total)
DURATION = "kubeloop_request_duration_seconds"  # histogram family
PREDICT_ROUTES = ("/predict", "/v2/models")
NO_MODEL = ("", "none")  # model_version of requests no model answered


@dataclass(frozen=True)
class VersionStats:
    """What one model version did over a period, and where the figures came from."""

    requests: float = 0.0
    errors: float = 0.0
    p99_seconds: float | None = None
    source: str = ""

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def to_dict(self) -> dict[str, Any]:
        p99 = None if self.p99_seconds is None else round(1000 * self.p99_seconds, 3)
        return {
            "requests": round(self.requests),
            "errors": round(self.errors),
            "error_rate": round(self.error_rate, 5),
            "p99_ms": p99,
            "source": self.source,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VersionStats:
        p99 = data.get("p99_ms")
        return cls(
            float(data.get("requests", 0)),
            float(data.get("errors", 0)),
            None if p99 is None else p99 / 1000,
            str(data.get("source", "")),
        )


class MetricsSource(abc.ABC):
    """Per-version request, error and latency figures over a step."""

    @abc.abstractmethod
    def baseline(self, versions: Sequence[str]) -> dict[str, Any]:
        """What ``measure`` needs later, taken when a step starts (JSON; may be empty)."""

    @abc.abstractmethod
    def measure(
        self, baseline: Mapping[str, Any], since: datetime, now: datetime, versions: Sequence[str]
    ) -> dict[str, VersionStats]:
        """Each version's figures between ``since`` (the step's start) and ``now``."""


# -- Prometheus ----------------------------------------------------------------------------------
class PrometheusSource(MetricsSource):
    """The spec's PromQL against a Prometheus that scrapes every replica."""

    def __init__(self, url: str, analysis: AnalysisSpec, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.analysis = analysis
        self.timeout = timeout

    def baseline(self, versions: Sequence[str]) -> dict[str, Any]:
        return {}  # Prometheus keeps the history

    def query(self, expr: str, at: datetime) -> float | None:
        """An instant query's single value (None: no data or NaN)."""
        try:
            response = httpx.get(
                self.url + "/api/v1/query",
                params={"query": expr, "time": at.timestamp()},
                timeout=self.timeout,
            )
            body = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise RolloutError(f"Prometheus at {self.url} did not answer: {exc}") from exc
        if body.get("status") != "success":
            raise RolloutError(f"Prometheus refused {expr!r}: {body.get('error')}")
        result = body["data"]["result"]
        if not result:
            return None
        value = float(result[0]["value"][1])
        return None if math.isnan(value) else value

    def measure(
        self, baseline: Mapping[str, Any], since: datetime, now: datetime, versions: Sequence[str]
    ) -> dict[str, VersionStats]:
        window = f"{max(1, round((now - since).total_seconds()))}s"
        a = self.analysis
        out = {}
        for version in versions:

            def run(template: str, version: str = version) -> float | None:
                expr = string.Template(template).safe_substitute(version=version, window=window)
                return self.query(expr, now)

            out[version] = VersionStats(
                requests=run(a.requests_query) or 0.0,
                errors=run(a.errors_query) or 0.0,
                p99_seconds=run(a.latency_query),
                source=f"prometheus {self.url}, window {window}",
            )
        return out


# -- every replica's /metrics ------------------------------------------------------------------
@dataclass
class Tally:
    """Cumulative counts of one version, summed over replicas."""

    requests: float = 0.0
    errors: float = 0.0
    buckets: dict[float, float] = field(default_factory=dict)  # le -> cumulative count

    def add(self, other: Tally) -> None:
        self.requests += other.requests
        self.errors += other.errors
        for le, count in other.buckets.items():
            self.buckets[le] = self.buckets.get(le, 0.0) + count

    def since(self, start: Tally) -> Tally:
        """The increase from ``start``; a counter that went down (a replica restarted) counts
        from zero, as Prometheus' ``increase`` does."""
        if self.requests < start.requests or any(
            self.buckets.get(le, 0.0) < c for le, c in start.buckets.items()
        ):
            return self
        return Tally(
            self.requests - start.requests,
            self.errors - start.errors,
            {le: c - start.buckets.get(le, 0.0) for le, c in self.buckets.items()},
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "buckets": [[le if math.isfinite(le) else "+Inf", c] for le, c in self.buckets.items()],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Tally:
        return cls(
            data["requests"], data["errors"], {float(le): c for le, c in data.get("buckets", [])}
        )


def quantile_from_buckets(q: float, buckets: Mapping[float, float]) -> float | None:
    """``histogram_quantile`` over cumulative buckets (le -> count), as Prometheus computes it:
    linear within the bucket, the highest finite bound when the rank falls in ``+Inf``."""
    ordered = sorted(buckets.items())
    if not ordered or ordered[-1][1] <= 0:
        return None
    rank = q * ordered[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for le, count in ordered:
        if count >= rank:
            if math.isinf(le):
                return lower_bound
            if count == lower_count:
                return le
            return lower_bound + (le - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = le, count
    return ordered[-1][0]


def tally_metrics(families: Iterable[Any]) -> dict[str, Tally]:
    """Per-version tallies of prediction routes from parsed exposition families."""
    out: dict[str, Tally] = {}
    for family in families:
        if family.name not in (REQUESTS, DURATION):
            continue
        for sample in family.samples:
            labels = sample.labels
            version = labels.get("model_version", "")
            if version in NO_MODEL or not labels.get("route", "").startswith(PREDICT_ROUTES):
                continue
            tally = out.setdefault(version, Tally())
            if sample.name == REQUESTS + "_total":
                tally.requests += sample.value
                if labels.get("status", "").startswith("5"):
                    tally.errors += sample.value
            elif sample.name == DURATION + "_bucket":
                le = float(labels["le"])
                tally.buckets[le] = tally.buckets.get(le, 0.0) + sample.value
    return out


def expand_replicas(urls: Sequence[str]) -> list[str]:
    """Every replica behind the URLs: a name with several addresses (a headless Service)
    becomes one URL per address, so each pod is read exactly once."""
    out: list[str] = []
    for url in urls:
        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise RolloutError(f"cannot resolve the server replicas at {url}: {exc}") from exc
        addresses = sorted({str(info[4][0]) for info in infos})
        if len(addresses) <= 1:
            out.append(url.rstrip("/"))
            continue
        for address in addresses:
            netloc = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
            out.append(urlunsplit((parts.scheme, netloc, parts.path, "", "")).rstrip("/"))
    return sorted(set(out))


class ReplicaScrape(MetricsSource):
    """Read every replica's ``/metrics`` and sum; the step's start is kept as a baseline."""

    def __init__(self, urls: Sequence[str], timeout: float = 5.0) -> None:
        if not urls:
            raise RolloutError("no server replicas to read: set KUBELOOP_SERVER_REPLICA_URLS")
        self.urls = list(urls)
        self.timeout = timeout

    def read(self) -> tuple[dict[str, Tally], list[str]]:
        from prometheus_client.parser import text_string_to_metric_families

        replicas = expand_replicas(self.urls)
        total: dict[str, Tally] = {}
        for url in replicas:
            try:
                response = httpx.get(url + "/metrics", timeout=self.timeout)
                response.raise_for_status()
            except httpx.HTTPError as exc:
                # One unreadable replica would make the sum wrong: no verdict this time.
                raise RolloutError(f"cannot read {url}/metrics: {exc}") from exc
            for version, tally in tally_metrics(
                text_string_to_metric_families(response.text)
            ).items():
                total.setdefault(version, Tally()).add(tally)
        return total, replicas

    def baseline(self, versions: Sequence[str]) -> dict[str, Any]:
        total, replicas = self.read()
        kept = {v: total[v].to_json() for v in versions if v in total}
        return {"replicas": replicas, "versions": kept}

    def measure(
        self, baseline: Mapping[str, Any], since: datetime, now: datetime, versions: Sequence[str]
    ) -> dict[str, VersionStats]:
        total, replicas = self.read()
        start = baseline.get("versions", {})
        source = f"/metrics of {len(replicas)} replicas ({', '.join(replicas)})"
        if sorted(baseline.get("replicas", replicas)) != replicas:
            source += f"; at the step's start: {', '.join(baseline.get('replicas', []))}"
        out = {}
        for version in versions:
            seen = total.get(version, Tally())
            if version in start:
                seen = seen.since(Tally.from_json(start[version]))
            out[version] = VersionStats(
                seen.requests, seen.errors, quantile_from_buckets(0.99, seen.buckets), source
            )
        return out


# -- the verdict ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Verdict:
    """Why the candidate fails (empty: it does not), with both sides' figures; and, while
    latency cannot be judged yet, why not (``latency_wait``: the step must wait for it)."""

    candidate: VersionStats
    champion: VersionStats
    champion_from: str  # "this step" or where the champion's figures came from instead
    errors: str | None = None
    latency: str | None = None
    latency_wait: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["candidate"] = self.candidate.to_dict()
        data["champion"] = self.champion.to_dict()
        return data


def judge(
    candidate: VersionStats,
    champion: VersionStats,
    *,
    max_error_rate_increase: float,
    analysis: AnalysisSpec,
    min_requests: int,
    champion_from: str = "this step",
) -> Verdict:
    """Compare the candidate with the champion on outcomes the models caused.

    Latency is never skipped: until the source has counted ``min_requests`` of the candidate's
    requests and has a p99 for it (and for a champion that answered requests), the verdict
    says what is missing in ``latency_wait`` and the step waits, as it waits for late labels.
    A short window can lack a p99 (Prometheus needs two scrapes for a rate) while the
    prediction log already holds the step's rows; judging then would let a slow candidate
    through."""
    errors = latency = wait = None
    if candidate.requests and (
        candidate.error_rate > champion.error_rate + max_error_rate_increase
    ):
        errors = (
            f"error rate {candidate.error_rate:.1%} against the champion's "
            f"{champion.error_rate:.1%} ({candidate.errors:.0f} of {candidate.requests:.0f})"
        )
    p99, needed = candidate.p99_seconds, max(1, min_requests)
    if candidate.requests < needed:
        wait = f"{candidate.requests:.0f}/{needed} candidate requests measured"
    elif p99 is None:
        wait = f"no p99 for the candidate yet ({candidate.requests:.0f} requests measured)"
    elif (cap := analysis.max_p99_latency_ms) is not None and 1000 * p99 > cap:
        latency = f"p99 latency {1000 * p99:.1f} ms above the limit of {cap:g} ms"
    elif champion.p99_seconds is not None:
        allowed = champion.p99_seconds * (1 + analysis.max_latency_increase)
        allowed += analysis.latency_slack_ms / 1000
        if p99 > allowed:
            latency = (
                f"p99 latency {1000 * p99:.1f} ms against the champion's "
                f"{1000 * champion.p99_seconds:.1f} ms (at most {1000 * allowed:.1f} ms)"
            )
    elif champion.requests:
        wait = f"no p99 for the champion yet ({champion.requests:.0f} requests, {champion_from})"
    # A champion that answered nothing at all (no step in which it served) leaves only the cap.
    return Verdict(candidate, champion, champion_from, errors, latency, wait)
