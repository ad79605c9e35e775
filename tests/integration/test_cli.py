"""The client commands end to end on a SQLite file, in-process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from slotfleet.cli.main import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_enqueue_list_show_cancel_queues(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dsn = f"sqlite:///{tmp_path / 'cli.db'}"
    code, out, _ = run(
        capsys,
        "enqueue",
        "--dsn",
        dsn,
        "tests.tasks:add",
        "a=1",
        "b=2",
        "--queue",
        "math",
        "--count",
        "3",
        "--priority",
        "5",
    )
    assert code == 0
    ids = out.split()
    assert len(ids) == 3

    code, out, _ = run(capsys, "jobs", "--dsn", dsn, "--queue", "math", "--json")
    listed = json.loads(out)
    assert code == 0
    assert sorted(j["id"] for j in listed) == sorted(int(i) for i in ids)
    assert {j["priority"] for j in listed} == {5}
    assert listed[0]["kwargs"] == {"a": 1, "b": 2}

    code, out, _ = run(capsys, "jobs", "--dsn", dsn, ids[0])
    assert json.loads(out)["state"] == "pending"

    code, out, err = run(capsys, "cancel", "--dsn", dsn, ids[0], "999")
    assert code == 1
    assert f"{ids[0]}: cancelled" in out
    assert err.strip() == "error: no job has id 999"

    code, out, _ = run(capsys, "queues", "--dsn", dsn, "--json")
    [stats] = json.loads(out)
    assert (stats["queue"], stats["ready"], stats["cancelled"]) == ("math", 2, 1)


def test_purge_deletes_finished_jobs_older_than_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dsn = f"sqlite:///{tmp_path / 'cli.db'}"
    code, out, _ = run(
        capsys, "enqueue", "--dsn", dsn, "tests.tasks:add", "a=1", "b=2", "--count", "4"
    )
    ids = out.split()
    run(capsys, "cancel", "--dsn", dsn, ids[0], ids[1])
    code, out, _ = run(capsys, "purge", "--dsn", dsn, "--older-than", "1h")
    assert (code, out.strip()) == (0, "deleted 0 finished job(s) older than 1:00:00")
    code, out, _ = run(capsys, "purge", "--dsn", dsn, "--older-than", "0", "--queue", "other")
    assert out.startswith("deleted 0 finished job(s) from queue other")
    code, out, _ = run(capsys, "purge", "--dsn", dsn, "--older-than", "0s")
    assert (code, out.split()[:2]) == (0, ["deleted", "2"])
    code, out, _ = run(capsys, "jobs", "--dsn", dsn, "--json")
    assert sorted(j["id"] for j in json.loads(out)) == sorted(int(i) for i in ids[2:])


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["enqueue", "not a path"], "import path"),
        (["enqueue", "a.b:c", "--kwargs", "[1]"], "JSON object"),
        (["enqueue", "a.b:c", "--max-attempts", "0"], "max_attempts"),
        (["jobs", "--dsn", "mysql://x"], "unsupported DSN scheme"),
    ],
)
def test_bad_input_is_one_line(
    argv: list[str], needle: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if "--dsn" not in argv:
        argv = [*argv, "--dsn", f"sqlite:///{tmp_path / 'x.db'}"]
    code, _, err = run(capsys, *argv)
    assert code == 1
    assert needle in err
    assert err.count("\n") == 1


def test_pause_and_resume_a_queue(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``slotfleet pause`` / ``resume`` write the store's pause; ``queues`` shows it."""
    dsn = f"sqlite:///{tmp_path / 'cli.db'}"
    code, out, _ = run(capsys, "pause", "emails", "--dsn", dsn)
    assert (code, out.strip()) == (0, "queue emails paused until 'slotfleet resume emails'")
    code, out, _ = run(capsys, "queues", "--dsn", dsn)
    assert out.splitlines()[0].split()[-1] == "PAUSED"
    assert out.splitlines()[1].split()[-1] == "yes"

    code, out, _ = run(capsys, "pause", "emails", "--until", "2999-01-01T10:00+01:00", "--dsn", dsn)
    assert (code, out.strip()) == (0, "queue emails paused until 2999-01-01T09:00:00Z")
    code, out, _ = run(capsys, "queues", "emails", "--json", "--dsn", dsn)
    [stats] = json.loads(out)
    assert (stats["paused"], stats["resume_at"]) == (True, "2999-01-01T09:00:00Z")

    code, out, _ = run(capsys, "pause", "emails", "--until", "90m", "--dsn", dsn)
    assert code == 0
    assert out.startswith("queue emails paused until ")

    code, out, _ = run(capsys, "pause", "emails", "--until", "2000-01-01T00:00Z", "--dsn", dsn)
    assert out.strip() == (
        "queue emails: 2000-01-01T00:00:00Z has already passed, so the queue is not paused"
    )

    run(capsys, "pause", "emails", "--dsn", dsn)
    code, out, _ = run(capsys, "resume", "emails", "--dsn", dsn)
    assert (code, out.strip()) == (0, "queue emails resumed")
    code, out, _ = run(capsys, "resume", "emails", "--dsn", dsn)
    assert (code, out.strip()) == (0, "queue emails was not paused in the store; nothing to do")
    code, out, _ = run(capsys, "queues", "emails", "--dsn", dsn)
    assert out.splitlines()[1].split()[-1] == "-"


