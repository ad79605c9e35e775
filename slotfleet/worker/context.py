"""What a running job can ask about itself: its cooperative cancellation token.

A job calls :func:`current_token` to learn whether it should stop. Thread jobs cannot be
interrupted from outside, so they check ``token.cancelled`` (or call
``token.raise_if_cancelled()``) at convenient points. Async jobs see the same token,
set when their task is cancelled or times out; process jobs see it set when the child
receives SIGTERM. Outside a job :func:`current_token` returns a token that is never set,
so task code can call it unconditionally.

What this module is not: it does not cancel anything itself. Executors own the tokens
and set them; this module only carries them to the job through a context variable.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from slotfleet.models import SlotfleetError


class JobCancelled(SlotfleetError):
    """The job was cancelled."""


# Guards a token's lazy Event against a cancel arriving from another thread.
_LOCK = threading.Lock()


class CancelToken:
    """A flag an executor sets to ask a running job to stop. Thread-safe."""

    __slots__ = ("_cancelled", "_event", "_reason")

    def __init__(self) -> None:
        # The Event is made only when someone waits (thread jobs calling ``wait``): most
        # tokens, and every async one, are only ever checked, so a bool is enough.
        self._cancelled = False
        self._event: threading.Event | None = None
        self._reason = ""

    @property
    def cancelled(self) -> bool:
        """Whether the job has been asked to stop (cancelled, timed out or drained)."""
        return self._cancelled

    @property
    def reason(self) -> str:
        """Why: ``"cancelled"``, ``"timeout"`` or ``"released"``; empty while not set."""
        return self._reason

    def cancel(self, reason: str = "cancelled") -> None:
        """Set the token; the first reason given wins."""
        with _LOCK:
            if self._cancelled:
                return
            self._reason = reason
            self._cancelled = True
            event = self._event
        if event is not None:
            event.set()

    def raise_if_cancelled(self) -> None:
        """Raise :class:`JobCancelled` if the job has been asked to stop."""
        if self._cancelled:
            raise JobCancelled(f"job {self._reason or 'cancelled'}")

    def wait(self, timeout: float | None = None) -> bool:
        """Sleep up to ``timeout`` seconds or until set; return whether it is set.

        ``token.wait(5)`` is a ``time.sleep(5)`` that a cancel interrupts.
        """
        with _LOCK:
            if self._cancelled:
                return True
            if self._event is None:
                self._event = threading.Event()
            event = self._event
        return event.wait(timeout)


_NEVER = CancelToken()
_current: contextvars.ContextVar[CancelToken] = contextvars.ContextVar(
    "slotfleet_cancel_token", default=_NEVER
)


def current_token() -> CancelToken:
    """The running job's cancellation token (a never-set token outside a job)."""
    return _current.get()


@contextmanager
def use_token(token: CancelToken) -> Iterator[CancelToken]:
    """Make ``token`` the current one in this thread or task for the ``with`` block."""
    reset = _current.set(token)
    try:
        yield token
    finally:
        _current.reset(reset)


def context_with_token(token: CancelToken) -> contextvars.Context:
    """A copy of the current context in which ``token`` is the current one (for tasks)."""
    context = contextvars.copy_context()
    context.run(_current.set, token)
    return context
