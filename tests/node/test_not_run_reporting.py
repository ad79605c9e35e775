"""Where the node tier cannot run it says why, never skips silently: as a user that is not
root (euid 1000 in a user namespace of its own, so the files stay readable), a run of a
node test file ends with the reason in its summary and on each skipped test, and under
``CI=true`` the same run fails with that reason instead."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.node.test_conditions import CASES

REPO = Path(__file__).resolve().parents[2]
REASON = "not root: a kubelet, containerd and CNI need root"
TARGET = "tests/node/test_conditions.py"


def run_not_root(ci: bool) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "pytest", TARGET, "-p", "no:cacheprovider", "-q", "-ra"]
    if os.geteuid() == 0:
        if shutil.which("unshare") is None:
            pytest.fail("unshare (util-linux) is needed to run as another user", pytrace=False)
        argv = ["unshare", "--user", "--map-user=1000", "--map-group=1000", "--", *argv]
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci:
        env["CI"] = "true"
    return subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_the_node_tier_says_why_it_does_not_run_and_fails_under_ci() -> None:
    local = run_not_root(ci=False)
    assert local.returncode == 0, local.stdout[-2000:] + local.stderr[-2000:]
    assert f"node tier NOT RUN on this machine: {REASON}" in local.stdout
    assert f"SKIPPED [{len(CASES)}] {TARGET}" in local.stdout  # one per case
    assert f"node tier NOT RUN here: {REASON}" in local.stdout

    ci = run_not_root(ci=True)
    assert ci.returncode != 0, "under CI the node tier must fail, not skip"
    assert f"Failed: node tier cannot run on this machine: {REASON}" in ci.stdout
    assert "skipped" not in ci.stdout.splitlines()[-1]
