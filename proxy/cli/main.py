"""The ``gateway`` command: one parser, one subcommand module per command group.

The server's command groups live in ``proxy.cli``. Other programs installed with Gateway (the
device agent, ``agent/``) add theirs through the ``gateway.commands`` entry-point group, so the
server never imports them: each entry point is a ``register(commands)`` function that adds one
subparser whose ``func(args) -> int`` handles its own errors.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points

from proxy.cli.errors import CliError

COMMAND_GROUP = "gateway.commands"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gateway",
        description="Self-hosted Zero Trust gateway: TLS inspection with a managed, hot-swappable root CA.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    from proxy.cli import (
        account,
        ca,
        demo,
        device,
        logs,
        node,
        nodes,
        policy,
        run,
        token,
        transparent,
    )  # imported here so that `gateway --help` stays fast
    from proxy.cli import list as list_

    run.register(commands)
    node.register(commands)
    nodes.register(commands)
    ca.register(commands)
    account.register(commands)
    policy.register(commands)
    list_.register(commands)
    device.register(commands)
    logs.register(commands)
    token.register(commands)
    transparent.register(commands)
    demo.register(commands)
    for entry in sorted(entry_points(group=COMMAND_GROUP), key=lambda e: e.name):
        entry.load()(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CliError as e:
        print(f"gateway: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
