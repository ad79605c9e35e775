"""One root exception; each subclass's docstring is its default message.

Callers catch :class:`SlotfleetError` and print ``str(exc)``: one line that says what
the user must decide. Driver errors (psycopg, sqlite3, the Kubernetes client) are
wrapped with ``raise ... from`` so the cause stays available for debugging without
leaking a driver traceback to the user.
"""

from __future__ import annotations


class SlotfleetError(Exception):
    """slotfleet failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class InvalidJobError(SlotfleetError, ValueError):
    """The job is not valid."""


class InvalidSettingsError(SlotfleetError, ValueError):
    """The settings are not valid."""


class UnknownFunctionError(SlotfleetError, LookupError):
    """The job's function cannot be imported."""


class FunctionNotAllowedError(SlotfleetError, PermissionError):
    """The job's function is not one this worker runs (not registered with ``@job``)."""


class JobNotFoundError(SlotfleetError, LookupError):
    """No job has that id."""


class StoreError(SlotfleetError):
    """The job store failed."""


class StoreUnavailableError(StoreError):
    """The job store cannot be reached."""


def describe_validation_error(exc: Exception, subject: str) -> str:
    """One line from a pydantic ``ValidationError``: ``subject: field: message; ...``."""
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return f"{subject}: {exc}"
    parts = []
    for err in errors(include_url=False):
        if err.get("type") == "default_factory_not_called":
            continue  # a default computed from a field that failed: that failure says it
        where = ".".join(str(p) for p in err.get("loc", ())) or "value"
        message = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{where}: {message}")
    return f"{subject}: " + "; ".join(parts)
