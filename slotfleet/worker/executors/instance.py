"""Which parameters of a job's function receive the running job's own instance.

The seed API's ``get_function_and_kwargs(job)`` hands a job its
:class:`~slotfleet.models.QueuedJob` through every keyword-only parameter annotated
with that type, whatever the parameter's name::

    @job(queue="reports")
    def build(rows: int, *, context: QueuedJob) -> None:
        context.meta["progress"] = 0.5      # stored with the attempt's completion

:func:`instance_params` finds those parameters once per function and remembers them, so
a job's hot path pays one dictionary lookup. Annotations are resolved robustly:

- a class (``QueuedJob`` or a subclass), ``Optional[QueuedJob]`` / ``QueuedJob | None``
  and ``Annotated[QueuedJob, ...]`` all count;
- string annotations (``from __future__ import annotations``, or ``"QueuedJob"``) are
  evaluated in the function's own module; a name that module imports only under
  ``TYPE_CHECKING`` (``QueuedJob``, or ``slotfleet``) still resolves to slotfleet's;
- an annotation that cannot be evaluated at all (a typo, a name defined nowhere) simply
  does not count, as in the seed: the parameter keeps its default.

Only keyword-only parameters are considered (positional ones are the job's kwargs).

What this module is not: it does not call the function or build the instance. It
imports only the standard library until a function has an annotated keyword-only
parameter, so a process executor's child pays for ``slotfleet.models`` only when a job
asks for its instance.
"""

from __future__ import annotations

import builtins
import inspect
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

#: Function -> names of its parameters that take the instance (empty for most).
_cache: dict[Any, tuple[str, ...]] = {}


def instance_params(func: Callable[..., Any]) -> tuple[str, ...]:
    """The keyword-only parameters of ``func`` annotated with ``QueuedJob``; computed
    once per function (functions that cannot be hashed are inspected every time)."""
    try:
        return _cache[func]
    except KeyError:
        found = _inspect(func)
        _cache[func] = found
        return found
    except TypeError:  # an unhashable callable object
        return _inspect(func)


def _inspect(func: Callable[..., Any]) -> tuple[str, ...]:
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):  # builtins and some C callables have none
        return ()
    annotated = [
        p
        for p in signature.parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.annotation is not inspect.Parameter.empty
    ]
    if not annotated:
        return ()
    namespace = _namespace(func)
    return tuple(p.name for p in annotated if _wants_instance(p.annotation, namespace, 0))


class _Names(dict[str, Any]):
    """Names for evaluating a string annotation: the function's module first, then the
    names slotfleet knows (for imports made only under ``TYPE_CHECKING``)."""

    def __init__(self, module: Mapping[str, Any]) -> None:
        super().__init__()
        self._module = module

    def __missing__(self, name: str) -> Any:
        if name in self._module:
            return self._module[name]
        fallback = _fallbacks().get(name)
        if fallback is None:
            raise KeyError(name)
        return fallback


def _fallbacks() -> dict[str, Any]:
    import slotfleet
    from slotfleet.models.jobs import QueuedJob

    return {"QueuedJob": QueuedJob, "slotfleet": slotfleet}


def _namespace(func: Callable[..., Any]) -> _Names:
    inner = inspect.unwrap(func)  # the function whose source wrote the annotations
    module = getattr(inner, "__globals__", None)
    if not isinstance(module, Mapping):
        owner = inspect.getmodule(inner)
        module = vars(owner) if owner is not None else {}
    return _Names(module)


#: Deepest nesting of ``Optional``/``Annotated``/strings followed (a guard, not a limit
#: any real annotation reaches).
_MAX_DEPTH = 8


def _wants_instance(annotation: Any, names: _Names, depth: int) -> bool:
    if depth > _MAX_DEPTH:
        return False
    if isinstance(annotation, typing.ForwardRef):
        annotation = annotation.__forward_arg__
    if isinstance(annotation, str):
        try:
            annotation = eval(annotation, {"__builtins__": builtins}, names)
        except Exception:  # not resolvable here: the parameter does not ask for it
            return False
        return _wants_instance(annotation, names, depth + 1)
    if isinstance(annotation, type):
        try:
            return issubclass(annotation, _queued_job())
        except TypeError:  # a generic alias posing as a class on some Pythons
            return False
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated and args:
        return _wants_instance(args[0], names, depth + 1)
    if origin is typing.Union or origin is types.UnionType:
        rest = [a for a in args if a is not type(None)]
        return len(rest) == 1 and len(args) == 2 and _wants_instance(rest[0], names, depth + 1)
    return False


def _queued_job() -> type:
    from slotfleet.models.jobs import QueuedJob

    return QueuedJob


def meta_problem(meta: Any) -> str | None:
    """Why the ``meta`` a job left on its instance cannot be stored (not strict JSON with
    string keys, too large, too deep, NUL characters), or ``None`` when it can. Never
    raises: a thread job still running may even be changing it meanwhile."""
    from slotfleet.models.jobs import check_json_payload

    try:
        check_json_payload(meta, "meta")
    except (TypeError, ValueError, RuntimeError, RecursionError) as exc:
        return f"the job's meta cannot be stored: {exc}"
    return None
