"""The dashboard's HTTP surface, in process (Starlette's TestClient) over a real SQLite
store: pages, fragments and the JSON API agree with the store; a job's text is escaped;
errors are one line with the right status; actions are refused unless enabled and
authorized, and then run the App verbs. The browser tests (tests/browser) drive the same
app through a real server and Chromium."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from slotfleet.app import App
from slotfleet.dashboard.settings import DashboardSettings
from slotfleet.dashboard.web import CONTENT_SECURITY_POLICY, create_app
from slotfleet.models import Job, JobError, JobId, JobState, Outcome
from tests.contract.test_store_contract import done

TOKEN = "a-token-of-32-characters-or-so!!"
HOSTILE = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'


async def seed(dsn: str) -> dict[str, JobId]:
    """One job per state of interest, on two queues; a failed one with a traceback and a
    hostile kwargs value."""
    async with App(dsn) as app:
        store = app.store
        bad, good, waiting = await store.enqueue(
            [
                Job(func="tests.tasks:fail", queue="mail", kwargs={"note": HOSTILE}),
                Job(func="tests.tasks:add", queue="mail", kwargs={"a": 1, "b": 2}),
                Job(func="tests.tasks:add", queue="pdf"),
            ]
        )
        claimed = {j.id: j for j in await store.fetch("mail", "w1", 2, 30, claim="c1")}
        error = JobError(
            attempt=1,
            error=f"ValueError: {HOSTILE}",
            traceback='Traceback (most recent call last):\n  File "t.py", line 1\nValueError: x',
            at=datetime.now(UTC),
        )
        await store.complete(
            [
                done(claimed[bad.id], Outcome.FAILED, error=error),
                done(claimed[good.id], Outcome.SUCCEEDED, result=3),
            ]
        )
    return {"failed": bad.id, "succeeded": good.id, "pending": waiting.id}


@pytest.fixture
def dsn(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'jobs.db'}"


@pytest.fixture
def ids(dsn: str) -> dict[str, JobId]:
    return asyncio.run(seed(dsn))


def client_for(settings: DashboardSettings) -> TestClient:
    return TestClient(create_app(settings), raise_server_exceptions=False)


@pytest.fixture
def client(dsn: str, ids: dict[str, JobId]) -> Iterator[TestClient]:
    with client_for(DashboardSettings(dsn=dsn)) as c:
        yield c


@pytest.fixture
def acting(dsn: str, ids: dict[str, JobId]) -> Iterator[TestClient]:
    settings = DashboardSettings(dsn=dsn, actions=True, token=TOKEN)
    with client_for(settings) as c:
        yield c


def test_pages_answer_with_a_strict_content_security_policy(client: TestClient) -> None:
    for path in ("/", "/jobs", "/jobs?state=failed", "/fragments/overview", "/fragments/jobs"):
        response = client.get(path)
        assert response.status_code == 200, (path, response.text[:300])
        assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert response.headers["x-content-type-options"] == "nosniff"
    assert client.get("/static/dashboard.js").status_code == 200
    assert client.get("/healthz").text == "ok\n"
    assert client.get("/readyz").text == "ok\n"


def test_a_paused_queue_is_marked_on_the_overview(client: TestClient, dsn: str) -> None:
    """A queue paused in the store (``slotfleet pause``) says so, with its time to resume."""

    async def pause() -> None:
        async with App(dsn) as app:
            await app.pause("pdf", until=datetime(2999, 1, 1, 9, 30, tzinfo=UTC))

    asyncio.run(pause())
    queues = {q["queue"]: q for q in client.get("/api/overview").json()["queues"]}
    assert (queues["pdf"]["paused"], queues["pdf"]["resume_at"]) == (True, "2999-01-01T09:30:00Z")
    assert not queues["mail"]["paused"]
    page = client.get("/").text
    assert "paused until 2999-01-01 09:30:00 UTC" in page
    assert page.count('data-col="paused"') == 1


def test_the_json_api_matches_the_store(
    client: TestClient, dsn: str, ids: dict[str, JobId]
) -> None:
    async def truth() -> tuple[list[dict[str, object]], list[JobId]]:
        async with App(dsn) as app:
            stats = [asdict(s) | {"slots_free": s.slots_free} for s in await app.queues()]
            failed = [j.id for j in await app.list(states=["failed"])]
        return stats, failed

    stats, failed = asyncio.run(truth())
    overview = client.get("/api/overview").json()
    assert [{k: q[k] for k in stats[0]} for q in overview["queues"]] == stats
    assert overview["throughput"]["totals"]["failed"] == 1
    assert overview["store"] == f"sqlite {dsn.removeprefix('sqlite:///')}"
    page = client.get("/api/jobs", params={"state": "failed"}).json()
    assert [j["id"] for j in page["jobs"]] == failed == [ids["failed"]]
    assert page["next_after"] is None
    detail = client.get(f"/api/jobs/{ids['failed']}").json()
    assert detail["job"]["kwargs"] == {"note": HOSTILE}
    assert detail["job"]["errors"][0]["worker"] == "w1"
    assert detail["job"]["claimed_by"] == "w1"


def test_keyset_paging_through_the_api_and_the_page_links(
    client: TestClient, dsn: str, ids: dict[str, JobId]
) -> None:
    async def more() -> None:
        async with App(dsn) as app:
            await app.enqueue_many([Job(func="tests.tasks:add", queue="pdf")] * 5)

    asyncio.run(more())
    seen: list[int] = []
    after: int | None = None
    while True:
        params: dict[str, str | int] = {"queue": "pdf", "limit": 2}
        if after is not None:
            params["after"] = after
        page = client.get("/api/jobs", params=params).json()
        seen += [j["id"] for j in page["jobs"]]
        after = page["next_after"]
        if after is None:
            break
    assert seen == sorted(seen, reverse=True)
    assert len(seen) == 6
    html = client.get("/jobs", params={"queue": "pdf"}).text
    assert 'rel="next"' not in html  # 6 jobs fit the default page of 50
    first = client.get("/jobs", params={"queue": "pdf", "after": seen[2]}).text
    assert f'href="/jobs/{seen[3]}"' in first
    assert f'href="/jobs/{seen[2]}"' not in first
    assert "« newest" in first


def test_a_jobs_text_is_escaped_everywhere_it_is_shown(
    client: TestClient, ids: dict[str, JobId]
) -> None:
    for path in (f"/jobs/{ids['failed']}", f"/fragments/jobs/{ids['failed']}", "/jobs"):
        html = client.get(path).text
        assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;" in html, path
        assert "<script>window.__pwned" not in html, path
        assert "<img src=x" not in html, path
    page = client.get(f"/jobs/{ids['failed']}").text
    assert "Traceback (most recent call last):" in page
    assert re.search(r'<script src="/static/dashboard.js" defer></script>', page)
    assert len(re.findall(r"<script", page)) == 1


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        ("/api/jobs?state=exploded", 400, "job filter: states.0"),
        ("/api/jobs?order=id", 400, "unknown filter 'order'"),
        ("/api/jobs/999999", 404, "no job has id 999999"),
        ("/jobs?after=x", 400, "job filter: after"),
        ("/jobs/999999", 404, "no job has id 999999"),
        ("/fragments/jobs/999999", 404, "no job has id 999999"),
    ],
)
def test_bad_requests_are_one_line_with_their_status(
    client: TestClient, path: str, status: int, message: str
) -> None:
    response = client.get(path)
    assert response.status_code == status
    if path.startswith("/api/"):
        assert response.json()["error"].startswith(message)
        assert "\n" not in response.json()["error"]
    else:
        assert message in response.text
        assert "Traceback" not in response.text


def test_an_unreachable_store_is_a_503_that_never_shows_the_password() -> None:
    settings = DashboardSettings(dsn="postgresql://app:s3cret-pw@127.0.0.1:1/jobs")
    with client_for(settings) as c:
        for path in ("/", "/jobs", "/api/overview", "/fragments/overview", "/readyz"):
            response = c.get(path)
            assert response.status_code == 503, path
            assert "s3cret-pw" not in response.text, path
            assert "cannot reach the database at 127.0.0.1:1" in response.text, path
        assert c.get("/healthz").status_code == 200


@pytest.mark.parametrize(
    ("path", "payload"),
    [
        ("/api/jobs/{failed}/retry", None),
        ("/api/jobs/{pending}/cancel", None),
        ("/api/purge", {"older_than": "0s"}),
    ],
)
def test_actions_are_refused_when_off_without_touching_the_store(
    client: TestClient, dsn: str, ids: dict[str, JobId], path: str, payload: object
) -> None:
    url = path.format(**ids)
    response = client.post(url, json=payload, headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 403
    assert "actions are off" in response.json()["error"]

    async def states() -> dict[str, JobState]:
        async with App(dsn) as app:
            return {name: (await app.get(i)).state for name, i in ids.items()}

    assert asyncio.run(states()) == {
        "failed": JobState.FAILED,
        "succeeded": JobState.SUCCEEDED,
        "pending": JobState.PENDING,
    }


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer wrong-token-wrong-token"}, {"Authorization": TOKEN}]
)
def test_actions_without_the_token_are_refused(
    acting: TestClient, dsn: str, ids: dict[str, JobId], headers: dict[str, str]
) -> None:
    response = acting.post(f"/api/jobs/{ids['pending']}/cancel", headers=headers)
    assert response.status_code == 401
    assert "needs the dashboard's token" in response.json()["error"]
    assert acting.post("/api/purge", json={"older_than": "0s"}, headers=headers).status_code == 401

    async def state() -> JobState:
        async with App(dsn) as app:
            return (await app.get(ids["pending"])).state

    assert asyncio.run(state()) is JobState.PENDING


def test_actions_with_the_token_run_the_app_verbs(
    acting: TestClient, dsn: str, ids: dict[str, JobId]
) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    done = acting.post(f"/api/jobs/{ids['pending']}/cancel", headers=auth).json()
    assert done["message"] == f"{ids['pending']}: cancelled"
    again = acting.post(f"/api/jobs/{ids['failed']}/retry", headers=auth).json()
    assert again["message"] == f"{ids['failed']}: queued again on mail"
    assert again["job"]["state"] == "pending"
    refused = acting.post(f"/api/jobs/{ids['succeeded']}/retry", headers=auth)
    assert refused.status_code == 409
    assert "only failed or cancelled jobs can be retried" in refused.json()["error"]
    bad = acting.post("/api/purge", json={"older_than": "soon"}, headers=auth)
    assert bad.status_code == 400
    assert "is not a duration" in bad.json()["error"]
    purged = acting.post("/api/purge", json={"older_than": "0s"}, headers=auth).json()
    assert purged["deleted"] == 2  # the succeeded and the cancelled job; the retried one is pending
    assert acting.get(f"/api/jobs/{ids['succeeded']}").status_code == 404
    html = acting.get("/jobs").text
    assert f'data-action="/api/jobs/{ids["failed"]}/cancel"' in html
    assert 'id="token-form"' in html
