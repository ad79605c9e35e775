"""How the operator shows a Queue's pause: ``spec.paused`` or a pause in the job store
(``slotfleet pause``), combined as the workers combine them (either one pauses)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from slotfleet.models import QueueStats
from slotfleet.operator import status as st

UNTIL = datetime(2030, 1, 1, 9, 0, tzinfo=UTC)


def stats(paused: bool = False, resume_at: datetime | None = None) -> QueueStats:
    return QueueStats(queue="emails", ready=4, paused=paused, resume_at=resume_at)


@pytest.mark.parametrize(
    ("spec_paused", "store", "expected"),
    [
        (False, stats(), (False, "", "False", "NotPaused", "")),
        (True, stats(), (True, "", "True", "PausedBySpec", "spec.paused is true")),
        (
            False,
            stats(paused=True),
            (
                True,
                "",
                "True",
                "PausedInStore",
                "paused in the job store until 'slotfleet resume emails'",
            ),
        ),
        (
            False,
            stats(paused=True, resume_at=UNTIL),
            (
                True,
                "2030-01-01T09:00:00Z",
                "True",
                "PausedInStore",
                "paused in the job store until 2030-01-01T09:00:00Z",
            ),
        ),
        (
            True,
            stats(paused=True, resume_at=UNTIL),
            (
                True,
                "2030-01-01T09:00:00Z",
                "True",
                "PausedBySpecAndStore",
                "spec.paused is true, and the queue is paused in the job store until "
                "2030-01-01T09:00:00Z",
            ),
        ),
    ],
)
def test_either_switch_pauses_and_the_condition_says_which(
    spec_paused: bool, store: QueueStats, expected: tuple[bool, str, str, str, str]
) -> None:
    view = st.pause_view(spec_paused, store, {}, "emails")
    cond = view.condition
    assert (view.paused, view.resume_at, cond.status_text, cond.reason, cond.message) == expected
    assert cond.type == "Paused"


def test_status_carries_the_pause_and_its_condition() -> None:
    view = st.pause_view(False, stats(paused=True, resume_at=UNTIL), {}, "emails")
    seen = st.Observed(
        generation=1,
        applied_generation=1,
        spec_replicas=1,
        deployment=None,
        selector="",
        stats=stats(paused=True, resume_at=UNTIL),
        cancellations=[],
        conditions=[view.condition],
        pause=view,
    )
    status = st.build_status({}, seen, now="T")
    assert (status["paused"], status["resumeAt"]) == (True, "2030-01-01T09:00:00Z")
    [cond] = status["conditions"]
    assert (cond["type"], cond["status"], cond["reason"]) == ("Paused", "True", "PausedInStore")
    assert status["pending"] == 4, "the backlog is still shown"


def test_without_the_store_the_previous_store_pause_stands() -> None:
    """An unreadable store says nothing about its pause: the last one seen is kept, and
    the spec part is always current."""
    previous: dict[str, Any] = {
        "paused": True,
        "resumeAt": "2030-01-01T09:00:00Z",
        "conditions": [{"type": "Paused", "status": "True", "reason": "PausedInStore"}],
    }
    view = st.pause_view(False, None, previous, "emails")
    assert (view.paused, view.resume_at, view.condition.reason) == (
        True,
        "2030-01-01T09:00:00Z",
        "PausedInStore",
    )
    spec_only = {"paused": True, "conditions": [{"type": "Paused", "reason": "PausedBySpec"}]}
    view = st.pause_view(False, None, spec_only, "emails")
    assert (view.paused, view.condition.reason) == (False, "NotPaused")
