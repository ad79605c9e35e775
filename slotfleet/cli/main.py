"""The ``slotfleet`` command: one parser, a subcommand per module.

A command line that names its subcommand imports only that subcommand's module
(:data:`COMMANDS`): ``slotfleet worker`` never loads the operator, the fleet's YAML, the
dashboard or the client's models, which is part of a worker's start-up time and memory.
Without a known subcommand (``--help``, a typo) every module is loaded, as before."""

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
    "slotfleet.cli.migrate_cmd",
    "slotfleet.cli.dashboard_cmd",
    "slotfleet.cli.fleet_cmd",
    "slotfleet.cli.operator_cmd",
    "slotfleet.cli.crds_cmd",
    "slotfleet.cli.demo",
)


#: Subcommand -> the module that registers it (a unit test checks this against the
#: modules' own ``register``).
COMMANDS = {
    "worker": "slotfleet.cli.worker_cmd",
    "enqueue": "slotfleet.cli.jobs_cmd",
    "jobs": "slotfleet.cli.jobs_cmd",
    "cancel": "slotfleet.cli.jobs_cmd",
    "retry": "slotfleet.cli.jobs_cmd",
    "purge": "slotfleet.cli.jobs_cmd",
    "queues": "slotfleet.cli.jobs_cmd",
    "pause": "slotfleet.cli.pause_cmd",
    "resume": "slotfleet.cli.pause_cmd",
    "migrate": "slotfleet.cli.migrate_cmd",
    "dashboard": "slotfleet.cli.dashboard_cmd",
    "top": "slotfleet.cli.dashboard_cmd",
    "fleet": "slotfleet.cli.fleet_cmd",
    "operator": "slotfleet.cli.operator_cmd",
    "crds": "slotfleet.cli.crds_cmd",
    "demo": "slotfleet.cli.demo",
}


def _named_command(argv: Sequence[str]) -> str | None:
    """The module of the subcommand ``argv`` names first, if it names a known one."""
    for arg in argv:
        if arg.startswith("-"):
            return None  # an option before the command (--version, --help): load all
        return COMMANDS.get(arg)
    return None


def build_parser(argv: Sequence[str] | None = None) -> Parser:
    parser = Parser(
        prog="slotfleet",
        description="A Python job queue whose worker fleet is run by a Kubernetes operator.",
    )
    parser.add_argument("--version", action="version", version=f"slotfleet {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", parser_class=Parser)
    only = None if argv is None else _named_command(argv)
    for name in COMMAND_MODULES if only is None else (only,):
        importlib.import_module(name).register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    code: int = handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
