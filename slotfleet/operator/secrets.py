"""A Queue's store DSN from its Secret (``spec.store.secretRef``): a pure reading.

The Secret itself comes from the operator's watch cache (``slotfleet.operator.cache``).
What this module is not: it opens no store, reads no cluster and writes nothing; a problem with the
Secret comes back as the ``Degraded`` condition the reconciler reports, never as an
exception, and the DSN itself never appears in a message.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

from slotfleet.models.resource import QueueSpec
from slotfleet.operator import status as st
from slotfleet.operator.builders import QueueRef

Json = dict[str, Any]


@dataclass(frozen=True, slots=True)
class SecretRead:
    """What reading the store Secret gave."""

    dsn: str | None
    """The DSN, or ``None`` when it cannot be read (``problem`` says why)."""
    problem: st.ConditionUpdate | None
    """``Degraded`` with the reason (``SecretNotFound``, ``SecretKeyNotFound``, ...)."""
    version: str | None
    """The Secret's resourceVersion (``None``: no such Secret)."""


def read_dsn(secret: Json | None, ref: QueueRef, spec: QueueSpec) -> SecretRead:
    """The DSN in ``spec.store.secretRef`` of ``secret`` (``None``: no such Secret), or
    the reason it cannot be had."""
    secret_ref = spec.store.secret_ref
    where = f"Secret {ref.namespace}/{secret_ref.name}"
    if secret is None:
        return SecretRead(
            None,
            st.ConditionUpdate(
                st.DEGRADED, True, "SecretNotFound", f"{where} (spec.store.secretRef) not found"
            ),
            None,
        )
    version = (secret.get("metadata") or {}).get("resourceVersion")
    raw = (secret.get("data") or {}).get(secret_ref.key)
    if raw is None:
        problem = st.ConditionUpdate(
            st.DEGRADED, True, "SecretKeyNotFound", f"{where} has no key {secret_ref.key!r}"
        )
        return SecretRead(None, problem, version)
    try:
        dsn = base64.b64decode(raw).decode("utf-8").strip()
    except (binascii.Error, UnicodeDecodeError):
        dsn = ""
    if not dsn:
        problem = st.ConditionUpdate(
            st.DEGRADED, True, "SecretKeyInvalid", f"{where} key {secret_ref.key!r} is empty"
        )
        return SecretRead(None, problem, version)
    return SecretRead(dsn, None, version)
