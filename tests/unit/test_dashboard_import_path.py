"""The dashboard's stack stays out of the worker's way: starting the command line, a
worker or the operator loads none of starlette, uvicorn, jinja2 or rich (import-linter
checks the imports written down; this checks what a running process loads)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

SCRIPT = """
import sys
from slotfleet.cli.main import build_parser
import slotfleet.worker, slotfleet.worker.worker, slotfleet.operator.handlers
build_parser().parse_args(["worker", "--queue", "q"])
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"starlette", "uvicorn", "jinja2", "rich"})
print(",".join(heavy))
"""


def test_the_worker_and_the_command_line_load_no_web_or_terminal_stack() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""
