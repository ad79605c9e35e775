"""A process-backed test node: a tiny stand-in for scheduler + kubelet.

It registers a Ready Node, binds every pending pod (no ``nodeName``, default scheduler) to
itself through the ``binding`` subresource, and runs each container's ``command`` + ``args``
as a local subprocess (the image is ignored; ``PATH`` and the rest of the environment come
from the test process, so ``python`` and console scripts of the test venv resolve).

Per pod:

* its own loopback address 127.0.x.y, reported as ``status.podIP``;
* env resolved from the pod spec: ``value``, ``valueFrom.fieldRef`` / ``secretKeyRef`` /
  ``configMapKeyRef``, ``envFrom`` (Secrets, ConfigMaps), with ``$(VAR)`` expansion;
* unless ``automountServiceAccountToken`` is false, a token for its ServiceAccount from the
  TokenRequest API (bound to the pod) in a kubeconfig named by ``KUBECONFIG``, so the pod
  acts with exactly its RBAC;
* status: phase, containerStatuses, restart counts, Ready once readiness probes pass
  (``httpGet``, ``tcpSocket`` or ``exec``; liveness and startup probes are ignored);
* restarts under ``restartPolicy`` Always/OnFailure with a short exponential backoff;
* on deletion: SIGTERM, wait ``terminationGracePeriodSeconds``, SIGKILL, then delete the
  pod object with ``gracePeriodSeconds=0``; :attr:`TestNode.terminate_delay` seconds pass
  before the SIGTERM (zero unless a test sets it), as a real kubelet's watch, pod sync and
  preStop hooks take before it signals a deleted pod.

Not emulated: images, volumes (mounted files), init and sidecar containers, lifecycle hooks,
resource limits, networking beyond loopback (no Services/kube-proxy, no DNS).
The node-lifecycle controller is not run by the control plane, so the Node heartbeat only
needs to be refreshed occasionally (it is, every 30 s) for anything that reads it.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from .controlplane import write_kubeconfig

Json = dict[str, Any]
PodKey = tuple[str, str]  # (namespace, name)
Lookup = Callable[[str, str], "Mapping[str, str] | None"]  # (namespace, name) -> data


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------- pure helpers


#: ``first-last`` third octets the test node hands out (default ``1-254``). Two test runs
#: on one machine at once (two checkouts) each get a range of their own, so their pods
#: never bind the same address and port.
IP_RANGE_ENV = "SLOTFLEET_TESTNODE_OCTETS"


def octet_range_from_env() -> tuple[int, int]:
    """The third-octet range from :data:`IP_RANGE_ENV`; a malformed value is an error."""
    text = os.environ.get(IP_RANGE_ENV, "").strip() or "1-254"
    first, _, last = text.partition("-")
    try:
        low, high = int(first), int(last or first)
    except ValueError:
        raise ValueError(f"{IP_RANGE_ENV}={text!r}: expected FIRST-LAST, e.g. 1-50") from None
    if not 1 <= low <= high <= 254:
        raise ValueError(f"{IP_RANGE_ENV}={text!r}: octets must satisfy 1 <= FIRST <= LAST <= 254")
    return low, high


class IPPool:
    """Hands out loopback addresses 127.0.X.Y (X in 1..254, Y in 1..254).

    Released addresses go to the back of the queue, so an address is not reused soon
    after its pod went away (no surprises from sockets still in TIME_WAIT).
    """

    def __init__(self, first_octet3: int | None = None, last_octet3: int | None = None) -> None:
        if first_octet3 is None or last_octet3 is None:
            first_octet3, last_octet3 = octet_range_from_env()
        self._lock = threading.Lock()
        self._free: list[str] = [
            f"127.0.{x}.{y}" for x in range(first_octet3, last_octet3 + 1) for y in range(1, 255)
        ]
        self._used: set[str] = set()

    def allocate(self) -> str:
        with self._lock:
            if not self._free:
                raise RuntimeError("loopback IP pool exhausted")
            ip = self._free.pop(0)
            self._used.add(ip)
            return ip

    def release(self, ip: str) -> None:
        with self._lock:
            if ip in self._used:
                self._used.remove(ip)
                self._free.append(ip)

    def in_use(self) -> set[str]:
        with self._lock:
            return set(self._used)


_VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(text: str, variables: Mapping[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion: ``$$`` escapes; unknown references stay as they are."""

    def repl(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return variables.get(name, match.group(0))

    return _VAR_REF.sub(repl, text)


class EnvError(Exception):
    """A referenced Secret/ConfigMap/key is missing (kubelet: CreateContainerConfigError)."""


def field_ref(pod: Json, path: str, pod_ip: str, node_name: str) -> str:
    meta = pod.get("metadata", {})
    spec = pod.get("spec", {})
    simple = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "spec.nodeName": spec.get("nodeName") or node_name,
        "status.podIP": pod_ip,
        "status.hostIP": "127.0.0.1",
    }
    if path in simple:
        return str(simple[path])
    if path == "status.podIPs":
        return pod_ip
    m = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
    if m:
        return str(meta.get(m.group(1), {}).get(m.group(2), ""))
    raise EnvError(f"unsupported fieldRef {path!r}")


