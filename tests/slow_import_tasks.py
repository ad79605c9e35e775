"""A task module that takes seconds to import, as one with heavy dependencies does
(``tests.slow_import_tasks:mark``), for the process executor's cancel-during-import test."""

from __future__ import annotations

import time
from pathlib import Path

from slotfleet import job

#: Seconds importing this module takes.
IMPORT_SECONDS = 2.0

time.sleep(IMPORT_SECONDS)


@job
def mark(path: str, seconds: float = 30.0) -> str:
    """Write ``path`` (the job started), then sleep."""
    Path(path).write_text("ran")
    time.sleep(seconds)
    return "done"
