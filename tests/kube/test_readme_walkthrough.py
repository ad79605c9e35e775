"""The README's Kubernetes walkthrough, run verbatim against the real control plane.

The commands are parsed out of README.md (the ``console`` block after the
``<!-- walkthrough: kubernetes -->`` mark), not copied here, and run one by one with
``bash -c`` from the repository root, as a user would type them: helm installs the chart
and the test node runs the operator's pod and the worker pods as local processes, the CLI
talks to a real PostgreSQL database. What the environment supplies is what a user's
machine would: ``KUBECONFIG`` (its current namespace a fresh one), ``helm``/``kubectl``/
``slotfleet`` on ``PATH``, the database's DSN in place of the README's placeholder, and a
cluster without the Queue CRD yet (deleted first, as on a new cluster). The example task
image is stood for by ``PYTHONPATH`` (the test node ignores images): building it is
``examples/Dockerfile``'s test, not this one.

Between commands the test waits for what the README says happens (the operator scaled
0 -> N; the job was cancelled; ``kubectl scale`` was put back), then checks it.
"""

# The kubernetes client's stubs mark every model field Optional.
# mypy: disable-error-code="union-attr"

from __future__ import annotations

import asyncio
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from slotfleet.models import JobId, JobState
from slotfleet.store import open_store

from .fixtures import KubeAdmin
from .helm import REPO_ROOT
from .operator_helpers import condition, get_queue, kubectl, wait_for
from .testnode import TestNode

pytestmark = [pytest.mark.kube, pytest.mark.slow]

README = REPO_ROOT / "README.md"
MARK = "<!-- walkthrough: kubernetes -->"
#: The README's stand-in for the user's database (it must say exactly this).
PLACEHOLDER = "postgresql://USER:PASSWORD@HOST:5432/DB"
CRD = "queues.slotfleet.dev"


