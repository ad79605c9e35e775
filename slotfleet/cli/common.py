"""Shared pieces of the command line: the parser class, DSN option, output helpers.

Every command reports bad input as one line on stderr (exit 2) and a failure as
``error: <message>`` (exit 1); tracebacks are for bugs only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Any, NoReturn, TypeVar

from slotfleet.models import InvalidSettingsError, SlotfleetError

T = TypeVar("T")
Handler = Callable[[argparse.Namespace], int]


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line with a pointer to ``--help``."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def port_arg(text: str) -> int:
    """``--metrics-port``: a TCP port, 0-65535 (0 disables the server)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text} is not a port (0-65535)")
    return value


def duration_arg(text: str) -> timedelta:
    """A duration option (``--older-than``, ``--window``): seconds, or a number with s, m,
    h or d (``90``, ``15m``, ``7d``)."""
    from slotfleet.app.durations import parse_duration  # the client: not for every command

    try:
        return parse_duration(text)
    except InvalidSettingsError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


#: Packages of the extras (``slotfleet[operator]``, ``slotfleet[postgres]``).
OPTIONAL_PACKAGES = frozenset({"kopf", "kubernetes", "psycopg", "psycopg_pool"})


def require_extra(exc: ModuleNotFoundError, extra: str, what: str) -> NoReturn:
    """Raise one line naming the extra to install when ``exc`` is a missing optional
    package; re-raise it otherwise (a missing module of our own is a bug)."""
    package = (exc.name or "").partition(".")[0]
    if package not in OPTIONAL_PACKAGES:
        raise exc
    raise InvalidSettingsError(
        f"{what} needs the {package} package: pip install 'slotfleet[{extra}]'"
    ) from exc


def add_dsn(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dsn",
        default=None,
        help="job store: sqlite:///path.db or postgresql://... "
        "(default: $SLOTFLEET_DSN, else sqlite:///slotfleet.db)",
    )


def run_async(main: Awaitable[T]) -> T:
    return asyncio.run(main)  # type: ignore[arg-type]


def guarded(handler: Callable[[argparse.Namespace], int]) -> Handler:
    """Turn slotfleet errors into one line and exit code 1."""

    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except SlotfleetError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        except TimeoutError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1

    return run


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str, ensure_ascii=False))


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    cells = [[str(c) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    print(line.format(*headers).rstrip())
    for row in cells:
        print(line.format(*row).rstrip())
