"""The ``gateway`` command: one parser, one subcommand module per command group."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from proxy.cli.errors import CliError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gateway",
        description="Self-hosted Zero Trust gateway: TLS inspection with a managed, hot-swappable root CA.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    from proxy.cli import agent, ca, device, policy, run  # imported here so that `gateway --help` stays fast

    run.register(commands)
    ca.register(commands)
    policy.register(commands)
    agent.register(commands)
    device.register(commands)
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
