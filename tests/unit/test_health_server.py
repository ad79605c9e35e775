"""The worker's small HTTP server, over real loopback sockets: routes, status codes and
what it does with requests it does not serve."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from slotfleet.health_server import MAX_HEAD_BYTES, HealthServer, MetricsServerConfig
from slotfleet.models import InvalidSettingsError


class State:
    alive = True
    not_ready: str | None = "starting"


@pytest.fixture
async def server() -> AsyncIterator[tuple[HealthServer, State]]:
    state = State()
    srv = HealthServer(
        MetricsServerConfig(port=0),
        render_metrics=lambda: b"slotfleet_slots_total 3.0\n",
        alive=lambda: state.alive,
        not_ready=lambda: state.not_ready,
    )
    await srv.start()
    yield srv, state
    await srv.stop()


async def raw(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 10)  # the server closes: read to EOF
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


def get(path: str, method: str = "GET") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()


async def test_routes_follow_the_worker(server: tuple[HealthServer, State]) -> None:
    srv, state = server
    status, headers, body = await raw(srv.port, get("/metrics"))
    assert (status, body) == (200, b"slotfleet_slots_total 3.0\n")
    assert headers["Content-Type"].startswith("text/plain; version=")
    assert headers["Content-Length"] == str(len(body))
    assert headers["Connection"] == "close"
    assert (await raw(srv.port, get("/readyz")))[::2] == (503, b"starting\n")
    state.not_ready = None
    assert (await raw(srv.port, get("/readyz?verbose=1")))[::2] == (200, b"ready\n")
    assert (await raw(srv.port, get("/healthz")))[::2] == (200, b"ok\n")
    state.alive = False
    assert (await raw(srv.port, get("/healthz")))[0] == 503


async def test_what_it_does_not_serve(server: tuple[HealthServer, State]) -> None:
    srv, _ = server
    assert (await raw(srv.port, get("/nope")))[0] == 404
    assert (await raw(srv.port, get("/metrics", "POST")))[0] == 405
    status, headers, body = await raw(srv.port, get("/metrics", "HEAD"))
    assert (status, body) == (200, b"")
    assert int(headers["Content-Length"]) > 0
    assert (await raw(srv.port, b"garbage\r\n\r\n"))[0] == 400
    huge = b"GET /metrics HTTP/1.1\r\nX: " + b"a" * (MAX_HEAD_BYTES * 2) + b"\r\n\r\n"
    assert (await raw(srv.port, huge))[0] == 400
    # a client that connects and leaves without a word does not stop the server
    _, writer = await asyncio.open_connection("127.0.0.1", srv.port)
    writer.close()
    assert (await raw(srv.port, get("/healthz")))[0] == 200


async def test_port_in_use_is_one_clear_error(server: tuple[HealthServer, State]) -> None:
    srv, _ = server
    other = HealthServer(
        MetricsServerConfig(port=srv.port),
        render_metrics=lambda: b"",
        alive=lambda: True,
        not_ready=lambda: None,
    )
    with pytest.raises(InvalidSettingsError, match="Address already in use"):
        await other.start()