def test_worker_runs_only_job_functions_unless_told_functions_any(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``slotfleet worker`` refuses an undecorated function by default, with the error
    in the job, and runs it with ``--functions any``."""
    dsn = f"sqlite:///{tmp_path / 'policy.db'}"

    def burst(*extra: str) -> None:
        proc = subprocess.run(
            [sys.executable, "-m", "slotfleet.cli.main", "worker", "--dsn", dsn, "--burst",
             "--metrics-port", "0", "--queue", "q", *extra],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr

    def enqueue() -> str:
        code, out, _ = run(
            capsys, "enqueue", "--dsn", dsn, "tests.tasks:plain_async_add", "a=1", "b=2",
            "--queue", "q",
        )  # fmt: skip
        assert code == 0
        return out.strip()

    refused = enqueue()
    burst()
    done = json.loads(run(capsys, "jobs", "--dsn", dsn, refused)[1])
    assert done["state"] == "failed"
    assert done["errors"][0]["error"].startswith(
        "FunctionNotAllowedError: 'tests.tasks:plain_async_add' is not registered with @job"
    )
    allowed = enqueue()
    burst("--functions", "any")
    done = json.loads(run(capsys, "jobs", "--dsn", dsn, allowed)[1])
    assert (done["state"], done["result"]) == ("succeeded", 3)


def test_the_worker_command_imports_a_projects_modules_from_where_it_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``slotfleet worker --import myapp_tasks`` from the project's root, through the
    console script as a user types it (not ``python -m``, which puts the directory on the
    path by itself). Regression: only the local fleet's workers (started with ``-m``)
    found the project's modules; the command said ``No module named ...``."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "myapp_tasks.py").write_text(
        "from slotfleet import job\n\n\n@job\n"
        "async def shout(text: str) -> str:\n    return text.upper()\n"
    )
    dsn = f"sqlite:///{tmp_path / 'here.db'}"
    code, out, _ = run(capsys, "enqueue", "--dsn", dsn, "myapp_tasks:shout", "text=hi")
    assert code == 0, out
    script = Path(sys.executable).with_name("slotfleet")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [str(script), "worker", "--dsn", dsn, "--burst", "--metrics-port", "0",
         "--import", "myapp_tasks"],
        cwd=project, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    done = json.loads(run(capsys, "jobs", "--dsn", dsn, out.strip())[1])
    assert (done["state"], done["result"]) == ("succeeded", "HI")
