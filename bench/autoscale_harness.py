"""The environments ``bench/autoscale.py`` measures in, started by PID and stopped in
reverse order: the test tier's control plane with the process-backed test node (and, for
HPA mode, the metrics pipeline), or the real node's cluster. What this module is not: it
runs no burst and computes no figure.
"""

from __future__ import annotations

import argparse
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import psycopg
from kubernetes import client

from bench import pg as pgmod
from tests.kube.controlplane import ControlPlane, ensure_binaries, free_port
from tests.kube.fixtures import KubeAdmin, api_client_for
from tests.kube.metrics_pipeline import MetricsPipeline
from tests.kube.operator_helpers import (
    CRD_FILE,
    OperatorProcess,
    create_secret,
    kubectl,
    queue_manifest,
)
from tests.kube.testnode import TestNode
from tests.node.cluster import NodeCluster, install_operator, start_cluster, stop_cluster
from tests.node.helpers import node_queue


def modes(args: argparse.Namespace) -> list[str]:
    default = "operator" if args.node == "real" else "operator,hpa"
    text = args.modes or default
    chosen = [m.strip() for m in text.split(",") if m.strip()]
    unknown = set(chosen) - {"operator", "hpa"}
    if unknown or not chosen:
        raise SystemExit(f"--modes: expected operator and/or hpa, not {text!r}")
    if args.node == "real" and "hpa" in chosen:
        raise SystemExit("--node real runs operator mode only (no metrics pipeline there)")
    return chosen


class Harness:
    """The control plane, the test node, PostgreSQL, the operator (serving its Queue
    gauges) and, for HPA mode, the metrics pipeline; started by PID and stopped in reverse
    order."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work = Path(tempfile.mkdtemp(prefix="slotfleet-bench-autoscale-"))
        self.namespace = "bench-autoscale"
        self.pg: pgmod.Postgres | None = None
        self.cp: ControlPlane | None = None
        self.node: TestNode | None = None
        self.operator: OperatorProcess | None = None
        self.admin: KubeAdmin | None = None
        self.pipeline: MetricsPipeline | None = None
        self.rng = random.Random(args.seed)

    def start(self) -> KubeAdmin:
        self.pg = pgmod.start()
        self.cp = ControlPlane(
            bin_dir=ensure_binaries(),
            work_dir=self.work / "kube",
            hpa_sync_period=self.args.hpa_sync_period,
        )
        self.cp.start()
        admin = self.admin = KubeAdmin(
            kubeconfig=self.cp.admin_kubeconfig,
            api_client=api_client_for(self.cp.admin_kubeconfig),
            server=self.cp.server,
            ca_file=self.cp.ca_file,
        )
        self.node = TestNode(
            api_client_for(self.cp.admin_kubeconfig),
            server=self.cp.server,
            ca_file=self.cp.ca_file,
            work_dir=self.work / "node",
        )
        self.node.start()
        kubectl(admin, "apply", "--server-side", "--force-conflicts", "-f", str(CRD_FILE))
        kubectl(
            admin,
            "wait",
            "--for=condition=Established",
            "--timeout=30s",
            "crd/queues.slotfleet.dev",
        )
        client.CoreV1Api(admin.api_client).create_namespace(
            client.V1Namespace(metadata=client.V1ObjectMeta(name=self.namespace))
        )
        create_secret(admin, self.namespace, self.pg.dsn)
        metrics_port = free_port()
        self.operator = OperatorProcess(
            admin,
            self.namespace,
            self.work / "operator.log",
            interval=self.args.operator_interval,
            metrics_port=metrics_port,
        )
        self.operator.start()
        if "hpa" in modes(self.args):
            self.pipeline = MetricsPipeline(
                self.cp, admin, self.work / "metrics", scrape_interval=self.args.scrape_interval
            )
            self.pipeline.start()
            self.pipeline.scrape_operator(f"127.0.0.1:{metrics_port}")
        return admin

    @property
    def dsn(self) -> str:
        assert self.pg is not None
        return self.pg.dsn

    @property
    def monitor_dsn(self) -> str:
        assert self.pg is not None
        return self.pg.admin_dsn

    @property
    def pg_version(self) -> str:
        assert self.pg is not None
        return self.pg.version

    def manifest(self, name: str, **spec: Any) -> dict[str, Any]:
        return queue_manifest(name, **spec)

    def stop(self) -> None:
        if self.pipeline is not None:
            self.pipeline.stop()
        if self.operator is not None:
            self.operator.stop()
        if self.node is not None:
            self.node.stop()
        if self.cp is not None:
            self.cp.stop()
        if self.pg is not None:
            pgmod.stop(self.pg)
        shutil.rmtree(self.work, ignore_errors=True)


class RealNodeHarness:
    """The real node's cluster (``tests/node/cluster.py``) with the operator installed by
    helm as a pod from the built image; torn down by PID, the host reverted."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work = Path(tempfile.mkdtemp(prefix="slotfleet-bench-autoscale-node-"))
        self.namespace = "bench-autoscale"
        self.cluster: NodeCluster | None = None
        self._dsn = ""
        self.rng = random.Random(args.seed)

    def start(self) -> KubeAdmin:
        self.cluster = start_cluster(self.work)
        install_operator(self.cluster)
        admin = self.cluster.admin
        client.CoreV1Api(admin.api_client).create_namespace(
            client.V1Namespace(metadata=client.V1ObjectMeta(name=self.namespace))
        )
        self._dsn = self.cluster.database.create()
        create_secret(admin, self.namespace, self._dsn)
        return admin

    @property
    def dsn(self) -> str:
        return self._dsn

    @property
    def monitor_dsn(self) -> str:
        return self._dsn

    @property
    def pg_version(self) -> str:
        with psycopg.connect(self._dsn) as conn:
            row = conn.execute("SHOW server_version").fetchone()
        return str(row[0]) if row else "?"

    def manifest(self, name: str, **spec: Any) -> dict[str, Any]:
        assert self.cluster is not None
        return node_queue(name, self.cluster.images.examples, **spec)

    def stop(self) -> None:
        if self.cluster is not None:
            for problem in stop_cluster(self.cluster):
                print(f"real node teardown: {problem}", flush=True)
