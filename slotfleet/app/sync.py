"""A blocking facade over :class:`~slotfleet.app.client.App` for scripts and REPLs.

It owns a private event loop (``asyncio.Runner``), so it must not be used from inside
a running event loop; async code uses :class:`App` directly.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any

from slotfleet.app.client import App, JobLike, RefLike
from slotfleet.models import Job, JobState, QueuedJob, QueuePause, QueueStats, Reference


class SyncApp:
    """``with SyncApp() as app: ref = app.enqueue(send_email, to="a@b")``."""

    def __init__(self, dsn: str | None = None) -> None:
        self._app = App(dsn)
        self._runner: asyncio.Runner | None = None

    @property
    def dsn(self) -> str:
        return self._app.dsn

    def _run(self, coro: Any) -> Any:
        if self._runner is None:
            self._runner = asyncio.Runner()
            self._runner.run(self._app.open())
        return self._runner.run(coro)

    def close(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            try:
                runner.run(self._app.close())
            finally:
                runner.close()

    def __enter__(self) -> SyncApp:
        self._run(asyncio.sleep(0))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def enqueue(self, item: JobLike, /, **kwargs: Any) -> Reference:
        result: Reference = self._run(self._app.enqueue(item, **kwargs))
        return result

    def enqueue_many(self, items: Iterable[Job]) -> list[Reference]:
        result: list[Reference] = self._run(self._app.enqueue_many(items))
        return result

    def get(self, ref: RefLike) -> QueuedJob:
        result: QueuedJob = self._run(self._app.get(ref))
        return result

    def wait(self, ref: RefLike, *, timeout: float | None = None) -> QueuedJob:
        result: QueuedJob = self._run(self._app.wait(ref, timeout=timeout))
        return result

    def cancel(self, ref: RefLike) -> QueuedJob:
        result: QueuedJob = self._run(self._app.cancel(ref))
        return result

    def purge(self, older_than: timedelta, *, queue: str | None = None) -> int:
        result: int = self._run(self._app.purge(older_than, queue=queue))
        return result

    def queues(self, queue: str | None = None) -> list[QueueStats]:
        result: list[QueueStats] = self._run(self._app.queues(queue))
        return result

    def pause(self, queue: str, *, until: datetime | timedelta | None = None) -> QueuePause:
        result: QueuePause = self._run(self._app.pause(queue, until=until))
        return result

    def resume(self, queue: str) -> bool:
        result: bool = self._run(self._app.resume(queue))
        return result

    def list(
        self,
        *,
        queue: str | None = None,
        states: Sequence[JobState | str] | None = None,
        limit: int = 100,
    ) -> list[QueuedJob]:
        result: list[QueuedJob] = self._run(self._app.list(queue=queue, states=states, limit=limit))
        return result
