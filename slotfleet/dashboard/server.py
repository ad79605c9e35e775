"""``slotfleet dashboard``: the web app under uvicorn, on a socket bound here so a busy
port is one clear line and ``--port 0`` can say which port it got.

A stop signal (SIGTERM, Ctrl-C) lets open requests finish and exits 0. The store is
opened before listening: a DSN no backend understands stops the command at once, while
an unreachable database only makes pages (and ``/readyz``) answer 503 until it is back.

What this module is not: the application (``web``) or its settings (``settings``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import sys
from collections.abc import Iterator

import uvicorn

from slotfleet.dashboard.context import Dashboard
from slotfleet.dashboard.settings import DashboardSettings
from slotfleet.dashboard.web import create_app
from slotfleet.models import InvalidSettingsError

log = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    """uvicorn's server, stopping on SIGTERM/SIGINT through the event loop. uvicorn's own
    handlers raise the signal again after shutting down, so the process would die of it
    (exit -15) instead of ending its command with 0."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.handle_exit, sig, None)
        try:
            yield
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``; one line naming the address if it cannot be."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise InvalidSettingsError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}"
        ) from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise InvalidSettingsError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}"
        ) from None
    sock.setblocking(False)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


async def serve(settings: DashboardSettings) -> None:
    """Serve until a stop signal; print where, once listening."""
    dash = Dashboard(settings)
    problem = await dash.try_open()
    sock = bind(settings.host, settings.port)
    actions = "on (token required)" if settings.actions else "off"
    print(
        f"slotfleet dashboard: {url_of(sock)} (store: {dash.location}; actions: {actions})",
        flush=True,
    )
    if problem:
        print(f"warning: {problem}; pages answer 503 until it is back", file=sys.stderr)
    if not settings.loopback:
        print(
            f"note: listening on {settings.host}: whoever reaches this port can read job "
            "arguments and results",
            file=sys.stderr,
        )
    config = uvicorn.Config(
        create_app(settings, dash),
        lifespan="on",
        log_level="warning",
        access_log=False,
        server_header=False,
        proxy_headers=False,
        timeout_graceful_shutdown=5,
    )
    await _Server(config).serve(sockets=[sock])
