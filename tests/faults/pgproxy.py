"""A loopback TCP proxy in front of PostgreSQL that loses the reply to one job claim.

It reads just enough of the wire protocol (version 3) to do that:

- frontend: the startup packet (``application_name``, so a drop names its worker;
  SSL and GSS encryption requests are answered "N" by the proxy itself), ``Parse``
  (statement name and text: psycopg prepares a statement after a few executions and
  then only sends ``Bind`` with its name), ``Bind`` and ``Query``;
- backend: ``RowDescription`` (which column is ``id``), ``DataRow`` and
  ``ReadyForQuery``.

When an armed proxy sees a claim (:func:`is_claim`: ``UPDATE slotfleet_jobs ... SET
... state = 'running'``) go to the server, for the queue it was armed for (a ``Bind``
parameter equal to the queue's name), it holds back the server's reply until the
``ReadyForQuery`` that ends it (the claim has committed by then). If the reply claimed
at least one job, the proxy drops the connection without forwarding it and records a
:class:`Drop` with the claimed ids; otherwise it forwards the reply and waits for the
next claim. Everything else is forwarded untouched.

What this is not: a general PostgreSQL proxy (no pipelining awareness beyond
psycopg's one-request-at-a-time use, no TLS, no COPY), or anything listening beyond
loopback.
"""

from __future__ import annotations

import contextlib
import re
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

#: An UPDATE of the jobs table and its SET clause (up to WHERE, FROM or RETURNING).
_UPDATE_SET = re.compile(
    r"\bUPDATE\s+slotfleet_jobs\b[^;]*?\bSET\b(?P<set>(?:(?!\b(?:WHERE|FROM|RETURNING)\b).)*)",
    re.S | re.I,
)
_SETS_RUNNING = re.compile(r"(?<![\w.])state\s*=\s*'running'", re.I)


def is_claim(query: str) -> bool:
    """Whether ``query`` claims jobs: an UPDATE of ``slotfleet_jobs`` whose SET clause
    makes them ``running`` (a heartbeat that only *filters* on running jobs is not)."""
    return any(_SETS_RUNNING.search(m["set"]) for m in _UPDATE_SET.finditer(query))


_SSL_REQUEST = 80877103
_GSS_REQUEST = 80877104
_PROTOCOL_3 = 196608


@dataclass(frozen=True)
class Drop:
    """One swallowed claim reply."""

    application: str
    queue: str | None
    """The queue the proxy was armed for (``None``: any)."""
    sent: float
    """Wall-clock time the claim went to the server."""
    dropped: float
    """Wall-clock time the connection was dropped (the claim had committed)."""
    job_ids: tuple[int, ...]


def split_messages(buffer: bytearray) -> list[tuple[bytes, bytes]]:
    """Take every complete ``(type, body)`` message off the front of ``buffer``."""
    messages: list[tuple[bytes, bytes]] = []
    while len(buffer) >= 5:
        (length,) = struct.unpack_from("!i", buffer, 1)
        if len(buffer) < 1 + length:
            break
        messages.append((bytes(buffer[:1]), bytes(buffer[5 : 1 + length])))
        del buffer[: 1 + length]
    return messages


def _cstring(body: bytes, offset: int) -> tuple[str, int]:
    end = body.index(b"\x00", offset)
    return body[offset:end].decode("utf-8", "replace"), end + 1


def startup_parameters(body: bytes) -> dict[str, str]:
    """The ``key=value`` pairs of a protocol-3 startup packet's body (after the code)."""
    params: dict[str, str] = {}
    offset = 0
    while offset < len(body) and body[offset] != 0:
        key, offset = _cstring(body, offset)
        value, offset = _cstring(body, offset)
        params[key] = value
    return params


def parse_message(body: bytes) -> tuple[str, str]:
    """``(statement name, query text)`` of a ``Parse`` message."""
    name, offset = _cstring(body, 0)
    query, _ = _cstring(body, offset)
    return name, query


def bind_statement(body: bytes) -> str:
    """The statement name a ``Bind`` message executes."""
    _portal, offset = _cstring(body, 0)
    statement, _ = _cstring(body, offset)
    return statement


def bind_parameters(body: bytes) -> list[bytes | None]:
    """The parameter values of a ``Bind`` message (``None`` for SQL NULL)."""
    _portal, offset = _cstring(body, 0)
    _statement, offset = _cstring(body, offset)
    (formats,) = struct.unpack_from("!h", body, offset)
    offset += 2 + 2 * formats
    (count,) = struct.unpack_from("!h", body, offset)
    offset += 2
    values: list[bytes | None] = []
    for _ in range(count):
        (length,) = struct.unpack_from("!i", body, offset)
        offset += 4
        values.append(None if length < 0 else body[offset : offset + length])
        offset += max(length, 0)
    return values


def id_column(body: bytes) -> tuple[int, int] | None:
    """``(index, format)`` of the column named ``id`` in a ``RowDescription``."""
    (count,) = struct.unpack_from("!h", body, 0)
    offset = 2
    for index in range(count):
        name, offset = _cstring(body, offset)
        (fmt,) = struct.unpack_from("!h", body, offset + 16)
        offset += 18
        if name == "id":
            return index, fmt
    return None


def data_row_value(body: bytes, index: int) -> bytes | None:
    """Column ``index`` of a ``DataRow`` (``None`` for SQL NULL)."""
    (count,) = struct.unpack_from("!h", body, 0)
    offset = 2
    for column in range(count):
        (length,) = struct.unpack_from("!i", body, offset)
        offset += 4
        value = None if length < 0 else body[offset : offset + length]
        if column == index:
            return value
        offset += max(length, 0)
    return None


