"""``slotfleet dashboard`` and ``slotfleet top``: the fleet in a browser or a terminal.

Both need the ``dashboard`` extra (starlette, uvicorn, jinja2, rich); without it the
command says what to install in one line. Everything else is in ``slotfleet.dashboard``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from slotfleet.app.durations import parse_duration
from slotfleet.cli.common import add_dsn, duration_arg, guarded, port_arg, run_async
from slotfleet.models import InvalidSettingsError, describe_validation_error
from slotfleet.store import dsn_from_env

EXTRA_HINT = "pip install 'slotfleet[dashboard]'"


def _missing_extra(exc: ImportError) -> int:
    name = (exc.name or "a package").split(".")[0]
    print(
        f"error: this command needs the dashboard extra ({name} is missing): {EXTRA_HINT}",
        file=sys.stderr,
    )
    return 1


def _token(args: argparse.Namespace) -> str | None:
    from slotfleet.dashboard.settings import TOKEN_ENV

    if args.token_file is not None:
        try:
            return Path(args.token_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidSettingsError(
                f"cannot read --token-file {args.token_file}: {exc}"
            ) from None
    return os.environ.get(TOKEN_ENV) or None


def _view(args: argparse.Namespace) -> Any:
    """``--window``/``--bucket`` as ViewSettings (one line for a bad combination)."""
    from slotfleet.dashboard.settings import ViewSettings

    try:
        return ViewSettings(
            window_seconds=int(args.window.total_seconds()),
            bucket_seconds=int(args.bucket.total_seconds()),
        )
    except ValidationError as exc:
        raise InvalidSettingsError(describe_validation_error(exc, "--window/--bucket")) from None


def _dashboard(args: argparse.Namespace) -> int:
    try:
        from slotfleet.dashboard.server import serve
        from slotfleet.dashboard.settings import DashboardSettings
    except ImportError as exc:
        return _missing_extra(exc)
    view = _view(args)
    try:
        settings = DashboardSettings(
            view=view,
            dsn=args.dsn or dsn_from_env(),
            host=args.host,
            port=args.port,
            refresh_seconds=args.refresh,
            actions=args.enable_actions,
            token=_token(args) if args.enable_actions else None,
        )
    except ValidationError as exc:
        raise InvalidSettingsError(describe_validation_error(exc, "dashboard")) from None
    run_async(serve(settings))
    return 0


def _top(args: argparse.Namespace) -> int:
    try:
        from rich.console import Console

        from slotfleet.dashboard.terminal import run
    except ImportError as exc:
        return _missing_extra(exc)
    from slotfleet.app import App

    view = _view(args)

    async def main() -> None:
        async with App(args.dsn) as app:
            await run(app, view, interval=args.interval, once=args.once, console=Console())

    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how top ends
        run_async(main())
    return 0


def positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0.2 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"{text} is not between 0.2 and 3600 seconds")
    return value


def add_view(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--window",
        type=duration_arg,
        default=parse_duration("15m"),
        help="how far back throughput and failure rate look (default 15m)",
    )
    parser.add_argument(
        "--bucket",
        type=duration_arg,
        default=parse_duration("30s"),
        help="width of one bar of the throughput chart (default 30s)",
    )


def register(commands: Any) -> None:
    p = commands.add_parser(
        "dashboard",
        help="serve the web dashboard",
        description="Serve a web dashboard over the job store: queues, slots, workers, "
        "throughput, jobs and their errors, refreshing live. Read-only unless "
        "--enable-actions (then every action needs the token from "
        "$SLOTFLEET_DASHBOARD_TOKEN or --token-file).",
    )
    add_dsn(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=port_arg, default=8000, help="port (default 8000; 0: any free)")
    p.add_argument(
        "--refresh",
        type=positive_seconds,
        default=2.0,
        help="seconds between live updates of open pages (default 2)",
    )
    p.add_argument(
        "--enable-actions",
        action="store_true",
        help="allow cancel, retry and purge from the dashboard (token required)",
    )
    p.add_argument(
        "--token-file",
        metavar="PATH",
        help="file holding the action token (else $SLOTFLEET_DASHBOARD_TOKEN)",
    )
    add_view(p)
    p.set_defaults(handler=guarded(_dashboard))

    p = commands.add_parser(
        "top",
        help="the dashboard's overview in the terminal",
        description="Queues, slots, workers and throughput, redrawn in place until Ctrl-C.",
    )
    add_dsn(p)
    p.add_argument(
        "--interval", type=positive_seconds, default=2.0, help="seconds between redraws (default 2)"
    )
    p.add_argument("--once", action="store_true", help="print one frame and exit")
    add_view(p)
    p.set_defaults(handler=guarded(_top))
