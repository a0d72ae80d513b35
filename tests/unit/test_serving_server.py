"""``serving.server.HttpProtocol``: uvicorn's httptools protocol writing each response once.

It subclasses a private uvicorn class because it pays (docs/benchmarks.md: 1.7x the 1-row
requests per second at 64 connections). These tests pin it: they fail when uvicorn changes,
so the subclass is re-measured rather than silently broken or useless.
"""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from serving.server import HttpProtocol

MEASURED_WITH = "0.54.0"


class RecordingTransport(asyncio.Transport):
    """The socket end of a connection: records what the protocol writes."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 8000)}.get(
            name, default
        )

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    headers = [(b"content-length", b"11")]  # as the hot routes send it
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b'{"ok":true}'})


def writes_of_one_response(protocol_class: type) -> list[bytes]:
    async def serve() -> list[bytes]:
        config = uvicorn.Config(_app, http=protocol_class, lifespan="off", log_level="warning")
        config.load()
        protocol = protocol_class(config, ServerState(), {}, asyncio.get_running_loop())
        transport = RecordingTransport()
        protocol.connection_made(transport)
        protocol.data_received(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
        for _ in range(50):
            await asyncio.sleep(0)
            if transport.writes and transport.writes[-1].endswith(b'{"ok":true}'):
                break
        return transport.writes

    return asyncio.run(serve())


def test_uvicorn_is_the_version_the_protocol_was_measured_with():
    assert uvicorn.__version__ == MEASURED_WITH, (
        f"uvicorn {uvicorn.__version__}: serving.server.HttpProtocol subclasses its private "
        "HttpToolsProtocol; re-measure it (docs/benchmarks.md) and update MEASURED_WITH"
    )


def test_each_response_leaves_in_one_write():
    [write] = writes_of_one_response(HttpProtocol)
    assert write.startswith(b"HTTP/1.1 200 OK\r\n") and write.endswith(b'\r\n\r\n{"ok":true}')


def test_uvicorn_alone_writes_head_and_body_apart():
    """What HttpProtocol exists for; when uvicorn coalesces by itself, drop the subclass."""
    writes = writes_of_one_response(HttpToolsProtocol)
    assert len(writes) == 2 and writes[1] == b'{"ok":true}'
