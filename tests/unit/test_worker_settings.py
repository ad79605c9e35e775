"""Worker settings that need no running worker: heartbeat pacing and refused values."""

from __future__ import annotations

from pathlib import Path

import pytest

from slotfleet.models import InvalidSettingsError, QueueSettings
from slotfleet.store import open_store
from slotfleet.worker import Worker


@pytest.mark.parametrize(("lease", "beat"), [(3.0, 1.0), (15.0, 5.0), (30.0, 10.0), (600.0, 10.0)])
def test_heartbeats_come_every_third_of_the_lease_but_at_least_every_10s(
    tmp_path: Path, lease: float, beat: float
) -> None:
    # the operator counts a worker unseen for 30 s as gone, whatever its lease
    worker = Worker(
        open_store(f"sqlite:///{tmp_path / 'w.db'}"), [QueueSettings(name="q")], lease_seconds=lease
    )
    assert worker.heartbeat_interval == pytest.approx(beat)


@pytest.mark.parametrize("kwargs", [{"max_slots": 0}, {"lease_seconds": 0}, {"drain_timeout": -1}])
def test_refuses_settings_that_cannot_work(tmp_path: Path, kwargs: dict[str, float]) -> None:
    with pytest.raises(InvalidSettingsError):
        Worker(
            open_store(f"sqlite:///{tmp_path / 'w.db'}"),
            [QueueSettings(name="q")],
            **kwargs,  # type: ignore[arg-type]
        )
