"""The API server, with the generated CRD, refuses what the models refuse, in the same
words (the table is ``tests/queue_cases.py``; ``tests/unit/test_queue_validation.py``
runs it through the models), and accepts a Queue that uses every pod-template field."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.queue_cases import CASES, merged
from tests.unit.test_worker_pod import FULL

from .fixtures import KubeAdmin
from .operator_helpers import kubectl, queue_manifest

pytestmark = pytest.mark.kube


def apply(admin: KubeAdmin, namespace: str, name: str, spec: dict[str, Any]) -> tuple[int, str]:
    manifest = queue_manifest(name)
    manifest["spec"] = spec
    proc = kubectl(
        admin, "apply", "-n", namespace, "-f", "-", stdin=json.dumps(manifest), check=False
    )
    return proc.returncode, proc.stderr


def test_the_api_server_refuses_every_invalid_case_with_its_message(
    kube_admin: KubeAdmin, namespace: str, queue_crd: str
) -> None:
    base = queue_manifest("base")["spec"]
    assert apply(kube_admin, namespace, "base", base)[0] == 0
    failures = []
    for case in CASES:
        code, stderr = apply(kube_admin, namespace, f"q-{case.name}", merged(base, case.patch))
        if code == 0 or case.api not in stderr:
            failures.append(f"{case.name}: rc={code} {stderr.strip()[:400]}")
    assert not failures, "\n".join(failures)


def test_unquoted_off_is_refused_by_the_api_server_as_a_boolean(
    kube_admin: KubeAdmin, namespace: str, queue_crd: str
) -> None:
    """What kubectl sends for ``mode: off`` as a user types it (YAML 1.1: false)."""
    text = (
        "apiVersion: slotfleet.dev/v1alpha1\nkind: Queue\nmetadata: {name: unquoted}\n"
        "spec:\n  store: {secretRef: {name: db}}\n  autoscaling:\n    mode: off\n"
    )
    proc = kubectl(kube_admin, "apply", "-n", namespace, "-f", "-", stdin=text, check=False)
    assert proc.returncode != 0
    assert 'spec.autoscaling.mode: Invalid value: "boolean"' in proc.stderr
    quoted = text.replace("mode: off", 'mode: "off"')
    kubectl(kube_admin, "apply", "-n", namespace, "-f", "-", stdin=quoted)


def test_a_queue_using_every_pod_field_is_accepted(
    kube_admin: KubeAdmin, namespace: str, queue_crd: str
) -> None:
    code, stderr = apply(kube_admin, namespace, "full", FULL)
    assert code == 0, stderr
