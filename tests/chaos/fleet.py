"""Worker subprocesses for the chaos suite: start, signal, replace, notice crashes.

Each worker is ``python -m slotfleet.cli.main worker`` in its own process group with
its own log file and a fixed worker id (``--worker-id`` and ``$SLOTFLEET_WORKER_ID``,
which the job bodies in ``tests.chaos_tasks`` record). The fleet remembers which
workers the test signalled and when, so any other exit is a crash to report.

What this is not: a process supervisor for production (``slotfleet.fleet`` is that).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


@dataclass
class WorkerProc:
    """One worker process and what the test did to it."""

    worker_id: str
    popen: subprocess.Popen[bytes]
    log: Path
    started: float
    signal: signal.Signals | None = None
    signalled_at: datetime | None = None
    """Wall-clock time of the signal (compared with the database server's clock)."""

    def tail(self, chars: int = 3000) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return text[-chars:]


class ChaosFleet:
    """Starts ``slotfleet worker`` processes on one DSN and keeps track of them."""

    def __init__(self, dsn: str, logs: Path, worker_args: list[str]) -> None:
        self.dsn = dsn
        self.logs = logs
        self.worker_args = worker_args
        self.procs: list[WorkerProc] = []

    def start(self) -> WorkerProc:
        worker_id = f"w{len(self.procs):02d}"
        log = self.logs / f"{worker_id}.log"
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "SLOTFLEET_DSN": self.dsn,
            "SLOTFLEET_WORKER_ID": worker_id,
        }
        with log.open("wb") as out:
            popen = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "slotfleet.cli.main",
                    "worker",
                    "--dsn",
                    self.dsn,
                    "--worker-id",
                    worker_id,
                    "--metrics-port",
                    "0",
                    *self.worker_args,
                ],
                cwd=REPO,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        proc = WorkerProc(worker_id, popen, log, time.monotonic())
        self.procs.append(proc)
        return proc

    def live(self) -> list[WorkerProc]:
        """Running workers the test has not signalled."""
        return [p for p in self.procs if p.signal is None and p.popen.poll() is None]

    def send(self, proc: WorkerProc, sig: signal.Signals) -> None:
        proc.signal = sig
        proc.signalled_at = datetime.now(UTC)
        proc.popen.send_signal(sig)

    def crashed(self) -> list[WorkerProc]:
        """Workers that exited although the test never signalled them."""
        return [p for p in self.procs if p.signal is None and p.popen.poll() is not None]

    def stop_all(self, timeout: float) -> None:
        """SIGTERM every running worker and wait up to ``timeout`` seconds for them."""
        for proc in self.live():
            self.send(proc, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in self.procs:
            while proc.popen.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)

    def cleanup(self) -> None:
        for proc in self.procs:
            if proc.popen.poll() is None:
                os.killpg(proc.popen.pid, signal.SIGKILL)
                proc.popen.wait()
