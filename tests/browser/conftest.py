"""A real fleet behind a real dashboard, looked at with a real browser.

``fleet`` (module scope): a fresh PostgreSQL database, two ``slotfleet worker`` processes
(async, thread and process queues) and a ``slotfleet dashboard`` process with actions on
(token from the environment), refreshing every half second over a two-minute window.
``browser`` (module scope): Debian's Chromium (``/usr/bin/chromium``, installed by
scripts/test) driven by Playwright's Python package, headless, with a fresh profile; it
never downloads a browser of its own. Missing Chromium fails the tier, never skips it.

``shoot(page, name)`` saves a full-page screenshot in the test's temp directory and, when
``$SLOTFLEET_SCREENSHOTS`` names a directory (``docs/img`` to refresh the README's), there
too: the documentation's pictures are taken by this suite, not by hand.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from playwright.sync_api import BrowserContext, Page, sync_playwright

from slotfleet.app import App
from tests.fixtures.postgres import PostgresServer
from tests.fixtures.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path(os.environ.get("SLOTFLEET_CHROMIUM", "/usr/bin/chromium"))
TOKEN = "browser-test-token-" + "x" * 16
T = TypeVar("T")

#: The flags the browser runs with: no sandbox (root in CI), no GPU, nothing fetched from
#: the network behind the test's back.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = pytest.mark.browser


@dataclass
class Fleet:
    dsn: str
    url: str
    logs: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def run(self, body: Callable[[App], Awaitable[T]]) -> T:
        """``body(app)`` on a fresh App over the fleet's store, in a thread of its own:
        Playwright's sync API keeps an event loop running in the test's thread."""

        async def main() -> T:
            async with App(self.dsn) as app:
                return await body(app)

        with ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, main()).result()

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")


def start(fleet: Fleet, name: str, *args: str, env: dict[str, str] | None = None) -> None:
    full_env = {**os.environ, "PYTHONPATH": str(REPO), "SLOTFLEET_DSN": fleet.dsn, **(env or {})}
    with open(fleet.logs / f"{name}.log", "wb") as log:
        fleet.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "slotfleet.cli.main", *args],
            cwd=fleet.logs,
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="module")
def fleet(
    postgres_server: PostgresServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fleet]:
    name = f"b_{uuid.uuid4().hex[:10]}"
    dsn = postgres_server.create_database(name)
    logs = tmp_path_factory.mktemp("fleet")
    fleet = Fleet(dsn=dsn, url="", logs=logs)
    try:
        worker = ["worker", "--metrics-port", "0", "--polling-interval", "0.2"]
        start(
            fleet, "worker-a", *worker, "--queue", "emails:async:4", "--queue", "reports:threads:2"
        )
        start(
            fleet,
            "worker-b",
            *worker,
            "--queue",
            "emails:async:2",
            "--queue",
            "thumbnails:processes:2",
        )
        start(
            fleet,
            "dashboard",
            "dashboard", "--port", "0", "--refresh", "0.5", "--window", "2m", "--bucket", "5s",
            "--enable-actions",
            env={"SLOTFLEET_DASHBOARD_TOKEN": TOKEN},
        )  # fmt: skip

        def listening() -> str | None:
            proc = fleet.procs["dashboard"]
            assert proc.poll() is None, f"the dashboard exited:\n{fleet.log('dashboard')}"
            for line in fleet.log("dashboard").splitlines():
                if line.startswith("slotfleet dashboard: http://"):
                    return line.split()[2]
            return None

        fleet.url = wait_until("the dashboard to listen", listening, timeout=30)
        wait_until(
            "both workers' heartbeats",
            lambda: len(fleet.run(lambda app: app.workers())) == 2,
            timeout=30,
        )
        yield fleet
    finally:
        for proc in fleet.procs.values():
            stop(proc)
        postgres_server.drop_database(name)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserContext]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} not found: install Debian's chromium (scripts/test does, as root) "
            "or point $SLOTFLEET_CHROMIUM at a Chromium binary",
            pytrace=False,
        )
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 900},
        )
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def page(browser: BrowserContext) -> Iterator[Page]:
    """A fresh tab; the test fails if the page logs an error or throws."""
    tab = browser.new_page()
    problems: list[str] = []
    tab.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    tab.on(
        "console",
        lambda msg: (
            problems.append(f"console {msg.type}: {msg.text}")
            if msg.type == "error" and "status of 401" not in msg.text
            else None
        ),
    )
    yield tab
    tab.close()
    assert not problems, problems


def shoot(page: Page, name: str, tmp_path: Path, *, full_page: bool = True) -> Path:
    """A screenshot of the page (see the module docstring for where it goes)."""
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    wanted = os.environ.get("SLOTFLEET_SCREENSHOTS")
    if wanted:
        target = Path(wanted)
        if not target.is_absolute():
            target = REPO / target
        target.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target / f"{name}.png")
    return path


def text_of(page: Page, selector: str) -> str:
    """The text of the first element matching ``selector`` now ('' when there is none)."""
    found: Any = page.evaluate(
        "(s) => { const e = document.querySelector(s); return e ? e.textContent : ''; }",
        selector,
    )
    return str(found).strip()