def walkthrough() -> list[str]:
    """The walkthrough's commands, in order, as README.md has them."""
    text = README.read_text(encoding="utf-8")
    assert MARK in text, f"README.md lost its {MARK!r} mark"
    block = text.split(MARK, 1)[1].split("```console\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip()]


def test_the_walkthrough_parses_and_exports_the_dsn_once() -> None:
    """The DSN is exported once for every command (not set inline on one of them, which
    left `slotfleet cancel` on a local SQLite file)."""
    commands = walkthrough()
    exports = [c for c in commands if c.startswith("export SLOTFLEET_DSN=")]
    assert exports == [commands[0]]
    assert PLACEHOLDER in commands[0]
    assert not [c for c in commands[1:] if "SLOTFLEET_DSN=" in c]


class Shell:
    """Runs README lines with ``bash -c`` in one environment that ``export`` lines
    change, from the repository root."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.transcript: list[str] = []

    def run(self, line: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        script = f'{line}\nstatus=$?\nenv -0 > "$SLOTFLEET_TEST_ENV_OUT"\nexit $status'
        out = Path(self.env["SLOTFLEET_TEST_ENV_OUT"])
        proc = subprocess.run(
            ["bash", "-c", script],
            cwd=REPO_ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        self.transcript.append(f"$ {line}\n{proc.stdout}{proc.stderr}")
        assert proc.returncode == 0, f"$ {line}\nexit {proc.returncode}\n{proc.stdout}{proc.stderr}"
        self.env = dict(item.split("=", 1) for item in out.read_text().split("\0") if "=" in item)
        return proc

    def watch(self, line: str, until: Callable[[str], bool], timeout: float) -> str:
        """Run a command that never ends (``kubectl get -w``) until its output satisfies
        ``until``, then press Ctrl-C (SIGINT to its process group)."""
        proc = subprocess.Popen(
            ["bash", "-c", line],
            cwd=REPO_ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        seen: list[str] = []
        done = threading.Event()

        def read() -> None:
            assert proc.stdout is not None
            for text in proc.stdout:
                seen.append(text)
                if until("".join(seen)):
                    done.set()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            done.wait(timeout)
        finally:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
            reader.join(5)
            if proc.stdout is not None:
                proc.stdout.close()
        output = "".join(seen)
        self.transcript.append(f"$ {line}\n{output}^C")
        assert done.is_set(), f"$ {line}: never saw what the README promises:\n{output}"
        return output


@pytest.fixture
def node_runs_the_example_image(test_node: TestNode) -> Iterator[TestNode]:
    """Pods start `slotfleet` from this venv and import examples.tasks from the
    repository, as the example task image would let them."""
    saved = dict(test_node.base_env)
    test_node.base_env["PATH"] = f"{Path(sys.executable).parent}:{saved.get('PATH', '')}"
    test_node.base_env["PYTHONPATH"] = str(REPO_ROOT)
    yield test_node
    test_node.base_env.clear()
    test_node.base_env.update(saved)


def remove_crd(admin: KubeAdmin) -> None:
    """A cluster that has never seen slotfleet: the chart installs the CRD itself."""
    kubectl(admin, "delete", "crd", CRD, "--ignore-not-found", "--wait=true")


def user_kubeconfig(admin: KubeAdmin, namespace: str, path: Path) -> Path:
    path.write_text(admin.kubeconfig.read_text())
    kubectl(admin, "config", "set-context", "--current", f"--namespace={namespace}",
            "--kubeconfig", str(path))  # fmt: skip
    return path


def job_state(dsn: str, job_id: int) -> JobState | None:
    async def read() -> JobState | None:
        store = open_store(dsn)
        await store.open()
        try:
            job = await store.get(JobId(job_id))
            return None if job is None else job.state
        finally:
            await store.close()

    return asyncio.run(read())


def events(admin: KubeAdmin, namespace: str, name: str) -> list[Any]:
    core = client.CoreV1Api(admin.api_client)
    found = core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}")
    return list(found.items)


def rows(output: str, name: str) -> list[list[str]]:
    return [line.split() for line in output.splitlines() if line.split()[:1] == [name]]


def test_the_readme_kubernetes_walkthrough_runs_verbatim(
    kube_admin: KubeAdmin,
    namespace: str,
    node_runs_the_example_image: TestNode,
    postgres_dsn: str,
    kube_bin_dir: Path,
    tmp_path: Path,
) -> None:
    apps = client.AppsV1Api(kube_admin.api_client)
    commands = walkthrough()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBE", "HELM_"))}
    env.pop("SLOTFLEET_DSN", None)
    env.update(
        KUBECONFIG=str(user_kubeconfig(kube_admin, namespace, tmp_path / "kubeconfig")),
        PATH=os.pathsep.join([str(kube_bin_dir), str(Path(sys.executable).parent), env["PATH"]]),
        HELM_CACHE_HOME=str(tmp_path / "helm-cache"),
        HELM_CONFIG_HOME=str(tmp_path / "helm-config"),
        HELM_DATA_HOME=str(tmp_path / "helm-data"),
        SLOTFLEET_TEST_ENV_OUT=str(tmp_path / "env.out"),
    )
    shell = Shell(env)
    remove_crd(kube_admin)
    checked: list[str] = []
    try:
        for line in commands:
            command = line.split("  #")[0].strip()
            if command.startswith("export SLOTFLEET_DSN="):
                shell.run(line.replace(PLACEHOLDER, postgres_dsn))
                assert shell.env["SLOTFLEET_DSN"] == postgres_dsn
                checked.append("export")
            elif command.startswith("kubectl get queues -w"):
                # watched until it shows the scale-up and the fleet runs jobs, as a
                # reader watches before asking for running jobs
                def scaled_and_busy(text: str) -> bool:
                    shown = any(int(r[1]) > 0 for r in rows(text, "emails"))
                    status = get_queue(kube_admin, namespace, "emails").get("status") or {}
                    return shown and int((status.get("slots") or {}).get("busy") or 0) > 0

                # the first row may already show the scale-up: a backlog wakes the
                # operator, which can size the fleet before kubectl opens its watch;
                # that the fleet started from zero is checked by the `get` before it
                shell.watch(line, scaled_and_busy, timeout=90)
                checked.append("watch")
            else:
                proc = shell.run(line)
                checked.append(after(command, proc, kube_admin, namespace, postgres_dsn, apps))
        assert checked == [
            "export",
            "helm install",
            "secret",
            "apply",
            "get",
            "enqueue",
            "watch",
            "jobs",
            "cancel",
            "scale",
            "describe",
            "delete",
            "helm uninstall",
        ]
    except BaseException:
        print("\n".join(shell.transcript))
        raise
    finally:
        kubectl(kube_admin, "delete", "queue", "emails", "-n", namespace,
                "--ignore-not-found", check=False)  # fmt: skip
        subprocess.run(
            [str(kube_bin_dir / "helm"), "uninstall", "slotfleet", "--namespace", "slotfleet"],
            env=shell.env,
            capture_output=True,
            timeout=120,
            check=False,
        )
        kubectl(kube_admin, "delete", "namespace", "slotfleet", "--ignore-not-found",
                "--wait=false", check=False)  # fmt: skip


def after(
    command: str,
    proc: subprocess.CompletedProcess[str],
    admin: KubeAdmin,
    namespace: str,
    dsn: str,
    apps: client.AppsV1Api,
) -> str:
    """Wait for, and check, what the README says the command does; name the step."""
    words = shlex.split(command)
    if words[:2] == ["helm", "install"]:
        assert "STATUS: deployed" in proc.stdout
        return "helm install"
    if "create secret generic slotfleet-db" in command:
        return "secret"
    if words[:3] == ["kubectl", "apply", "-f"]:
        # a new Queue with minReplicas 0 and nothing queued starts no worker: its
        # Deployment is created at 0 replicas (generation 1: never another size)
        deployment = wait_for(
            "the worker Deployment",
            lambda: apps.read_namespaced_deployment("emails-worker", namespace),
            timeout=60,
        )
        assert (deployment.spec.replicas, deployment.metadata.generation) == (0, 1)
        wait_for(
            "spec.replicas filled in",
            lambda: get_queue(admin, namespace, "emails")["spec"].get("replicas") == 0,
        )
        # the first status can predate the operator's watch event for the Deployment it
        # just created ("Configuring: not created yet"); that event, or the next tick,
        # settles it
        seen: list[dict[str, Any]] = []

        def settled() -> bool:
            ready = condition(get_queue(admin, namespace, "emails"), "Ready")
            seen.append(ready or {})
            return ready is not None and ready["reason"] in ("ScaledToZero", "WorkersReady")

        try:
            wait_for("the Ready condition to settle", settled, timeout=20)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last Ready condition: {seen[-1:]}") from None
        return "apply"
    if words[:3] == ["kubectl", "get", "queues"]:
        header = proc.stdout.splitlines()[0].split()
        assert header[:2] == ["NAME", "REPLICAS"], proc.stdout
        assert "STATUS" in header, proc.stdout
        shown = rows(proc.stdout, "emails")
        assert shown, proc.stdout
        assert shown[0][1] == "0", proc.stdout  # nothing queued yet: no worker
        return "get"
    if words[:2] == ["slotfleet", "enqueue"]:
        return "enqueue"
    if words[:2] == ["slotfleet", "jobs"]:
        assert re.search(r"^\s*\d+\s", proc.stdout, re.MULTILINE), proc.stdout
        return "jobs"
    if words[:2] == ["slotfleet", "cancel"]:
        job_id = int(words[2])
        assert f"{job_id}: cancel" in proc.stdout, proc.stdout
        wait_for(
            f"job {job_id} cancelled",
            lambda: job_state(dsn, job_id) is JobState.CANCELLED,
            timeout=60,
        )
        return "cancel"
    if words[:2] == ["kubectl", "scale"]:
        assert "scaled" in proc.stdout
        reverted = wait_for(
            "a ScaleReverted event",
            lambda: [e for e in events(admin, namespace, "emails") if e.reason == "ScaleReverted"],
            timeout=60,
        )
        assert reverted[0].type == "Warning"
        assert "autoscaling.mode is operator" in reverted[0].message
        assert get_queue(admin, namespace, "emails")["spec"]["replicas"] != 3
        return "scale"
    if words[:2] == ["kubectl", "describe"]:
        assert "ScaleReverted" in proc.stdout, proc.stdout
        return "describe"
    if words[:3] == ["kubectl", "delete", "queue"]:

        def gone() -> bool:
            try:
                apps.read_namespaced_deployment("emails-worker", namespace)
            except ApiException as exc:
                return bool(exc.status == 404)
            return False

        wait_for("the worker Deployment garbage-collected", gone, timeout=60)
        return "delete"
    if words[:2] == ["helm", "uninstall"]:
        return "helm uninstall"
    raise AssertionError(f"the walkthrough has a command this test does not know: {command}")
