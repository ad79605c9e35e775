"""When the operator looks at each Queue, and with which store read: the observer loop.

:class:`QueueObserver` keeps the latest version of every Queue (kopf's watch hands it
over, ``handlers.track``) and calls :meth:`QueueReconciler.observe` for each:

* every ``interval`` seconds for every Queue (a full observation);
* at once for a Queue that is new, whose spec changed, whose children were just applied,
  or whose Deployment, pods or Secret changed (the cache's watches call :meth:`touch`);
* at once for every Queue when a job is enqueued or a cancel requested on a database a
  tick has read (:func:`slotfleet.operator.stores.wait_for_change`; a database seen for
  the first time is listened to at once), so a burst need not wait for the next tick.

Each observation reads each database once for all its Queues
(:func:`slotfleet.operator.stores.read_views`), then observes up to ``CONCURRENCY``
Queues at once; one Queue's failure is logged and never stops the others. An observation
of changed Queues only (a spec, a Deployment, a pod) reuses the views of a read younger
than ``interval`` (:class:`RecentViews`): what it looks at changed in the cluster, not in
the store, and a store change wakes a fresh read of its own. So an idle database is read
once per interval however many Queues it serves and however busy their pods are.

What this module is not: it decides nothing about a Queue and writes nothing itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import ValidationError

from slotfleet.control import QueueView
from slotfleet.models.resource import QueueSpec
from slotfleet.operator.cache import slim
from slotfleet.operator.kube import KubeApiError
from slotfleet.operator.reconciler import QueueReconciler
from slotfleet.operator.secrets import SecretRead
from slotfleet.operator.stores import StoreCache, read_views, wait_for_change
from slotfleet.store.rows import one_line

logger = logging.getLogger(__name__)

#: Queues observed at once (each mostly builds a status; a few write).
CONCURRENCY = 64
#: Longest wait on the databases' change notifications before it is armed again.
STORE_WAIT = 30.0
#: Seconds a wake-up waits for more changes before observing (one burst, one tick).
DEBOUNCE = 0.05


def _older(body: Mapping[str, Any], than: Mapping[str, Any]) -> bool:
    """Whether ``body`` is an older version of the object than ``than``. The API server's
    resourceVersions are etcd revisions; the operator's own write (its response) and the
    watch's events of the same object can arrive in either order, and the older must
    not replace the newer (a stale ``spec.replicas`` or ``status.retiring`` would be
    acted on)."""
    try:
        return int(body["metadata"]["resourceVersion"]) < int(than["metadata"]["resourceVersion"])
    except (KeyError, TypeError, ValueError):
        return False


class RecentViews:
    """The views of the latest store reads, per database and queue, with when each was
    read (``time.monotonic``): what an observation of changed Queues reuses."""

    def __init__(self) -> None:
        self._views: dict[str, dict[str, tuple[float, QueueView]]] = {}

    def reuse(
        self, dsn: str, queues: Iterable[str], *, now: float, younger_than: float
    ) -> dict[str, QueueView] | None:
        """Every view of ``queues`` on ``dsn`` if each was read fine less than
        ``younger_than`` seconds ago; else ``None`` (the database is read again)."""
        known = self._views.get(dsn, {})
        found: dict[str, QueueView] = {}
        for queue in queues:
            hit = known.get(queue)
            if hit is None or now - hit[0] >= younger_than or hit[1].stats is None:
                return None
            found[queue] = hit[1]
        return found

    def keep(self, dsn: str, views: Mapping[str, QueueView], *, at: float, full: bool) -> None:
        """The views one read returned; a ``full`` read (every Queue on ``dsn``) replaces
        what was kept for it, so queues no Queue names any more are let go."""
        fresh = {queue: (at, view) for queue, view in views.items()}
        if full:
            self._views[dsn] = fresh
        else:
            self._views.setdefault(dsn, {}).update(fresh)

    def only(self, dsns: Iterable[str]) -> None:
        """Let go of the databases no Queue names any more."""
        keep = set(dsns)
        for dsn in [d for d in self._views if d not in keep]:
            del self._views[dsn]


class QueueObserver:
    """The observer loop of one operator process."""

    def __init__(self, reconciler: QueueReconciler, stores: StoreCache) -> None:
        self.reconciler = reconciler
        self.stores = stores
        self._bodies: dict[tuple[str, str], dict[str, Any]] = {}
        self._dirty: set[tuple[str, str]] = set()
        self._wake = asyncio.Event()
        self._store_changed = False
        self._dsns: set[str] = set()
        """The databases observations have read (watched for wake-ups)."""
        self._new_dsn = asyncio.Event()
        self._recent = RecentViews()
        self._interval = 2.0
        """The full observation's period (``observe_forever`` sets it)."""
        reconciler.on_applied = self.touch

    def track(self, body: Mapping[str, Any]) -> None:
        """The latest version of a Queue (kopf's watch): observe it now if it is new or
        its spec changed (a status the operator wrote itself needs no new look)."""
        meta = body.get("metadata") or {}
        key = (str(meta.get("namespace") or ""), str(meta.get("name") or ""))
        known = self._bodies.get(key)
        if known is not None and _older(body, known):
            return  # the operator's own write already gave a newer version
        self._bodies[key] = slim(dict(body))
        if (
            known is None
            or known["metadata"].get("generation") != meta.get("generation")
            or bool(meta.get("deletionTimestamp"))
        ):
            self.touch(*key)

    def touch(self, namespace: str, name: str) -> None:
        """Something about Queue ``namespace/name`` changed: observe it now."""
        if (namespace, name) in self._bodies:
            self._dirty.add((namespace, name))
            self._wake.set()

    def forget(self, namespace: str, name: str) -> None:
        """Queue ``namespace/name`` was deleted."""
        self._bodies.pop((namespace, name), None)
        self._dirty.discard((namespace, name))
        self.reconciler.forget(namespace, name)

    async def observe_forever(self, interval: float) -> None:
        """Observe every Queue every ``interval`` seconds, at once when a job is enqueued
        or a cancel requested on one of their databases, and a changed Queue at once;
        one Queue's failure is logged and never stops the others."""
        self._interval = interval
        watcher = asyncio.create_task(self._watch_stores())
        try:
            await self._observe_loop(interval)
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    async def _observe_loop(self, interval: float) -> None:
        next_full = time.monotonic()
        while True:
            remaining = next_full - time.monotonic()
            if remaining > 0:
                try:
                    async with asyncio.timeout(remaining):
                        await self._wake.wait()
                    await asyncio.sleep(DEBOUNCE)
                except TimeoutError:
                    pass
            self._wake.clear()
            full = time.monotonic() >= next_full or self._store_changed
            if full:
                keys, next_full = list(self._bodies), time.monotonic() + interval
                self._store_changed = False
            else:
                keys = [k for k in self._dirty if k in self._bodies]
            self._dirty.clear()
            await self.observe_many(keys, full=full)

    async def _watch_stores(self) -> None:
        """Wake the loop for every Queue when a job is enqueued or a cancel requested on
        a database a tick has read (a burst need not wait for the next tick); a database
        seen for the first time is listened to at once."""
        loop = asyncio.get_running_loop()
        while True:
            self._new_dsn.clear()
            started = loop.time()
            waiting = asyncio.create_task(
                wait_for_change(self.stores, list(self._dsns), STORE_WAIT)
            )
            new_dsn = asyncio.create_task(self._new_dsn.wait())
            try:
                await asyncio.wait({waiting, new_dsn}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (waiting, new_dsn):
                    task.cancel()
                await asyncio.gather(waiting, new_dsn, return_exceptions=True)
            if (
                waiting.done()
                and not waiting.cancelled()
                and (loop.time() - started < STORE_WAIT * 0.95)
            ):
                self._store_changed = True
                self._wake.set()

    async def observe_many(self, keys: Iterable[tuple[str, str]], *, full: bool = True) -> None:
        """One tick for ``keys``: one store read per database, then each Queue. ``full``:
        ``keys`` are every Queue and the databases are read afresh; otherwise a read
        younger than the interval is reused where it covers them."""
        ticks: list[tuple[dict[str, Any], QueueSpec, SecretRead]] = []
        by_dsn: dict[str, list[str]] = {}
        for key in keys:
            body = self._bodies.get(key)
            if body is None or body["metadata"].get("deletionTimestamp"):
                continue
            try:
                spec = self.reconciler.spec_of(body)
                secret = await self.reconciler.secret_of(body, spec)
            except (ValidationError, KubeApiError) as exc:
                logger.warning("observing Queue %s/%s failed: %s", *key, one_line(exc))
                continue
            ticks.append((body, spec, secret))
            if secret.dsn:
                by_dsn.setdefault(secret.dsn, []).append(spec.effective_queue_name(key[1]))
        if not self._dsns.issuperset(by_dsn):
            self._dsns.update(by_dsn)
            self._new_dsn.set()
        views: dict[str, dict[str, QueueView]] = {}
        started = time.monotonic()
        if full:
            self._recent.only(by_dsn)
        else:
            for dsn, queues in by_dsn.items():
                reused = self._recent.reuse(dsn, queues, now=started, younger_than=self._interval)
                if reused is not None:
                    views[dsn] = reused
        unread = [dsn for dsn in by_dsn if dsn not in views]
        reads = [
            read_views(self.stores, dsn, by_dsn[dsn], self.reconciler.store_timeout)
            for dsn in unread
        ]
        for dsn, found in zip(unread, await asyncio.gather(*reads), strict=True):
            views[dsn] = found
            self._recent.keep(dsn, found, at=started, full=full)
        limit = asyncio.Semaphore(CONCURRENCY)

        async def one(body: dict[str, Any], spec: QueueSpec, secret: SecretRead) -> None:
            queue = spec.effective_queue_name(body["metadata"]["name"])
            view = views.get(secret.dsn or "", {}).get(queue) or QueueView.failed(queue, None)
            async with limit:
                try:
                    written = await self.reconciler.observe(body, spec, secret, view)
                    key = (body["metadata"]["namespace"], body["metadata"]["name"])
                    known = self._bodies.get(key)
                    if written is not None and known is not None and not _older(written, known):
                        self._bodies[key] = slim(written)
                except Exception as exc:
                    meta = body["metadata"]
                    logger.warning(
                        "observing Queue %s/%s failed: %s",
                        meta.get("namespace"), meta.get("name"), one_line(exc),
                    )  # fmt: skip

        await asyncio.gather(*(one(*tick) for tick in ticks))
