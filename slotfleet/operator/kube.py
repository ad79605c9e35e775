"""The operator's Kubernetes calls: a few verbs over any resource, as plain dicts.

kopf watches Queues and calls the handlers; everything the handlers write goes through
:class:`KubeClient`: server-side apply of the children the builders produce, reads of
the worker Deployment, pods and the store Secret, merge patches of status, ``/scale``
and pod annotations. It uses the official ``kubernetes`` client's transport and auth
(in-cluster config first, then ``KUBECONFIG``, as kopf does) and runs each blocking call
in a thread, so the event loop stays free.

What this module is not: it knows nothing about Queues' meaning, and it turns API
errors into :class:`KubeApiError` (one line: verb, object, status, the server's message).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import socket
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from slotfleet.models.errors import SlotfleetError

Json = dict[str, Any]
logger = logging.getLogger(__name__)

FIELD_MANAGER = "slotfleet-operator"
#: API requests in flight at once (threads, and connections in the client's pool).
CONCURRENCY = 32

#: (apiVersion, kind) -> plural, for every kind the operator touches.
PLURALS: dict[tuple[str, str], str] = {
    ("v1", "ServiceAccount"): "serviceaccounts",
    ("v1", "Service"): "services",
    ("v1", "Secret"): "secrets",
    ("v1", "Pod"): "pods",
    ("rbac.authorization.k8s.io/v1", "Role"): "roles",
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): "rolebindings",
    ("apps/v1", "Deployment"): "deployments",
    ("autoscaling/v2", "HorizontalPodAutoscaler"): "horizontalpodautoscalers",
    ("policy/v1", "PodDisruptionBudget"): "poddisruptionbudgets",
    ("monitoring.coreos.com/v1", "PodMonitor"): "podmonitors",
    ("slotfleet.dev/v1alpha1", "Queue"): "queues",
    ("coordination.k8s.io/v1", "Lease"): "leases",
}


class KubeApiError(SlotfleetError):
    """A Kubernetes API request failed."""

    def __init__(self, message: str, status: int = 0, detail: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail or message
        """The server's own message (``Deployment.apps "x" is invalid: ...``)."""

    @property
    def invalid(self) -> bool:
        """The server refused the object itself (422): sending it again cannot help."""
        return self.status == 422


def resource_path(
    api_version: str, kind: str, namespace: str | None, name: str | None = None
) -> str:
    try:
        plural = PLURALS[(api_version, kind)]
    except KeyError:
        raise KubeApiError(f"unknown kind {api_version} {kind}") from None
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    path = f"{base}/namespaces/{namespace}/{plural}" if namespace else f"{base}/{plural}"
    return f"{path}/{name}" if name else path


def _server_message(exc: ApiException) -> str:
    try:
        body = json.loads(exc.body or "")
    except (TypeError, ValueError):
        return str(exc.reason or exc.status)
    return str(body.get("message") or exc.reason or exc.status)


