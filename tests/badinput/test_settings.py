"""Bad settings: DSNs, worker queue settings, the Queue resource spec and manifests.

Every refusal is one readable line: :class:`InvalidSettingsError` for DSNs and
manifests, a pydantic ``ValidationError`` whose :func:`describe_validation_error` line
names the field for models. Anything else escaping (a ``ValueError`` from a driver, a
``TypeError``) is a bug.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from slotfleet.fleet.manifest import parse_queue_manifest
from slotfleet.models import (
    InvalidSettingsError,
    QueueSettings,
    StoreError,
    describe_validation_error,
)
from slotfleet.models.resource import QueueSpec
from slotfleet.store import open_store

FAST = settings(max_examples=100, deadline=None)
WITH_TMP = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

any_text = st.text(st.characters(exclude_categories=()), max_size=40)
schemes = st.sampled_from(
    ["", "sqlite://", "sqlite:///", "SQLite:///", "postgresql://", "postgres://", "mysql://", "://"]
)


def one_line(text: str) -> None:
    assert text.strip(), "an empty message"
    assert "\n" not in text, f"a multi-line message: {text!r}"
    assert "Traceback" not in text


@FAST
@given(dsn=st.builds(lambda s, t: s + t, schemes, any_text))
@example(dsn="postgresql://127.0.0.1:notaport/x")
@example(dsn="postgresql://host/db?sslmode=bogus")
@example(dsn="postgresql://[::1/x")
@example(dsn="postgresql://u@h/d?x=\x00")
@example(dsn="sqlite://")
@example(dsn="sqlite:")
def test_open_store_builds_a_store_or_refuses_in_one_line(dsn: str) -> None:
    try:
        store = open_store(dsn)
    except InvalidSettingsError as exc:
        one_line(str(exc))
    else:
        assert store.dsn == dsn


@WITH_TMP
# NUL is left to test_odd_sqlite_paths_open_or_refuse_in_one_line, so this search can
# look past it.
@given(name=st.text(st.characters(exclude_categories=(), exclude_characters="/\x00"), max_size=30))
async def test_sqlite_file_names_open_or_refuse_in_one_line(tmp_path: Path, name: str) -> None:
    """A SQLite DSN naming a strange file in a writable directory either opens or fails
    with one line (``InvalidSettingsError`` or ``StoreError``)."""
    await open_or_refuse(f"sqlite:///{tmp_path}/{name}")


async def open_or_refuse(dsn: str) -> None:
    try:
        store = open_store(dsn)
        await store.open()
    except (InvalidSettingsError, StoreError) as exc:
        one_line(str(exc))
    else:
        await store.close()


@pytest.mark.parametrize("name", ["a\x00b", "\udcff", "", "..", "missing-dir/jobs.db"], ids=repr)
async def test_odd_sqlite_paths_open_or_refuse_in_one_line(tmp_path: Path, name: str) -> None:
    await open_or_refuse(f"sqlite:///{tmp_path}/{name}")


def readable(exc: ValidationError, subject: str) -> None:
    line = describe_validation_error(exc, subject)
    one_line(line)
    for err in exc.errors(include_url=False):
        assert str(err.get("msg", "")).strip(), f"an error without a message: {err}"


bad_numbers = (
    st.integers(min_value=-(10**20), max_value=10**20)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8)
    | st.none()
    | st.booleans()
)
queue_data = st.fixed_dictionaries(
    {},
    optional={
        "name": any_text,
        "executor": st.sampled_from(["async", "threads", "processes", "fibers", "", "ASYNC"])
        | any_text,
        "concurrency": bad_numbers,
        "polling_interval": bad_numbers,
        "rate_limit": st.none()
        | st.fixed_dictionaries({"count": bad_numbers, "period": bad_numbers})
        | any_text,
        "paused": bad_numbers,
        "surprise": bad_numbers,
    },
)


@FAST
@given(data=queue_data)
def test_queue_settings_validate_or_refuse_readably(data: dict[str, Any]) -> None:
    """A worker's settings are a plain dataclass (no pydantic in a worker): a bad value is
    an ``InvalidSettingsError`` naming the field in one line; only a keyword the class does
    not have, or a missing name, is Python's own ``TypeError``."""
    known = {f.name for f in dataclasses.fields(QueueSettings)}
    refusal: Exception | None = None
    try:
        queue = QueueSettings(**data)
    except (InvalidSettingsError, TypeError) as exc:
        refusal = exc
    if isinstance(refusal, TypeError):
        assert set(data) - known or "name" not in data, f"refused {data}: {refusal}"
        return
    if refusal is not None:
        one_line(f"queue: {refusal}")
        field = str(refusal).split(":", 1)[0].split(".", 1)[0]
        assert field in data, f"{refusal} names a field that was not given: {sorted(data)}"
        return
    assert set(data) <= known
    assert "name" in data
    assert queue.concurrency is None or 1 <= queue.concurrency <= 10_000
    assert math.isfinite(queue.polling_interval)
    assert 0 < queue.polling_interval <= 3600
    assert isinstance(queue.paused, bool)
    assert queue.rate_limit is None or 1 <= queue.rate_limit.count <= 1_000_000


