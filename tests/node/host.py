"""What a real node changes on the host, recorded before it starts and reverted after.

A kubelet, containerd, the CNI bridge plugin and kube-proxy change the machine they run
on: sysctls (the kubelet sets its kernel tunables, the bridge plugin ``ip_forward``),
iptables chains and rules (IPv4 and IPv6) and the nfacct counters kube-proxy's rules
name, mounts (container root filesystems, ``shm``,
network namespaces, projected volumes), cgroups, network links and a few host paths
(``/run/containerd``, ``/var/log/containers``, ``/var/lib/cni``). :class:`HostLedger`
snapshots each of those before the node starts and :meth:`HostLedger.revert` undoes
exactly the difference afterwards, so the machine is left as it was found; what it
could not undo it returns as text for the caller to report, and
:meth:`HostLedger.differences` checks the result against the snapshot.

The snapshot is also written to a file (:data:`LEDGER_FILE`), so the next session can
revert what a killed session left behind before it starts its own node.

What this module is not: it starts nothing and knows nothing about Kubernetes; the
processes are stopped by the node (``tests.node.realnode``) before the revert runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

#: Where the current snapshot lives while a node runs (``/run`` is cleared at boot).
LEDGER_FILE = Path("/run/slotfleet-real-node/ledger.json")

#: Sysctls a node may change: the kubelet's kernel tunables (it sets them unless
#: ``protectKernelDefaults``), the bridge plugin's forwarding, kube-proxy's localnet.
SYSCTLS = (
    "net/ipv4/ip_forward",
    "net/ipv6/conf/all/forwarding",
    "net/ipv4/conf/all/route_localnet",
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
)
IPTABLES = ("iptables", "ip6tables")


def run(argv: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


# ------------------------------------------------------------------------ sysctls


def read_sysctls() -> dict[str, str]:
    values = {}
    for name in SYSCTLS:
        with contextlib.suppress(OSError):
            values[name] = (Path("/proc/sys") / name).read_text().strip()
    return values


# ----------------------------------------------------------------------- iptables


@dataclass
class Table:
    """One table of ``iptables-save``: its chains and its rules (``-A ...`` lines)."""

    chains: list[str] = field(default_factory=list)
    rules: list[str] = field(default_factory=list)
    builtin: list[str] = field(default_factory=list)
    """Chains with a policy (INPUT, PREROUTING, ...): never deleted, only emptied."""


def parse_save(text: str) -> dict[str, Table]:
    """``iptables-save`` output as tables of chains and rules (counters ignored)."""
    tables: dict[str, Table] = {}
    current: Table | None = None
    for line in text.splitlines():
        if line.startswith("*"):
            current = tables.setdefault(line[1:].strip(), Table())
        elif current is not None and line.startswith(":"):
            name, policy = line[1:].split()[:2]
            current.chains.append(name)
            if policy != "-":
                current.builtin.append(name)
        elif current is not None and line.startswith("-A "):
            current.rules.append(line[3:])
    return tables


def save_tables(binary: str) -> dict[str, Table]:
    if shutil.which(f"{binary}-save") is None:
        return {}
    return parse_save(run([f"{binary}-save"]).stdout)


def revert_commands(before: dict[str, Table], after: dict[str, Table]) -> list[list[str]]:
    """Arguments (after the binary) that turn ``after`` back into ``before``: delete the
    rules added to chains that existed, then flush and delete the chains that did not.
    Rules and chains that were there before are never touched."""
    commands: list[list[str]] = []
    for name, table in after.items():
        old = before.get(name, Table())
        new_chains = [c for c in table.chains if c not in old.chains and c not in table.builtin]
        for rule in reversed(table.rules):
            chain = rule.split()[0]
            if chain not in new_chains and rule not in old.rules:
                commands.append(["-t", name, "-D", *shlex.split(rule)])
        commands += [["-t", name, "-F", chain] for chain in new_chains]
        commands += [["-t", name, "-X", chain] for chain in new_chains]
    return commands


def created_tables(before: dict[str, Table], after: dict[str, Table]) -> list[str]:
    """Tables absent from ``before`` that hold nothing now: only their built-in chains,
    no rules. A fresh host has no tables at all; kube-proxy's first rule creates them,
    and emptying them (:func:`revert_commands`) does not remove them."""
    return [
        name
        for name, table in after.items()
        if name not in before and not table.rules and table.chains == table.builtin
    ]


#: The nftables family of each binary's tables (iptables-nft keeps them there).
NFT_FAMILY = {"iptables": "ip", "ip6tables": "ip6"}


def normalized_save(text: str) -> list[str]:
    """``iptables-save`` text without its comments and packet counters."""
    return [
        line.split(" [")[0] if line.startswith(":") else line
        for line in text.splitlines()
        if line and not line.startswith("#")
    ]


def nfacct_names() -> list[str]:
    """Names of the nfacct objects (``{ pkts = .., bytes = .. } = NAME;``)."""
    if shutil.which("nfacct") is None:
        return []
    lines = run(["nfacct", "list"]).stdout.splitlines()
    return [line.rsplit("= ", 1)[1].rstrip(";") for line in lines if "= " in line]


# ------------------------------------------------------------------------- mounts


def mount_points() -> list[str]:
    """Mount points of this mount namespace, in mount order (octal escapes decoded)."""
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        raw = line.split()[4]
        points.append(raw.encode().decode("unicode_escape"))
    return points


def cgroup_hierarchies() -> list[Path]:
    """Mount points of the cgroup v1 hierarchies (and the v2 one, in hybrid mode)."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        if right.split()[0] in ("cgroup", "cgroup2"):
            found.append(Path(left.split()[4]))
    return found


