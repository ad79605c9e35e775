"""What the operator knows of the cluster between ticks, kept by watches, not polls.

Three collections are followed with :func:`slotfleet.kube_watch.follow` (one list, then
one long watch each; per watched namespace, or cluster-wide):

* worker Deployments (``app.kubernetes.io/managed-by=slotfleet-operator``), by name;
* worker pods (``app.kubernetes.io/name=slotfleet-worker``), by their Queue's label;
* Secrets, of which only those a Queue names in ``spec.store.secretRef`` are kept (the
  rest are dropped as they arrive and never logged). A Secret wanted after its event
  went by is read once with a GET, then kept fresh by the watch.

Each change calls ``on_change(namespace, queue_name)`` for the Queue it concerns (a
Secret: every Queue naming it), so the reconciler observes that Queue at once instead of
waiting for a tick. An idle cluster costs no API request. Queues themselves come from
kopf's own watch (``handlers.track``).

What this module is not: it decides nothing and writes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from kubernetes import client

from slotfleet.kube_watch import follow
from slotfleet.operator.builders import MANAGED_BY, QUEUE_LABEL, WORKER_APP
from slotfleet.operator.kube import KubeClient

Json = dict[str, Any]
Key = tuple[str, str]
OnChange = Callable[[str, str], None]
OnList = Callable[[str | None, list[Json]], None]


def collection_path(api_version: str, plural: str, namespace: str | None) -> str:
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    return f"{base}/namespaces/{namespace}/{plural}" if namespace else f"{base}/{plural}"


def slim(obj: Json) -> Json:
    """``obj`` without ``metadata.managedFields`` (the API server's record of who set
    which field: often the largest part of an object, and read by nothing here)."""
    meta = obj.get("metadata")
    if not isinstance(meta, dict) or "managedFields" not in meta:
        return obj
    return {**obj, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}


def slim_deployment(obj: Json) -> Json:
    """What the operator reads of a worker Deployment: its metadata (the children
    digest annotation), ``spec.replicas`` and its status. The pod template (most of it)
    is the operator's own build and never read back; kept whole, a thousand Queues'
    Deployments cost tens of MiB."""
    return {
        "metadata": slim(obj).get("metadata") or {},
        "spec": {"replicas": (obj.get("spec") or {}).get("replicas")},
        "status": obj.get("status") or {},
    }


def _key(obj: Json) -> Key:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


class ClusterCache:
    """Deployments, pods and wanted Secrets, as the watches last reported them."""

    def __init__(
        self,
        api: client.ApiClient,
        kube: KubeClient,
        namespaces: tuple[str, ...] | None,
        on_change: OnChange,
    ) -> None:
        self._api = api
        self._kube = kube
        self._namespaces = namespaces
        self._on_change = on_change
        self.deployments: dict[Key, Json] = {}
        self._pods: dict[Key, dict[str, Json]] = {}  # (ns, queue) -> pod name -> pod
        self._pod_queue: dict[Key, str] = {}  # (ns, pod) -> queue
        self._secrets: dict[Key, Json | None] = {}  # wanted Secrets; None: absent
        self._wanted: dict[Key, set[str]] = {}  # (ns, secret) -> Queues naming it
        self._tasks: list[asyncio.Task[None]] = []
        self._synced: dict[str, asyncio.Event] = {}

    # ------------------------------------------------------------------ reads

    def pods(self, namespace: str, queue: str) -> list[Json]:
        return list(self._pods.get((namespace, queue), {}).values())

    def deployment(self, namespace: str, name: str) -> Json | None:
        return self.deployments.get((namespace, name))

    @property
    def synced(self) -> bool:
        """Whether every watch has listed its collection at least once."""
        return bool(self._synced) and all(e.is_set() for e in self._synced.values())

    async def secret(self, namespace: str, name: str, queue: str) -> Json | None:
        """The Secret ``namespace/name`` (``None``: absent), wanted from now on by
        ``queue``; read once with a GET the first time it is wanted."""
        key = (namespace, name)
        self._wanted.setdefault(key, set()).add(queue)
        if key not in self._secrets:
            self._secrets[key] = await self._kube.get("v1", "Secret", namespace, name)
        return self._secrets[key]

    def unwant(self, namespace: str, queue: str) -> None:
        """``queue`` is gone: drop the Secrets only it named."""
        for key, queues in list(self._wanted.items()):
            if key[0] == namespace:
                queues.discard(queue)
                if not queues:
                    del self._wanted[key]
                    self._secrets.pop(key, None)

    # ------------------------------------------------------------------ watches

    async def start(self, timeout: float = 30.0) -> None:
        """Start the watches; return once each has listed (or after ``timeout``)."""
        kinds: list[tuple[str, str, str, OnList, Any]] = [
            ("apps/v1", "deployments", f"app.kubernetes.io/managed-by={MANAGED_BY}",
             self._list_deployments, self._deployment_event),
            ("v1", "pods", f"app.kubernetes.io/name={WORKER_APP}",
             self._list_pods, self._pod_event),
            ("v1", "secrets", "", self._list_secrets, self._secret_event),
        ]  # fmt: skip
        for api_version, plural, labels, on_list, on_event in kinds:
            for namespace in self._namespaces or (None,):
                path = collection_path(api_version, plural, namespace)
                synced = self._synced.setdefault(path, asyncio.Event())
                self._tasks.append(
                    asyncio.create_task(
                        follow(
                            self._api,
                            path,
                            self._once(synced, namespace, on_list),
                            on_event,
                            selectors=[("labelSelector", labels)] if labels else [],
                            name=f"watch {plural} {namespace or '*'}",
                        )
                    )
                )
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await asyncio.gather(*(e.wait() for e in self._synced.values()))

    @staticmethod
    def _once(
        synced: asyncio.Event, namespace: str | None, on_list: OnList
    ) -> Callable[[list[Json]], None]:
        def listed(items: list[Json]) -> None:
            on_list(namespace, items)
            synced.set()

        return listed

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    def _list_deployments(self, namespace: str | None, items: list[Json]) -> None:
        # a (re)list is the whole collection of its scope: drop what is no longer there
        self.deployments = {
            k: v for k, v in self.deployments.items() if namespace is not None and k[0] != namespace
        }
        for item in items:
            self._deployment_event("ADDED", item)

    def _deployment_event(self, kind: str, obj: Json) -> None:
        key = _key(obj)
        if kind == "DELETED":
            self.deployments.pop(key, None)
        else:
            self.deployments[key] = slim_deployment(obj)
        queue = ((obj.get("metadata") or {}).get("labels") or {}).get(QUEUE_LABEL)
        if queue:
            self._on_change(key[0], str(queue))

    def _list_pods(self, namespace: str | None, items: list[Json]) -> None:
        listed = {_key(i) for i in items}
        scope = [k for k in self._pod_queue if namespace is None or k[0] == namespace]
        for key in [k for k in scope if k not in listed]:
            self._pod_event("DELETED", {"metadata": {"namespace": key[0], "name": key[1]}})
        for item in items:
            self._pod_event("ADDED", item)

    def _pod_event(self, kind: str, obj: Json) -> None:
        namespace, name = _key(obj)
        labels = (obj.get("metadata") or {}).get("labels") or {}
        queue = str(labels.get(QUEUE_LABEL) or self._pod_queue.get((namespace, name), ""))
        if not queue:
            return
        pods = self._pods.setdefault((namespace, queue), {})
        if kind == "DELETED":
            pods.pop(name, None)
            self._pod_queue.pop((namespace, name), None)
            if not pods:
                del self._pods[(namespace, queue)]
        else:
            pods[name] = slim(obj)
            self._pod_queue[(namespace, name)] = queue
        self._on_change(namespace, queue)

    def _list_secrets(self, namespace: str | None, items: list[Json]) -> None:
        present = {_key(i): i for i in items if _key(i) in self._wanted}
        for key in list(self._wanted):
            if namespace is not None and key[0] != namespace:
                continue
            if key in present:
                if self._secrets.get(key) != present[key]:
                    self._secret_event("MODIFIED", present[key])
            elif self._secrets.get(key) is not None:
                self._secret_event("DELETED", {"metadata": {"namespace": key[0], "name": key[1]}})

    def _secret_event(self, kind: str, obj: Json) -> None:
        key = _key(obj)
        if key not in self._wanted:
            return  # not a store Secret of any Queue: not kept
        self._secrets[key] = None if kind == "DELETED" else obj
        for queue in self._wanted[key]:
            self._on_change(key[0], queue)
