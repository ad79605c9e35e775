"""The command table ``slotfleet`` uses to import one subcommand's module (issue 14:
``slotfleet worker`` loads nothing else) names every subcommand, and only where it
lives."""

from __future__ import annotations

import argparse
import importlib

from slotfleet.cli.common import Parser
from slotfleet.cli.main import COMMAND_MODULES, COMMANDS, _named_command, build_parser


def test_every_subcommand_is_in_the_table_under_the_module_that_registers_it() -> None:
    found: dict[str, str] = {}
    for module in COMMAND_MODULES:
        parser = Parser(prog="x")
        commands = parser.add_subparsers(parser_class=Parser)
        importlib.import_module(module).register(commands)
        for name in commands.choices:
            found[name] = module
    assert found == COMMANDS


def test_a_named_command_builds_only_its_module_and_anything_else_builds_all() -> None:
    assert _named_command(["worker", "--queue", "q"]) == "slotfleet.cli.worker_cmd"
    assert _named_command(["--version"]) is None
    assert _named_command(["nonsense"]) is None
    assert _named_command([]) is None
    only = build_parser(["worker"])
    everything = build_parser(["--help"])
    sub = [a for a in only._actions if isinstance(a, argparse._SubParsersAction)]
    assert list(sub[0].choices) == ["worker"]
    sub = [a for a in everything._actions if isinstance(a, argparse._SubParsersAction)]
    assert set(sub[0].choices) == set(COMMANDS)
