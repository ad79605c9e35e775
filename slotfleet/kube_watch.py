"""List, then watch, one collection of the Kubernetes API: the one informer loop.

Used by worker pods to follow their own Queue (``slotfleet.worker.kube_source``) and by
the operator to cache Deployments, pods and Secrets (``slotfleet.operator.cache``).
:func:`follow` lists the collection (getting a resourceVersion), hands the items to
``on_list``, then watches from there and hands each event to ``on_event``; a dropped
connection resumes from the last resourceVersion seen (bookmarks keep it fresh), ``410
Gone`` lists again (``on_list`` then gets the whole collection, so a cache can drop what
vanished meanwhile), and other errors back off exponentially up to 30 s.

The blocking ``kubernetes`` client runs in one thread per collection; callbacks run on
the event loop. What this module is not: it keeps no objects (the caller does) and it
imports nothing else from slotfleet, so any layer may use it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

Json = dict[str, Any]
logger = logging.getLogger(__name__)

#: Seconds the API server keeps one watch open before the loop reconnects.
WATCH_SECONDS = 60
#: Longest pause between reconnect attempts.
MAX_BACKOFF = 30.0

OnList = Callable[[list[Json]], None]
OnEvent = Callable[[str, Json], None]


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


async def follow(
    api: client.ApiClient,
    path: str,
    on_list: OnList,
    on_event: OnEvent,
    *,
    selectors: list[tuple[str, str]] | None = None,
    name: str = "watch",
) -> None:
    """Follow ``path`` (a collection, e.g. ``/api/v1/pods``) until cancelled.
    ``selectors``: ``fieldSelector``/``labelSelector`` query pairs."""
    loop = asyncio.get_running_loop()
    stop = threading.Event()
    done = asyncio.Event()

    def listed(items: list[Json]) -> None:
        loop.call_soon_threadsafe(on_list, items)

    def event(kind: str, obj: Json) -> None:
        loop.call_soon_threadsafe(on_event, kind, obj)

    def run() -> None:
        try:
            _Loop(api, path, list(selectors or ()), name).forever(listed, event, stop)
        finally:
            loop.call_soon_threadsafe(done.set)

    # a daemon: a blocked read must not keep the process alive at exit
    threading.Thread(target=run, name=name, daemon=True).start()
    try:
        await done.wait()
    finally:
        stop.set()


class _Loop:
    def __init__(
        self, api: client.ApiClient, path: str, selectors: list[tuple[str, str]], name: str
    ) -> None:
        self.api, self.path, self.selectors, self.name = api, path, selectors, name

    def forever(self, listed: OnList, event: OnEvent, stop: threading.Event) -> None:
        version: str | None = None
        backoff = 0.5
        while not stop.is_set():
            try:
                if version is None:
                    version = self._list(listed)
                version = self._watch(event, version, stop)
                backoff = 0.5
            except _Gone:
                version = None
            except Exception as exc:
                logger.warning("%s: %s", self.name, exc)
                if stop.wait(backoff):
                    return
                backoff = min(backoff * 2, MAX_BACKOFF)

    def _get(self, query: list[tuple[str, str]], timeout: Any) -> Any:
        params = self.api.param_serialize(
            method="GET",
            resource_path=self.path,
            query_params=[*self.selectors, *query],
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
        )
        response = self.api.call_api(*params, _request_timeout=timeout)
        if response.status != 200:
            body = response.read()  # type: ignore[no-untyped-call]
            if response.status == 410:
                raise _Gone()
            raise ApiException(status=response.status, reason=response.reason, body=body)
        return response

    def _list(self, listed: OnList) -> str:
        found = json.loads(self._get([], 60).read())
        listed(list(found.get("items") or []))
        return str(found["metadata"]["resourceVersion"])

    def _watch(self, event: OnEvent, version: str, stop: threading.Event) -> str:
        query = [
            ("watch", "true"),
            ("resourceVersion", version),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", str(WATCH_SECONDS)),
        ]
        response = self._get(query, (10, WATCH_SECONDS + 30))
        try:
            for line in _lines(response.response.stream(4096, decode_content=True)):
                if stop.is_set():
                    break
                change = json.loads(line)
                obj = change.get("object") or {}
                kind = change.get("type")
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise _Gone()
                    raise ApiException(status=obj.get("code"), reason=obj.get("message"))
                version = str(obj.get("metadata", {}).get("resourceVersion") or version)
                if kind in ("ADDED", "MODIFIED", "DELETED"):
                    event(str(kind), obj)
        finally:
            response.response.release_conn()
        return version
