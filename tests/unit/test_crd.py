"""The generated Queue CRD: structural, complete, and in step with the checked-in files."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from slotfleet.cli import crds_cmd
from slotfleet.operator.crd import build_crd, render_chart_template, render_crd_yaml

REPO = Path(__file__).resolve().parents[2]


def walk(node: Any, path: str = "") -> list[tuple[str, str, Any]]:
    """(path, key, value) for every key in every dict of ``node``."""
    found: list[tuple[str, str, Any]] = []
    if isinstance(node, dict):
        for key, value in node.items():
            found.append((path, key, value))
            found += walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += walk(value, f"{path}[{i}]")
    return found


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    version = build_crd()["spec"]["versions"][0]
    result: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return result


def test_schema_is_structural_no_refs_titles_or_unions(schema: dict[str, Any]) -> None:
    keys = {key for _, key, _ in walk(schema)}
    assert not keys & {"$ref", "$defs", "anyOf", "oneOf", "allOf", "title"}
    for path, key, value in walk(schema):
        if key == "additionalProperties":
            assert isinstance(value, dict), f"{path}: additionalProperties must be a schema"
        if key in ("exclusiveMinimum", "exclusiveMaximum"):
            assert value is True, path


def test_every_property_has_a_type(schema: dict[str, Any]) -> None:
    """A type everywhere but IntOrString (a CEL rule cannot see an untyped field)."""
    for path, key, value in walk(schema):
        if key == "properties":
            for name, sub in value.items():
                typed = "type" in sub or sub.get("x-kubernetes-int-or-string") is True
                assert typed, f"{path}.{name} has no type"


def test_only_deep_kubernetes_types_keep_unknown_fields(schema: dict[str, Any]) -> None:
    kept = sorted(
        path.replace(".properties", "").replace(".items", "[]")
        for path, key, value in walk(schema)
        if key == "x-kubernetes-preserve-unknown-fields" and value is True
    )
    pod = ".spec.template.spec"
    assert kept == [
        ".spec.livenessProbe",
        ".spec.readinessProbe",
        ".spec.securityContext",
        f"{pod}.affinity",
        f"{pod}.containers[]",
        f"{pod}.initContainers[]",
        f"{pod}.topologySpreadConstraints[]",
        f"{pod}.volumes[]",
    ]


def test_optional_fields_are_nullable_without_null_default(schema: dict[str, Any]) -> None:
    spec = schema["properties"]["spec"]["properties"]
    assert spec["queueName"]["nullable"] is True
    assert "default" not in spec["queueName"]
    assert spec["rateLimit"]["nullable"] is True
    assert spec["rateLimit"]["required"] == ["count"]


def test_cel_rules_and_bounds_are_carried(schema: dict[str, Any]) -> None:
    spec = schema["properties"]["spec"]
    rules = json.dumps(spec)
    assert "self.replicas <= self.autoscaling.maxReplicas" in rules
    assert "self.minReplicas <= self.maxReplicas" in rules
    assert "isQuantity" in rules
    assert schema["x-kubernetes-validations"][0]["rule"].startswith("self.metadata.name.size()")
    props = spec["properties"]
    assert props["executor"]["properties"]["concurrency"] == {
        "type": "integer",
        "description": "Slots per worker pod: jobs one pod runs at once.",
        "default": 10,
        "maximum": 10000,
        "minimum": 1,
    }
    assert props["autoscaling"]["properties"]["targetUtilization"]["exclusiveMinimum"] is True
    assert props["executor"]["properties"]["kind"]["enum"] == ["async", "threads", "processes"]
    assert props["env"]["x-kubernetes-list-type"] == "map"
    assert props["imports"]["maxItems"] == 64
    assert props["store"]["required"] == ["secretRef"]


def test_resources_are_requests_and_limits_of_quantities(schema: dict[str, Any]) -> None:
    resources = schema["properties"]["spec"]["properties"]["resources"]
    assert resources["type"] == "object"
    assert set(resources["properties"]) == {"requests", "limits"}
    amount = resources["properties"]["limits"]["additionalProperties"]
    assert amount["type"] == "string"
    assert amount["x-kubernetes-validations"][0]["rule"] == "isQuantity(self)"
    assert "compareTo" in resources["x-kubernetes-validations"][0]["rule"]


def test_nested_defaults_are_materialized(schema: dict[str, Any]) -> None:
    props = schema["properties"]["spec"]["properties"]
    assert props["executor"]["default"] == {"kind": "async", "concurrency": 10}
    assert props["autoscaling"]["default"]["mode"] == "operator"
    assert props["autoscaling"]["default"]["maxReplicas"] == 10
    assert "default" not in props["store"]  # required, has required fields


def test_descriptions_come_from_docstrings(schema: dict[str, Any]) -> None:
    props = schema["properties"]["spec"]["properties"]
    assert props["paused"]["description"] == (
        "Stop fetching new jobs; running jobs finish. Separate from a pause in the job store "
        "(slotfleet pause): the workers fetch only when neither is in effect."
    )
    assert "\n" not in props["autoscaling"]["properties"]["mode"]["description"]


def test_subresources_names_and_printer_columns() -> None:
    crd = build_crd()
    assert crd["metadata"]["name"] == "queues.slotfleet.dev"
    assert crd["spec"]["names"]["shortNames"] == ["sfq"]
    version = crd["spec"]["versions"][0]
    assert version["subresources"]["status"] == {}
    assert version["subresources"]["scale"] == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }
    columns = {c["name"]: c for c in version["additionalPrinterColumns"]}
    assert list(columns)[:9] == [
        "Replicas",
        "Ready",
        "Busy",
        "Free",
        "Pending",
        "Paused",
        "Mode",
        "Status",
        "Age",
    ]
    assert columns["Status"]["jsonPath"] == '.status.conditions[?(@.type=="Ready")].reason'
    assert columns["Message"]["priority"] == 1


def test_chart_template_is_guarded_and_kept() -> None:
    text = render_chart_template()
    assert text.startswith("{{- if .Values.crds.install }}\n")
    assert text.endswith("{{- end }}\n")
    body = yaml.safe_load("\n".join(text.splitlines()[1:-1]))
    assert body["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    assert body["spec"] == build_crd()["spec"]


def test_checked_in_files_match_the_models() -> None:
    assert crds_cmd.stale_files(REPO) == [], "run `slotfleet crds`"


def test_check_reports_drift_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = argparse.Namespace(root=str(tmp_path), check=True)
    assert crds_cmd.run(args) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "slotfleet crds" in err
    assert crds_cmd.run(argparse.Namespace(root=str(tmp_path), check=False)) == 0
    assert (tmp_path / "crds/queues.slotfleet.dev.yaml").read_text() == render_crd_yaml()
    assert crds_cmd.run(args) == 0
