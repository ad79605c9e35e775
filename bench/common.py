"""Shared benchmark plumbing: peak-RSS sampling, percentiles, machine facts, JSON
results and the markdown section writer for docs/benchmarks.md.

Nothing here knows about a particular queue library.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
import shlex
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
DOC = REPO / "docs" / "benchmarks.md"

#: Targets for a 2-core machine with PostgreSQL on loopback (issues 2 and 14), shared by
#: ``bench.core`` and ``bench.compare_chancy``: jobs/s for throughput (higher is better),
#: ms for pickup, MiB for RSS, s for CPU per 10k jobs and for spawn -> first start.
TARGETS = {
    "enqueue": 40_000.0,
    "enqueue_built": 100_000.0,
    "async": 15_000.0,
    "async2": 25_000.0,
    "threads": 5_000.0,
    "p50": 2.0,
    "p99": 5.0,
    "rss": 40.0,
    "cpu": 0.5,
    "start": 0.15,
}

DOC_HEADER = """# Benchmarks

Benchmarks are not tests: `bench/` measures and writes results here; no test asserts on
speed. Each section below is rewritten by the command named in it, between its markers.
"""


def proc_status_kib(pid: int, field: str) -> int | None:
    """A memory field of ``/proc/PID/status`` (``VmHWM``, ``VmRSS``) in KiB, or ``None``
    once the process is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return None


def vm_hwm_kib(pid: int) -> int | None:
    """Peak resident set size (VmHWM) of ``pid`` in KiB, or ``None`` once it is gone."""
    return proc_status_kib(pid, "VmHWM")


class PeakRss:
    """Samples a process's VmHWM every ``interval`` seconds until it exits."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self.pid = pid
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)
        self._thread.start()

    def _run(self, interval: float) -> None:
        while not self._stop.is_set():
            value = vm_hwm_kib(self.pid)
            if value is None:
                return
            self.peak_kib = max(self.peak_kib, value)
            self._stop.wait(interval)

    def sample(self) -> None:
        value = vm_hwm_kib(self.pid)
        if value is not None:
            self.peak_kib = max(self.peak_kib, value)

    def stop(self) -> float:
        """Stop sampling; the peak in MiB."""
        self.sample()
        self._stop.set()
        self._thread.join(timeout=2)
        return self.peak_kib / 1024


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> int:
    """SIGTERM ``proc`` (by its PID), wait, SIGKILL if it does not stop."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    return proc.returncode if proc.returncode is not None else -1


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100), nearest-rank on sorted values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def median_range(values: Sequence[float]) -> tuple[float, float, float]:
    """(median, min, max); NaNs ignored."""
    clean = [v for v in values if v == v]
    if not clean:
        nan = float("nan")
        return nan, nan, nan
    return statistics.median(clean), min(clean), max(clean)


def machine_facts(pg_version: str | None) -> dict[str, Any]:
    load1, load5, load15 = os.getloadavg()
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    rev = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "postgres": pg_version,
        "loadavg_start": [round(load1, 2), round(load5, 2), round(load15, 2)],
        "git": rev or "?",
    }


def warm_up() -> None:
    """Compile slotfleet's and bench's modules before anything is measured: the first
    worker process after a change would otherwise write the ``.pyc`` files, and its
    start-up and CPU figures would include that once."""
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(REPO / "slotfleet"), str(REPO / "bench")],
        check=True,
    )


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def command_line() -> str:
    """The command that is running, as a user would type it from the repository root."""
    exe = Path(sys.executable)
    with contextlib.suppress(ValueError):
        exe = exe.relative_to(REPO)
    module = Path(sys.argv[0]).resolve()
    with contextlib.suppress(ValueError):
        rel = module.relative_to(REPO).with_suffix("")
        return shlex.join([str(exe), "-m", ".".join(rel.parts), *sys.argv[1:]])
    return shlex.join([str(exe), *sys.argv])


def write_json(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS / f"{name}-{stamp}.json"
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    return path


def write_doc_section(key: str, body: str) -> None:
    """Replace the text between ``<!-- bench:KEY:start -->`` and ``...:end -->`` in
    docs/benchmarks.md (appending the section when the markers are missing)."""
    start, end = f"<!-- bench:{key}:start -->", f"<!-- bench:{key}:end -->"
    text = DOC.read_text() if DOC.exists() else DOC_HEADER
    block = f"{start}\n{body.rstrip()}\n{end}"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        _, tail = rest.split(end, 1)
        text = head + block + tail
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(text)


def cpu_per_10k(drain_cpu_s: float, idle_cpu_s: Sequence[float], jobs: int) -> float | None:
    """What ``jobs`` jobs cost a worker in CPU seconds per 10,000: a drain's CPU (spawn to
    exit) less the median CPU of an idle worker's whole life (start-up, idling, stop) on
    the same store. ``None`` without idle runs or jobs to divide by."""
    idle = median_range(idle_cpu_s)[0]
    if jobs <= 0 or idle != idle:
        return None
    return (drain_cpu_s - idle) / jobs * 10_000


def fmt(value: float | None, digits: int = 0) -> str:
    if value is None or value != value:
        return "-"
    return f"{value:,.{digits}f}"


class Deadline:
    """A scenario's time budget."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()

    def expired(self) -> bool:
        return time.monotonic() >= self.end
