"""``slotfleet retry``, ``slotfleet dashboard`` and ``slotfleet top`` as a user runs them:
real processes on a SQLite file (a pseudo-terminal for ``top``), one-line errors for
mistakes, a clean exit on SIGTERM and Ctrl-C."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import re
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from slotfleet.app import App
from slotfleet.cli.main import main
from slotfleet.models import Job
from tests.fixtures.waiting import wait_until

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "slotfleet.cli.main", *args],
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def finish(proc: subprocess.Popen[str], timeout: float = 30) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def test_retry_queues_failed_jobs_again_and_says_why_others_cannot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dsn = f"sqlite:///{tmp_path / 'cli.db'}"

    async def seed() -> tuple[int, int]:
        async with App(dsn) as app:
            failed, pending = await app.store.enqueue(
                [Job(func="tests.tasks:add"), Job(func="tests.tasks:add")]
            )
            await app.store.fetch("default", "w", 1, 30, claim="c1")
            await app.cancel(failed.id)  # running: a request only
            return failed.id, pending.id

    running, pending = asyncio.run(seed())
    assert main(["retry", "--dsn", dsn, str(pending), str(running), "77"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        f"error: job {pending} is pending: only failed or cancelled jobs can be retried",
        f"error: job {running} is running: only failed or cancelled jobs can be retried",
        "error: no job has id 77",
    ]
    assert main(["cancel", "--dsn", dsn, str(pending)]) == 0
    assert main(["retry", "--dsn", dsn, str(pending)]) == 0
    out, _ = capsys.readouterr()
    assert out.splitlines()[-1] == f"{pending}: queued again on default"
    assert main(["jobs", "--dsn", dsn, str(pending)]) == 0
    assert json.loads(capsys.readouterr().out)["state"] == "pending"


def test_dashboard_serves_until_sigterm_and_exits_zero(tmp_path: Path) -> None:
    dsn = f"sqlite:///{tmp_path / 'd.db'}"
    proc = cli("dashboard", "--dsn", dsn, "--port", "0")
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        shown = r"slotfleet dashboard: (http://127\.0\.0\.1:\d+) \(store: sqlite .*d\.db; "
        match = re.fullmatch(shown + r"actions: off\)\n", line)
        assert match, line
        with urllib.request.urlopen(match.group(1) + "/api/overview", timeout=10) as response:
            assert json.loads(response.read())["queues"] == []
        proc.send_signal(signal.SIGTERM)
        code, _, err = finish(proc, 15)
        assert code == 0, err
        assert "Traceback" not in err
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_dashboard_mistakes_are_one_line(tmp_path: Path) -> None:
    dsn = f"sqlite:///{tmp_path / 'd.db'}"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, out, err = finish(cli("dashboard", "--dsn", dsn, "--port", str(port)))
    assert code == 1
    assert err == f"error: cannot listen on 127.0.0.1:{port}: Address already in use\n"
    assert out == ""

    no_token = {"SLOTFLEET_DASHBOARD_TOKEN": ""}
    code, _, err = finish(cli("dashboard", "--dsn", dsn, "--enable-actions", env=no_token))
    assert code == 1
    assert err.startswith("error: dashboard: value: actions need a token")
    assert err.count("\n") == 1

    missing = tmp_path / "nope"
    code, _, err = finish(
        cli("dashboard", "--dsn", dsn, "--enable-actions", "--token-file", str(missing))
    )
    assert (code, err.count("\n")) == (1, 1)
    assert err.startswith(f"error: cannot read --token-file {missing}")

    code, _, err = finish(cli("dashboard", "--dsn", "mysql://root:pw@db/x"))
    assert (code, err) == (
        1,
        "error: unsupported DSN scheme 'mysql' (use sqlite:///path.db or postgresql://...)\n",
    )
    assert "pw" not in err

    code, _, err = finish(cli("top", "--dsn", dsn, "--window", "1m", "--bucket", "7s"))
    assert code == 1
    assert err == "error: --window/--bucket: value: the window must be a whole number of buckets\n"


def test_without_the_dashboard_extra_the_command_says_what_to_install(tmp_path: Path) -> None:
    script = (
        "import sys; sys.modules['starlette'] = None; sys.modules['rich'] = None\n"
        "from slotfleet.cli.main import main\n"
        f"sys.exit(main(['dashboard', '--dsn', 'sqlite:///{tmp_path}/x.db']) * 10"
        f" + main(['top', '--dsn', 'sqlite:///{tmp_path}/x.db']))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 11, proc.stderr
    lines = proc.stderr.splitlines()
    assert lines == [
        "error: this command needs the dashboard extra (starlette is missing): "
        "pip install 'slotfleet[dashboard]'",
        "error: this command needs the dashboard extra (rich is missing): "
        "pip install 'slotfleet[dashboard]'",
    ]


def read_until(fd: int, pattern: str, buffer: list[str], timeout: float = 20) -> str:
    """Read the pseudo-terminal until ``pattern`` appears in what was read since the
    last match; return that text."""
    deadline = time.monotonic() + timeout
    seen = ""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 65536).decode(errors="replace")
            except OSError:
                break
            seen += chunk
            buffer.append(chunk)
            if re.search(pattern, seen):
                return seen
    raise AssertionError(f"{pattern!r} never appeared; last output:\n{seen[-3000:]}")


def test_top_redraws_in_place_until_ctrl_c(tmp_path: Path) -> None:
    dsn = f"sqlite:///{tmp_path / 't.db'}"

    async def enqueue(count: int) -> None:
        async with App(dsn) as app:
            await app.enqueue_many([Job(func="tests.tasks:add", queue="emails")] * count)

    asyncio.run(enqueue(2))
    leader, follower = pty.openpty()
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "160", "LINES": "50", "TERM": "xterm"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "slotfleet.cli.main", "top", "--dsn", dsn, "--interval", "0.3"],
        stdin=follower,
        stdout=follower,
        stderr=follower,
        env=env,
        start_new_session=True,
    )
    os.close(follower)
    output: list[str] = []
    try:
        read_until(leader, r"emails\s+2\s+0\s", output)
        asyncio.run(enqueue(5))
        frame = read_until(leader, r"emails\s+7\s+0\s", output)
        # redrawn in place: the cursor goes back up over the previous frame
        assert re.search(r"\x1b\[\d*A", frame), frame[-500:]
        assert "\x1b[2K" in frame
        wait_until("top to draw a few frames", lambda: len(output) >= 3, timeout=10)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        os.close(leader)
    assert "Traceback" not in "".join(output)


def test_top_once_prints_one_frame(tmp_path: Path) -> None:
    dsn = f"sqlite:///{tmp_path / 't.db'}"

    async def seed() -> None:
        async with App(dsn) as app:
            await app.enqueue_many([Job(func="tests.tasks:add", queue="reports")] * 3)

    asyncio.run(seed())
    # 80 columns, a bastion host's terminal: regression, the one wide table cut every
    # header and queue name to "que…", "rea…", "rep…"
    code, out, err = finish(cli("top", "--dsn", dsn, "--once", env={"COLUMNS": "80"}))
    assert (code, err) == (0, "")
    assert max(len(line) for line in out.splitlines()) <= 80, out
    assert "…" not in out, out
    assert re.search(r"reports\s+3\s+0\s+0\s+0\s+0\s+0\s*$", out, re.M), out
    for header in ("ready", "scheduled", "running", "succeeded", "failed", "cancelled"):
        assert re.search(rf"\b{header}\b", out), (header, out)
    for header in ("workers", "busy", "slots", "free", "jobs/min", "failure"):
        assert re.search(rf"(?<![\w/]){re.escape(header)}(?![\w/])", out), (header, out)
    assert "no worker is sending heartbeats" in out
    assert "\x1b[" not in out  # not a terminal: plain text
