"""How a ``slotfleet worker`` process starts when things around it are not right: the
store unreachable (it waits, alive but not ready, and still stops at once on SIGTERM),
or its metrics port taken (one line, exit 1). The database outage chaos tests cover a
worker that waits and then serves once PostgreSQL is back."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
UNREACHABLE = "postgresql://127.0.0.1:1/x"


def worker_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "slotfleet.cli.main", "worker", *args]


def worker_env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("SLOTFLEET_DSN", None)
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def probe(url: str) -> tuple[int, str] | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return None


@pytest.fixture
def started(tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_worker_waits_for_an_unreachable_store_and_stops_promptly(
    tmp_path: Path, started: list[subprocess.Popen[bytes]]
) -> None:
    port = free_port()
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            worker_command("--dsn", UNREACHABLE, "--metrics-port", str(port)),
            cwd=tmp_path,
            env=worker_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    started.append(proc)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while (ready := probe(base + "/readyz")) is None:
        assert proc.poll() is None, f"exited {proc.returncode}:\n{log_path.read_text()}"
        assert time.monotonic() < deadline, log_path.read_text()
        time.sleep(0.05)
    assert ready == (503, "store unreachable\n")
    assert probe(base + "/healthz") == (200, "ok\n")
    time.sleep(1.5)  # a few retries
    assert proc.poll() is None, f"exited {proc.returncode}:\n{log_path.read_text()}"
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0, log_path.read_text()
    assert time.monotonic() - sent < 3, "SIGTERM while waiting for the store was slow"
    text = log_path.read_text()
    assert "Traceback" not in text, text
    failures = [line for line in text.splitlines() if "store unreachable" in line]
    assert len(failures) >= 2, text


def test_metrics_port_in_use_is_one_line_and_exit_1(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run(
            worker_command(
                *("--dsn", f"sqlite:///{tmp_path / 'jobs.db'}", "--log-level", "ERROR"),
                *("--metrics-host", "127.0.0.1", "--metrics-port", str(port)),
            ),
            cwd=tmp_path,
            env=worker_env(),
            capture_output=True,
            timeout=60,
        )
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode == 1, err
    assert err.strip().splitlines() == [
        f"error: cannot serve metrics on 127.0.0.1:{port}: Address already in use"
    ], err