def resolve_env(
    pod: Json,
    container: Json,
    *,
    pod_ip: str,
    node_name: str,
    secrets: Lookup,
    configmaps: Lookup,
) -> dict[str, str]:
    """The container's environment as the kubelet would compute it (without service links).

    ``secrets``/``configmaps`` return the decoded data of the named object, or ``None`` when
    it does not exist.
    """
    namespace = pod["metadata"]["namespace"]
    env: dict[str, str] = {}

    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        if "secretRef" in source:
            ref, lookup, kind = source["secretRef"], secrets, "secret"
        elif "configMapRef" in source:
            ref, lookup, kind = source["configMapRef"], configmaps, "configmap"
        else:
            continue
        data = lookup(namespace, ref["name"])
        if data is None:
            if ref.get("optional"):
                continue
            raise EnvError(f'{kind} "{ref["name"]}" not found')
        for key, value in data.items():
            env[prefix + key] = value

    for item in container.get("env") or []:
        name = item["name"]
        if "valueFrom" not in item:
            env[name] = expand(item.get("value", ""), env)
            continue
        value_from = item["valueFrom"]
        if "fieldRef" in value_from:
            env[name] = field_ref(pod, value_from["fieldRef"]["fieldPath"], pod_ip, node_name)
            continue
        if "secretKeyRef" in value_from:
            ref, lookup, kind = value_from["secretKeyRef"], secrets, "secret"
        elif "configMapKeyRef" in value_from:
            ref, lookup, kind = value_from["configMapKeyRef"], configmaps, "configmap"
        elif "resourceFieldRef" in value_from:
            env[name] = "0"
            continue
        else:
            raise EnvError(f"unsupported valueFrom for {name}")
        data = lookup(namespace, ref["name"])
        if data is None or ref["key"] not in data:
            if ref.get("optional"):
                continue
            what = f'{kind} "{ref["name"]}"' + ("" if data is None else f' key "{ref["key"]}"')
            raise EnvError(f"{what} not found")
        env[name] = data[ref["key"]]
    return env


def container_argv(container: Json, env: Mapping[str, str]) -> list[str]:
    command = list(container.get("command") or [])
    args = list(container.get("args") or [])
    if not command:
        raise EnvError(
            f"container {container.get('name')!r} has no command: the test node cannot run "
            "an image's entrypoint"
        )
    return [expand(part, env) for part in command + args]


def decode_secret_data(data: Mapping[str, str] | None) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in (data or {}).items()}


# --------------------------------------------------------------------- runtime state


@dataclass
class ContainerRun:
    name: str
    spec: Json
    proc: subprocess.Popen[bytes] | None = None
    restart_count: int = 0
    started_at: str = ""
    ready: bool = False
    last_exit: int | None = None
    finished_at: str = ""
    waiting_reason: str = ""
    waiting_message: str = ""
    done: bool = False  # terminated for good (restart policy says no more)
    pids: list[int] = field(default_factory=list)


@dataclass
class PodRun:
    namespace: str
    name: str
    uid: str
    ip: str
    workdir: Path
    containers: dict[str, ContainerRun] = field(default_factory=dict)
    start_time: str = ""
    terminating: bool = False
    stopped: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: held while a status is computed *and* sent, so reports reach the API server in the
    #: order they were computed (a stale "Pending" must never land after "Running")
    status_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def key(self) -> PodKey:
        return (self.namespace, self.name)


