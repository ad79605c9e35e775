"""Cancel requests and the paused flag from the worker's own Queue resource.

In a cluster, a worker pod learns what to cancel from its Queue's
``status.cancellations`` (written by the operator from the store) and whether to fetch
from ``spec.paused``. :class:`KubeQueueSource` implements the worker's ``CancelSource``:
it watches exactly one Queue (``fieldSelector=metadata.name=NAME``, which is what the
worker Role's ``resourceNames`` allows), and for each version of it

* calls ``control.cancel(job)`` once for each listed job it has not handled yet;
* calls ``control.set_paused(queue, spec.paused)``;
* calls ``control.set_retiring(mark)`` with this worker's entry of ``status.retiring``
  (``None`` when it is not listed): a scale-down chose it (``retiring.py``).

The list-then-watch loop (resume, relist on ``410 Gone``, back-off) is
:func:`slotfleet.kube_watch.follow`, the one the operator's caches use too.

What this is not: it never writes the Queue (the worker's RBAC would refuse), it never
talks to the store, and it does not import the operator. Credentials come from the
pod's service account, else ``KUBECONFIG`` (as kopf does).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from slotfleet.kube_client import load_api_client
from slotfleet.kube_watch import follow
from slotfleet.models import JobId
from slotfleet.models.resource import GROUP, PLURAL, VERSION
from slotfleet.worker.retiring import mark_for

if TYPE_CHECKING:
    from slotfleet.worker.cancel import WorkerControl

Json = dict[str, Any]
logger = logging.getLogger(__name__)

#: Cancelled job ids remembered; older ones are forgotten once they leave the status.
_HANDLED_LIMIT = 10_000


class KubeQueueSource:
    """Watches Queue ``namespace/name`` and applies its cancellations and pause flag."""

    def __init__(self, namespace: str, name: str) -> None:
        self.namespace = namespace
        self.name = name
        self._handled: dict[int, None] = {}  # insertion-ordered set

    @property
    def _path(self) -> str:
        return f"/apis/{GROUP}/{VERSION}/namespaces/{self.namespace}/{PLURAL}"

    async def run(self, control: WorkerControl) -> None:
        """Follow the Queue until cancelled."""
        objects: asyncio.Queue[Json] = asyncio.Queue()

        def listed(items: list[Json]) -> None:
            for item in items:
                objects.put_nowait(item)

        def changed(kind: str, obj: Json) -> None:
            if kind != "DELETED":
                objects.put_nowait(obj)

        api = await asyncio.to_thread(load_api_client)
        watch = asyncio.create_task(
            follow(
                api,
                self._path,
                listed,
                changed,
                selectors=[("fieldSelector", f"metadata.name={self.name}")],
                name=f"queue-watch-{self.name}",
            )
        )
        try:
            while True:
                await self.apply(await objects.get(), control)
        finally:
            watch.cancel()

    async def apply(self, queue: Mapping[str, Any], control: WorkerControl) -> None:
        """Act on one version of the Queue."""
        spec = queue.get("spec") or {}
        queue_name = str(spec.get("queueName") or queue.get("metadata", {}).get("name", ""))
        control.set_paused(queue_name, bool(spec.get("paused", False)))
        control.set_retiring(mark_for(queue.get("status"), control.worker_id))
        listed = {
            int(entry["job"])
            for entry in (queue.get("status") or {}).get("cancellations") or []
            if isinstance(entry, Mapping) and "job" in entry
        }
        for job in sorted(listed - self._handled.keys()):
            self._handled[job] = None
            try:
                await control.cancel(JobId(job))
            except Exception:  # one failed cancel must not stop the source
                logger.exception("cancelling job %s failed", job)
        if len(self._handled) > _HANDLED_LIMIT:
            for job in [j for j in self._handled if j not in listed][: len(self._handled) // 2]:
                del self._handled[job]
