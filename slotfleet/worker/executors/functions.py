"""Finding a job's function from its import path, and encoding what it returns.

Used on both sides of the process executor's pipe, so it imports nothing heavier than
the standard library, ``slotfleet.models.errors`` and the ``@job`` decorator's module: a
child process pays only for the user's own modules.

By default a worker runs only functions registered with ``@job`` (the object a job's path
names carries the ``JobFunction`` class's ``__slotfleet_job__`` mark): whoever can enqueue
must not be able to run ``os:system``. ``any_callable`` (``--functions any``, a Queue's
``spec.functions: any``) runs any importable callable, as Chancy does. Importing the
module a job names still happens before the check (that is how its ``@job`` functions
register), so a module's import-time code runs either way.

What this module is not: it does not run anything; executors decide how and where.
"""

from __future__ import annotations

import importlib
import inspect
import json
from collections.abc import Callable
from typing import Any

from slotfleet.app.decorator import options_checked_later
from slotfleet.models.errors import FunctionNotAllowedError, SlotfleetError, UnknownFunctionError

#: The mark ``@job`` leaves on its ``JobFunction`` class (``slotfleet.app.decorator``).
JOB_MARK = "__slotfleet_job__"


class InvalidResultError(SlotfleetError, TypeError):
    """The job's result is not JSON-serializable."""


def split_path(path: str) -> tuple[str, str]:
    """``("pkg.mod", "func")`` from ``"pkg.mod:func"`` or ``"pkg.mod.func"``."""
    if ":" in path:
        module, _, attr = path.partition(":")
    else:
        module, _, attr = path.rpartition(".")
    return module, attr


def unwrap(obj: Any) -> Any:
    """The plain function behind an ``@job``-decorated object.

    Only callable objects that are not functions themselves are unwrapped (the app's
    ``JobFunction`` keeps the original in ``__wrapped__``), however many such layers
    there are; a function decorated with ``functools.wraps`` also has ``__wrapped__``
    but is called as it is, so the user's own decorators (retries, tracing) still run.
    """
    for _ in range(16):  # a bound: a __wrapped__ that points back at itself
        if inspect.isroutine(obj) or inspect.isclass(obj):
            return obj
        inner = getattr(obj, "__wrapped__", None)
        if not callable(inner):
            inner = getattr(obj, "func", None)
        if not callable(inner):
            return obj
        obj = inner
    return obj


_resolved: dict[str, tuple[Callable[..., Any], bool]] = {}


def resolve_function(path: str, *, any_callable: bool = False) -> Callable[..., Any]:
    """Import the function named by ``path``; raise :class:`UnknownFunctionError` with
    one line naming the path when the module or the attribute is missing, or when
    importing the module raised, and :class:`FunctionNotAllowedError` when it is not
    registered with ``@job`` (unless ``any_callable``).

    Successes are remembered per path (a job's hot path skips the import machinery);
    failures are not, so a later deploy or a module that now imports is picked up.
    """
    found = _resolved.get(path)
    if found is None:
        found = _resolved[path] = _resolve_uncached(path)
    func, registered = found
    if not registered and not any_callable:
        raise FunctionNotAllowedError(
            f"{path!r} is not registered with @job, and this worker runs only @job "
            "functions (to run any importable callable, start it with --functions any or "
            "set the Queue's spec.functions: any)"
        )
    return func


def _resolve_uncached(path: str) -> tuple[Callable[..., Any], bool]:
    module_name, attr = split_path(path)
    if not module_name or not attr:
        raise UnknownFunctionError(f"{path!r} is not an import path like 'package.module:function'")
    try:
        with options_checked_later():  # a worker loads no pydantic for its task modules
            module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise UnknownFunctionError(
                f"cannot import {path!r}: no module named {exc.name!r}"
            ) from None
        raise UnknownFunctionError(
            f"cannot import {path!r}: importing {module_name} raised ModuleNotFoundError: {exc}"
        ) from exc
    except (Exception, SystemExit) as exc:
        raise UnknownFunctionError(
            f"cannot import {path!r}: importing {module_name} raised {type(exc).__name__}: {exc}"
        ) from exc
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise UnknownFunctionError(
                f"cannot import {path!r}: {module_name} has no attribute {attr!r}"
            ) from None
    func = unwrap(obj)
    if not callable(func):
        raise UnknownFunctionError(f"{path!r} is a {type(func).__name__}, not a function")
    # the class's mark, not the object's: a Mock or a module __getattr__ answers anything
    registered = getattr(type(obj), JOB_MARK, None) is True
    return func, registered


def encode_result(result: Any) -> str:
    """``result`` as strict JSON text, or :class:`InvalidResultError` saying its type."""
    try:
        return json.dumps(result, allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):
        raise InvalidResultError(
            f"result of type {type(result).__name__} is not JSON-serializable"
        ) from None
