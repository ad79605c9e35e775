"""A real Kubernetes control plane on loopback: etcd, kube-apiserver, kube-controller-manager.

The binaries come from ``tools/k8s/build.sh`` (built from Go modules, cached outside git).
Everything listens on 127.0.0.1 on free ports, keeps its state in a temporary directory and
is stopped by PID. Each process's output goes to a log file; :meth:`ControlPlane.log_tails`
returns the ends of those logs for failure reports.

Identities (static token file, so no client certificates are needed):

* ``admin`` in group ``system:masters`` - used by the tests, the controller-manager and the
  test node;
* ``alice`` with no groups - an ordinary user for RBAC tests.

``ControlPlane(address=...)`` binds the API server to another local address instead (the
real node's bridge gateway, ``tests/node/``): pods then reach it through the
``kubernetes`` Service, whose endpoint the API server keeps itself; ``extra_controllers``
and ``extra_apiserver_args`` add what a real node needs (node lifecycle, reaching the
kubelet by its address).

The API server also carries the front-proxy (request-header) flags, with a CA of its own
and a ``front-proxy-client`` certificate: what the aggregation layer needs to proxy an
aggregated API such as ``custom.metrics.k8s.io`` (prometheus-adapter, started by
``tests/kube/metrics_pipeline.py``) and to tell it who is asking.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "tools" / "k8s" / "build.sh"
REQUIRED_BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "helm")

#: Controllers the kube tier needs. Deliberately NOT run: node-lifecycle (it would taint
#: and evict the test node's pods), nodeipam, the cloud controllers, csrsigning.
CONTROLLERS = (
    "deployment",
    "replicaset",
    "statefulset",
    "job",
    "cronjob",
    "garbagecollector",
    "namespace",
    "horizontalpodautoscaling",
    "disruption",
    "serviceaccount",
    "serviceaccount-token",
    "root-ca-cert-publisher",
    "endpointslice",
    "ttl-after-finished",
    # folds ClusterRoles labelled aggregate-to-view/edit/admin into the built-in roles
    # (the chart adds Queues to them)
    "clusterrole-aggregation",
)

SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
#: The common name the API server's front-proxy client certificate carries, and the only
#: one an aggregated API server accepts request headers (X-Remote-User ...) from.
FRONT_PROXY_CLIENT = "front-proxy-client"


class ControlPlaneError(RuntimeError):
    """The control plane could not be built or started."""


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free right now on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def bin_dir() -> Path:
    """The directory where ``tools/k8s/build.sh`` puts (or would put) the binaries."""
    override = os.environ.get("SLOTFLEET_K8S_BIN_DIR")
    if override:
        return Path(override)
    out = subprocess.run(
        ["bash", str(BUILD_SCRIPT), "--print-bin-dir"],
        check=True,
        capture_output=True,
        text=True,
    )
    return Path(out.stdout.strip())


def ensure_binaries() -> Path:
    """Return the bin dir, running ``tools/k8s/build.sh`` if a binary is missing.

    Raises :class:`ControlPlaneError` (never skips) when the build is impossible, e.g.
    because Go or the Go module proxy is not available.
    """
    directory = bin_dir()
    missing = [b for b in REQUIRED_BINARIES if not (directory / b).is_file()]
    if not missing and (directory / ".stamp").is_file():
        return directory
    if shutil.which("go") is None:
        raise ControlPlaneError(
            f"Kubernetes test binaries are missing from {directory} ({', '.join(missing)}) "
            "and Go is not installed, so tools/k8s/build.sh cannot build them. Install Go "
            ">= 1.26 and make the Go module proxy reachable, then run tools/k8s/build.sh."
        )
    # A cold build takes minutes: CI should run tools/k8s/build.sh before pytest.
    log_path = directory.parent / "build.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as log:
        proc = subprocess.run(
            ["bash", str(BUILD_SCRIPT)], stdout=log, stderr=subprocess.STDOUT, check=False
        )
    if proc.returncode != 0:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-40:])
        raise ControlPlaneError(
            f"tools/k8s/build.sh failed (is the Go module proxy reachable?); log {log_path}:\n"
            + tail
        )
    return directory


def run_openssl(args: Sequence[str], cwd: Path) -> None:
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ControlPlaneError(f"openssl {' '.join(args)} failed: {proc.stderr}")


def make_pki(directory: Path, extra_ips: Sequence[str] = ()) -> None:
    """Create a CA, an API server serving cert for 127.0.0.1 (and ``extra_ips``), and a
    service-account key."""
    directory.mkdir(parents=True, exist_ok=True)
    if shutil.which("openssl") is None:
        raise ControlPlaneError("the openssl command is required to start the control plane")
    run_openssl(
        [
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-subj",
            "/CN=slotfleet-test-ca",
        ],
        directory,
    )
    (directory / "san.ext").write_text(
        f"subjectAltName=IP:127.0.0.1,IP:10.0.0.1,{''.join(f'IP:{ip},' for ip in extra_ips)}"
        "DNS:localhost,DNS:kubernetes,"
        "DNS:kubernetes.default,DNS:kubernetes.default.svc,"
        "DNS:kubernetes.default.svc.cluster.local\n"
        "extendedKeyUsage=serverAuth\n"
    )
    run_openssl(
        [
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "apiserver.key",
            "-out",
            "apiserver.csr",
            "-subj",
            "/CN=kube-apiserver",
        ],
        directory,
    )
    run_openssl(
        [
            "x509",
            "-req",
            "-in",
            "apiserver.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.ext",
            "-out",
            "apiserver.crt",
        ],
        directory,
    )
    run_openssl(["genrsa", "-out", "sa.key", "2048"], directory)
    run_openssl(["rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub"], directory)
    make_front_proxy_pki(directory)


def make_front_proxy_pki(directory: Path) -> None:
    """The aggregation layer's identity: a CA of its own (``front-proxy-ca.crt``, which
    aggregated API servers read from the ``extension-apiserver-authentication``
    ConfigMap) and a client certificate ``CN=front-proxy-client`` (clientAuth) the API
    server presents when it proxies a request to one of them."""
    ca = "req -x509 -newkey rsa:2048 -nodes -days 2 -keyout front-proxy-ca.key"
    run_openssl(
        [*ca.split(), "-out", "front-proxy-ca.crt", "-subj", "/CN=front-proxy-ca"], directory
    )
    (directory / "front-proxy-client.ext").write_text("extendedKeyUsage=clientAuth\n")
    csr = "req -newkey rsa:2048 -nodes -keyout front-proxy-client.key -out front-proxy-client.csr"
    run_openssl([*csr.split(), "-subj", f"/CN={FRONT_PROXY_CLIENT}"], directory)
    sign = "x509 -req -in front-proxy-client.csr -CA front-proxy-ca.crt -CAkey front-proxy-ca.key"
    out = "-CAcreateserial -days 2 -extfile front-proxy-client.ext -out front-proxy-client.crt"
    run_openssl([*sign.split(), *out.split()], directory)


def write_kubeconfig(path: Path, server: str, ca_file: Path, user: str, token: str) -> Path:
    """Write a token-based kubeconfig (JSON is valid YAML, so no YAML writer is needed)."""
    import json

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "slotfleet-test",
                "cluster": {"server": server, "certificate-authority": str(ca_file)},
            }
        ],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [
            {
                "name": f"{user}@slotfleet-test",
                "context": {"cluster": "slotfleet-test", "user": user, "namespace": "default"},
            }
        ],
        "current-context": f"{user}@slotfleet-test",
        "preferences": {},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config, indent=2))
    path.chmod(0o600)
    return path


@dataclass
class ManagedProcess:
    """One child process with its log file."""

    name: str
    argv: list[str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self, env: dict[str, str] | None = None) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"$ {' '.join(self.argv)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, wait up to ``timeout`` seconds, then SIGKILL (by PID only)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


def log_tails(processes: dict[str, ManagedProcess], lines: int = 40) -> str:
    """The end of each process's log, headed by its name and whether it still runs."""
    parts = []
    for name, proc in processes.items():
        state = "running" if proc.alive() else "exited"
        parts.append(f"===== {name} ({state}) {proc.log_path} =====\n{proc.tail(lines)}")
    return "\n".join(parts)


