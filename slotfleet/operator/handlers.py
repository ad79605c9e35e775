"""kopf handlers for Queues: thin wiring from kopf's callbacks to the reconciler
and the observer loop.

Nothing here decides anything. Handlers are registered on an explicit
``kopf.OperatorRegistry`` (never kopf's global default), so importing this module has
no effect and tests or embedders can build their own registry.

* create / resume / spec update -> :meth:`QueueReconciler.apply_children`;
* every watch event -> hand the Queue's latest version to the observer loop
  (``slotfleet.operator.observer``), which observes it at once and every ``interval``
  seconds after (status, autoscaling, pod deletion costs), with no GET of its own.
  This is not a kopf timer on purpose: kopf puts a finalizer on every object with a
  timer, and a Queue needs none (the garbage collector removes children by their owner
  references), so deleting a Queue never waits for the operator;
* startup -> the watch cache of Deployments, pods and Secrets, then the observer loop.

Error policy: an API error is a ``TemporaryError`` (kopf retries with a delay); a spec
the model refuses, or a child the API server refuses as invalid (422), is a
``PermanentError`` (retrying the same spec cannot help; the Event and the Degraded
condition say why, and the reconciler tries again when the Queue or its Secret changes).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import aiohttp
import kopf
from pydantic import ValidationError

from slotfleet.models.resource import GROUP, PLURAL, VERSION
from slotfleet.operator.cache import ClusterCache
from slotfleet.operator.kube import KubeApiError
from slotfleet.operator.observer import QueueObserver
from slotfleet.operator.reconciler import ChildRejected, QueueReconciler
from slotfleet.operator.stores import StoreCache

#: Seconds before kopf retries a handler that hit an API error.
RETRY_DELAY = 5.0
#: Connections kopf's own requests (its watch, its patches) may hold at once.
KOPF_CONNECTIONS = 32


def bounded_session(info: kopf.ConnectionInfo) -> kopf.AiohttpSession:
    """kopf's session for ``info`` as kopf builds it, but with at most
    ``KOPF_CONNECTIONS`` connections: kopf's own has no limit, and a thousand new Queues
    opened about 200 TLS connections for its annotation patches, each with a 256 KiB
    read buffer (50 MiB at the peak, kept by the allocator after it)."""
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=KOPF_CONNECTIONS, ssl=info.as_ssl_context()),
        headers=info.as_http_headers(),
        proxy=info.proxy_url,
        trust_env=info.trust_env,
    )
    return kopf.AiohttpSession(
        server=info.server,
        default_namespace=info.default_namespace,
        priority=info.priority,
        expiration=info.expiration,
        aiohttp_session=session,
    )


def register(
    registry: kopf.OperatorRegistry,
    reconciler: QueueReconciler,
    observer: QueueObserver,
    stores: StoreCache,
    *,
    interval: float,
    cache: ClusterCache | None = None,
) -> None:
    """Register the Queue handlers on ``registry``."""
    resource = (GROUP, VERSION, PLURAL)

    # an explicit registry has none of kopf's default login handlers: in-cluster service
    # account first, then KUBECONFIG, as kopf does by default
    @kopf.on.login(registry=registry, id="login")
    async def login(**kwargs: Any) -> kopf.AiohttpSession | None:
        info: kopf.ConnectionInfo | None = kopf.login_with_service_account(
            **kwargs
        ) or kopf.login_with_kubeconfig(**kwargs)
        return bounded_session(info) if info is not None else None

    @kopf.on.resume(*resource, registry=registry, id="children")
    @kopf.on.create(*resource, registry=registry, id="children")
    @kopf.on.update(*resource, field="spec", registry=registry, id="children")
    async def children(body: kopf.Body, **_: Any) -> None:
        try:
            await reconciler.apply_children(body)
        except ValidationError as exc:
            raise kopf.PermanentError(str(exc).splitlines()[0]) from exc
        except ChildRejected as exc:  # retried when the Queue or its Secret changes
            raise kopf.PermanentError(str(exc)) from exc
        except KubeApiError as exc:
            raise kopf.TemporaryError(str(exc), delay=RETRY_DELAY) from exc

    @kopf.on.event(*resource, registry=registry, id="track")
    async def track(event: kopf.RawEvent, name: str, namespace: str | None, **_: Any) -> None:
        # the Queues and their latest versions, for the observer loop
        # (QueueObserver.observe_forever); an event handler, unlike a kopf timer,
        # needs no finalizer on the Queue
        if event.get("type") == "DELETED":
            observer.forget(namespace or "", name)
        else:
            observer.track(event["object"])

    observers: list[asyncio.Task[None]] = []

    @kopf.on.startup(registry=registry, id="start-observer")
    async def start_observer(**_: Any) -> None:
        # started inside kopf's context, so Events posted by the loop reach kopf's poster
        if cache is not None:
            reconciler.cache = cache
            await cache.start()
        observers.append(asyncio.create_task(observer.observe_forever(interval)))

    @kopf.on.cleanup(registry=registry, id="stop-observer")
    async def stop_observer(**_: Any) -> None:
        for task in observers:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if cache is not None:
            await cache.stop()
        await stores.close()
