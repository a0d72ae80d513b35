"""Through the gateway, the real kfp client submits and follows runs but cannot terminate or
delete them; the KFP API (the recording stub: no cluster here) never sees those calls."""

from __future__ import annotations

import threading
import time

import pytest
import uvicorn

from pipelines.gateway import Upstreams, app
from pipelines.runner import submit
from tests.utils.factories import example_spec
from tests.utils.kfp_server import kfp_stub


@pytest.fixture
def gateway():
    with kfp_stub() as stub:
        server = uvicorn.Server(
            uvicorn.Config(app(Upstreams(api=stub.host, ui=stub.host)), port=0, log_level="warning")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 20
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}", stub
        server.should_exit = True
        thread.join(timeout=10)


def test_data_scientists_submit_through_the_gateway_but_cannot_stop_a_run(
    gateway, tmp_path, monkeypatch
):
    import kfp
    from kfp_server_api.exceptions import ApiException

    monkeypatch.setenv("HOME", str(tmp_path))
    host, stub = gateway
    assert submit(host, example_spec(), run_name="from-a-notebook") == "run-1"
    client = kfp.Client(host=host)
    assert client.get_run("run-1").state == "PENDING"
    for stop in (client.terminate_run, client.delete_run):
        with pytest.raises(ApiException) as refused:
            stop("run-1")
        assert refused.value.status == 403 and "people may not" in refused.value.body
    assert [r.path for r in stub.requests if "run-1" in r.path] == ["/apis/v2beta1/runs/run-1"]
    assert stub.posted("/apis/v2beta1/runs")[0]["display_name"] == "from-a-notebook"