class TestNode:
    """See the module docstring. Start with :meth:`start`, stop with :meth:`stop`."""

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        api: client.ApiClient,
        *,
        server: str,
        ca_file: Path,
        name: str = "slotfleet-test-node",
        work_dir: Path | None = None,
        ip_pool: IPPool | None = None,
        base_env: Mapping[str, str] | None = None,
    ) -> None:
        self.api = api
        self.core = client.CoreV1Api(api)
        self.server = server
        self.ca_file = ca_file
        self.name = name
        self.work_dir = work_dir or Path(tempfile.mkdtemp(prefix="slotfleet-node-"))
        self.ip_pool = ip_pool or IPPool()
        if base_env is None:
            base_env = {
                k: v
                for k, v in os.environ.items()
                if k != "KUBECONFIG" and not k.startswith("KUBERNETES_")
            }
        self.base_env = dict(base_env)
        self._lock = threading.RLock()
        self._pods: dict[str, PodRun] = {}  # by uid
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._watch: watch.Watch | None = None
        # records for tests
        self.sigterm_log: list[PodKey] = []
        self.sigkill_log: list[PodKey] = []
        self.exit_codes: dict[PodKey, list[int]] = {}
        self.pid_log: dict[PodKey, list[int]] = {}
        self.errors: list[str] = []
        self.events: list[str] = []
        self.terminate_delay = 0.0
        """Seconds between a pod's deletion and its SIGTERM (a test sets it, and resets it)."""

    # ------------------------------------------------------------------ public API
    def start(self) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self._register_node()
        for target, tname in ((self._watch_loop, "watch"), (self._heartbeat_loop, "heartbeat")):
            t = threading.Thread(target=target, name=f"testnode-{tname}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()
        if self._watch is not None:
            self._watch.stop()  # type: ignore[no-untyped-call]
        with self._lock:
            runs = list(self._pods.values())
        for run in runs:
            self._kill_pod_processes(run, grace=2.0, record=False)
        for t in self._threads:
            t.join(timeout=5)

    def pids(self, namespace: str, name: str) -> list[int]:
        """PIDs of the pod's currently running container processes."""
        with self._lock:
            for run in self._pods.values():
                if run.key == (namespace, name):
                    return [
                        c.proc.pid
                        for c in run.containers.values()
                        if c.proc is not None and c.proc.poll() is None
                    ]
        return []

    def all_pids(self) -> dict[PodKey, list[int]]:
        """Every PID ever started, by pod."""
        with self._lock:
            return {k: list(v) for k, v in self.pid_log.items()}

    def pod_ip(self, namespace: str, name: str) -> str | None:
        with self._lock:
            for run in self._pods.values():
                if run.key == (namespace, name):
                    return run.ip
        return None

    def sigtermed(self, namespace: str | None = None) -> list[PodKey]:
        with self._lock:
            return [k for k in self.sigterm_log if namespace is None or k[0] == namespace]

    def log_path(self, namespace: str, name: str, container: str) -> Path:
        return self.work_dir / namespace / name / f"{container}.log"

    def log_tails(self, lines: int = 20) -> str:
        parts = [f"===== test node {self.name}: errors ====="]
        parts += self.errors[-20:]
        parts.append("===== test node: recent events =====")
        parts += self.events[-40:]
        for log in sorted(self.work_dir.glob("*/*/*.log"))[-10:]:
            text = log.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"===== {log} =====")
            parts += text
        return "\n".join(parts)

    # ------------------------------------------------------------------ node object
    def _node_status(self) -> Json:
        ts = now_iso()
        return {
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "message": "slotfleet test node is ready",
                    "lastHeartbeatTime": ts,
                    "lastTransitionTime": ts,
                },
            ],
            "addresses": [
                {"type": "InternalIP", "address": "127.0.0.1"},
                {"type": "Hostname", "address": self.name},
            ],
            "capacity": {"cpu": "64", "memory": "256Gi", "pods": "1000"},
            "allocatable": {"cpu": "64", "memory": "256Gi", "pods": "1000"},
            "nodeInfo": {
                "architecture": "amd64",
                "operatingSystem": "linux",
                "kubeletVersion": "slotfleet-test-node",
                "kubeProxyVersion": "",
                "containerRuntimeVersion": "local-process://0",
                "kernelVersion": "",
                "osImage": "slotfleet test node",
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
            },
        }

    def _register_node(self) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.name,
                "labels": {"kubernetes.io/hostname": self.name, "kubernetes.io/os": "linux"},
            },
        }
        try:
            self.core.create_node(cast(Any, body))
        except ApiException as exc:
            if exc.status != 409:
                raise
        self.core.patch_node_status(self.name, {"status": self._node_status()})

    def _heartbeat_loop(self) -> None:
        while not self._stop.wait(30):
            try:
                self.core.patch_node_status(self.name, {"status": self._node_status()})
            except Exception as exc:
                self._error(f"heartbeat: {exc}")

    # ------------------------------------------------------------------ watch
    def _watch_loop(self) -> None:
        resource_version = ""
        while not self._stop.is_set():
            try:
                if not resource_version:
                    pods = self.core.list_pod_for_all_namespaces()
                    resource_version = str(pods.metadata.resource_version or "")  # type: ignore[union-attr]
                    for pod in pods.items:
                        raw_pod = self.api.sanitize_for_serialization(pod)  # type: ignore[no-untyped-call]
                        self._handle("ADDED", raw_pod)
                self._watch = watch.Watch()  # type: ignore[no-untyped-call]
                for event in self._watch.stream(  # type: ignore[no-untyped-call]
                    self.core.list_pod_for_all_namespaces,
                    resource_version=resource_version,
                    allow_watch_bookmarks=True,
                    timeout_seconds=60,
                ):
                    if self._stop.is_set():
                        break
                    raw: Json = event["raw_object"]
                    if event["type"] == "ERROR":
                        resource_version = ""  # 410 Gone: relist
                        break
                    resource_version = raw.get("metadata", {}).get(
                        "resourceVersion", resource_version
                    )
                    if event["type"] == "BOOKMARK":
                        continue
                    self._handle(event["type"], raw)
            except ApiException as exc:
                if exc.status == 410:
                    resource_version = ""
                elif not self._stop.is_set():
                    self._error(f"watch: {exc.status} {exc.reason}")
                    time.sleep(0.5)
            except Exception as exc:
                if not self._stop.is_set():
                    self._error(f"watch: {type(exc).__name__}: {exc}")
                    resource_version = ""
                    time.sleep(0.5)

    def _handle(self, kind: str, pod: Json) -> None:
        meta = pod.get("metadata", {})
        spec = pod.get("spec", {})
        uid = meta.get("uid", "")
        with self._lock:
            run = self._pods.get(uid)
        if kind == "DELETED":
            if run is not None:
                self._spawn(self._terminate, run, 0.0, False)
            return
        node_name = spec.get("nodeName")
        phase = pod.get("status", {}).get("phase")
        if not node_name:
            if spec.get("schedulerName", "default-scheduler") == "default-scheduler" and not (
                meta.get("deletionTimestamp")
            ):
                self._bind(meta["namespace"], meta["name"])
            return
        if node_name != self.name:
            return
        if meta.get("deletionTimestamp"):
            if run is not None:
                if not run.terminating:
                    run.terminating = True
                    grace = meta.get("deletionGracePeriodSeconds")
                    if grace is None:
                        grace = spec.get("terminationGracePeriodSeconds", 30)
                    self._spawn(self._terminate, run, float(grace), True)
            else:
                # never started here (or the node restarted): just finish the deletion
                self._spawn(self._force_delete, meta["namespace"], meta["name"], uid)
            return
        if run is None and phase in (None, "Pending"):
            self._spawn(self._start_pod, pod)

    def _spawn(self, target: Callable[..., None], *args: Any) -> None:
        threading.Thread(target=self._guard, args=(target, *args), daemon=True).start()

    def _guard(self, target: Callable[..., None], *args: Any) -> None:
        try:
            target(*args)
        except Exception as exc:
            self._error(f"{target.__name__}: {type(exc).__name__}: {exc}")

    def _error(self, message: str) -> None:
        with self._lock:
            self.errors.append(f"{now_iso()} {message}")

    def _event(self, message: str) -> None:
        with self._lock:
            self.events.append(f"{now_iso()} {message}")

    def _bind(self, namespace: str, name: str) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": name, "namespace": namespace},
            "target": {"apiVersion": "v1", "kind": "Node", "name": self.name},
        }
        try:
            # _preload_content=False: the generated client cannot deserialize the reply
            self.core.create_namespaced_pod_binding(
                name, namespace, cast(Any, body), _preload_content=False
            )
            self._event(f"bound {namespace}/{name}")
        except ApiException as exc:
            if exc.status not in (404, 409):
                self._error(f"bind {namespace}/{name}: {exc.status} {exc.body!r}")

    def _force_delete(self, namespace: str, name: str, uid: str) -> None:
        try:
            self.core.delete_namespaced_pod(
                name,
                namespace,
                grace_period_seconds=0,
                body=client.V1DeleteOptions(
                    grace_period_seconds=0, preconditions=client.V1Preconditions(uid=uid)
                ),
            )
        except ApiException as exc:
            if exc.status not in (404, 409):
                raise

    # ------------------------------------------------------------------ pod lifecycle
    def _lookup_secret(self, namespace: str, name: str) -> dict[str, str] | None:
        try:
            secret = self.core.read_namespaced_secret(name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        data = decode_secret_data(cast("dict[str, str] | None", secret.data))
        data.update(secret.string_data or {})
        return data

    def _lookup_configmap(self, namespace: str, name: str) -> dict[str, str] | None:
        try:
            cm = self.core.read_namespaced_config_map(name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return dict(cm.data or {})

    def _start_pod(self, pod: Json) -> None:
        meta, spec = pod["metadata"], pod["spec"]
        with self._lock:
            if meta["uid"] in self._pods:
                return
            run = PodRun(
                namespace=meta["namespace"],
                name=meta["name"],
                uid=meta["uid"],
                ip=self.ip_pool.allocate(),
                workdir=self.work_dir / meta["namespace"] / meta["name"],
                start_time=now_iso(),
            )
            self._pods[run.uid] = run
        run.workdir.mkdir(parents=True, exist_ok=True)
        for c in spec.get("containers", []):
            run.containers[c["name"]] = ContainerRun(name=c["name"], spec=c)
        self._event(f"starting {run.namespace}/{run.name} on {run.ip}")

        kube_env: dict[str, str] = {}
        sa = spec.get("serviceAccountName") or spec.get("serviceAccount")
        if sa and spec.get("automountServiceAccountToken", True):
            kube_env["KUBECONFIG"] = str(self._pod_kubeconfig(run, sa))

        for cr in run.containers.values():
            self._spawn(self._supervise, pod, run, cr, kube_env)
        self._report_status(run, spec)

    def _pod_kubeconfig(self, run: PodRun, service_account: str) -> Path:
        request = client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(
                audiences=[],
                expiration_seconds=3600,
                bound_object_ref=client.V1BoundObjectReference(
                    api_version="v1", kind="Pod", name=run.name, uid=run.uid
                ),
            )
        )
        result = self.core.create_namespaced_service_account_token(
            service_account, run.namespace, request
        )
        path = run.workdir / "kubeconfig"
        write_kubeconfig(
            path,
            self.server,
            self.ca_file,
            f"system:serviceaccount:{run.namespace}:{service_account}",
            str(result.status.token),  # type: ignore[union-attr]
        )
        # kubeconfig's default namespace = the pod's namespace, as in-cluster config has
        text = path.read_text().replace('"namespace": "default"', f'"namespace": "{run.namespace}"')
        path.write_text(text)
        return path

    def _supervise(
        self, pod: Json, run: PodRun, cr: ContainerRun, kube_env: dict[str, str]
    ) -> None:
        spec = pod["spec"]
        policy = spec.get("restartPolicy", "Always")
        backoff = 0.5
        while not run.terminating and not self._stop.is_set():
            try:
                env = resolve_env(
                    pod,
                    cr.spec,
                    pod_ip=run.ip,
                    node_name=self.name,
                    secrets=self._lookup_secret,
                    configmaps=self._lookup_configmap,
                )
                argv = container_argv(cr.spec, env)
            except EnvError as exc:
                cr.waiting_reason, cr.waiting_message = "CreateContainerConfigError", str(exc)
                self._report_status(run, spec)
                if run.stopped.wait(1.0):
                    return
                continue
            full_env = {**self.base_env, "HOSTNAME": run.name, **kube_env, **env}
            log_path = self.log_path(run.namespace, run.name, cr.name)
            with run.lock:
                if run.terminating:
                    return
                with log_path.open("ab") as log:
                    try:
                        cr.proc = subprocess.Popen(
                            argv,
                            env=full_env,
                            cwd=cr.spec.get("workingDir") or run.workdir,
                            stdout=log,
                            stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL,
                            start_new_session=True,
                        )
                    except OSError as exc:
                        cr.proc = None
                        cr.waiting_reason, cr.waiting_message = "RunContainerError", str(exc)
                if cr.proc is not None:
                    cr.pids.append(cr.proc.pid)
                    with self._lock:
                        self.pid_log.setdefault(run.key, []).append(cr.proc.pid)
                    cr.started_at, cr.waiting_reason, cr.waiting_message = now_iso(), "", ""
            if cr.proc is not None:
                self._event(f"{run.namespace}/{run.name}/{cr.name} pid {cr.proc.pid}: {argv}")
                self._report_status(run, spec)
                self._probe_until_exit(run, cr, spec, env, full_env)
                code = cr.proc.wait()
                cr.last_exit, cr.finished_at, cr.ready = code, now_iso(), False
                with self._lock:
                    self.exit_codes.setdefault(run.key, []).append(code)
                self._event(f"{run.namespace}/{run.name}/{cr.name} exited {code}")
            else:
                code = 128
            if run.terminating or self._stop.is_set():
                return
            if policy == "Never" or (policy == "OnFailure" and code == 0):
                cr.done = True
                self._report_status(run, spec)
                return
            cr.restart_count += 1
            cr.waiting_reason = "CrashLoopBackOff"
            cr.waiting_message = f"back-off {backoff:.1f}s restarting failed container"
            self._report_status(run, spec)
            if run.stopped.wait(backoff):
                return
            backoff = min(backoff * 2, 10.0)

    def _probe_until_exit(
        self,
        run: PodRun,
        cr: ContainerRun,
        spec: Json,
        env: dict[str, str],
        full_env: dict[str, str],
    ) -> None:
        assert cr.proc is not None
        probe = cr.spec.get("readinessProbe")
        if not probe:
            cr.ready = True
            self._report_status(run, spec)
            cr.proc.wait()
            return
        period = min(float(probe.get("periodSeconds", 10)), 1.0)
        delay = float(probe.get("initialDelaySeconds", 0))
        success_needed = int(probe.get("successThreshold", 1))
        failure_needed = int(probe.get("failureThreshold", 3))
        successes = failures = 0
        if delay:
            try:
                cr.proc.wait(timeout=delay)
                return
            except subprocess.TimeoutExpired:
                pass
        while cr.proc.poll() is None and not run.terminating:
            ok = self._probe_once(run, cr, probe, full_env)
            if ok:
                successes, failures = successes + 1, 0
                if not cr.ready and successes >= success_needed:
                    cr.ready = True
                    self._report_status(run, spec)
            else:
                successes, failures = 0, failures + 1
                if cr.ready and failures >= failure_needed:
                    cr.ready = False
                    self._report_status(run, spec)
            with contextlib.suppress(subprocess.TimeoutExpired):
                cr.proc.wait(timeout=period)

    def _resolve_port(self, cr: ContainerRun, port: Any) -> int:
        if isinstance(port, int) or (isinstance(port, str) and port.isdigit()):
            return int(port)
        for p in cr.spec.get("ports") or []:
            if p.get("name") == port:
                return int(p["containerPort"])
        raise ValueError(f"unknown named port {port!r}")

    def _probe_once(self, run: PodRun, cr: ContainerRun, probe: Json, env: dict[str, str]) -> bool:
        timeout = float(probe.get("timeoutSeconds", 1))
        try:
            if "httpGet" in probe:
                get = probe["httpGet"]
                host = get.get("host") or run.ip
                port = self._resolve_port(cr, get["port"])
                path = get.get("path", "/")
                scheme = get.get("scheme", "HTTP").lower()
                req = urllib.request.Request(f"{scheme}://{host}:{port}{path}")
                for header in get.get("httpHeaders") or []:
                    req.add_header(header["name"], header["value"])
                with urllib.request.urlopen(req, timeout=timeout) as resp:
                    return 200 <= int(resp.status) < 400
            if "tcpSocket" in probe:
                sock = probe["tcpSocket"]
                port = self._resolve_port(cr, sock["port"])
                with socket.create_connection((sock.get("host") or run.ip, port), timeout):
                    return True
            if "exec" in probe:
                proc = subprocess.run(
                    probe["exec"]["command"],
                    env=env,
                    cwd=run.workdir,
                    capture_output=True,
                    timeout=timeout,
                    check=False,
                )
                return proc.returncode == 0
        except (OSError, urllib.error.URLError, ValueError, subprocess.TimeoutExpired):
            return False
        return True

    # ------------------------------------------------------------------ status
    def _container_status(self, cr: ContainerRun) -> Json:
        status: Json = {
            "name": cr.name,
            "image": cr.spec.get("image", ""),
            "imageID": "",
            "ready": cr.ready,
            "restartCount": cr.restart_count,
            "started": cr.proc is not None and cr.proc.poll() is None,
        }
        running = cr.proc is not None and cr.proc.poll() is None
        if running:
            assert cr.proc is not None
            status["containerID"] = f"local-process://{cr.proc.pid}"
            status["state"] = {"running": {"startedAt": cr.started_at}}
        elif cr.done and cr.last_exit is not None:
            status["state"] = {
                "terminated": {
                    "exitCode": cr.last_exit,
                    "startedAt": cr.started_at,
                    "finishedAt": cr.finished_at,
                    "reason": "Completed" if cr.last_exit == 0 else "Error",
                }
            }
        else:
            state: Json = {"reason": cr.waiting_reason or "ContainerCreating"}
            if cr.waiting_message:
                state["message"] = cr.waiting_message
            status["state"] = {"waiting": state}
        if cr.last_exit is not None and not cr.done:
            status["lastState"] = {
                "terminated": {
                    "exitCode": cr.last_exit,
                    "startedAt": cr.started_at,
                    "finishedAt": cr.finished_at,
                    "reason": "Completed" if cr.last_exit == 0 else "Error",
                }
            }
        return status

    def _report_status(self, run: PodRun, spec: Json) -> None:
        with run.status_lock:
            self._report_status_locked(run, spec)

    def _report_status_locked(self, run: PodRun, spec: Json) -> None:
        if run.stopped.is_set():
            return
        with run.lock:
            containers = list(run.containers.values())
            all_done = bool(containers) and all(c.done for c in containers)
            if all_done:
                phase = "Succeeded" if all(c.last_exit == 0 for c in containers) else "Failed"
            elif any(c.proc is not None for c in containers):
                phase = "Running"
            else:
                phase = "Pending"
            ready = (not all_done) and bool(containers) and all(c.ready for c in containers)
            ts = now_iso()

            def cond(kind: str, value: bool) -> Json:
                return {
                    "type": kind,
                    "status": "True" if value else "False",
                    "lastTransitionTime": ts,
                    "lastProbeTime": None,
                }

            body = {
                "status": {
                    "phase": phase,
                    "hostIP": "127.0.0.1",
                    "hostIPs": [{"ip": "127.0.0.1"}],
                    "podIP": run.ip,
                    "podIPs": [{"ip": run.ip}],
                    "startTime": run.start_time,
                    "conditions": [
                        cond("PodScheduled", True),
                        cond("Initialized", True),
                        cond("ContainersReady", ready),
                        cond("Ready", ready),
                    ],
                    "containerStatuses": [self._container_status(c) for c in containers],
                }
            }
        try:
            self.core.patch_namespaced_pod_status(run.name, run.namespace, body)
        except ApiException as exc:
            if exc.status != 404:
                self._error(f"status {run.namespace}/{run.name}: {exc.status} {exc.reason}")

    # ------------------------------------------------------------------ termination
    def _kill_pod_processes(self, run: PodRun, grace: float, record: bool) -> None:
        with run.lock:
            run.terminating = True
            run.stopped.set()
            procs = [(c, c.proc) for c in run.containers.values() if c.proc is not None]
        live = [(c, p) for c, p in procs if p.poll() is None]
        if live and record:
            with self._lock:
                self.sigterm_log.append(run.key)
        for _, p in live:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        killed = False
        for _, p in live:
            try:
                p.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                killed = True
                p.kill()
                p.wait(timeout=10)
        for _, p in procs:
            # clean up anything the container left behind in its session (by process group)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, signal.SIGKILL)
        if killed and record:
            with self._lock:
                self.sigkill_log.append(run.key)

    def _terminate(self, run: PodRun, grace: float, delete: bool) -> None:
        self._event(f"terminating {run.namespace}/{run.name} (grace {grace}s)")
        if self.terminate_delay:
            self._stop.wait(self.terminate_delay)
        self._kill_pod_processes(run, grace, record=True)
        if delete:
            self._force_delete(run.namespace, run.name, run.uid)
        with self._lock:
            self._pods.pop(run.uid, None)
        self.ip_pool.release(run.ip)
