"""The claim-dropping proxy against a real PostgreSQL and the real store: it forwards
everything, drops exactly the armed number of claim replies that claimed jobs (also
once psycopg has prepared the claim statement and only binds it by name), and the
claim it swallowed has committed; a claim on a queue it was not armed for passes."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator

import pytest

from slotfleet.models import Job, JobId, JobState, SlotfleetError
from slotfleet.store import Store, open_store
from tests.faults.pgproxy import ClaimReplyDropper
from tests.fixtures.postgres import PostgresServer

pytestmark = [pytest.mark.faults, pytest.mark.postgres]


def token() -> str:
    return secrets.token_hex(8)


@pytest.fixture
def dropper(postgres_server: PostgresServer) -> Iterator[ClaimReplyDropper]:
    proxy = ClaimReplyDropper(postgres_server.port)
    proxy.start()
    yield proxy
    proxy.stop()


@pytest.fixture
async def stores(
    postgres_dsn: str, postgres_server: PostgresServer, dropper: ClaimReplyDropper
) -> AsyncIterator[tuple[Store, Store]]:
    """A direct store and one whose connections go through the proxy."""
    direct = open_store(postgres_dsn)
    await direct.open()
    proxied_dsn = postgres_dsn.replace(f":{postgres_server.port}/", f":{dropper.port}/")
    proxied = open_store(f"{proxied_dsn}?application_name=w-proxied&sslmode=disable")
    await proxied.open()
    yield direct, proxied
    await proxied.close()
    await direct.close()


async def test_drops_one_armed_claim_reply_after_the_claim_committed(
    stores: tuple[Store, Store], dropper: ClaimReplyDropper
) -> None:
    direct, proxied = stores
    # Empty claims until psycopg prepares the statement (prepare_threshold is 5):
    # from then on only a Bind names it.
    for _ in range(8):
        assert await proxied.fetch("q", "w-proxied", 5, 30, claim=token()) == []
    dropper.arm("q")
    assert await proxied.fetch("q", "w-proxied", 5, 30, claim=token()) == []  # forwarded
    (other,) = await direct.enqueue([Job(func="tests.fault_tasks:work", queue="other")])
    claimed = await proxied.fetch("other", "w-proxied", 5, 30, claim=token())
    assert [j.id for j in claimed] == [other.id]
    queued = await direct.enqueue([Job(func="tests.fault_tasks:work", queue="q") for _ in range(3)])
    lost = token()
    with pytest.raises(SlotfleetError):
        await proxied.fetch("q", "w-proxied", 2, 30, claim=lost)
    (drop,) = dropper.drops
    assert drop.application == "w-proxied"
    assert drop.queue == "q"
    assert sorted(drop.job_ids) == [queued[0].id, queued[1].id]
    for job_id in drop.job_ids:
        row = await direct.get(JobId(job_id))
        assert row is not None
        assert row.state is JobState.RUNNING
        assert row.lease_owner == "w-proxied"
        assert row.lease_token == lost
    (again,) = await proxied.fetch("q", "w-proxied", 5, 30, claim=token())  # disarmed
    assert again.id == queued[2].id
    assert len(dropper.drops) == 1
