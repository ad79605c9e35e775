"""Bad command lines: each ends with exit code 1 (a failure) or 2 (bad usage) and exactly
one line on stderr, never a traceback. Run in-process through ``main([...])`` for
speed, and a few as real subprocesses (what a shell user sees). Non-UTF-8 arguments
are only tried as subprocesses: in-process, pytest's captured stderr is strict UTF-8,
while a real process's stderr escapes the surrogates Python decodes them to.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from slotfleet.cli.main import main

REPO = Path(__file__).resolve().parents[2]
UNREACHABLE = "postgresql://127.0.0.1:1/x"

#: ``{db}`` is replaced by a fresh SQLite DSN.
BAD_COMMANDS: list[list[str]] = [
    ["--no-such-flag"],
    ["frobnicate"],
    ["worker", "--queue", "q:fibers"],
    ["worker", "--queue", "Not A Name"],
    ["worker", "--queue", "q:threads:0"],
    ["worker", "--queue", "q:threads:lots"],
    ["worker", "--queue", ""],
    ["worker", "--lease-seconds", "abc"],
    ["worker", "--lease-seconds", "0"],
    ["worker", "--drain-timeout", "-1"],
    ["worker", "--rate-limit", "0/1"],
    ["worker", "--rate-limit", "ten"],
    ["worker", "--max-slots", "0"],
    ["worker", "--dsn", "mysql://x", "--burst"],
    ["worker", "--dsn", "{db}", "--burst", "--import", "no_such_module_anywhere"],
    ["worker", "--dsn", "{db}", "--burst", "--import", "tests.broken_tasks"],
    ["worker", "--dsn", "{db}", "--queue", "a", "--queue", "a", "--burst"],
    ["enqueue", "tests.tasks:add", "--dsn", "{db}", "--kwargs", "{not json"],
    ["enqueue", "tests.tasks:add", "--dsn", "{db}", "--kwargs", "[1, 2]"],
    ["enqueue", "tests.tasks:add", "--dsn", "{db}", "--kwargs", '{"x": NaN}'],
    ["enqueue", "tests.tasks:add", "--dsn", "{db}", "=1"],
    ["enqueue", "tests.tasks:add", "--dsn", "{db}", "not-an-identifier=1"],
    ["enqueue", "not a path!", "--dsn", "{db}"],
    ["enqueue", "tests.tasks:add", "--dsn", "{db}", "--priority", "1e9"],
    ["enqueue", "tests.tasks:add", "--dsn", "{db}", "--priority", "99999"],
    ["enqueue", "tests.tasks:add", "--dsn", "{db}", "--max-attempts", "0"],
    ["enqueue", "tests.tasks:add", "--dsn", "{db}", "--timeout", "-1"],
    ["enqueue", "tests.tasks:add", "--dsn", "{db}", "--queue", "Not Valid"],
    ["enqueue", "tests.tasks:add", "--dsn", "{db}", "--count", "-1"],
    ["enqueue", "tests.tasks:add", "--dsn", "mysql://x"],
    ["enqueue", "tests.tasks:add", "--dsn", UNREACHABLE],
    ["jobs", "--dsn", "mysql://x"],
    ["jobs", "--dsn", "no-scheme-at-all"],
    ["jobs", "--dsn", UNREACHABLE],
    ["jobs", "--dsn", "postgresql://127.0.0.1:notaport/x"],
    ["jobs", "--dsn", "sqlite:////nonexistent-dir/jobs.db"],
    ["jobs", "424242", "--dsn", "{db}"],
    ["jobs", "abc", "--dsn", "{db}"],
    ["jobs", "--state", "done", "--dsn", "{db}"],
    ["cancel", "424242", "--dsn", "{db}"],
    ["cancel", "0", "--dsn", "{db}"],
    # ids past a signed 64-bit integer printed a raw OverflowError on SQLite (issue 9)
    ["jobs", "9223372036854775808", "--dsn", "{db}"],
    ["cancel", "9223372036854775808", "--dsn", "{db}"],
    ["cancel", str(10**30), "--dsn", "{db}"],
    ["cancel", "--dsn", "{db}"],
    ["cancel", "1", "--dsn", UNREACHABLE],
    ["queues", "--dsn", "mysql://x"],
    ["purge", "--dsn", "{db}"],
    ["purge", "--older-than", "soon", "--dsn", "{db}"],
    ["purge", "--older-than", "-5m", "--dsn", "{db}"],
    ["purge", "--older-than", "nan", "--dsn", "{db}"],
    ["purge", "--older-than", "1d", "--dsn", UNREACHABLE],
    ["pause", "--dsn", "{db}"],
    ["pause", "Not A Queue", "--dsn", "{db}"],
    ["pause", "q", "--until", "tomorrow", "--dsn", "{db}"],
    ["pause", "q", "--until", "2030-01-01T09:00", "--dsn", "{db}"],  # no time zone
    ["pause", "q", "--until", "10000-01-01T00:00Z", "--dsn", "{db}"],
    ["pause", "q", "--until", "0001-01-01T00:00+05:00", "--dsn", "{db}"],  # before 0001-01-02 UTC
    ["pause", "q", "--until", "nan", "--dsn", "{db}"],
    ["pause", "q", "--until", "1e12", "--dsn", "{db}"],
    ["pause", "q", "--until", "", "--dsn", "{db}"],
    ["pause", "q", "--dsn", UNREACHABLE],
    ["resume", "--dsn", "{db}"],
    ["resume", "q..", "--dsn", "{db}"],
    ["resume", "q", "--dsn", "mysql://x"],
]


def check_one_line(code: object, err: str, argv: list[str]) -> None:
    assert code in (1, 2), f"{argv}: exit code {code!r}, stderr {err!r}"
    assert "Traceback" not in err, f"{argv}: a traceback:\n{err}"
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"{argv}: {len(lines)} lines on stderr:\n{err}"
    assert "error" in lines[0].lower(), f"{argv}: {lines[0]!r}"


def fill(argv: list[str], tmp_path: Path) -> list[str]:
    db = f"sqlite:///{tmp_path / 'jobs.db'}"
    return [a.replace("{db}", db) for a in argv]


@pytest.mark.parametrize("argv", BAD_COMMANDS, ids=lambda a: " ".join(a)[:60])
def test_bad_command_line_in_process(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = fill(argv, tmp_path)
    try:
        code: object = main(argv)
    except SystemExit as exc:
        code = exc.code
    _out, err = capsys.readouterr()
    check_one_line(code, err, argv)


SUBPROCESS_COMMANDS: list[list[str | bytes]] = [
    ["--no-such-flag"],
    ["worker", "--queue", "q:fibers"],
    ["worker", "--dsn", "{db}", "--burst", "--import", "tests.broken_tasks"],
    ["worker", "--dsn", "{db}", "--burst", "--metrics-port", "70000", "--log-level", "ERROR"],
    ["enqueue", "tests.tasks:add", "--dsn", "{db}", "--kwargs", "{not json"],
    ["enqueue", "tests.tasks:add", "--dsn", "{db}", b"a=\xff\xfe"],
    ["enqueue", b"\xff\xfe:x", "--dsn", "{db}"],
    ["jobs", "--dsn", "mysql://x"],
    ["jobs", "--dsn", UNREACHABLE],
    ["jobs", "424242", "--dsn", "{db}"],
]


@pytest.mark.parametrize("argv", SUBPROCESS_COMMANDS, ids=lambda a: repr(a)[:60])
def test_bad_command_line_as_a_subprocess(argv: list[str | bytes], tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'jobs.db'}"
    args = [a.replace("{db}", db) if isinstance(a, str) else a for a in argv]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("SLOTFLEET_DSN", None)
    proc = subprocess.run(
        [sys.executable, "-m", "slotfleet.cli.main", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        timeout=60,
    )
    err = proc.stderr.decode("utf-8", errors="replace")
    check_one_line(proc.returncode, err, [repr(a) for a in argv])
    assert not (tmp_path / "slotfleet.db").exists(), "a bad command created the default store"
