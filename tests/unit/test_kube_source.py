"""The worker's Queue-resource cancel source: what it does with each Queue version."""

from __future__ import annotations

from slotfleet.kube_watch import _lines
from slotfleet.models import JobId
from slotfleet.worker.kube_source import KubeQueueSource


class FakeControl:
    def __init__(self) -> None:
        self.cancelled: list[JobId] = []
        self.paused: list[tuple[str, bool]] = []
        self.retiring: list[str | None] = []

    @property
    def worker_id(self) -> str:
        return "emails-7d9f-abcde"

    def set_retiring(self, mark: str | None) -> None:
        self.retiring.append(mark)

    async def cancel(self, job_id: JobId) -> bool:
        self.cancelled.append(job_id)
        return True

    def set_paused(self, queue: str, paused: bool) -> None:
        self.paused.append((queue, paused))


def queue(cancellations: list[int], paused: bool = False, queue_name: str | None = None) -> dict:  # type: ignore[type-arg]
    spec: dict[str, object] = {"paused": paused}
    if queue_name:
        spec["queueName"] = queue_name
    return {
        "metadata": {"name": "emails"},
        "spec": spec,
        "status": {"cancellations": [{"job": j, "requestedAt": ""} for j in cancellations]},
    }


async def test_each_listed_job_is_cancelled_once() -> None:
    source, control = KubeQueueSource("ns", "emails"), FakeControl()
    await source.apply(queue([3, 1]), control)
    await source.apply(queue([1, 3, 7]), control)
    await source.apply(queue([]), control)
    assert control.cancelled == [1, 3, 7]


async def test_paused_follows_the_spec_under_the_queue_name() -> None:
    source, control = KubeQueueSource("ns", "emails"), FakeControl()
    await source.apply(queue([], paused=True), control)
    await source.apply(queue([], paused=False, queue_name="mail"), control)
    assert control.paused == [("emails", True), ("mail", False)]


async def test_a_queue_without_status_is_fine() -> None:
    source, control = KubeQueueSource("ns", "emails"), FakeControl()
    await source.apply({"metadata": {"name": "emails"}, "spec": {}}, control)
    assert control.cancelled == []
    assert control.paused == [("emails", False)]


async def test_the_worker_follows_its_own_entry_of_status_retiring() -> None:
    source, control = KubeQueueSource("ns", "emails"), FakeControl()
    listed = queue([])
    listed["status"]["retiring"] = [
        {"pod": "emails-7d9f-other", "since": "2026-11-30T21:00:00.000001Z"},
        {"pod": "emails-7d9f-abcde", "since": "2026-11-30T21:00:00.000002Z"},
    ]
    await source.apply(listed, control)
    await source.apply(queue([]), control)
    assert control.retiring == ["2026-11-30T21:00:00.000002Z", None]


def test_watch_lines_are_split_across_chunks() -> None:
    chunks = [b'{"a":', b'1}\n{"b"', b":2}\n\n", b'{"c":3}']
    assert list(_lines(iter(chunks))) == [b'{"a":1}', b'{"b":2}', b'{"c":3}']
