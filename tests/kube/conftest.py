"""Kube tier hooks: the ``kube`` marker and process log tails on failure."""

from __future__ import annotations

from collections.abc import Generator

import pytest

from .fixtures import (  # noqa: F401 - fixtures for tests in this directory
    LOG_SOURCES,
    control_plane,
    kube_admin,
    kube_bin_dir,
    namespace,
    test_node,
)
from .metrics_pipeline import metrics_pipeline  # noqa: F401 - Prometheus + prometheus-adapter
from .operator_helpers import operator, queue_crd  # noqa: F401 - fixtures for the tests here


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "kube: needs the real Kubernetes control plane built by tools/k8s/build.sh"
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed and LOG_SOURCES:
        for source in LOG_SOURCES:
            report.sections.append((f"kube logs: {type(source).__name__}", source.log_tails()))
    return report
