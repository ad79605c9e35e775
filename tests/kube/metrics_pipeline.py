"""The metrics pipeline a Queue's HPA scales on, for real: Prometheus, prometheus-adapter and
the aggregated metrics APIs of the test control plane.

* **Prometheus** (Debian's 2.42, found by ``tests/fixtures/prometheus.py``) scrapes every
  worker pod (label ``app.kubernetes.io/name=slotfleet-worker``) at its ``status.podIP``
  and container port ``metrics``, with the target labels the Prometheus Operator gives a
  PodMonitor's targets (``namespace``, ``pod``), and the operators' ``/metrics`` with
  ``honor_labels`` (as the chart's operator PodMonitor: their ``namespace`` label names
  each Queue's namespace). Debian's 2.42 has no Kubernetes service discovery, so
  :class:`TargetFeeder` lists the pods from the API twice a second and writes a
  ``file_sd_configs`` file.
* **prometheus-adapter** v0.12.0 (``tools/prometheus-adapter/build.sh``) runs as a local
  process with the container args of the Deployment in
  ``examples/prometheus-adapter/adapter.yaml`` (the manifest docs/operations.md shows);
  only the flags in :data:`LOCAL_FLAGS` are replaced, and :data:`IN_CLUSTER_FLAGS` stand
  for what a pod's in-cluster config would give. Its ``--config`` is the slotfleet chart's
  rules ConfigMap, rendered by ``helm template``, applied and read back from the API server
  (what a volume mount would see); its serving certificate comes from
  ``examples/prometheus-adapter/serving-cert.sh``. It acts as ServiceAccount
  ``monitoring/prometheus-adapter``, with a token from the TokenRequest API and the RBAC of
  that manifest, applied as written.
* **APIServices** ``v1beta2``/``v1beta1.custom.metrics.k8s.io`` and
  ``v1beta1.external.metrics.k8s.io`` from the same manifest, with ``CA_BUNDLE`` replaced
  by the CA (as docs/operations.md does with ``sed``) and their Service
  ``monitoring/prometheus-adapter`` replaced by one of type ``ExternalName``
  (``localhost``) on the adapter's port: the aggregation layer proxies to it on loopback
  (there is no kube-proxy). The API server has the front-proxy flags
  (``tests/kube/controlplane.py``).

The parts that need no cluster are in ``tests/kube/metrics_parts.py``. Everything is
started by :meth:`MetricsPipeline.start` and stopped by PID in
:meth:`MetricsPipeline.stop`, which first deletes the APIServices, so the API server's
discovery never lists an API whose server is gone. What this module is not: a kubelet's
view of pods (the test node's pods are processes on 127.0.x.y) or a Prometheus Operator.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.fixtures.prometheus import PrometheusServer, find_prometheus

from .controlplane import (
    ControlPlane,
    ControlPlaneError,
    ManagedProcess,
    free_port,
    write_kubeconfig,
)
from .fixtures import LOG_SOURCES, KubeAdmin
from .helm import Helm, kubectl, one
from .metrics_parts import (
    ADAPTER,
    ADAPTER_MANIFEST,
    APISERVICES,
    IN_CLUSTER_FLAGS,
    MAX_AGE_FLAG,
    NAMESPACE,
    RELIST_INTERVAL,
    RULES_RELEASE,
    SERVING_CERT_SCRIPT,
    TargetFeeder,
    adapter_args,
    adapter_binary,
    manifest_objects,
    write_atomically,
)

Json = dict[str, Any]

# ------------------------------------------------------------------ the pipeline


@dataclass
class MetricsPipeline:
    """Prometheus + prometheus-adapter + APIServices for one control plane."""

    control_plane: ControlPlane
    admin: KubeAdmin
    work_dir: Path
    scrape_interval: float = 1.0
    prometheus: PrometheusServer | None = None
    adapter: ManagedProcess | None = None
    feeder: TargetFeeder | None = None
    operators: dict[str, None] = field(default_factory=dict)
    adapter_port: int = 0
    ca_file: Path | None = None
    """The CA of the adapter's serving certificate (the APIServices' caBundle)."""
    rules_config_map: str = ""
    """The chart's rules ConfigMap, as rendered (what the Deployment must mount)."""

    @property
    def operators_file(self) -> Path:
        return self.work_dir / "operators.json"

    # -------------------------------------------------------------- lifecycle
    def start(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        self.work_dir.mkdir(parents=True, exist_ok=True)
        binary = adapter_binary()
        objects = manifest_objects(ADAPTER_MANIFEST.read_text())
        core = client.CoreV1Api(self.admin.api_client)
        try:
            self._ensure_namespace(core)
            rules = self._install_rules(core)
            identity = self._apply_identity(objects)
            self._start_prometheus(core)
            self._start_adapter(binary, objects, rules, identity)
            self._register(core)
            self._wait_available(deadline)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """APIServices first (discovery must not list a dead API), then the processes."""
        registration = client.ApiregistrationV1Api(self.admin.api_client)
        for name in APISERVICES:
            try:
                registration.delete_api_service(name)
            except ApiException as exc:
                if exc.status != 404:
                    raise
        if self.adapter is not None:
            self.adapter.stop()
        if self.prometheus is not None:
            self.prometheus.stop()
        if self.feeder is not None:
            self.feeder.stop()

    def scrape_operator(self, address: str) -> None:
        """Scrape an operator's ``/metrics`` at ``host:port`` (honor_labels)."""
        self.operators[address] = None
        write_atomically(self.operators_file, [{"targets": list(self.operators)}])

    def forget_operator(self, address: str) -> None:
        self.operators.pop(address, None)
        entries = [{"targets": list(self.operators)}] if self.operators else []
        write_atomically(self.operators_file, entries)

    def log_tails(self, lines: int = 40) -> str:
        parts = []
        if self.adapter is not None:
            state = "running" if self.adapter.alive() else "exited"
            parts.append(f"===== prometheus-adapter ({state}) =====\n{self.adapter.tail(lines)}")
        if self.prometheus is not None:
            parts.append(f"===== prometheus =====\n{self.prometheus.tail(lines)}")
        if self.feeder is not None and self.feeder.errors:
            parts.append("===== file_sd feeder =====\n" + "\n".join(self.feeder.errors[-10:]))
        return "\n".join(parts)

    # -------------------------------------------------------------- steps
    def _ensure_namespace(self, core: client.CoreV1Api) -> None:
        try:
            core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=NAMESPACE)))
        except ApiException as exc:
            if exc.status != 409:
                raise

    def _install_rules(self, core: client.CoreV1Api) -> Path:
        """The chart's rules ConfigMap, rendered, applied, and read back into a file."""
        helm = Helm.from_bin_dir(self.control_plane.bin_dir, self.work_dir / "helm")
        values = {"prometheusAdapter": {"rules": {"enabled": True, "namespace": NAMESPACE}}}
        docs = helm.template(values, release=RULES_RELEASE, namespace=RULES_RELEASE)
        config_map = one(docs, "ConfigMap")
        self._apply([config_map])
        name = self.rules_config_map = config_map["metadata"]["name"]
        served = core.read_namespaced_config_map(name, NAMESPACE)
        path = self.work_dir / "adapter-config.yaml"
        path.write_text((served.data or {})["config.yaml"])
        return path

    def _apply(self, objects: list[Json]) -> None:
        text = yaml.safe_dump_all(objects)
        kubectl(self.admin.kubeconfig, "apply", "--server-side", "-f", "-", stdin=text)

    def _apply_identity(self, objects: list[Json]) -> Path:
        """The manifest's ServiceAccount and RBAC as written; a kubeconfig with a token of
        that ServiceAccount (what a pod's projected token would be)."""
        identity = [o for o in objects if o["kind"] not in ("Deployment", "Service", "APIService")]
        self._apply(identity)
        core = client.CoreV1Api(self.admin.api_client)
        request = client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=6 * 3600)
        )
        answer = core.create_namespaced_service_account_token(ADAPTER, NAMESPACE, request)
        assert answer.status is not None
        return write_kubeconfig(
            self.work_dir / "adapter.kubeconfig",
            self.control_plane.server,
            self.control_plane.ca_file,
            ADAPTER,
            str(answer.status.token),
        )

    def _start_prometheus(self, core: client.CoreV1Api) -> None:
        workers_file = self.work_dir / "workers.json"
        write_atomically(self.operators_file, [])
        self.feeder = TargetFeeder(core, workers_file)
        self.feeder.start()
        self.prometheus = PrometheusServer(
            find_prometheus(),
            self.work_dir / "prometheus",
            [],
            scrape_interval=self.scrape_interval,
            scrape_configs=[
                {
                    "job_name": "slotfleet-workers",
                    "metrics_path": "/metrics",
                    "file_sd_configs": [{"files": [str(workers_file)]}],
                },
                {
                    "job_name": "slotfleet-operator",
                    "metrics_path": "/metrics",
                    "honor_labels": True,
                    "file_sd_configs": [{"files": [str(self.operators_file)]}],
                },
            ],
        )
        self.prometheus.start()

    def _serving_cert(self) -> tuple[Path, Path, Path]:
        """A CA and a serving certificate for ``prometheus-adapter.monitoring.svc``, made by
        the script docs/operations.md gives users."""
        pki = self.work_dir / "pki"
        pki.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(
            ["bash", str(SERVING_CERT_SCRIPT)], cwd=pki, capture_output=True, text=True
        )
        if proc.returncode != 0:
            raise ControlPlaneError(f"{SERVING_CERT_SCRIPT} failed:\n{proc.stderr}")
        return pki / "ca.crt", pki / "tls.crt", pki / "tls.key"

    def _start_adapter(
        self, binary: Path, objects: list[Json], rules: Path, identity: Path
    ) -> None:
        assert self.prometheus is not None
        self.ca_file, cert, key = self._serving_cert()
        self.adapter_port = free_port()
        deployment = next(o for o in objects if o["kind"] == "Deployment")
        volumes = deployment["spec"]["template"]["spec"]["volumes"]
        mounted = next(v["configMap"]["name"] for v in volumes if "configMap" in v)
        assert mounted == self.rules_config_map, (mounted, self.rules_config_map)
        args = adapter_args(
            deployment,
            {
                "--config": str(rules),
                "--prometheus-url": self.prometheus.url + "/",
                "--secure-port": str(self.adapter_port),
                "--tls-cert-file": str(cert),
                "--tls-private-key-file": str(key),
                "--metrics-relist-interval": RELIST_INTERVAL,
            },
        )
        args.append(MAX_AGE_FLAG)
        args += [f"{flag}={identity}" for flag in IN_CLUSTER_FLAGS[:3]]
        args.append("--bind-address=127.0.0.1")
        env = {k: v for k, v in os.environ.items() if not k.startswith("KUBE")}
        self.adapter = ManagedProcess(ADAPTER, [str(binary), *args], self.work_dir / "adapter.log")
        self.adapter.start(env)

    def _register(self, core: client.CoreV1Api) -> None:
        """The manifest's APIServices (caBundle and port filled in) behind an
        ExternalName Service that points at the adapter on loopback."""
        service = client.V1Service(
            metadata=client.V1ObjectMeta(name=ADAPTER, namespace=NAMESPACE),
            spec=client.V1ServiceSpec(
                type="ExternalName",
                external_name="localhost",
                ports=[client.V1ServicePort(name="https", port=self.adapter_port)],
            ),
        )
        try:
            core.create_namespaced_service(NAMESPACE, service)
        except ApiException as exc:
            if exc.status != 409:
                raise
            core.replace_namespaced_service(ADAPTER, NAMESPACE, service)
        assert self.ca_file is not None
        # what docs/operations.md does with sed: the CA, base64, for every CA_BUNDLE
        bundle = base64.b64encode(self.ca_file.read_bytes()).decode()
        text = ADAPTER_MANIFEST.read_text().replace("CA_BUNDLE", bundle)
        services = [o for o in manifest_objects(text) if o["kind"] == "APIService"]
        for obj in services:
            assert obj["spec"]["caBundle"] == bundle, obj["metadata"]["name"]
            obj["spec"]["service"]["port"] = self.adapter_port
        assert sorted(o["metadata"]["name"] for o in services) == sorted(APISERVICES)
        self._apply(services)

    def _wait_available(self, deadline: float) -> None:
        registration = client.ApiregistrationV1Api(self.admin.api_client)
        waiting: dict[str, str] = dict.fromkeys(APISERVICES, "not seen")
        while waiting:
            assert self.adapter is not None
            if not self.adapter.alive():
                raise ControlPlaneError(f"prometheus-adapter exited:\n{self.adapter.tail(60)}")
            for name in list(waiting):
                found = registration.read_api_service(name)
                conditions = (found.status and found.status.conditions) or []
                available = next((c for c in conditions if c.type == "Available"), None)
                if available is not None and available.status == "True":
                    del waiting[name]
                elif available is not None:
                    waiting[name] = f"{available.reason}: {available.message}"
            if waiting and time.monotonic() > deadline:
                raise ControlPlaneError(
                    f"APIServices not Available: {waiting}\n{self.log_tails(60)}"
                )
            time.sleep(0.3)


def get_raw(admin: KubeAdmin, path: str) -> Json | None:
    """``kubectl get --raw PATH``: through the API server, and so the aggregation layer;
    ``None`` when it fails (e.g. a metric the adapter has not listed yet)."""
    proc = kubectl(admin.kubeconfig, "get", "--raw", path, check=False)
    if proc.returncode != 0:
        return None
    answer = json.loads(proc.stdout)
    assert isinstance(answer, dict), answer
    return answer


@pytest.fixture(scope="module")
def metrics_pipeline(
    control_plane: ControlPlane, kube_admin: KubeAdmin, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MetricsPipeline]:
    """Prometheus + prometheus-adapter serving the custom and external metrics APIs, for
    the tests of one module; torn down (APIServices deleted, processes stopped by PID)
    after them."""
    pipeline = MetricsPipeline(control_plane, kube_admin, tmp_path_factory.mktemp("metrics"))
    pipeline.start()
    LOG_SOURCES.append(pipeline)
    try:
        yield pipeline
    finally:
        LOG_SOURCES.remove(pipeline)
        pipeline.stop()