# ------------------------------------------------------------------------- ledger


@dataclass
class HostLedger:
    """The host as it was before the node started; :meth:`revert` restores it."""

    watched: list[str]
    """Directories whose new mounts are the node's (its work dir, its state dirs)."""
    cgroup_root: str
    """The kubelet's ``cgroupRoot`` (created here, in every hierarchy)."""
    bridge: str
    host_paths: list[str]
    """Host paths the node's daemons create when absent (removed again if they were)."""
    sysctls: dict[str, str] = field(default_factory=dict)
    iptables: dict[str, str] = field(default_factory=dict)
    """``iptables-save`` text per binary."""
    mounts: list[str] = field(default_factory=list)
    nfacct: list[str] = field(default_factory=list)
    absent_paths: list[str] = field(default_factory=list)
    pids: dict[str, list[str]] = field(default_factory=dict)
    """PIDs of daemons this node started, with their argv (so a later session can stop
    a killed session's daemons by PID and be sure the PID is still theirs)."""

    def snapshot(self) -> None:
        self.sysctls = read_sysctls()
        self.iptables = {b: run([f"{b}-save"]).stdout for b in IPTABLES if shutil.which(b)}
        self.mounts = mount_points()
        self.nfacct = nfacct_names()
        self.absent_paths = [p for p in self.host_paths if not os.path.lexists(p)]
        self.write()

    def write(self) -> None:
        LEDGER_FILE.parent.mkdir(parents=True, exist_ok=True)
        LEDGER_FILE.write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls) -> HostLedger | None:
        try:
            return cls(**json.loads(LEDGER_FILE.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def record_pid(self, name: str, pid: int, argv: list[str]) -> None:
        self.pids[name] = [str(pid), *argv[:1]]
        self.write()

    # ------------------------------------------------------------------ cgroups
    def make_cgroup_root(self) -> None:
        """``/<cgroup_root>`` in every v1 hierarchy, cpuset seeded from its parent."""
        for hierarchy in cgroup_hierarchies():
            if (hierarchy / "cgroup.controllers").exists():
                continue  # the v2 hierarchy of a hybrid host: the kubelet uses v1 here
            path = hierarchy / self.cgroup_root
            path.mkdir(exist_ok=True)
            for name in ("cpuset.cpus", "cpuset.mems"):
                if (path / name).exists() and not (path / name).read_text().strip():
                    (path / name).write_text((hierarchy / name).read_text())

    def cgroup_dirs(self) -> list[Path]:
        """Every directory under the node's cgroup root, deepest first."""
        dirs: list[Path] = []
        for hierarchy in cgroup_hierarchies():
            top = hierarchy / self.cgroup_root
            if top.is_dir():
                dirs += [Path(d) for d, _, _ in os.walk(top)]
        return sorted(dirs, key=lambda p: len(p.parts), reverse=True)

    def cgroup_pids(self) -> set[int]:
        """Processes still in the node's cgroups (containers the runtime left behind)."""
        pids: set[int] = set()
        for directory in self.cgroup_dirs():
            with contextlib.suppress(OSError):
                pids |= {int(p) for p in (directory / "cgroup.procs").read_text().split()}
        return pids

    # ------------------------------------------------------------------ revert
    def revert(self) -> list[str]:
        """Undo every recorded change; return what could not be undone (empty: all)."""
        problems: list[str] = []
        problems += self._revert_mounts()
        for directory in self.cgroup_dirs():
            try:
                directory.rmdir()
            except OSError as exc:
                problems.append(f"cgroup {directory}: {exc}")
        problems += self._revert_iptables()
        for name in set(nfacct_names()) - set(self.nfacct):
            proc = run(["nfacct", "delete", name], check=False)
            if proc.returncode != 0:
                problems.append(f"nfacct {name}: {proc.stderr.strip()}")
        for name, value in self.sysctls.items():
            path = Path("/proc/sys") / name
            with contextlib.suppress(OSError):
                if path.read_text().strip() != value:
                    path.write_text(value)
            with contextlib.suppress(OSError):
                if path.read_text().strip() != value:
                    problems.append(f"sysctl {name} is not back to {value}")
        if Path(f"/sys/class/net/{self.bridge}").exists():
            for link in _links_of(self.bridge):
                run(["ip", "link", "delete", link], check=False)
            proc = run(["ip", "link", "delete", self.bridge], check=False)
            if proc.returncode != 0:
                problems.append(f"bridge {self.bridge}: {proc.stderr.strip()}")
        for host_path in self.absent_paths:
            if os.path.lexists(host_path):
                shutil.rmtree(host_path, ignore_errors=True)
                if os.path.lexists(host_path):
                    problems.append(f"{host_path} could not be removed")
        if not problems:
            with contextlib.suppress(OSError):
                LEDGER_FILE.unlink()
        return problems

    def differences(self) -> list[str]:
        """How the host differs from the snapshot now (empty: as it was found)."""
        found = []
        changed = {k: v for k, v in read_sysctls().items() if self.sysctls.get(k) != v}
        found += [f"sysctl {k} = {v} (was {self.sysctls.get(k)})" for k, v in changed.items()]
        for binary, text in self.iptables.items():
            now = run([f"{binary}-save"]).stdout
            if normalized_save(now) != normalized_save(text):
                found.append(f"{binary} rules differ:\n{now}")
        new_mounts = [m for m in mount_points() if m not in set(self.mounts)]
        prefixes = [p.rstrip("/") + "/" for p in self.watched + self.absent_paths]
        found += [
            f"mount {m}" for m in new_mounts if any((m + "/").startswith(p) for p in prefixes)
        ]
        found += [f"nfacct {n}" for n in set(nfacct_names()) - set(self.nfacct)]
        if Path(f"/sys/class/net/{self.bridge}").exists():
            found.append(f"link {self.bridge}")
        found += [f"path {p}" for p in self.absent_paths if os.path.lexists(p)]
        found += [f"cgroup {d}" for d in self.cgroup_dirs()]
        return found

    def _revert_mounts(self) -> list[str]:
        before = set(self.mounts)
        prefixes = [p.rstrip("/") + "/" for p in self.watched + self.absent_paths]
        problems = []
        for point in reversed(mount_points()):
            if point in before or not any((point + "/").startswith(p) for p in prefixes):
                continue
            proc = run(["umount", "--lazy", point], check=False)
            if proc.returncode != 0:
                problems.append(f"mount {point}: {proc.stderr.strip()}")
        return problems

    def _revert_iptables(self) -> list[str]:
        problems = []
        for binary, text in self.iptables.items():
            before = parse_save(text)
            for args in revert_commands(before, save_tables(binary)):
                proc = run([binary, "-w", *args], check=False)
                if proc.returncode != 0:
                    problems.append(f"{binary} {' '.join(args)}: {proc.stderr.strip()}")
            for table in created_tables(before, save_tables(binary)):
                argv = ["nft", "delete", "table", NFT_FAMILY[binary], table]
                proc = run(argv, check=False)
                if proc.returncode != 0:
                    problems.append(f"{' '.join(argv)}: {proc.stderr.strip()}")
        return problems


def _links_of(bridge: str) -> list[str]:
    proc = run(["ip", "-j", "link", "show", "master", bridge], check=False)
    try:
        return [str(link["ifname"]) for link in json.loads(proc.stdout or "[]")]
    except ValueError:
        return []
