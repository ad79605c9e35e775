"""The HTTP endpoint of a worker (and of the operator's ``/metrics``): ``/metrics``,
``/healthz`` and ``/readyz``. A top-level module so the operator serves its metrics with
it without importing the worker.

Served on the worker's own event loop (``asyncio.start_server``), so ``/healthz``
answering at all shows the loop is alive. ``/readyz`` is 200 once the store is open and
the first heartbeat is written, and 503 (with the reason: "store unreachable",
"draining") before that and while the worker drains (so a Service stops routing scrapes
it would miss anyway, and a rollout waits for the new pod to be really serving).

A few lines of HTTP/1.1 instead of a web framework: three GET routes for probes and
Prometheus, one response per connection (``Connection: close``). aiohttp here cost the
worker about 12 MiB of resident memory for nothing else (docs/benchmarks.md).

What this module is not: a general HTTP server (no keep-alive, no request bodies, no
chunking), and it computes no metrics (``metrics.py``) and has no control endpoints; a
worker is controlled through the store or its Queue resource.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import CONTENT_TYPE_LATEST

from slotfleet.models import InvalidSettingsError

#: A request head larger than this, or slower than this, is answered 400 / dropped.
MAX_HEAD_BYTES = 8192
READ_TIMEOUT_SECONDS = 5.0

_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    503: "Service Unavailable",
}
_TEXT = "text/plain; charset=utf-8"


@dataclass(frozen=True)
class MetricsServerConfig:
    """Where the worker serves metrics and health."""

    host: str = "127.0.0.1"
    """Address to listen on; in a pod, the pod's IP (or 0.0.0.0)."""
    port: int = 9464
    """TCP port; 0 disables the server."""


class HealthServer:
    """Serves metrics and probes; see the module docstring."""

    def __init__(
        self,
        config: MetricsServerConfig,
        *,
        render_metrics: Callable[[], bytes],
        alive: Callable[[], bool],
        not_ready: Callable[[], str | None],
    ) -> None:
        """``not_ready`` says why the worker is not serving, or ``None`` when it is."""
        self.config = config
        self._render = render_metrics
        self._alive = alive
        self._not_ready = not_ready
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        try:
            self._server = await asyncio.start_server(
                self._serve,
                self.config.host,
                self.config.port,
                reuse_address=True,
                limit=MAX_HEAD_BYTES,
            )
        except (OSError, OverflowError, ValueError) as exc:  # in use, bad host, bad port
            reason = str(exc)
            if isinstance(exc, OSError):  # "Address already in use", not asyncio's wrapping
                code = exc.errno or 0
                reason = os.strerror(code) if code > 0 else exc.strerror or reason
            raise InvalidSettingsError(
                f"cannot serve metrics on {self.config.host}:{self.config.port}: {reason}"
            ) from exc

    @property
    def port(self) -> int:
        """The port actually bound (useful with port 0 in tests), or 0 when stopped."""
        if self._server is None or not self._server.sockets:
            return 0
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()

    def respond(self, method: str, path: str) -> tuple[int, str, bytes]:
        """(status, content type, body) for a request; no I/O."""
        if method not in ("GET", "HEAD"):
            return 405, _TEXT, b"only GET\n"
        path = path.split("?", 1)[0]
        if path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, self._render()
        if path == "/healthz":
            if self._alive():
                return 200, _TEXT, b"ok\n"
            return 503, _TEXT, b"worker loop stopped\n"
        if path == "/readyz":
            reason = self._not_ready()
            if reason is None:
                return 200, _TEXT, b"ready\n"
            return 503, _TEXT, f"{reason}\n".encode()
        return 404, _TEXT, b"not found: try /metrics, /healthz or /readyz\n"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(
                reader.readuntil(b"\r\n\r\n"), timeout=READ_TIMEOUT_SECONDS
            )
            parts = head.split(b"\r\n", 1)[0].decode("latin-1").split()
            if len(parts) != 3 or not parts[2].startswith("HTTP/"):
                status, kind, body = 400, _TEXT, b"bad request line\n"
                method = "GET"
            else:
                method = parts[0]
                status, kind, body = self.respond(method, parts[1])
        except asyncio.LimitOverrunError:
            method, (status, kind, body) = "GET", (400, _TEXT, b"request head too large\n")
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            return
        headers = (
            f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
            f"Content-Type: {kind}\r\n"
            f"Content-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n"
        ).encode("latin-1")
        with contextlib.suppress(ConnectionError):
            writer.write(headers if method == "HEAD" else headers + body)
            await writer.drain()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
