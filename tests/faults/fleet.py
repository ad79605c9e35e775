"""Real ``slotfleet worker`` processes for the fault suite, and the faults done to them.

Each worker is ``python -m slotfleet.cli.main worker`` in its own process group (its
process-executor children share it), with its own log file, a worker id
(``--worker-id`` and ``$SLOTFLEET_WORKER_ID``, which the job bodies record) and the
ledger path in ``$SLOTFLEET_LEDGER``. Faults are recorded in the run's
:class:`~tests.faults.faultlog.FaultLog` with their wall-clock times:

- :meth:`Fleet.sigkill` kills the worker process only (``os.kill``), the way the OOM
  killer picks one process: its children are left to show whether they die with it;
- :meth:`Fleet.restart` is a SIGKILL followed by a new process under the same id (a
  container restarted in its pod keeps its name);
- :meth:`Fleet.terminate` asks the worker to drain (SIGTERM);
- :meth:`Fleet.pause` stops the whole process group and :meth:`Fleet.resume`
  continues it (a frozen container or VM: the zombie worker).

:meth:`Fleet.cleanup` SIGKILLs every process group it ever started, dead leader or not,
so orphaned children never outlive the test.

What this is not: a process supervisor for production (``slotfleet.fleet`` is that).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.faults.faultlog import Fault, FaultKind, FaultLog

REPO = Path(__file__).resolve().parents[2]


@dataclass
class WorkerProc:
    """One worker process (one incarnation of a worker id) and what was done to it."""

    worker_id: str
    popen: subprocess.Popen[bytes]
    log: Path
    killed: bool = False
    stopped: bool = False
    terminated: bool = False

    @property
    def pid(self) -> int:
        return self.popen.pid

    def tail(self, chars: int = 3000) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return text[-chars:]


class Fleet:
    """Starts workers on one store and injects process faults into them."""

    def __init__(
        self,
        dsn: Callable[[str], str],
        logs: Path,
        worker_args: list[str],
        ledger: Path,
        faults: FaultLog,
    ) -> None:
        self.dsn = dsn
        """The DSN a worker id connects with (a proxy may want to tell workers apart)."""
        self.logs = logs
        self.worker_args = worker_args
        self.ledger = ledger
        self.faults = faults
        self.procs: list[WorkerProc] = []
        self._named = 0

    def start(self, worker_id: str | None = None, args: list[str] | None = None) -> WorkerProc:
        """Start a worker; with ``worker_id`` of an earlier one, a restart of it; with
        ``args``, serving those instead of the fleet's worker arguments."""
        if worker_id is None:
            worker_id = f"w{self._named:02d}"
            self._named += 1
        log = self.logs / f"{worker_id}-{len(self.procs)}.log"
        dsn = self.dsn(worker_id)
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "SLOTFLEET_DSN": dsn,
            "SLOTFLEET_WORKER_ID": worker_id,
            "SLOTFLEET_LEDGER": str(self.ledger),
        }
        with log.open("wb") as out:
            popen = subprocess.Popen(
                [
                    sys.executable, "-m", "slotfleet.cli.main", "worker",
                    "--dsn", dsn,
                    "--worker-id", worker_id,
                    "--metrics-port", "0",
                    "--import", "tests.fault_tasks",
                    *(self.worker_args if args is None else args),
                ],
                cwd=REPO,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        proc = WorkerProc(worker_id, popen, log)
        self.procs.append(proc)
        return proc

    @property
    def pids(self) -> dict[int, str]:
        """Every worker process started so far: pid -> worker id."""
        return {p.pid: p.worker_id for p in self.procs}

    def live(self) -> list[WorkerProc]:
        """Running workers the test has not faulted for good."""
        return [p for p in self.procs if not (p.killed or p.terminated) and p.popen.poll() is None]

    def crashed(self) -> list[WorkerProc]:
        """Workers that exited although the test never killed or stopped them."""
        return [
            p for p in self.procs if not (p.killed or p.terminated) and p.popen.poll() is not None
        ]

    # ------------------------------------------------------------------ faults

    def sigkill(self, proc: WorkerProc) -> Fault:
        at = self._kill(proc)
        return self.faults.add(Fault(FaultKind.SIGKILL, at, at, proc.worker_id, proc.pid))

    def restart(self, proc: WorkerProc) -> WorkerProc:
        """SIGKILL ``proc`` and start a new process under the same worker id."""
        at = self._kill(proc)
        new = self.start(proc.worker_id)
        self.faults.add(
            Fault(
                FaultKind.RESTART,
                at,
                time.time(),
                proc.worker_id,
                proc.pid,
                note=f"restarted as pid {new.pid}",
            )
        )
        return new

    def _kill(self, proc: WorkerProc) -> float:
        proc.killed = True
        at = time.time()
        os.kill(proc.pid, signal.SIGKILL)
        proc.popen.wait()
        return at

    def terminate(self, proc: WorkerProc) -> Fault:
        """SIGTERM ``proc`` (a drain, as on a scale-down) and record it."""
        proc.terminated = True
        at = time.time()
        proc.popen.send_signal(signal.SIGTERM)
        return self.faults.add(Fault(FaultKind.SIGTERM, at, at, proc.worker_id, proc.pid))

    def pause(self, proc: WorkerProc) -> float:
        """SIGSTOP the worker's process group; return the time (see :meth:`resume`)."""
        at = time.time()
        os.killpg(proc.pid, signal.SIGSTOP)
        proc.stopped = True
        return at

    def resume(self, proc: WorkerProc, stopped_at: float) -> Fault:
        """SIGCONT the group and record the pause (its end is taken before the signal:
        the group may run, and write to the ledger, before ``killpg`` even returns)."""
        at = time.time()
        os.killpg(proc.pid, signal.SIGCONT)
        proc.stopped = False
        return self.faults.add(Fault(FaultKind.PAUSE, stopped_at, at, proc.worker_id, proc.pid))

    # ------------------------------------------------------------------ the end

    def stop_all(self, timeout: float) -> list[WorkerProc]:
        """SIGTERM every live worker and wait up to ``timeout`` seconds for them and for
        those drained earlier; return the drained workers that did not exit 0."""
        for proc in self.live():
            proc.terminated = True
            proc.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        drained = [p for p in self.procs if p.terminated]
        for proc in drained:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(max(0.0, deadline - time.monotonic()))
        return [p for p in drained if p.popen.returncode != 0]

    def cleanup(self) -> None:
        """SIGKILL every process group started (a dead leader's children included)."""
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGCONT)
                os.killpg(proc.pid, signal.SIGKILL)
            if proc.popen.poll() is None:
                proc.popen.wait()
