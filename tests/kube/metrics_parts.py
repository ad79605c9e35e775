"""The pieces of the metrics pipeline (``tests/kube/metrics_pipeline.py``) that need no
running cluster: where things are, the adapter binary, the example manifest's objects
and args, and the file_sd targets of the worker pods with the thread that keeps them
current. What this module is not: it starts no process but the adapter build.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client

from .controlplane import ControlPlaneError

REPO = Path(__file__).resolve().parents[2]
ADAPTER_MANIFEST = REPO / "examples" / "prometheus-adapter" / "adapter.yaml"
SERVING_CERT_SCRIPT = REPO / "examples" / "prometheus-adapter" / "serving-cert.sh"
BUILD_SCRIPT = REPO / "tools" / "prometheus-adapter" / "build.sh"
NAMESPACE = "monitoring"
ADAPTER = "prometheus-adapter"
#: The name the aggregation layer expects on the adapter's serving certificate.
SERVING_NAME = f"{ADAPTER}.{NAMESPACE}.svc"
#: The chart release whose rules ConfigMap the Deployment mounts (docs/operations.md).
RULES_RELEASE = "slotfleet"
WORKER_SELECTOR = "app.kubernetes.io/name=slotfleet-worker"
METRICS_PORT_NAME = "metrics"
APISERVICES = (
    "v1beta2.custom.metrics.k8s.io",
    "v1beta1.custom.metrics.k8s.io",
    "v1beta1.external.metrics.k8s.io",
)
#: Flags of the example Deployment replaced here, and why: files a pod would mount, the
#: addresses of this loopback cluster, and a shorter relist (the adapter looks for new
#: metric names every interval; 1 min would make the first test wait for it).
LOCAL_FLAGS = (
    "--config",
    "--prometheus-url",
    "--secure-port",
    "--tls-cert-file",
    "--tls-private-key-file",
    "--metrics-relist-interval",
)
RELIST_INTERVAL = "5s"
#: ... and, with it, the look-back for series kept at the example's: ``--metrics-max-age``
#: defaults to the relist interval, and a metric whose last sample is older than that is
#: not listed (5 s would lose every metric scraped less often than every 5 s).
MAX_AGE_FLAG = "--metrics-max-age=1m"
#: Flags added here for what a pod gets from its in-cluster config: the ServiceAccount's
#: token and the API server's address (here a kubeconfig), and its own address.
IN_CLUSTER_FLAGS = (
    "--lister-kubeconfig",
    "--authentication-kubeconfig",
    "--authorization-kubeconfig",
    "--bind-address",
)


Json = dict[str, Any]


# ------------------------------------------------------------------ the adapter binary


def adapter_binary() -> Path:
    """``tools/prometheus-adapter/build.sh``'s adapter, built when missing; a build that
    cannot happen (no Go, no module proxy) is an error, never a skip."""
    override = os.environ.get("SLOTFLEET_ADAPTER_BIN_DIR")
    if override:
        directory = Path(override)
    else:
        out = subprocess.run(
            ["bash", str(BUILD_SCRIPT), "--print-bin-dir"],
            check=True,
            capture_output=True,
            text=True,
        )
        directory = Path(out.stdout.strip())
    binary = directory / "adapter"
    if binary.is_file() and (directory / ".stamp").is_file():
        return binary
    if shutil.which("go") is None:
        raise ControlPlaneError(
            f"prometheus-adapter is missing from {directory} and Go is not installed, so "
            "tools/prometheus-adapter/build.sh cannot build it"
        )
    proc = subprocess.run(["bash", str(BUILD_SCRIPT)], capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not binary.is_file():
        raise ControlPlaneError(
            "tools/prometheus-adapter/build.sh failed (is the Go module proxy reachable?):\n"
            + (proc.stdout + proc.stderr)[-4000:]
        )
    return binary


# ------------------------------------------------------------------ pure helpers


def manifest_objects(text: str) -> list[Json]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def adapter_args(deployment: Json, replacements: Mapping[str, str]) -> list[str]:
    """The Deployment's container args with each ``--flag=value`` in ``replacements``
    given the new value; every flag replaced must be there."""
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    args: list[str] = []
    seen: set[str] = set()
    for arg in container["args"]:
        flag = arg.split("=", 1)[0]
        if flag in replacements:
            seen.add(flag)
            arg = f"{flag}={replacements[flag]}"
        args.append(arg)
    missing = set(replacements) - seen
    assert not missing, f"the example Deployment has no {sorted(missing)}"
    return args


def pod_targets(pods: list[Json]) -> list[Json]:
    """``file_sd`` entries for running worker pods: ``podIP:<metrics port>``, labelled
    ``namespace`` and ``pod`` (the labels the adapter rules map to resources)."""
    entries = []
    for pod in pods:
        meta, spec, status = pod["metadata"], pod.get("spec") or {}, pod.get("status") or {}
        ip = status.get("podIP")
        if not ip or status.get("phase") != "Running":
            continue
        ports = [
            p["containerPort"]
            for c in spec.get("containers") or []
            for p in c.get("ports") or []
            if p.get("name") == METRICS_PORT_NAME
        ]
        if ports:
            entries.append(
                {
                    "targets": [f"{ip}:{ports[0]}"],
                    "labels": {"namespace": meta["namespace"], "pod": meta["name"]},
                }
            )
    return sorted(entries, key=lambda e: (e["labels"]["namespace"], e["labels"]["pod"]))


def write_atomically(path: Path, entries: list[Json]) -> None:
    """Replace a file_sd file in one rename (Prometheus never reads half of one)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(entries, indent=1))
    os.replace(tmp, path)


# ------------------------------------------------------------------ targets


class TargetFeeder:
    """Keeps the workers' file_sd file in step with the API (a list every ``interval``)."""

    def __init__(self, api: client.CoreV1Api, path: Path, interval: float = 0.5) -> None:
        self.api = api
        self.path = path
        self.interval = interval
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="file-sd", daemon=True)
        self._last: list[Json] | None = None

    def start(self) -> None:
        write_atomically(self.path, [])
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                pods = self.api.list_pod_for_all_namespaces(label_selector=WORKER_SELECTOR)
                raw = self.api.api_client.sanitize_for_serialization(pods)
                entries = pod_targets(raw["items"])
                if entries != self._last:
                    write_atomically(self.path, entries)
                    self._last = entries
            except Exception as exc:  # keep feeding; the failure report shows these
                self.errors.append(f"{type(exc).__name__}: {exc}")
            self._stop.wait(self.interval)
