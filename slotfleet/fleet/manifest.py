"""Read a ``Queue`` manifest (the YAML one would ``kubectl apply``) for the local fleet.

The same file drives a cluster and a laptop: ``spec`` is validated by the very
:class:`~slotfleet.models.resource.QueueSpec` the CRD is generated from, so a manifest
that runs here is one the API server accepts (bar CEL rules it alone checks). A file may
hold several documents (a Secret beside the Queue, say); exactly one must be a Queue.
``--set KEY=VALUE`` overrides (:func:`parse_override`) change ``spec`` before it is
validated, so an override is checked exactly like the file.

What this module is not: it resolves no Secret (the DSN comes from the command line or
``$SLOTFLEET_DSN`` locally) and talks to no cluster.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from slotfleet.models.errors import InvalidSettingsError, describe_validation_error
from slotfleet.models.resource import GROUP, KIND, VERSION, QueueSpec

API_VERSION = f"{GROUP}/{VERSION}"


@dataclass(frozen=True, slots=True)
class QueueManifest:
    """A validated Queue resource."""

    name: str
    """``metadata.name``."""
    spec: QueueSpec

    @property
    def queue(self) -> str:
        """The queue jobs are enqueued to (``spec.queueName``, else the resource's name)."""
        return self.spec.effective_queue_name(self.name)


@dataclass(frozen=True, slots=True)
class Override:
    """One ``--set KEY=VALUE``: a dotted camelCase path into ``spec`` and its new value."""

    path: tuple[str, ...]
    """``("autoscaling", "idleSeconds")`` for ``autoscaling.idleSeconds``."""
    value: Any
    """The value as YAML reads it: ``2`` is a number, ``true`` a boolean, ``a`` a string."""
    text: str
    """The option as given, for messages."""


def parse_override(text: str) -> Override:
    """Parse ``KEY=VALUE`` (``autoscaling.idleSeconds=2``); the value is a YAML (so also
    JSON) value. Raises :class:`InvalidSettingsError` with one line."""
    key, sep, raw = text.partition("=")
    path = tuple(key.strip().split("."))
    if not sep or not all(path):
        raise InvalidSettingsError(
            f"--set {text!r}: expected KEY=VALUE with a dotted path into spec, "
            "e.g. autoscaling.idleSeconds=5"
        )
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        raise InvalidSettingsError(f"--set {text!r}: the value is not valid YAML") from None
    return Override(path, value, text)


def _apply(spec: dict[str, Any], override: Override, source: str) -> dict[str, Any]:
    """``spec`` with ``override`` set (intermediate mappings created as needed)."""
    root = dict(spec)
    node = root
    for depth, part in enumerate(override.path[:-1]):
        child = node.get(part)
        child = {} if child is None else child
        if not isinstance(child, dict):
            where = ".".join(override.path[: depth + 1])
            raise InvalidSettingsError(
                f"{source}: --set {override.text!r}: spec.{where} is not a mapping"
            )
        node[part] = dict(child)
        node = node[part]
    node[override.path[-1]] = override.value
    return root


def parse_queue_manifest(
    text: str, source: str = "manifest", overrides: Sequence[Override] = ()
) -> QueueManifest:
    """Validate YAML ``text`` with ``overrides`` applied to its spec; every problem is an
    :class:`InvalidSettingsError` of one line."""
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "cannot be parsed"
        raise InvalidSettingsError(f"{source}: not valid YAML{where}: {problem}") from None
    queues = [d for d in documents if isinstance(d, dict) and d.get("kind") == KIND]
    if len(queues) != 1:
        found = "no" if not queues else str(len(queues))
        raise InvalidSettingsError(f"{source}: expected one document of kind {KIND}, found {found}")
    return _queue(queues[0], source, overrides)


def _queue(doc: dict[str, Any], source: str, overrides: Sequence[Override]) -> QueueManifest:
    if doc.get("apiVersion") != API_VERSION:
        raise InvalidSettingsError(
            f"{source}: apiVersion must be {API_VERSION}, not {doc.get('apiVersion')!r}"
        )
    metadata = doc.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    if not isinstance(name, str) or not name:
        raise InvalidSettingsError(f"{source}: metadata.name is required")
    spec = doc.get("spec")
    if not isinstance(spec, dict):
        raise InvalidSettingsError(f"{source}: spec is required (a mapping)")
    for override in overrides:
        spec = _apply(spec, override, source)
    try:
        validated = QueueSpec.model_validate(spec)
    except ValidationError as exc:
        raise InvalidSettingsError(describe_validation_error(exc, f"{source}: spec")) from None
    return QueueManifest(name=name, spec=validated)


def load_queue_manifest(path: str | Path, overrides: Sequence[Override] = ()) -> QueueManifest:
    """Read and validate the Queue manifest at ``path``, with ``overrides`` applied."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidSettingsError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return parse_queue_manifest(text, str(path), overrides)
