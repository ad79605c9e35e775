"""Run the operator only while this process holds a Lease (``slotfleet operator
--leader-elect``).

Several operator replicas may run; the one holding the ``coordination.k8s.io/v1`` Lease
runs *everything* that writes (kopf's handlers, the observer loop, Events), the others
only look at the Lease. The decisions (who may take the lease, when a leader must give
up) are pure and live in ``slotfleet/operator/leader.py``; this module does the API
calls and the lifecycle around :func:`run_elected`:

1. wait for the lease (a follower reads it every ``retry_period``; while it waits it
   answers on the operator's liveness and metrics addresses itself, so the kubelet
   leaves it be and Prometheus sees a live target with no samples);
2. as leader, run the operator and renew the lease every ``retry_period``;
3. a renewal that fails past the renew deadline (API server unreachable, or another
   holder took it) stops the operator and the process exits non-zero, as
   controller-runtime does: the kubelet restarts it as a follower. If the operator does
   not stop before the lease can pass to another replica, the process ends at once
   (``os._exit``): two writers are worse than a lost cleanup;
4. a clean stop (SIGTERM, SIGINT) stops the operator first and then releases the lease
   (empty holder), so the other replica takes over within one ``retry_period``.

What this module is not: it knows nothing about Queues, and it does not use kopf (the
operator it runs is a callable given a stop flag). No credentials are logged; the
identity is the pod name and a random suffix.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import socket
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlsplit

from slotfleet.models.errors import SlotfleetError
from slotfleet.operator.kube import KubeApiError, KubeClient, resource_path
from slotfleet.operator.leader import (
    Candidate,
    ElectionTimings,
    LeaseRecord,
    Tenure,
    Verdict,
)

logger = logging.getLogger(__name__)

LEASE_API = "coordination.k8s.io/v1"


class LeadershipLost(SlotfleetError):
    """This operator could not renew its Lease in time and stopped (the kubelet restarts
    it as a follower)."""


@dataclass(frozen=True)
class ElectionOptions:
    """``--leader-elect`` and its settings."""

    namespace: str
    """Namespace of the Lease (the operator's own)."""
    name: str = "slotfleet-operator"
    """Name of the Lease."""
    timings: ElectionTimings = field(default_factory=ElectionTimings)
    identity: str = field(default_factory=lambda: default_identity())
    """``holderIdentity``: the pod name (or host name) and a random suffix, so a restarted
    container is a new candidate and never renews its predecessor's lease."""


def default_identity() -> str:
    base = os.environ.get("POD_NAME", "").strip() or socket.gethostname()
    return f"{base}_{secrets.token_hex(4)}"


class LeaseElector:
    """Reads and writes the Lease for one candidate; the rules come from ``Candidate``."""

    def __init__(
        self,
        kube: KubeClient,
        options: ElectionOptions,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kube = kube
        self.options = options
        self.clock = clock
        self.candidate = Candidate(options.identity, options.timings)
        self.tenure: Tenure | None = None
        """Set once this process leads; its own count of how long the lease is good for."""
        self._path = resource_path(LEASE_API, "Lease", options.namespace, options.name)

    @property
    def timings(self) -> ElectionTimings:
        return self.options.timings

    def leading(self) -> bool:
        """Whether this process holds the lease right now, by its own clock: the guard
        the operator's API client asks before every write (``KubeClient(may_write=)``),
        so a leader that was frozen past its deadline (a stopped process, a paused VM)
        sends nothing when it wakes, even before its renewal task has run."""
        return self.tenure is not None and not self.tenure.lost(self.clock())

    async def try_acquire_or_renew(self, timeout: float) -> bool:
        """One look at the Lease and, when the rules allow, one write; ``True`` when this
        process holds the lease from the moment this call began. A conflict (another
        candidate wrote first), an error or a timeout is ``False``."""
        started = self.clock()
        try:
            # asyncio.timeout, not wait_for: no task of its own, which kopf would count as
            # one of its hung tasks when it stops
            async with asyncio.timeout(timeout):
                return await self._attempt(started)
        except TimeoutError:
            logger.warning("the Lease %s did not answer within %.1fs", self._path, timeout)
        except KubeApiError as exc:
            if exc.status != 409:  # 409: another candidate wrote first, a normal race
                logger.warning("leader election: %s", exc)
        return False

    async def _attempt(self, started: float) -> bool:
        found = await self.kube.call("GET", self._path)
        if found is None:
            self.candidate.observe(None, "", started)
        else:
            record = LeaseRecord.from_spec(found.get("spec"))
            version = str((found.get("metadata") or {}).get("resourceVersion") or "")
            self.candidate.observe(record, version, started)
        verdict = self.candidate.verdict(started)
        if verdict is Verdict.WAIT:
            return False
        claim = self.candidate.claim(datetime.now(UTC))
        if verdict is Verdict.CREATE:
            collection = resource_path(LEASE_API, "Lease", self.options.namespace)
            written = await self.kube.call("POST", collection, body=self._lease(claim, None))
        else:
            seen = self.candidate.seen
            written = await self.kube.call(
                "PUT", self._path, body=self._lease(claim, seen.resource_version if seen else None)
            )
        new_version = str(((written or {}).get("metadata") or {}).get("resourceVersion") or "")
        self.candidate.observe(claim, new_version, started)
        if verdict is not Verdict.RENEW:
            logger.info(
                "became the leader: Lease %s/%s held by %s (transition %d)",
                self.options.namespace,
                self.options.name,
                claim.holder,
                claim.transitions,
            )
        return True

    def _lease(self, record: LeaseRecord, resource_version: str | None) -> dict[str, object]:
        metadata: dict[str, object] = {
            "name": self.options.name,
            "namespace": self.options.namespace,
            "labels": {"app.kubernetes.io/component": "operator-leader"},
        }
        if resource_version:  # optimistic concurrency: refused (409) if anyone wrote since
            metadata["resourceVersion"] = resource_version
        return {
            "apiVersion": LEASE_API,
            "kind": "Lease",
            "metadata": metadata,
            "spec": record.to_spec(),
        }

    async def acquire(self, stop: asyncio.Event) -> Tenure | None:
        """Wait until this process holds the lease (its tenure), or ``None`` when
        ``stop`` is set first."""
        waiting_logged = False
        while not stop.is_set():
            started = self.clock()
            if await self.try_acquire_or_renew(self.timings.retry_period):
                self.tenure = Tenure(self.timings, started)
                return self.tenure
            seen = self.candidate.seen
            if seen is not None and not waiting_logged:
                logger.info(
                    "waiting to lead: Lease %s/%s is held by %s",
                    self.options.namespace,
                    self.options.name,
                    seen.record.holder,
                )
                waiting_logged = True
            # a lease about to run out is tried when it does, not a whole period later
            pause = self.timings.retry_period
            expires = self.candidate.expires_in(self.clock())
            if 0 < expires < pause:
                pause = expires + 0.05
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), pause)
        return None

    async def hold(self, tenure: Tenure) -> None:
        """Renew the lease a ``retry_period`` after each renewal (sooner, again and again,
        after a failed one) until a renewal cannot be had before the deadline; then
        return (the lease is lost)."""
        period = self.timings.retry_period
        failed = False
        while True:
            now = self.clock()
            # counted from the last renewal *sent*, not from now: an acquisition that took
            # long leaves less time before the deadline
            wait = period / 4 if failed else tenure.renewed_at + period - now
            await asyncio.sleep(max(0.0, min(wait, tenure.remaining(now))))
            started = self.clock()
            remaining = tenure.remaining(started)
            if remaining <= 0:
                return
            # half a period per request: one slow answer leaves time for more attempts
            if await self.try_acquire_or_renew(min(period / 2, remaining)):
                tenure.renewed(started)
                failed = False
            elif self.candidate.verdict(started) is Verdict.WAIT:
                seen = self.candidate.seen
                logger.error("the Lease is now held by %s", seen.record.holder if seen else "?")
                return
            else:
                failed = True

    async def release(self) -> None:
        """Hand the lease back (empty holder), best effort, so a successor need not wait
        out its duration."""
        record = self.candidate.release(datetime.now(UTC))
        seen = self.candidate.seen
        if record is None or seen is None:
            return
        try:
            async with asyncio.timeout(self.timings.retry_period):
                body = self._lease(record, seen.resource_version)
                await self.kube.call("PUT", self._path, body=body)
        except (TimeoutError, KubeApiError) as exc:
            logger.warning("could not release the Lease (it expires on its own): %s", exc)
            return
        self.candidate.observe(record, "", self.clock())
        logger.info("released the Lease %s/%s", self.options.namespace, self.options.name)


