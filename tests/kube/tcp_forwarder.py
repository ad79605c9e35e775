"""A tiny TCP forwarder on 127.0.0.1 that a test can cut and restore (a network fault).

``TcpForwarder(upstream_port)`` listens on a free loopback port and pipes every accepted
connection to ``127.0.0.1:upstream_port`` with two threads per connection. ``cut()``
closes the listening socket and every live connection (clients see resets, new connects
are refused); ``restore()`` listens again on the same port. Clients that reconnect on
their own recover without being told anything.

What this is not: a proxy that understands PostgreSQL, a latency or packet-loss
injector, or anything that listens beyond loopback.
"""

from __future__ import annotations

import contextlib
import socket
import threading


class TcpForwarder:
    """Forwards ``127.0.0.1:port`` to ``127.0.0.1:upstream_port``; see the module docstring."""

    def __init__(self, upstream_port: int, host: str = "127.0.0.1") -> None:
        self.host = host
        self.upstream_port = upstream_port
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._conns: set[socket.socket] = set()
        self.port = 0
        self.accepted = 0
        """Connections accepted so far (all listening periods)."""

    # ------------------------------------------------------------------ control

    def start(self) -> None:
        """Listen (on a free port the first time, on the same port afterwards)."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        sock.listen(128)
        self.port = int(sock.getsockname()[1])
        with self._lock:
            self._listener = sock
        threading.Thread(
            target=self._accept_loop, args=(sock,), name="fwd-accept", daemon=True
        ).start()

    def cut(self) -> int:
        """Stop listening and drop every live connection; return how many were dropped."""
        with self._lock:
            listener, self._listener = self._listener, None
            conns, self._conns = self._conns, set()
        if listener is not None:
            _close(listener)
        for conn in conns:
            _close(conn)
        return len(conns) // 2

    def restore(self) -> None:
        """Listen again on the same port."""
        self.start()

    def stop(self) -> None:
        self.cut()

    @property
    def live_connections(self) -> int:
        with self._lock:
            return len(self._conns) // 2

    # ------------------------------------------------------------------ threads

    def _accept_loop(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut: the listener was closed
            try:
                upstream = socket.create_connection((self.host, self.upstream_port), timeout=5)
                upstream.settimeout(None)
            except OSError:
                _close(client)
                continue
            with self._lock:
                if self._listener is not listener:  # cut while connecting
                    _close(client)
                    _close(upstream)
                    return
                self._conns.update((client, upstream))
                self.accepted += 1
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(
                    target=self._pipe, args=(src, dst), name="fwd-pipe", daemon=True
                ).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._conns.discard(src)
                self._conns.discard(dst)
            _close(src)
            _close(dst)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