@dataclass
class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager on loopback."""

    bin_dir: Path
    work_dir: Path
    admin_token: str = field(default_factory=lambda: secrets.token_hex(16))
    alice_token: str = field(default_factory=lambda: secrets.token_hex(16))
    processes: dict[str, ManagedProcess] = field(default_factory=dict)
    apiserver_port: int = 0
    address: str = "127.0.0.1"
    """Where the API server listens and what it advertises (a loopback address, or a
    local address pods can reach)."""
    extra_controllers: tuple[str, ...] = ()
    extra_apiserver_args: tuple[str, ...] = ()
    hpa_sync_period: float | None = None
    """kube-controller-manager's ``--horizontal-pod-autoscaler-sync-period`` in seconds
    (how often the HPA controller looks at each HPA); ``None`` keeps its default, 15 s."""

    @property
    def pki_dir(self) -> Path:
        return self.work_dir / "pki"

    @property
    def ca_file(self) -> Path:
        return self.pki_dir / "ca.crt"

    @property
    def server(self) -> str:
        return f"https://{self.address}:{self.apiserver_port}"

    @property
    def admin_kubeconfig(self) -> Path:
        return self.work_dir / "admin.kubeconfig"

    @property
    def alice_kubeconfig(self) -> Path:
        return self.work_dir / "alice.kubeconfig"

    @property
    def log_dir(self) -> Path:
        return self.work_dir / "logs"

    @property
    def loopback(self) -> bool:
        return self.address.startswith("127.")

    def binary(self, name: str) -> str:
        return str(self.bin_dir / name)

    # ------------------------------------------------------------------ lifecycle
    def start(self, timeout: float = 90.0) -> None:
        started = time.monotonic()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        make_pki(self.pki_dir, extra_ips=() if self.loopback else (self.address,))
        (self.work_dir / "tokens.csv").write_text(
            f'{self.admin_token},admin,admin-uid,"system:masters"\n'
            f"{self.alice_token},alice,alice-uid\n"
        )
        etcd_client, etcd_peer = free_port(), free_port()
        self.apiserver_port = free_port(self.address)
        env = {k: v for k, v in os.environ.items() if not k.startswith("KUBE")}
        env.pop("ETCDCTL_API", None)
        try:
            self._start_etcd(etcd_client, etcd_peer, env)
            self._wait_tcp("etcd", etcd_client, deadline=started + timeout)
            self._start_apiserver(etcd_client, env)
            self._wait_ready(deadline=started + timeout)
            write_kubeconfig(
                self.admin_kubeconfig, self.server, self.ca_file, "admin", self.admin_token
            )
            write_kubeconfig(
                self.alice_kubeconfig, self.server, self.ca_file, "alice", self.alice_token
            )
            self._start_controller_manager(env)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for name in ("kube-controller-manager", "kube-apiserver", "etcd"):
            proc = self.processes.get(name)
            if proc is not None:
                proc.stop()

    def pids(self) -> dict[str, int | None]:
        return {name: p.pid for name, p in self.processes.items()}

    def log_tails(self, lines: int = 40) -> str:
        return log_tails(self.processes, lines)

    # ------------------------------------------------------------------ internals
    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        proc = ManagedProcess(name, argv, self.log_dir / f"{name}.log")
        self.processes[name] = proc
        proc.start(env)

    def _start_etcd(self, client: int, peer: int, env: dict[str, str]) -> None:
        client_url, peer_url = f"http://127.0.0.1:{client}", f"http://127.0.0.1:{peer}"
        self._spawn(
            "etcd",
            [
                self.binary("etcd"),
                "--name=default",
                f"--data-dir={self.work_dir / 'etcd-data'}",
                f"--listen-client-urls={client_url}",
                f"--advertise-client-urls={client_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=default={peer_url}",
                "--unsafe-no-fsync",
                "--log-level=warn",
                "--quota-backend-bytes=1073741824",
            ],
            env,
        )

    def _start_apiserver(self, etcd_client: int, env: dict[str, str]) -> None:
        pki = self.pki_dir
        # a loopback address cannot be an endpoint of the kubernetes Service
        reconciler = ["--endpoint-reconciler-type=none"] if self.loopback else []
        self._spawn(
            "kube-apiserver",
            [
                self.binary("kube-apiserver"),
                f"--etcd-servers=http://127.0.0.1:{etcd_client}",
                f"--bind-address={self.address}",
                f"--advertise-address={self.address}",
                f"--secure-port={self.apiserver_port}",
                f"--cert-dir={self.work_dir / 'apiserver-certs'}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--token-auth-file={self.work_dir / 'tokens.csv'}",
                "--authorization-mode=RBAC",
                f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                *reconciler,
                *self.extra_apiserver_args,
                # the aggregation layer (aggregated APIs such as custom.metrics.k8s.io)
                f"--requestheader-client-ca-file={pki / 'front-proxy-ca.crt'}",
                f"--requestheader-allowed-names={FRONT_PROXY_CLIENT}",
                "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                f"--proxy-client-cert-file={pki / 'front-proxy-client.crt'}",
                f"--proxy-client-key-file={pki / 'front-proxy-client.key'}",
                "--profiling=false",
                "--v=1",
            ],
            env,
        )

    def _start_controller_manager(self, env: dict[str, str]) -> None:
        pki = self.pki_dir
        extra = []
        if self.hpa_sync_period is not None:
            extra.append(f"--horizontal-pod-autoscaler-sync-period={self.hpa_sync_period:g}s")
        self._spawn(
            "kube-controller-manager",
            [
                self.binary("kube-controller-manager"),
                f"--kubeconfig={self.admin_kubeconfig}",
                f"--controllers={','.join(CONTROLLERS + self.extra_controllers)}",
                "--leader-elect=false",
                "--use-service-account-credentials=false",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                f"--root-ca-file={self.ca_file}",
                "--secure-port=0",
                "--profiling=false",
                # fast feedback in tests
                "--concurrent-gc-syncs=5",
                *extra,
                "--v=1",
            ],
            env,
        )

    def _check_alive(self) -> None:
        for name, proc in self.processes.items():
            if not proc.alive():
                raise ControlPlaneError(f"{name} exited early:\n{proc.tail(60)}")

    def _wait_tcp(self, name: str, port: int, deadline: float) -> None:
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        raise ControlPlaneError(f"{name} did not listen on port {port} in time")

    def _wait_ready(self, deadline: float) -> None:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        last_error = ""
        while time.monotonic() < deadline:
            self._check_alive()
            request = urllib.request.Request(
                f"{self.server}/readyz",
                headers={"Authorization": f"Bearer {self.admin_token}"},
            )
            try:
                with urllib.request.urlopen(request, context=context, timeout=2) as resp:
                    if resp.status == 200:
                        return
            except urllib.error.HTTPError as exc:
                last_error = f"HTTP {exc.code}"
            except OSError as exc:
                last_error = str(exc)
            time.sleep(0.2)
        raise ControlPlaneError(
            f"kube-apiserver not ready in time ({last_error}):\n{self.log_tails()}"
        )
