"""The Queue models refuse what the API server refuses, with the same words.

The same table (``tests/queue_cases.py``) runs against the real API server in
``tests/kube/test_queue_validation.py``; here it runs through the models that
``slotfleet fleet -f`` and the operator use, and through the command line.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from slotfleet.fleet import parse_queue_manifest
from slotfleet.models import InvalidSettingsError
from slotfleet.models.resource import QueueSpec
from slotfleet.models.rules import IMAGE, MODULE_NAME, parse_quantity
from tests.queue_cases import CASES, Case, merged
from tests.unit.test_worker_pod import FULL

BASE: dict[str, Any] = {
    "store": {"secretRef": {"name": "db", "key": "dsn"}},
    "autoscaling": {"mode": "off"},
    "replicas": 0,
}


def manifest(spec: dict[str, Any]) -> str:
    doc = {"apiVersion": "slotfleet.dev/v1alpha1", "kind": "Queue", "metadata": {"name": "q"}}
    return yaml.safe_dump({**doc, "spec": spec})


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_invalid_specs_are_refused_in_one_line_naming_the_problem(case: Case) -> None:
    with pytest.raises(InvalidSettingsError) as refused:
        parse_queue_manifest(manifest(merged(BASE, case.patch)), "queue.yaml")
    message = str(refused.value)
    assert case.message in message
    assert "\n" not in message
    assert message.startswith("queue.yaml: spec: ")


def test_the_base_of_the_cases_and_a_spec_using_every_field_are_valid() -> None:
    QueueSpec.model_validate(BASE)
    QueueSpec.model_validate(FULL)


def test_unquoted_off_in_yaml_is_refused_with_a_hint_to_quote_it() -> None:
    text = manifest(BASE).replace("mode: 'off'", "mode: off").replace('mode: "off"', "mode: off")
    assert "mode: off\n" in text  # unquoted, as a user would write it
    with pytest.raises(InvalidSettingsError, match=r'quote it, as in mode: "off"'):
        parse_queue_manifest(text, "queue.yaml")
    assert parse_queue_manifest(text.replace("mode: off", 'mode: "off"')).spec.replicas == 0


def test_the_example_queue_quotes_its_modes() -> None:
    text = (Path(__file__).parents[2] / "examples" / "queue.yaml").read_text()
    for line in text.splitlines():
        if line.strip().startswith("mode:"):
            assert '"' in line.split("#")[0], f"unquoted mode in examples/queue.yaml: {line}"


@pytest.mark.parametrize(
    "image",
    [
        "ghcr.io/slotfleet/slotfleet:0.1.0",
        "slotfleet-examples:0.1.0",
        "localhost:5000/team/tasks",
        "registry.example.com/a/b/c:v1.2-rc_3",
        "busybox@sha256:" + "a" * 64,
        "Registry.Example.com:443/x/y:TAG",
    ],
)
def test_real_image_references_are_accepted(image: str) -> None:
    assert IMAGE.check(image) == image


@pytest.mark.parametrize("text", ["myapp.tasks", "_private", "a.b_c.d9"])
def test_module_names_are_accepted(text: str) -> None:
    assert MODULE_NAME.check(text) == text


@pytest.mark.parametrize(
    ("text", "value"),
    [("500m", "0.5"), ("2", "2"), ("1Gi", str(2**30)), ("1e3", "1000"), ("1.5k", "1500")],
)
def test_quantities_parse_as_kubernetes_does(text: str, value: str) -> None:
    assert parse_quantity(text) == parse_quantity(value)


@given(st.text(max_size=300))
def test_image_check_never_hangs_or_crashes(text: str) -> None:
    """The patterns are RE2-compatible and must stay linear here too (no backtracking
    blow-up on hostile input of the schema's maximum length)."""
    for rule in (IMAGE, MODULE_NAME):
        with contextlib.suppress(ValueError):
            rule.check(text)
    long = "a" * 1000 + "!"
    with pytest.raises(ValueError, match="image must be"):
        IMAGE.check(long)
