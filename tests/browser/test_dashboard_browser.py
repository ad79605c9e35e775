"""The dashboard in Chromium, over a PostgreSQL store that real worker processes work on.

In module order: the overview shows what the store holds (queue by queue, worker by
worker); a job enqueued appears in the list and walks pending -> running -> succeeded
without a reload; a failed job's page shows every attempt's traceback, readable; text a
job put in its kwargs, result or error shows as text and never runs; actions are refused
without the token and work with it; the state filter lists exactly the store's failed
jobs; the throughput chart draws the work done. Screenshots of the main pages are taken
on the way (see ``conftest.shoot``).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from playwright.sync_api import Page

from slotfleet.app import App
from slotfleet.models import Job, JobId, JobState, QueuedJob, QueueStats, RetryPolicy
from tests.browser.conftest import TOKEN, Fleet, shoot, text_of
from tests.fixtures.waiting import wait_until

pytestmark = pytest.mark.browser

TASKS = "tests.dashboard_tasks"
HOSTILE = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'
NOW = 0.5  # the dashboard's refresh interval in these tests, seconds

COLUMNS = ("ready", "scheduled", "running", "succeeded", "failed", "cancelled", "workers")


def job(func: str, queue: str, **options: object) -> Job:
    return Job.model_validate({"func": f"{TASKS}:{func}", "queue": queue, **options})


def idle(fleet: Fleet) -> list[QueueStats] | None:
    """The queues' figures once nothing is ready, scheduled or running."""
    stats = fleet.run(lambda app: app.queues())
    busy = any(q.ready or q.scheduled or q.running for q in stats)
    return None if busy else stats


def get(fleet: Fleet, job_id: JobId) -> QueuedJob:
    async def body(app: App) -> QueuedJob:
        return await app.get(job_id)

    return fleet.run(body)


def row(page: Page, queue: str) -> dict[str, str]:
    return {
        name: text_of(page, f'tr[data-queue="{queue}"] td[data-col="{name}"]')
        for name in (*COLUMNS, "slots", "free")
    }


def expected_row(q: QueueStats) -> dict[str, str]:
    shown = {name: str(getattr(q, name)) for name in COLUMNS}
    return shown | {"slots": f"{q.slots_busy} / {q.slots_total}", "free": str(q.slots_free)}


def wait_state(page: Page, job_id: int, state: str, timeout: float = 20) -> None:
    page.wait_for_function(
        '([id, state]) => { const b = document.querySelector(`[data-job="${id}"] [data-col=state]`)'
        " || document.querySelector('#job [data-col=state]');"
        " return b !== null && b.textContent.trim() === state; }",
        arg=[job_id, state],
        polling=50,
        timeout=timeout * 1000,
    )


def test_the_overview_shows_what_the_store_holds(fleet: Fleet, page: Page, tmp_path: Path) -> None:
    quick = RetryPolicy(base=0, jitter=0)
    waves = [
        [job("send_email", "emails", kwargs={"to": f"u{i}@example.com", "subject": "hi"})
         for i in range(40)],
        [job("charge_card", "emails", kwargs={"order": i, "amount": 9.5 + i}, max_attempts=2,
             retry=quick) for i in range(1, 16)],
        [job("build_report", "reports", kwargs={"rows": 100 * i}) for i in range(6)],
        [job("resize_image", "thumbnails", kwargs={"path": f"/img/{i}.png", "width": 64 * i})
         for i in range(1, 9)],
    ]  # fmt: skip
    for wave in waves:
        fleet.run(lambda app, wave=wave: app.enqueue_many(wave))  # type: ignore[misc]
        page.wait_for_timeout(1200)  # spread over a few chart buckets
    wait_until("the fleet to finish the work", lambda: idle(fleet), timeout=60)
    page.goto(fleet.url + "/")
    assert page.title() == "Overview · slotfleet"

    def page_matches_store() -> list[QueueStats] | None:
        """Counts are still now; busy slots follow heartbeats: read both until they agree."""
        stats = fleet.run(lambda app: app.queues())
        shown = all(row(page, q.queue) == expected_row(q) for q in stats)
        tiles = text_of(page, '[data-figure="slots"]') == (
            f"{sum(q.slots_busy for q in stats)}/{sum(q.slots_total for q in stats)}"
        )
        return stats if shown and tiles else None

    stats = wait_until("every queue's row to show the store's figures", page_matches_store, 15)
    assert {q.queue for q in stats} == {"emails", "reports", "thumbnails"}
    assert text_of(page, '[data-figure="ready"]') == "0"
    assert text_of(page, '[data-figure="workers"]') == "2"

    workers = fleet.run(lambda app: app.workers())
    for w in workers:
        chips = text_of(page, f'tr[data-worker="{w.worker_id}"] td:nth-child(3)')
        for name, (total, busy) in w.queues.items():
            assert f"{name} {busy}/{total}" in chips, (w.worker_id, chips)
        state = text_of(page, f'tr[data-worker="{w.worker_id}"] [data-col="state"]')
        assert state == "working"
    declined = sum(1 for i in range(1, 16) if i % 5 == 0)
    emails = next(q for q in stats if q.queue == "emails")
    assert emails.failed == declined


