"""The options several commands take are declared once (``proxy/cli/options.py``): every
command that takes one has its help, type, choices and metavar, and only a default or a note
of its own where it really differs."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest

from proxy.cli import options
from proxy.cli.main import build_parser

SHARED = {o.flag: o for o in vars(options).values() if isinstance(o, options.Option)}


def _commands(
    parser: argparse.ArgumentParser, name: str = "gateway"
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub, child in action.choices.items():
                yield from _commands(child, f"{name} {sub}")


def _declared() -> list[tuple[str, argparse.Action]]:
    """Of the server's commands (``gateway agent`` is the agent's program, which never imports
    ``proxy/``)."""
    return [
        (name, action)
        for name, parser in _commands(build_parser())
        if not name.startswith("gateway agent")
        for action in parser._actions
        for flag in action.option_strings
        if flag in SHARED
    ]


def test_shared_options_are_taken_by_several_commands() -> None:
    used = {action.option_strings[0] for _, action in _declared()}
    assert used == set(SHARED), set(SHARED) - used


@pytest.mark.parametrize(("command", "action"), _declared(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_command_declares_a_shared_option_alike(command: str, action: argparse.Action) -> None:
    option = SHARED[action.option_strings[0]]
    assert action.help is not None and action.help.startswith(option.help), (command, action.help)
    for setting in ("metavar", "type", "choices"):
        assert getattr(action, setting) == getattr(option, setting), (command, setting)