@FAST
@given(text=any_text | st.builds(lambda a, b, c: f"{a}:{b}:{c}", any_text, any_text, any_text))
@example(text="q:fibers")
@example(text="q:threads:0")
@example(text="q:threads:1e3")
@example(text="q::")
@example(text=":")
def test_queue_spec_strings_parse_or_refuse_readably(text: str) -> None:
    try:
        QueueSettings.parse(text)
    except InvalidSettingsError as exc:
        one_line(f"queue {text!r}: {exc}")


spec_data = st.fixed_dictionaries(
    {"store": st.just({"secretRef": {"name": "db"}})},
    optional={
        "image": any_text | bad_numbers,
        "replicas": bad_numbers,
        "executor": st.fixed_dictionaries(
            {}, optional={"kind": any_text, "concurrency": bad_numbers}
        ),
        "autoscaling": st.fixed_dictionaries(
            {},
            optional={
                "mode": st.sampled_from(["operator", "hpa", "off", "auto"]),
                "minReplicas": bad_numbers,
                "maxReplicas": bad_numbers,
                "targetUtilization": bad_numbers,
                "idleSeconds": bad_numbers,
            },
        ),
        "env": st.lists(st.fixed_dictionaries({"name": any_text, "value": any_text}), max_size=3),
        "pollingInterval": bad_numbers,
        "drainTimeoutSeconds": bad_numbers,
        "metricsPort": bad_numbers,
        "queueName": any_text,
        "unknownField": bad_numbers,
    },
)


@FAST
@given(data=spec_data)
def test_queue_spec_validates_or_refuses_readably(data: dict[str, Any]) -> None:
    try:
        QueueSpec.model_validate(data)
    except ValidationError as exc:
        readable(exc, "spec")


@pytest.mark.parametrize(
    "autoscaling",
    [{"minReplicas": 5, "maxReplicas": 2}],
    ids=["min-above-max"],
)
def test_queue_spec_refuses_what_its_crd_refuses(autoscaling: dict[str, Any]) -> None:
    """The CRD's CEL rules refuse these in the API server; ``slotfleet fleet -f`` has no
    API server, so the model (or the manifest loader) must refuse them too."""
    manifest = yaml.safe_dump(
        {
            "apiVersion": "slotfleet.dev/v1alpha1",
            "kind": "Queue",
            "metadata": {"name": "q"},
            "spec": {"store": {"secretRef": {"name": "db"}}, "autoscaling": autoscaling},
        }
    )
    with pytest.raises(InvalidSettingsError) as refused:
        parse_queue_manifest(manifest, "queue.yaml")
    one_line(str(refused.value))


@FAST
@given(text=any_text | st.builds(yaml.safe_dump, spec_data).map(lambda s: f"spec:\n  {s}"))
@example(text="")
@example(text="kind: Queue")
@example(text="- a\n- b")
@example(text="{{{")
@example(text="apiVersion: slotfleet.dev/v1alpha1\nkind: Queue\nmetadata: {name: q}\nspec: 5")
@example(text="---\nkind: Queue\n---\nkind: Queue\n")
def test_manifests_load_or_refuse_in_one_line(text: str) -> None:
    try:
        parse_queue_manifest(text, "queue.yaml")
    except InvalidSettingsError as exc:
        one_line(str(exc))
