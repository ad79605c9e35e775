"""Read a ``Queue`` manifest (the YAML one would ``kubectl apply``) for the local fleet.

The same file drives a cluster and a laptop: ``spec`` is validated by the very
:class:`~slotfleet.models.resource.QueueSpec` the CRD is generated from, so a manifest
that runs here is one the API server accepts (bar CEL rules it alone checks). A file may
hold several documents (a Secret beside the Queue, say); exactly one must be a Queue.

What this module is not: it resolves no Secret (the DSN comes from the command line or
``$SLOTFLEET_DSN`` locally) and talks to no cluster.
"""

from __future__ import annotations

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


def parse_queue_manifest(text: str, source: str = "manifest") -> QueueManifest:
    """Validate YAML ``text``; every problem is an :class:`InvalidSettingsError` of one line."""
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
    return _queue(queues[0], source)


def _queue(doc: dict[str, Any], source: str) -> QueueManifest:
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
    try:
        validated = QueueSpec.model_validate(spec)
    except ValidationError as exc:
        raise InvalidSettingsError(describe_validation_error(exc, f"{source}: spec")) from None
    return QueueManifest(name=name, spec=validated)


def load_queue_manifest(path: str | Path) -> QueueManifest:
    """Read and validate the Queue manifest at ``path``."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidSettingsError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return parse_queue_manifest(text, str(path))