def decode_id(value: bytes, fmt: int) -> int:
    return int.from_bytes(value, "big", signed=True) if fmt == 1 else int(value)


@dataclass
class _Conn:
    client: socket.socket
    server: socket.socket
    application: str = ""
    claims: dict[str, bool] = field(default_factory=dict)
    holding: bool = False
    sent: float = 0.0
    parameters: list[bytes | None] = field(default_factory=list)
    """Of the claim being held."""


class ClaimReplyDropper:
    """Forwards ``127.0.0.1:port`` to ``127.0.0.1:upstream_port``; :meth:`arm` makes it
    drop the next claim reply that claimed jobs (see the module docstring)."""

    def __init__(self, upstream_port: int, host: str = "127.0.0.1") -> None:
        self.host = host
        self.upstream_port = upstream_port
        self.port = 0
        self.drops: list[Drop] = []
        self._armed: list[str | None] = []
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()

    def start(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, 0))
        sock.listen(128)
        self.port = int(sock.getsockname()[1])
        self._listener = sock
        threading.Thread(target=self._accept, args=(sock,), name="pgproxy", daemon=True).start()

    def stop(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            sockets, self._sockets = self._sockets, set()
        for sock in [listener, *sockets]:
            if sock is not None:
                _close(sock)

    def arm(self, queue: str | None = None) -> None:
        """Drop the next claim reply with jobs of ``queue`` (of any queue: ``None``)."""
        with self._lock:
            self._armed.append(queue)

    def _match(self, parameters: list[bytes | None]) -> int | None:
        """Index of the first armed queue a claim with ``parameters`` is for (hold the
        lock)."""
        for index, queue in enumerate(self._armed):
            if queue is None or queue.encode() in parameters:
                return index
        return None

    # ------------------------------------------------------------------ threads

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection((self.host, self.upstream_port), timeout=5)
                server.settimeout(None)
            except OSError:
                _close(client)
                continue
            conn = _Conn(client, server)
            with self._lock:
                self._sockets.update((client, server))
            for target in (self._frontend, self._backend):
                threading.Thread(target=target, args=(conn,), name="pgproxy", daemon=True).start()

    def _frontend(self, conn: _Conn) -> None:
        buffer = bytearray()
        started = False
        try:
            while True:
                data = conn.client.recv(65536)
                if not data:
                    break
                buffer += data
                if not started:
                    started = self._startup(conn, buffer)
                    if not started:
                        continue
                out = bytearray()
                for kind, body in split_messages(buffer):
                    self._watch(conn, kind, body)
                    out += kind + struct.pack("!i", len(body) + 4) + body
                conn.server.sendall(out)
        except OSError:
            pass
        finally:
            _close(conn.client)
            _close(conn.server)

    def _startup(self, conn: _Conn, buffer: bytearray) -> bool:
        """Handle the untyped startup packets; return once the real one is forwarded."""
        while len(buffer) >= 8:
            length, code = struct.unpack_from("!ii", buffer, 0)
            if len(buffer) < length:
                return False
            packet = bytes(buffer[:length])
            del buffer[:length]
            if code in (_SSL_REQUEST, _GSS_REQUEST):
                conn.client.sendall(b"N")
                continue
            if code == _PROTOCOL_3:
                conn.application = startup_parameters(packet[8:]).get("application_name", "")
            conn.server.sendall(packet)
            return True
        return False

    def _watch(self, conn: _Conn, kind: bytes, body: bytes) -> None:
        claim, parameters = False, []
        if kind == b"P":
            name, query = parse_message(body)
            conn.claims[name] = is_claim(query)
        elif kind == b"B":
            claim = conn.claims.get(bind_statement(body), False)
            parameters = bind_parameters(body) if claim else []
        elif kind == b"Q":
            query, _ = _cstring(body, 0)
            claim = is_claim(query)
        if not claim or conn.holding:
            return
        with self._lock:
            wanted = self._match(parameters) is not None
        if wanted:
            conn.holding, conn.sent, conn.parameters = True, time.time(), parameters

    def _backend(self, conn: _Conn) -> None:
        buffer, held = bytearray(), bytearray()
        column: tuple[int, int] | None = None
        ids: list[int] = []
        try:
            while True:
                data = conn.server.recv(65536)
                if not data:
                    break
                buffer += data
                out = bytearray()
                for kind, body in split_messages(buffer):
                    raw = kind + struct.pack("!i", len(body) + 4) + body
                    if not conn.holding:
                        out += raw
                        continue
                    held += raw
                    if kind == b"T":
                        column = id_column(body)
                    elif kind == b"D":
                        index, fmt = column if column is not None else (0, 0)
                        value = data_row_value(body, index)
                        if value is not None:
                            ids.append(decode_id(value, fmt))
                    elif kind == b"Z":  # the claim's reply is complete (and committed)
                        if ids and self._take(conn, ids):
                            return
                        out += held
                        held.clear()
                        ids, column, conn.holding = [], None, False
                if out:
                    conn.client.sendall(bytes(out))
        except OSError:
            pass
        finally:
            _close(conn.client)
            _close(conn.server)

    def _take(self, conn: _Conn, ids: list[int]) -> bool:
        """Drop this connection if the proxy is still armed for its claim; return whether
        it did."""
        with self._lock:
            index = self._match(conn.parameters)
            if index is None:
                return False
            queue = self._armed.pop(index)
        self.drops.append(Drop(conn.application, queue, conn.sent, time.time(), tuple(ids)))
        _close(conn.client)  # after recording it: the client sees the drop at once
        _close(conn.server)
        return True


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
