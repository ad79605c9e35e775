"""Cancel requests and the paused flag from the worker's own Queue resource.

In a cluster, a worker pod learns what to cancel from its Queue's
``status.cancellations`` (written by the operator from the store) and whether to fetch
from ``spec.paused``. :class:`KubeQueueSource` implements the worker's ``CancelSource``:
it watches exactly one Queue (``fieldSelector=metadata.name=NAME``, which is what the
worker Role's ``resourceNames`` allows), and for each version of it

* calls ``control.cancel(job)`` once for each listed job it has not handled yet;
* calls ``control.set_paused(queue, spec.paused)``.

The watch runs the blocking ``kubernetes`` client in a thread and hands each object to
the event loop. It lists first (getting a resourceVersion), then watches from there;
a dropped connection resumes from the last resourceVersion seen (bookmarks keep it
fresh), ``410 Gone`` relists, and other errors back off exponentially up to 30 s.

What this is not: it never writes the Queue (the worker's RBAC would refuse), it never
talks to the store, and it does not import the operator. Credentials come from the
pod's service account, else ``KUBECONFIG`` (as kopf does).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from slotfleet.kube_client import load_api_client
from slotfleet.models import JobId
from slotfleet.models.resource import GROUP, PLURAL, VERSION

if TYPE_CHECKING:
    from slotfleet.worker.cancel import WorkerControl

Json = dict[str, Any]
logger = logging.getLogger(__name__)

#: Seconds the API server keeps one watch open before the source reconnects.
WATCH_SECONDS = 60
#: Longest pause between reconnect attempts.
MAX_BACKOFF = 30.0
#: Cancelled job ids remembered; older ones are forgotten once they leave the status.
_HANDLED_LIMIT = 10_000


class _Gone(Exception):
    """The watch's resourceVersion is too old: list again."""


def _lines(chunks: Iterator[bytes]) -> Iterator[bytes]:
    pending = b""
    for chunk in chunks:
        pending += chunk
        *complete, pending = pending.split(b"\n")
        yield from (line for line in complete if line.strip())
    if pending.strip():
        yield pending


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
        loop = asyncio.get_running_loop()
        objects: asyncio.Queue[Json] = asyncio.Queue()
        stop = threading.Event()

        def deliver(obj: Json) -> None:
            loop.call_soon_threadsafe(objects.put_nowait, obj)

        api = await asyncio.to_thread(load_api_client)
        thread = threading.Thread(
            target=self._watch_forever,
            args=(api, deliver, stop),
            name=f"queue-watch-{self.name}",
            daemon=True,  # a blocked read must not keep the process alive at exit
        )
        thread.start()
        try:
            while True:
                await self.apply(await objects.get(), control)
        finally:
            stop.set()

    async def apply(self, queue: Mapping[str, Any], control: WorkerControl) -> None:
        """Act on one version of the Queue."""
        spec = queue.get("spec") or {}
        queue_name = str(spec.get("queueName") or queue.get("metadata", {}).get("name", ""))
        control.set_paused(queue_name, bool(spec.get("paused", False)))
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

    # ------------------------------------------------------------- the watch thread

    def _watch_forever(self, api: client.ApiClient, deliver: Any, stop: threading.Event) -> None:
        version: str | None = None
        backoff = 0.5
        while not stop.is_set():
            try:
                if version is None:
                    version = self._list(api, deliver)
                version = self._watch(api, deliver, version, stop)
                backoff = 0.5
            except _Gone:
                version = None
            except Exception as exc:
                logger.warning("watching Queue %s/%s: %s", self.namespace, self.name, exc)
                if stop.wait(backoff):
                    return
                backoff = min(backoff * 2, MAX_BACKOFF)

    def _get(self, api: client.ApiClient, query: list[tuple[str, str]], timeout: Any) -> Any:
        params = api.param_serialize(
            method="GET",
            resource_path=self._path,
            query_params=[("fieldSelector", f"metadata.name={self.name}"), *query],
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
        )
        response = api.call_api(*params, _request_timeout=timeout)
        if response.status != 200:
            body = response.read()  # type: ignore[no-untyped-call]
            if response.status == 410:
                raise _Gone()
            raise ApiException(status=response.status, reason=response.reason, body=body)
        return response

    def _list(self, api: client.ApiClient, deliver: Any) -> str:
        response = self._get(api, [], 30)
        found = json.loads(response.read())
        for item in found.get("items") or []:
            deliver(item)
        return str(found["metadata"]["resourceVersion"])

    def _watch(
        self, api: client.ApiClient, deliver: Any, version: str, stop: threading.Event
    ) -> str:
        query = [
            ("watch", "true"),
            ("resourceVersion", version),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", str(WATCH_SECONDS)),
        ]
        response = self._get(api, query, (10, WATCH_SECONDS + 30))
        try:
            for line in _lines(response.response.stream(4096, decode_content=True)):
                if stop.is_set():
                    break
                event = json.loads(line)
                obj = event.get("object") or {}
                if event.get("type") == "ERROR":
                    if obj.get("code") == 410:
                        raise _Gone()
                    raise ApiException(status=obj.get("code"), reason=obj.get("message"))
                version = str(obj.get("metadata", {}).get("resourceVersion") or version)
                if event.get("type") in ("ADDED", "MODIFIED"):
                    deliver(obj)
        finally:
            response.response.release_conn()
        return version
