# The kubernetes client marks every model field Optional; these tests read fields the API
# server and the kubelet always set for a running pod.
# mypy: disable-error-code="union-attr, arg-type"
"""The ``node`` tier: tests that need a real kubelet, containerd and the built images.

Fixtures: ``node_cluster`` (session: the whole cluster of ``tests/node/cluster.py``),
``node_operator`` (session: ``helm install`` of the chart with the operator running as a
pod from the built image), ``node_namespace`` and ``node_dsn`` (per test).

Where the node cannot run (not root, no cgroups, a missing package) the tier says why:
in the header of the run, in the pytest summary, and on each of its tests. Under CI
(``CI=true``) that is a failure, never a skip: CI runs as root on a machine that can run
it, so a missing piece there is a broken pipeline.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from tests.kube.fixtures import fresh_namespace

from .cluster import (
    NodeCluster,
    OperatorRelease,
    install_operator,
    start_cluster,
    stop_cluster,
    uninstall_operator,
)
from .realnode import why_not

MARKER = "node"
#: Seconds a node test may take, its share of the session's set-up (builds, node
#: start-up) included.
NODE_TEST_TIMEOUT = 900
_STATE: dict[str, object] = {"why_not": None, "timings": {}}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    node_items = [item for item in items if item.get_closest_marker(MARKER)]
    if not node_items:
        return
    reason = why_not()
    _STATE["why_not"] = reason
    for item in node_items:
        if item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(NODE_TEST_TIMEOUT))
        if reason is not None and os.environ.get("CI") != "true":
            item.add_marker(pytest.mark.skip(reason=f"node tier NOT RUN here: {reason}"))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    reason = _STATE["why_not"]
    if reason is not None:
        terminalreporter.section("node tier", sep="=", red=True, bold=True)
        terminalreporter.line(f"node tier NOT RUN on this machine: {reason}", red=True)
    elif _STATE["timings"]:
        timings = _STATE["timings"]
        assert isinstance(timings, dict)
        terminalreporter.section("node tier", sep="-")
        terminalreporter.line(
            "real node: " + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items())
        )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    cluster = _STATE.get("cluster")
    if report.failed and isinstance(cluster, NodeCluster) and item.get_closest_marker(MARKER):
        report.sections.append(("real node logs", cluster.node.log_tails()))
        report.sections.append(("control plane logs", cluster.control_plane.log_tails()))
    return report


@pytest.fixture(scope="session")
def node_cluster() -> Iterator[NodeCluster]:
    """The real node, its control plane and PostgreSQL (``tests/node/cluster.py``)."""
    reason = why_not()
    if reason is not None:
        pytest.fail(f"node tier cannot run on this machine: {reason}", pytrace=False)
    keep = os.environ.get("SLOTFLEET_KEEP_KUBE_DIR") == "1"
    work = Path(tempfile.mkdtemp(prefix="slotfleet-node-"))
    cluster = start_cluster(work)
    _STATE["cluster"] = cluster
    _STATE["timings"] = cluster.timings
    try:
        yield cluster
    finally:
        _STATE.pop("cluster", None)
        problems = stop_cluster(cluster, keep=keep)
        if problems:
            pytest.fail(
                "the real node did not leave the host as it found it:\n" + "\n".join(problems),
                pytrace=False,
            )


@pytest.fixture(scope="session")
def node_operator(node_cluster: NodeCluster) -> Iterator[OperatorRelease]:
    """``helm install`` of charts/slotfleet: the operator runs from the built image,
    watching every namespace (the chart's defaults but the image)."""
    release = install_operator(node_cluster)
    yield release
    uninstall_operator(node_cluster, release)


@pytest.fixture
def node_namespace(
    node_cluster: NodeCluster, node_operator: OperatorRelease, request: pytest.FixtureRequest
) -> Iterator[str]:
    """A fresh namespace on the real node's cluster (whose operator watches it), deleted
    after the test."""
    with fresh_namespace(node_cluster.admin.api_client, request) as name:
        yield name


@pytest.fixture
def node_dsn(node_cluster: NodeCluster) -> str:
    """A fresh database that pods reach on the node's gateway (password auth)."""
    return node_cluster.database.create()