class KubeClient:
    """Blocking API calls run in threads; results are JSON dicts."""

    def __init__(
        self,
        api: client.ApiClient,
        *,
        concurrency: int = CONCURRENCY,
        may_write: Callable[[], bool] | None = None,
    ) -> None:
        self._api = api
        # the client's connection pool and our threads sized together: asyncio's default
        # executor has cpu+4 threads, which would queue a thousand Queues' writes
        api.configuration.connection_pool_maxsize = concurrency
        api.rest_client.pool_manager.connection_pool_kw["maxsize"] = concurrency
        self._threads = ThreadPoolExecutor(concurrency, thread_name_prefix="kube")
        self._may_write = may_write
        """Asked before every write; ``False`` refuses it unsent (under leader election:
        this replica no longer holds the Lease)."""

    def close(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)
        self._api.close()  # type: ignore[no-untyped-call]

    def _request(
        self,
        method: str,
        path: str,
        *,
        query: list[tuple[str, str]] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> Json | None:
        params = self._api.param_serialize(
            method=method,
            resource_path=path,
            query_params=query or [],
            header_params={"Accept": "application/json", "Content-Type": content_type},
            body=body,
            auth_settings=["BearerToken"],
        )
        try:
            response = self._api.call_api(*params, _request_timeout=30)
            response.read()  # type: ignore[no-untyped-call]
            self._api.response_deserialize(response, {"2XX": "object"})
        except ApiException as exc:
            if exc.status == 404 and method in ("GET", "DELETE"):
                return None
            what = f"{method} {path}"
            detail = _server_message(exc)
            raise KubeApiError(f"{what}: {exc.status} {detail}", exc.status, detail) from exc
        if not response.data:
            return {}
        data: Json = json.loads(response.data)
        return data

    async def call(
        self,
        method: str,
        path: str,
        *,
        query: list[tuple[str, str]] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> Json | None:
        """One request; ``None`` for a GET or DELETE of something that does not exist."""
        if method != "GET" and self._may_write is not None and not self._may_write():
            raise KubeApiError(f"{method} {path}: not sent, this replica is not the leader")
        call = functools.partial(
            self._request, method, path, query=query, body=body, content_type=content_type
        )
        return await asyncio.get_running_loop().run_in_executor(self._threads, call)

    async def apply(self, obj: Json) -> Json:
        """Server-side apply ``obj`` (create or update) as the operator's field manager."""
        meta = obj["metadata"]
        path = resource_path(obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"])
        result = await self.call(
            "PATCH",
            path,
            query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
            body=obj,
            content_type="application/apply-patch+yaml",
        )
        return result or {}

    async def get(self, api_version: str, kind: str, namespace: str, name: str) -> Json | None:
        return await self.call("GET", resource_path(api_version, kind, namespace, name))

    async def list(
        self, api_version: str, kind: str, namespace: str, *, label_selector: str = ""
    ) -> list[Json]:
        query = [("labelSelector", label_selector)] if label_selector else []
        found = await self.call("GET", resource_path(api_version, kind, namespace), query=query)
        items: list[Json] = (found or {}).get("items") or []
        return items

    async def delete(self, api_version: str, kind: str, namespace: str, name: str) -> bool:
        """Delete if it exists (background propagation); return whether it existed."""
        path = resource_path(api_version, kind, namespace, name)
        found = await self.call("DELETE", path, body={"propagationPolicy": "Background"})
        return found is not None

    async def merge_patch(
        self,
        api_version: str,
        kind: str,
        namespace: str,
        name: str,
        patch: Json,
        *,
        subresource: str = "",
    ) -> Json:
        path = resource_path(api_version, kind, namespace, name)
        if subresource:
            path += f"/{subresource}"
        result = await self.call(
            "PATCH", path, body=patch, content_type="application/merge-patch+json"
        )
        return result or {}

    async def has_api(self, api_version: str, plural: str) -> bool:
        """Whether the server serves ``plural`` in ``api_version`` (e.g. a CRD is installed)."""
        found = await self.call("GET", f"/apis/{api_version}")
        resources = (found or {}).get("resources") or []
        return any(r.get("name") == plural for r in resources)


class KubeEvents:
    """Kubernetes Events about a Queue, posted in the background (best effort: a lost
    Event is logged, never raised)."""

    def __init__(
        self, kube: KubeClient, component: str = FIELD_MANAGER, *, instance: str | None = None
    ) -> None:
        self.kube = kube
        self.component = component
        self.instance = instance or socket.gethostname()
        """``reportingInstance``: which replica wrote (the Lease holder's identity)."""
        self._pending: set[asyncio.Task[None]] = set()

    def info(self, body: Mapping[str, Any], reason: str, message: str) -> None:
        self._post(body, "Normal", reason, message)

    def warn(self, body: Mapping[str, Any], reason: str, message: str) -> None:
        self._post(body, "Warning", reason, message)

    def _post(self, body: Mapping[str, Any], kind: str, reason: str, message: str) -> None:
        meta = body.get("metadata") or {}
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "generateName": f"{meta.get('name', 'queue')}.",
                "namespace": meta.get("namespace"),
            },
            "involvedObject": {
                "apiVersion": body.get("apiVersion", ""),
                "kind": body.get("kind", ""),
                "name": meta.get("name"),
                "namespace": meta.get("namespace"),
                "uid": meta.get("uid"),
            },
            "type": kind,
            "reason": reason,
            "message": message[:1000],
            "source": {"component": self.component},
            "reportingComponent": self.component,
            "reportingInstance": self.instance,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        path = f"/api/v1/namespaces/{meta.get('namespace')}/events"
        task = asyncio.get_running_loop().create_task(self._send(path, event))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _send(self, path: str, event: Json) -> None:
        try:
            await self.kube.call("POST", path, body=event)
        except KubeApiError as exc:
            logger.warning("posting Event %s failed: %s", event["reason"], exc)
