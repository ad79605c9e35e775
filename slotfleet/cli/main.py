"""The ``slotfleet`` command: one parser, a subcommand per module."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from slotfleet import __version__
from slotfleet.cli.common import Parser

#: Modules that each add subcommands through ``register(subparsers)``.
COMMAND_MODULES = (
    "slotfleet.cli.worker_cmd",
    "slotfleet.cli.jobs_cmd",
    "slotfleet.cli.pause_cmd",
    "slotfleet.cli.dashboard_cmd",
    "slotfleet.cli.fleet_cmd",
    "slotfleet.cli.operator_cmd",
    "slotfleet.cli.crds_cmd",
    "slotfleet.cli.demo",
)


def build_parser() -> Parser:
    parser = Parser(
        prog="slotfleet",
        description="A Python job queue whose worker fleet is run by a Kubernetes operator.",
    )
    parser.add_argument("--version", action="version", version=f"slotfleet {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", parser_class=Parser)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    code: int = handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