def test_a_job_enqueued_appears_and_changes_state_without_a_reload(
    fleet: Fleet, page: Page, tmp_path: Path
) -> None:
    page.goto(fleet.url + "/jobs?queue=emails")
    page.evaluate("window.__sameDocument = 'still here'")
    soon = datetime.now(UTC) + timedelta(seconds=3)  # pending for several refreshes
    ref = fleet.run(
        lambda app: app.enqueue(
            job("send_email", "emails", scheduled_at=soon,
                kwargs={"to": "new@example.com", "subject": "welcome", "delay": 3.0})
        )
    )  # fmt: skip
    job_id = ref.identifier
    wait_state(page, job_id, "pending")
    wait_state(page, job_id, "running")
    shoot(page, "dashboard-jobs", tmp_path, full_page=False)
    wait_state(page, job_id, "succeeded")
    assert get(fleet, job_id).state is JobState.SUCCEEDED
    assert page.evaluate("window.__sameDocument") == "still here"
    assert page.evaluate("performance.getEntriesByType('navigation').length") == 1
    worker = text_of(page, f'tr[data-job="{job_id}"] td:nth-child(8)')
    assert worker == get(fleet, job_id).claimed_by


def test_a_failed_jobs_traceback_is_readable(fleet: Fleet, page: Page, tmp_path: Path) -> None:
    ref = fleet.run(
        lambda app: app.enqueue(
            job("charge_card", "emails", kwargs={"order": 40, "amount": 12.0}, max_attempts=2,
                retry=RetryPolicy(base=0, jitter=0))
        )
    )  # fmt: skip

    def ended_failed() -> QueuedJob | None:
        found = get(fleet, ref.identifier)
        return found if found.state is JobState.FAILED else None

    failed = wait_until("the job to fail twice", ended_failed, timeout=30)
    page.goto(f"{fleet.url}/jobs/{ref.identifier}")
    attempts = page.locator("article.attempt")
    assert attempts.count() == 2 == len(failed.errors)
    latest = attempts.first
    assert latest.locator("h3").inner_text().startswith("attempt 2")
    assert failed.errors[-1].worker is not None
    assert failed.errors[-1].worker in latest.locator("h3").inner_text()
    traceback = latest.locator("pre.traceback")
    assert traceback.is_visible()
    text = traceback.inner_text()
    assert text.startswith("Traceback (most recent call last):")
    assert 'raise ValueError(f"card declined for order {order} ({amount:.2f} EUR)")' in text
    assert text.rstrip().endswith("ValueError: card declined for order 40 (12.00 EUR)")
    assert text.count("\n") >= 3  # line breaks kept: one frame per line
    box = traceback.bounding_box()
    assert box is not None
    assert box["height"] > 60
    assert box["width"] > 400
    shoot(page, "dashboard-job", tmp_path)