Operate = Callable[[], Coroutine[object, object, None]]
"""The operator: runs until a signal stops it (kopf handles SIGTERM/SIGINT itself) or
its task is cancelled."""


async def run_elected(
    elector: LeaseElector, operate: Operate, *, standby: Sequence[tuple[str, int]] = ()
) -> None:
    """Run ``operate`` while this process holds the lease; see the module docstring.

    Raises :class:`LeadershipLost` when the lease could not be renewed."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    probe = await StandbyProbe.start(standby)
    try:
        tenure = await elector.acquire(stop)
    finally:
        await probe.stop()
    if tenure is None:
        logger.info("stopped before leading")
        return
    # created before the operator starts, so kopf (which stops, on exit, the tasks born
    # after it) leaves the renewals alone
    holding = asyncio.create_task(elector.hold(tenure), name="lease renewal")
    running = asyncio.create_task(operate(), name="operator")
    # kopf replaces our signal handlers with its own once it runs; a signal before that
    # sets ``stop``. The operator is stopped by cancelling it (not by kopf's stop flag,
    # whose waiter kopf would count as a hung task for 5 s when a signal stops it).
    stopping = asyncio.create_task(stop.wait(), name="signal before the operator ran")
    try:
        await asyncio.wait({holding, running, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
    lost = holding.done()
    if not running.done():
        running.cancel()
        grace = max(0.0, tenure.hard_stop_in(elector.clock()) - 0.5)
        if lost:
            logger.error("lost the Lease: stopping the operator (%.1fs to stop)", grace)
        done, _ = await asyncio.wait({running}, timeout=grace)
        if lost and not done:
            logger.critical("the operator did not stop before the Lease could pass: exiting")
            os._exit(1)  # two writers are worse than a skipped cleanup
    if lost:
        if not running.cancelled() and running.exception() is not None:
            logger.error("the operator failed while stopping: %s", running.exception())
        raise LeadershipLost("lost the leader Lease; exiting so the kubelet restarts a follower")
    holding.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await holding
    for sig in (signal.SIGTERM, signal.SIGINT):  # kopf's handlers point at a finished run
        loop.add_signal_handler(sig, stop.set)
    try:
        if not running.cancelled():
            running.result()  # the operator's own error, after the lease is released
    finally:
        await elector.release()


class StandbyProbe:
    """While this replica waits to lead, answers on the addresses the operator serves
    once it leads (its liveness endpoint, its ``/metrics``): any path, 200, a comment line
    in Prometheus' text format. The kubelet's probe passes, and a scrape finds a live
    target with no samples (only the leader exports the Queue gauges). The operator's own
    servers take the addresses over when it leads."""

    def __init__(self, servers: list[asyncio.Server]) -> None:
        self._servers = servers

    @classmethod
    async def start(cls, addresses: Sequence[tuple[str, int]]) -> StandbyProbe:
        servers = []
        for host, port in addresses:
            servers.append(await asyncio.start_server(cls._answer, host, port, reuse_address=True))
        return cls(servers)

    @staticmethod
    async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(
            OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError
        ):
            async with asyncio.timeout(5):
                await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\n" + STANDBY_HEAD + STANDBY_BODY)
            await writer.drain()
        writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            async with asyncio.timeout(5):
                await writer.wait_closed()

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
            await server.wait_closed()


STANDBY_BODY = b"# standby: this replica does not hold the leader Lease\n"
STANDBY_HEAD = (
    b"Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
    b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(STANDBY_BODY)
)


def address_of(url: str) -> tuple[str, int]:
    """``(host, port)`` of an ``http://HOST:PORT/path`` URL (brackets of IPv6 removed)."""
    parts = urlsplit(url)
    return parts.hostname or "0.0.0.0", parts.port or 80
