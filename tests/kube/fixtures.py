"""pytest fixtures for the kube tier.

Import them into a conftest, e.g. in ``tests/conftest.py``::

    from tests.kube.fixtures import (  # noqa: F401
        control_plane, kube_admin, kube_bin_dir, namespace, test_node,
    )

Session-scoped objects are module-level singletons, so importing the fixtures into more
than one conftest still starts one control plane per test session.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from .controlplane import ControlPlane, ensure_binaries
from .testnode import TestNode

_SESSION: dict[str, object] = {}
#: kube-controller-manager's HPA sync period in the kube tier (its default is 15 s): an
#: HPA test waits for passes of the real HPA controller, and bench/autoscale.py measures
#: with the default.
HPA_SYNC_PERIOD_SECONDS = 5.0


class LogSource(Protocol):
    """Something with process logs worth showing when a kube test fails."""

    def log_tails(self, lines: int = 40) -> str: ...


#: things whose log tails are shown when a kube test fails (see tests/kube/conftest.py)
LOG_SOURCES: list[LogSource] = []


@dataclass(frozen=True)
class KubeAdmin:
    """Admin access to the test control plane."""

    kubeconfig: Path
    api_client: client.ApiClient
    server: str
    ca_file: Path


def api_client_for(kubeconfig: Path) -> client.ApiClient:
    """A fresh ``kubernetes.client.ApiClient`` for a kubeconfig file."""
    configuration = client.Configuration()
    config.load_kube_config(  # type: ignore[no-untyped-call]
        config_file=str(kubeconfig), client_configuration=configuration
    )
    return client.ApiClient(configuration)


@pytest.fixture(scope="session")
def kube_bin_dir() -> Path:
    """Directory with etcd, kube-apiserver, kube-controller-manager and helm.

    Runs ``tools/k8s/build.sh`` when a binary is missing; fails (never skips) when that is
    impossible.
    """
    return ensure_binaries()


@pytest.fixture(scope="session")
def control_plane(kube_bin_dir: Path) -> Iterator[ControlPlane]:
    """A running etcd + kube-apiserver + kube-controller-manager, shared by the session."""
    existing = _SESSION.get("control_plane")
    if isinstance(existing, ControlPlane):
        yield existing
        return
    work = Path(tempfile.mkdtemp(prefix="slotfleet-kube-"))
    cp = ControlPlane(bin_dir=kube_bin_dir, work_dir=work, hpa_sync_period=HPA_SYNC_PERIOD_SECONDS)
    cp.start()
    _SESSION["control_plane"] = cp
    LOG_SOURCES.append(cp)
    try:
        yield cp
    finally:
        cp.stop()
        _SESSION.pop("control_plane", None)
        LOG_SOURCES.remove(cp)
        if os.environ.get("SLOTFLEET_KEEP_KUBE_DIR") != "1":
            shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="session")
def kube_admin(control_plane: ControlPlane) -> KubeAdmin:
    """Admin kubeconfig path and an ApiClient (user ``admin``, group ``system:masters``)."""
    existing = _SESSION.get("kube_admin")
    if isinstance(existing, KubeAdmin) and existing.server == control_plane.server:
        return existing
    admin = KubeAdmin(
        kubeconfig=control_plane.admin_kubeconfig,
        api_client=api_client_for(control_plane.admin_kubeconfig),
        server=control_plane.server,
        ca_file=control_plane.ca_file,
    )
    _SESSION["kube_admin"] = admin
    return admin


@pytest.fixture(scope="session")
def test_node(control_plane: ControlPlane, kube_admin: KubeAdmin) -> Iterator[TestNode]:
    """The process-backed test node: binds pending pods and runs them as local processes."""
    existing = _SESSION.get("test_node")
    if isinstance(existing, TestNode):
        yield existing
        return
    node = TestNode(
        api_client_for(kube_admin.kubeconfig),
        server=control_plane.server,
        ca_file=control_plane.ca_file,
        work_dir=control_plane.work_dir / "node",
    )
    node.start()
    _SESSION["test_node"] = node
    LOG_SOURCES.append(node)
    try:
        yield node
    finally:
        node.stop()
        _SESSION.pop("test_node", None)
        LOG_SOURCES.remove(node)


@contextlib.contextmanager
def fresh_namespace(api: client.ApiClient, request: pytest.FixtureRequest) -> Iterator[str]:
    """A namespace named after the test, deleted (without waiting) afterwards
    (``SLOTFLEET_KEEP_NAMESPACES=1`` keeps it)."""
    base = "".join(ch if ch.isalnum() else "-" for ch in request.node.name.lower())
    name = f"{base[:40].strip('-')}-{uuid.uuid4().hex[:6]}"
    core = client.CoreV1Api(api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    try:
        yield name
    finally:
        if os.environ.get("SLOTFLEET_KEEP_NAMESPACES") != "1":
            try:
                core.delete_namespace(name)
            except ApiException as exc:
                if exc.status != 404:
                    raise


@pytest.fixture
def namespace(kube_admin: KubeAdmin, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace, deleted (without waiting) after the test."""
    with fresh_namespace(kube_admin.api_client, request) as name:
        yield name