def test_a_jobs_text_renders_as_text_and_never_runs(fleet: Fleet, page: Page) -> None:
    echoed = fleet.run(lambda app: app.enqueue(job("echo", "emails", kwargs={"value": HOSTILE})))
    failing = fleet.run(
        lambda app: app.enqueue(job("fail_with", "emails", kwargs={"message": HOSTILE}))
    )
    wait_until("both jobs to end", lambda: get(fleet, echoed.identifier).is_terminal
               and get(fleet, failing.identifier).is_terminal)  # fmt: skip
    assert get(fleet, echoed.identifier).result == HOSTILE
    for path in (f"/jobs/{echoed.identifier}", f"/jobs/{failing.identifier}", "/jobs"):
        page.goto(fleet.url + path)
        refreshed = int(page.evaluate("Number(document.body.dataset.refreshed || 0)"))
        page.wait_for_function(
            "(n) => Number(document.body.dataset.refreshed || 0) >= n + 2", arg=refreshed
        )  # the live region was swapped at least twice: fragments are escaped too
        assert page.evaluate("typeof window.__pwned") == "undefined", path
        assert page.evaluate("document.querySelectorAll('main script, main img').length") == 0
        assert "<script>window.__pwned = 1</script>" in page.locator("main").inner_text(), path
    page.goto(f"{fleet.url}/jobs/{echoed.identifier}")
    as_json = json.dumps(HOSTILE, ensure_ascii=False)  # the page shows kwargs and result as JSON
    assert f'"value": {as_json}' in page.locator('[data-col="kwargs"]').inner_text()
    assert page.locator('[data-col="result"]').inner_text() == as_json
    page.goto(f"{fleet.url}/jobs/{failing.identifier}")
    assert f"RuntimeError: {HOSTILE}" in page.locator("article.attempt .error-text").inner_text()


def test_actions_are_refused_without_the_token_and_work_with_it(fleet: Fleet, page: Page) -> None:
    later = datetime.now(UTC) + timedelta(hours=1)
    ref = fleet.run(
        lambda app: app.enqueue(job("send_email", "emails", scheduled_at=later,
                                    kwargs={"to": "later@example.com", "subject": "x"}))
    )  # fmt: skip
    job_id = ref.identifier
    page.goto(f"{fleet.url}/jobs/{job_id}")
    page.locator('button[data-action$="/cancel"]').click()
    page.wait_for_function(
        "() => document.getElementById('notice').textContent.startsWith('refused (401)')"
    )
    assert "needs the dashboard's token" in text_of(page, "#notice")
    assert get(fleet, job_id).state is JobState.PENDING

    page.fill("#token", "not-the-token-not-the-token")
    page.click("#token-form button")
    page.locator('button[data-action$="/cancel"]').click()
    page.wait_for_function(
        "() => document.getElementById('notice').textContent.startsWith('refused (401)')"
    )
    assert get(fleet, job_id).state is JobState.PENDING

    page.fill("#token", TOKEN)
    page.click("#token-form button")
    page.locator('button[data-action$="/cancel"]').click()
    wait_state(page, job_id, "cancelled")
    assert text_of(page, "#notice") == f"{job_id}: cancelled"
    assert get(fleet, job_id).state is JobState.CANCELLED
    page.locator('button[data-action$="/retry"]').click()
    wait_state(page, job_id, "succeeded")  # queued again for now: a worker runs it
    assert text_of(page, "#notice") == f"{job_id}: queued again on emails"
    assert get(fleet, job_id).state is JobState.SUCCEEDED


def test_the_state_filter_lists_the_stores_failed_jobs(fleet: Fleet, page: Page) -> None:
    page.goto(fleet.url + "/jobs")
    page.select_option('select[name="state"]', "failed")
    page.click("form.filters button[type=submit]")
    page.wait_for_url("**/jobs?*state=failed*")
    failed = fleet.run(lambda app: app.summaries(states=["failed"], limit=50))
    shown = page.locator("tr[data-job]")
    assert [int(x) for x in shown.evaluate_all("rows => rows.map(r => r.dataset.job)")] == [
        j.id for j in failed
    ]
    assert set(shown.evaluate_all("rows => rows.map(r => r.dataset.state)")) == {"failed"}


def test_the_throughput_chart_draws_the_work_done(fleet: Fleet, page: Page, tmp_path: Path) -> None:
    page.goto(fleet.url + "/")
    overview = page.request.get(fleet.url + "/api/overview").json()
    totals = overview["throughput"]["totals"]
    legend = page.locator("p.legend").inner_text()
    assert f"succeeded {totals['succeeded']}" in legend
    assert f"failed {totals['failed']}" in legend
    bars = page.locator("svg.chart rect")
    assert bars.count() >= 3
    heights = [float(h) for h in bars.evaluate_all("rs => rs.map(r => r.getAttribute('height'))")]
    assert all(h > 0 for h in heights)
    assert page.locator("svg.chart rect.bad").count() >= 1  # the declined cards
    shoot(page, "dashboard-overview", tmp_path)
