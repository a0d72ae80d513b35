"""The KFP gateway refuses what would stop or delete a run, and forwards the rest unchanged."""

from __future__ import annotations

import pytest

from pipelines.gateway import Upstreams, refusal


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/apis/v2beta1/runs/3f2a:terminate"),
        ("POST", "/apis/v1beta1/runs/3f2a/terminate"),
        ("DELETE", "/apis/v2beta1/runs/3f2a"),
        ("delete", "/apis/v1beta1/runs/3f2a?x=1"),
        ("POST", "/apis/v2beta1/runs/3f2a:retry"),
        ("DELETE", "/apis/v2beta1/recurringruns/nightly"),
        ("POST", "/pipeline/apis/v2beta1/runs/3f2a:terminate"),  # through the UI's proxy
    ],
)
def test_stopping_or_deleting_runs_is_refused_with_the_reason(method: str, path: str) -> None:
    why = refusal(method, path)
    assert why is not None and "people may not" in why and "superseded" in why


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/apis/v2beta1/runs"),  # submit
        ("GET", "/apis/v2beta1/runs/3f2a"),  # follow
        ("GET", "/apis/v2beta1/runs?experiment_id=e"),
        ("POST", "/apis/v2beta1/experiments"),
        ("POST", "/apis/v2beta1/pipelines/upload"),
        ("GET", "/apis/v2beta1/healthz"),
        ("GET", "/static/js/main.js"),  # the UI
        ("POST", "/apis/v2beta1/runs/3f2a:archive"),  # hides a run, never stops it
    ],
)
def test_submitting_and_following_runs_is_forwarded(method: str, path: str) -> None:
    assert refusal(method, path) is None


def test_api_paths_go_to_the_api_server_and_the_rest_to_the_ui() -> None:
    up = Upstreams(api="http://ml-pipeline:8888", ui="http://ml-pipeline-ui:80")
    assert up.for_path("/apis/v2beta1/runs") == "http://ml-pipeline:8888"
    assert up.for_path("/") == "http://ml-pipeline-ui:80"
