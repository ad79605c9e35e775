"""The metrics pipeline's pure parts (``tests/kube/metrics_parts.py``), and that
docs/operations.md shows what the pipeline runs. No cluster needed."""

from __future__ import annotations

import textwrap
from typing import Any

import pytest

from .metrics_parts import (
    ADAPTER_MANIFEST,
    APISERVICES,
    LOCAL_FLAGS,
    SERVING_CERT_SCRIPT,
    adapter_args,
    manifest_objects,
    pod_targets,
)
from .operator_helpers import REPO

DOCS = REPO / "docs" / "operations.md"


def pod(name: str, *, phase: str = "Running", ip: str | None = "127.0.81.7") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "team-a"},
        "spec": {
            "containers": [
                {"name": "worker", "ports": [{"name": "metrics", "containerPort": 9464}]}
            ]
        },
        "status": {"phase": phase, "podIP": ip},
    }


def test_file_sd_targets_are_running_pods_at_their_metrics_port() -> None:
    no_port = pod("no-port")
    no_port["spec"]["containers"][0]["ports"] = [{"name": "http", "containerPort": 80}]
    pods = [
        pod("b"),
        pod("a", ip="127.0.81.8"),
        pod("starting", phase="Pending"),
        pod("no-ip", ip=None),
        no_port,
    ]
    assert pod_targets(pods) == [
        {"targets": ["127.0.81.8:9464"], "labels": {"namespace": "team-a", "pod": "a"}},
        {"targets": ["127.0.81.7:9464"], "labels": {"namespace": "team-a", "pod": "b"}},
    ]


def deployment() -> dict[str, Any]:
    objects = manifest_objects(ADAPTER_MANIFEST.read_text())
    [found] = [o for o in objects if o["kind"] == "Deployment"]
    return found


def test_adapter_args_replace_only_the_named_flags() -> None:
    args = adapter_args(deployment(), {"--secure-port": "4443"})
    assert "--secure-port=4443" in args
    assert "--metrics-relist-interval=1m" in args
    assert len(args) == len(deployment()["spec"]["template"]["spec"]["containers"][0]["args"])
    with pytest.raises(AssertionError, match="--no-such-flag"):
        adapter_args(deployment(), {"--no-such-flag": "x"})


def test_every_flag_the_fixture_replaces_is_in_the_example() -> None:
    args = adapter_args(deployment(), dict.fromkeys(LOCAL_FLAGS, "x"))
    assert {a.split("=", 1)[0] for a in args} == set(LOCAL_FLAGS)


def test_the_example_registers_three_apiservices_each_needing_the_ca() -> None:
    objects = manifest_objects(ADAPTER_MANIFEST.read_text())
    services = [o for o in objects if o["kind"] == "APIService"]
    assert sorted(o["metadata"]["name"] for o in services) == sorted(APISERVICES)
    assert all(o["spec"]["caBundle"] == "CA_BUNDLE" for o in services)
    assert all(o["spec"]["service"]["name"] == "prometheus-adapter" for o in services)


def test_docs_show_what_the_pipeline_runs() -> None:
    docs = DOCS.read_text()
    text = ADAPTER_MANIFEST.read_text()
    # the adapter's args, as the example Deployment has them
    start = text.index("          args:\n")
    end = text.index("          ports:\n")
    args_block = textwrap.dedent(text[start:end])
    begin = docs.index("   ```yaml\n   args:\n") + len("   ```yaml\n")
    documented = textwrap.dedent(docs[begin : docs.index("   ```\n", begin)])
    assert documented == args_block, "docs/operations.md shows other adapter args"
    # the files the commands name are the ones the fixture uses
    rel = ADAPTER_MANIFEST.relative_to(REPO)
    assert f'sed "s|CA_BUNDLE|$(base64 -w0 ca.crt)|" {rel} | kubectl apply -f -' in docs
    assert f"bash {SERVING_CERT_SCRIPT.relative_to(REPO)}" in docs
    assert "prometheusAdapter.rules.namespace=monitoring" in docs
