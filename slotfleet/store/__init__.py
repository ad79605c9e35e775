"""The job store: the :class:`Store` protocol and :func:`open_store`, which picks a
backend by DSN scheme.

``sqlite:///path.db`` is the embedded default (a file several local workers share);
``postgresql://...`` is for fleets. Backends are imported only when chosen, so
importing this package does not load a database driver.
"""

from __future__ import annotations

import os

from slotfleet.models import InvalidSettingsError
from slotfleet.store.base import (
    DEFAULT_LEASE_SECONDS,
    DEFAULT_WORKER_TTL_SECONDS,
    Lease,
    Store,
    purge_in_batches,
)

#: The store used when neither ``--dsn`` nor ``SLOTFLEET_DSN`` names one.
DEFAULT_DSN = "sqlite:///slotfleet.db"

#: Environment variable holding the DSN.
DSN_ENV = "SLOTFLEET_DSN"

__all__ = [
    "DEFAULT_DSN",
    "DEFAULT_LEASE_SECONDS",
    "DEFAULT_WORKER_TTL_SECONDS",
    "DSN_ENV",
    "Lease",
    "Store",
    "describe_dsn",
    "dsn_from_env",
    "open_store",
    "purge_in_batches",
]


def dsn_from_env() -> str:
    """``$SLOTFLEET_DSN``, or :data:`DEFAULT_DSN` when unset or empty."""
    return os.environ.get(DSN_ENV, "").strip() or DEFAULT_DSN


def describe_dsn(dsn: str) -> str:
    """Where ``dsn`` points, fit to print or show on a page: the SQLite file, or the
    PostgreSQL host(s), port and database; never a user name, password or parameter."""
    scheme, sep, rest = dsn.partition("://")
    scheme = scheme.lower()
    if scheme == "sqlite" and sep:
        return f"sqlite {rest.removeprefix('/')}"
    if scheme in ("postgresql", "postgres") and sep:
        # after the last "@" (a password may hold "/", "?" or "@"), before any parameter
        location = rest.rpartition("@")[2].split("?", 1)[0].split("#", 1)[0]
        authority, _, database = location.partition("/")
        hosts = authority or "localhost"
        return f"postgresql {hosts}/{database}" if database else f"postgresql {hosts}"
    return "an unsupported store"


def open_store(dsn: str) -> Store:
    """A store for ``dsn``, not yet connected: ``await store.open()`` before use.

    Raises :class:`InvalidSettingsError` for a DSN no backend understands.
    """
    if "\x00" in dsn:
        raise InvalidSettingsError("the DSN contains a NUL character")
    try:
        dsn.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidSettingsError("the DSN is not valid Unicode (a lone surrogate)") from None
    scheme, sep, _ = dsn.partition("://")
    scheme = scheme.lower()
    if scheme == "sqlite" and sep:
        from slotfleet.store.sqlite import SQLiteStore

        return SQLiteStore(dsn)
    if scheme in ("postgresql", "postgres") and sep:
        try:
            from slotfleet.store.postgres import PostgresStore
        except ModuleNotFoundError as exc:  # psycopg is the optional slotfleet[postgres]
            if not (exc.name or "").startswith("psycopg"):
                raise
            raise InvalidSettingsError(
                f"postgresql:// DSNs need the {exc.name or 'psycopg'} package: "
                "pip install 'slotfleet[postgres]'"
            ) from exc

        return PostgresStore(dsn)
    what = f"unsupported DSN scheme {scheme!r}" if sep else "the DSN has no scheme"
    raise InvalidSettingsError(f"{what} (use sqlite:///path.db or postgresql://...)")
