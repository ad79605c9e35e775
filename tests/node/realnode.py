"""A real Kubernetes node on this machine: containerd + runc + CNI, kubelet, kube-proxy,
kube-scheduler and a cluster DNS, beside a control plane bound to the node's bridge.

What runs, each started so that its own PID is recorded and stopped by that PID:

* a Linux bridge :data:`BRIDGE` with the gateway :data:`GATEWAY` (made here first, so the
  API server can bind to it and the CNI bridge plugin adopts it);
* ``containerd`` (Debian's) with a config, state and socket of its own; its CRI
  plugin runs pods with runc, Debian's CNI plugins (``bridge`` + ``host-local``) on
  :data:`POD_CIDR`, and the pause image built from Kubernetes' source
  (``tools/image/build.sh``); the images are imported with ``ctr images import`` into a
  root kept between sessions (:func:`containerd_root`: one per set of image archives,
  so a warm session imports nothing; a session that did not end cleanly drops it);
* ``dnsmasq`` on the gateway as the cluster DNS: it answers for
  ``kubernetes.default.svc.cluster.local`` (kopf connects to that name) and says
  NXDOMAIN for the rest of ``cluster.local``;
* the kubelet, kube-proxy (iptables mode) and kube-scheduler from
  ``tools/k8s/build-node.sh`` (the same pinned Kubernetes as the control plane).

IP forwarding stays off: pods reach the host's own addresses (the API server through the
``kubernetes`` Service, PostgreSQL on the gateway) and each other on the bridge, and
nothing else; no packet from a pod is routed off the machine.

Host changes are recorded first and reverted at :meth:`RealNode.stop` by
``tests.node.host.HostLedger``. One real node runs per machine at a time: a file lock
(:data:`LOCK_FILE`) makes a second session wait for the first.

What this module is not: the configuration files (``tests.node.configs`` builds them as
data) or the tests; ``tests/node/conftest.py`` turns it into fixtures and reports why the
tier cannot run where it cannot.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from tests.kube.controlplane import ControlPlane, ManagedProcess, log_tails

from . import configs as cfg
from .configs import BRIDGE, CGROUP_ROOT, CNI_BIN_DIR, GATEWAY, NODE_NAME, POD_CIDR
from .host import HostLedger

REPO = Path(__file__).resolve().parents[2]
NODE_BUILD = REPO / "tools" / "k8s" / "build-node.sh"
IMAGE_BUILD = REPO / "tools" / "image" / "build.sh"

LOCK_FILE = Path("/run/lock/slotfleet-real-node.lock")
#: Where containerd's roots are kept between sessions (content and unpacked snapshots).
CONTAINERD_CACHE = (
    Path(os.environ.get("SLOTFLEET_IMAGE_CACHE", Path.home() / ".cache" / "slotfleet" / "image"))
    / "containerd"
)
#: Written into a root once every archive is imported into it.
IMPORTED = "imported"
#: Host paths the daemons create when absent, whatever their configuration says:
#: containerd's shim sockets and runc state, the kubelet's legacy log symlinks, libcni's
#: result cache.
HOST_PATHS = ("/run/containerd", "/var/log/containers", "/var/lib/cni")
DAEMONS = ("containerd", "runc", "ctr", "dnsmasq", "iptables", "ip6tables", "nft", "ip", "nfacct")


class NodeError(RuntimeError):
    """The real node could not be built, started or torn down."""


@dataclass(frozen=True)
class NodeImages:
    """Images built by ``tools/image/build.sh``: name and docker-archive of each."""

    names: dict[str, str]
    archives: dict[str, Path]

    @property
    def slotfleet(self) -> str:
        return self.names["slotfleet"]

    @property
    def examples(self) -> str:
        return self.names["examples"]

    @property
    def pause(self) -> str:
        return self.names["pause"]


def containerd_root(images: NodeImages, cache: Path = CONTAINERD_CACHE) -> Path:
    """containerd's root for these images: named after their archives (which are named by
    content hash), so a rebuilt image gets a fresh root and the images go in again."""
    names = sorted(f"{k}={v.name}" for k, v in images.archives.items())
    return cache / hashlib.sha256("\n".join(names).encode()).hexdigest()[:16]


def is_shim_under(argv: list[bytes], dirs: list[str]) -> bool:
    """Whether ``argv`` is a containerd shim serving a containerd whose socket lies under
    one of ``dirs`` (a shim names its containerd's socket after ``-address``)."""
    if not argv or not argv[0].endswith(b"containerd-shim-runc-v2") or b"-address" not in argv:
        return False
    at = argv.index(b"-address") + 1
    address = argv[at].decode(errors="replace") if at < len(argv) else ""
    return any(address.startswith(d.rstrip("/") + "/") for d in dirs)


def kill_shims(dirs: list[str]) -> list[int]:
    """SIGKILL the containerd shims of a containerd whose socket lies under ``dirs`` (a
    node's work directory: only this tier's shims); returns their PIDs."""
    killed = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if is_shim_under((entry / "cmdline").read_bytes().split(b"\0"), dirs):
                os.kill(int(entry.name), signal.SIGKILL)
                killed.append(int(entry.name))
    return killed


def why_not() -> str | None:
    """Why a real node cannot run on this machine, or ``None`` when it can."""
    if os.geteuid() != 0:
        return "not root: a kubelet, containerd and CNI need root"
    root = Path("/sys/fs/cgroup")
    hierarchies = {p.name for p in root.iterdir()} if root.is_dir() else set()
    if not {"cpu", "cpuset", "memory", "pids"} <= hierarchies:
        return (
            "no cgroup v1 cpu/cpuset/memory/pids hierarchies under /sys/fs/cgroup: the node is "
            "set up for cgroup v1 (hybrid), as this machine kind mounts it"
        )
    if not Path("/proc/self/ns/net").exists():
        return "no network namespaces (/proc/self/ns/net)"
    missing = [d for d in DAEMONS if shutil.which(d) is None]
    missing += [p for p in ("bridge", "host-local", "loopback") if not (CNI_BIN_DIR / p).exists()]
    if missing:
        return (
            f"missing {', '.join(missing)}: apt-get install containerd runc "
            "containernetworking-plugins iptables nftables dnsmasq-base iproute2 nfacct "
            "(scripts/test does)"
        )
    return None


def _run_build(script: Path, *args: str, log: Path) -> str:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        proc = subprocess.run(
            ["bash", str(script), *args], stdout=subprocess.PIPE, stderr=out, text=True
        )
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise NodeError(f"{script.relative_to(REPO)} failed; log {log}:\n{tail}")
    return proc.stdout


def build_node_binaries(log_dir: Path) -> Path:
    """kubelet, kube-scheduler, kube-proxy and pause (cached; built when missing)."""
    _run_build(NODE_BUILD, log=log_dir / "build-node.log")
    return Path(_run_build(NODE_BUILD, "--print-bin-dir", log=log_dir / "print.log").strip())


def build_images(log_dir: Path) -> NodeImages:
    """The slotfleet, examples and pause images (cached by content hash)."""
    out = log_dir / "images.json"
    _run_build(IMAGE_BUILD, "--json", str(out), log=log_dir / "build-images.log")
    data = json.loads(out.read_text())
    return NodeImages(
        names={k: v["name"] for k, v in data.items()},
        archives={k: Path(v["archive"]) for k, v in data.items()},
    )


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@dataclass
class RealNode:
    """The node's daemons and host changes. :meth:`prepare` (lock, snapshot, bridge)
    runs before the control plane starts; :meth:`start` after it."""

    work_dir: Path
    node_bin: Path
    images: NodeImages
    processes: dict[str, ManagedProcess] = field(default_factory=dict)
    ledger: HostLedger | None = None
    recovered: list[str] = field(default_factory=list)
    """What a killed earlier session had left behind and this one reverted."""
    _lock: IO[str] | None = None

    @property
    def containerd_socket(self) -> Path:
        return self.work_dir / "containerd" / "containerd.sock"

    @property
    def log_dir(self) -> Path:
        return self.work_dir / "logs"

    @property
    def containerd_root(self) -> Path:
        return containerd_root(self.images)

    # ------------------------------------------------------------------ host
    def prepare(self, lock_wait: float = 900.0) -> None:
        """Take the machine's real-node lock, revert a killed session's leftovers,
        snapshot the host and create the bridge with the gateway address."""
        LOCK_FILE.parent.mkdir(parents=True, exist_ok=True)
        self._lock = LOCK_FILE.open("a+")
        deadline = time.monotonic() + lock_wait
        while True:
            try:
                fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise NodeError(
                        f"another session's real node held {LOCK_FILE} for {lock_wait:.0f}s"
                    ) from None
                time.sleep(2)
        stale = HostLedger.load()
        if stale is not None:
            self.recovered = self._recover(stale)
            shutil.rmtree(CONTAINERD_CACHE, ignore_errors=True)  # may hold its containers
        keep = self.containerd_root
        for other in CONTAINERD_CACHE.glob("*"):
            if other != keep:
                shutil.rmtree(other, ignore_errors=True)  # the roots of older images
        self.ledger = HostLedger(
            watched=[str(self.work_dir), str(self.containerd_root)],
            cgroup_root=CGROUP_ROOT,
            bridge=BRIDGE,
            host_paths=list(HOST_PATHS),
        )
        self.ledger.snapshot()
        self.ledger.make_cgroup_root()
        prefix = POD_CIDR.split("/")[1]
        for argv in (
            ["ip", "link", "add", BRIDGE, "type", "bridge"],
            ["ip", "addr", "add", f"{GATEWAY}/{prefix}", "dev", BRIDGE],
            ["ip", "link", "set", BRIDGE, "up"],
        ):
            proc = subprocess.run(argv, capture_output=True, text=True)
            if proc.returncode != 0:
                raise NodeError(f"{' '.join(argv)}: {proc.stderr.strip()}")

    @staticmethod
    def _recover(stale: HostLedger) -> list[str]:
        """Stop a killed session's daemons (by their recorded PIDs, when the PID still
        runs the same program) and revert its host changes."""
        notes = []
        for name, (pid, program) in ((k, (int(v[0]), v[1])) for k, v in stale.pids.items()):
            with contextlib.suppress(OSError):
                argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
                if argv0 == program:
                    os.kill(pid, signal.SIGKILL)
                    notes.append(f"killed the earlier session's {name} (pid {pid})")
        for pid in stale.cgroup_pids():
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        shims = kill_shims(stale.watched)  # not in the cgroup root: containerd's own children
        if shims:
            notes.append(f"killed the earlier session's {len(shims)} containerd shims")
        time.sleep(1)
        problems = stale.revert()
        notes.append("reverted the earlier session's host changes")
        return notes + problems

    # ------------------------------------------------------------------ start
    def start(self, control_plane: ControlPlane, timeout: float = 120.0) -> None:
        """containerd (and the images), the DNS, kubelet, kube-proxy, kube-scheduler."""
        assert self.ledger is not None, "prepare() first"
        deadline = time.monotonic() + timeout
        self._start_containerd()
        self._wait(lambda: self.containerd_socket.exists(), "containerd's socket", deadline)
        marker = self.containerd_root / IMPORTED
        if not marker.exists():
            for archive in self.images.archives.values():
                self.ctr("images", "import", str(archive), timeout=300)
            marker.touch()
        self._start_dns()
        kubeconfig = str(control_plane.admin_kubeconfig)
        self._spawn(
            "kubelet",
            [
                str(self.node_bin / "kubelet"),
                f"--config={self._kubelet_config()}",
                f"--kubeconfig={kubeconfig}",
                f"--root-dir={self.work_dir / 'kubelet'}",
                f"--cert-dir={self.work_dir / 'kubelet' / 'pki'}",
                f"--hostname-override={NODE_NAME}",
                f"--node-ip={GATEWAY}",
                "--v=1",
            ],
        )
        self._spawn(
            "kube-proxy",
            [str(self.node_bin / "kube-proxy"), f"--config={self._proxy_config(kubeconfig)}"],
        )
        self._spawn(
            "kube-scheduler",
            [
                str(self.node_bin / "kube-scheduler"),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--leader-elect=false",
                f"--bind-address={GATEWAY}",
                "--secure-port=0",
                "--v=1",
            ],
        )

    def _spawn(self, name: str, argv: list[str]) -> None:
        proc = ManagedProcess(name, argv, self.log_dir / f"{name}.log")
        self.processes[name] = proc
        env = {k: v for k, v in os.environ.items() if not k.startswith("KUBE")}
        proc.start(env)
        assert self.ledger is not None
        assert proc.pid is not None
        self.ledger.record_pid(name, proc.pid, argv)

    def _wait(self, check: Callable[[], bool], what: str, deadline: float) -> None:
        while time.monotonic() < deadline:
            for name, proc in self.processes.items():
                if not proc.alive():
                    raise NodeError(f"{name} exited early:\n{proc.tail(40)}")
            if check():
                return
            time.sleep(0.2)
        raise NodeError(f"timed out waiting for {what}")

    def ctr(self, *args: str, timeout: float = 60) -> str:
        argv = ["ctr", "--address", str(self.containerd_socket), "--namespace", "k8s.io", *args]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise NodeError(f"{' '.join(argv)}: {proc.stderr.strip()}")
        return proc.stdout

    # ------------------------------------------------------------------ configs
    def _start_containerd(self) -> None:
        base = self.work_dir / "containerd"
        cni_conf = self.work_dir / "cni" / "net.d"
        conflist = cfg.cni_conflist(self.work_dir / "cni" / "ipam")
        _write(cni_conf / "10-slotfleet.conflist", json.dumps(conflist, indent=1))
        toml = cfg.containerd_toml(
            base, self.containerd_root, self.containerd_socket, self.images.pause, cni_conf
        )
        config = _write(base / "config.toml", toml)
        self._spawn("containerd", ["containerd", "--config", str(config)])

    def _start_dns(self) -> None:
        self._spawn("dnsmasq", cfg.dnsmasq_argv(shutil.which("dnsmasq") or "dnsmasq"))

    def _kubelet_config(self) -> Path:
        config = cfg.kubelet_config(self.containerd_socket, self.work_dir / "pod-logs")
        return _write(self.work_dir / "kubelet-config.json", json.dumps(config, indent=1))

    def _proxy_config(self, kubeconfig: str) -> Path:
        config = cfg.kube_proxy_config(kubeconfig)
        return _write(self.work_dir / "kube-proxy-config.json", json.dumps(config, indent=1))

    # ------------------------------------------------------------------ stop
    def stop(self) -> list[str]:
        """Stop every daemon by PID, remove what the runtime left, revert the host.
        Returns what could not be undone (empty when the host is as it was)."""
        problems: list[str] = []
        for name in ("kube-scheduler", "kube-proxy", "kubelet"):
            if name in self.processes:
                self.processes[name].stop(timeout=20)
        emptied = False  # whether containerd removed every container it had
        if "containerd" in self.processes and self.processes["containerd"].alive():
            left = self._remove_containers()
            problems += left
            emptied = not left
        for name in ("containerd", "dnsmasq"):
            if name in self.processes:
                self.processes[name].stop(timeout=20)
        kill_shims([str(self.work_dir)])  # containerd's shims outlive it by design
        if (self.node_bin / "kube-proxy").exists():
            subprocess.run(
                [str(self.node_bin / "kube-proxy"), "--cleanup"], capture_output=True, timeout=60
            )
        if self.ledger is not None:
            for pid in self.ledger.cgroup_pids():  # containers nothing else stopped
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            problems += self.ledger.revert()
        if not emptied:  # containers may still be recorded in the root: start afresh next time
            shutil.rmtree(self.containerd_root, ignore_errors=True)
        if self._lock is not None:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None
        return problems

    def _remove_containers(self) -> list[str]:
        """Containers the kubelet did not remove: kill and delete them through containerd."""
        problems = []
        try:
            ids = self.ctr("containers", "list", "--quiet").split()
            for cid in ids:
                with contextlib.suppress(NodeError):
                    self.ctr("tasks", "kill", "--signal", "SIGKILL", cid)
            for cid in ids:
                with contextlib.suppress(NodeError):
                    self.ctr("tasks", "delete", "--force", cid)
                with contextlib.suppress(NodeError):
                    self.ctr("containers", "delete", cid)
        except NodeError as exc:
            problems.append(str(exc))
        return problems

    def log_tails(self, lines: int = 40) -> str:
        return log_tails(self.processes, lines)
