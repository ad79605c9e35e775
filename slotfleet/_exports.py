"""Names a package loads on first use (PEP 562), for the packages whose ``__init__``
would otherwise import everything they export: ``slotfleet``, ``slotfleet.app``,
``slotfleet.models`` and ``slotfleet.worker``. A worker importing one name does not pay
for the rest (the client, the pydantic models, the whole worker).

What this module is not: a registry. It imports nothing from slotfleet, and each package
keeps its own table of which module holds which name.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(
    package: str, where: Mapping[str, str], namespace: dict[str, Any]
) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package``: ``name`` from the module ``where`` maps it
    to, imported on first use and then kept in the package's ``namespace``."""

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    return __getattr__
