"""``gateway demo``: a demo lab on loopback in one command, and its live posture flip."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from typing import Any

from proxy.cli.errors import CliError

EPILOG = """\
examples:
  gateway demo                          # the lab in ./demo, ports 18080-18083; Ctrl-C removes it all
  gateway demo --dir /tmp/lab --port-base 28080
  gateway demo posture fail             # the demo device's certificate leaves its NSS database: Access denied
  gateway demo posture pass             # it comes back: allowed again
more: docs/demo.md
"""


def register(commands: Any) -> None:
    from proxy.demo.layout import DEFAULT_DIR, DEFAULT_PORT_BASE

    parser: argparse.ArgumentParser = commands.add_parser(
        "demo",
        help="a demo lab on loopback: gateway, HTTPS origins, policies, an enrolled device, one command",
        description="Bring up a demo lab on loopback: demo HTTPS origins with a lab CA, the gateway "
        "(trusting it, answering only the lab's names), sample policies, and a demo device (enrolled, a "
        "client certificate in a throwaway NSS database, its agent and local proxy running). Prints the "
        "browser command and the dashboard URL. Ctrl-C stops everything and removes the directory.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--dir", type=Path, default=DEFAULT_DIR, metavar="DIR",
        help=f"where everything lives (default: ./{DEFAULT_DIR}); new, empty, or a former demo's",
    )  # fmt: skip
    parser.add_argument(
        "--port-base", type=int, default=DEFAULT_PORT_BASE, metavar="N",
        help=f"ports N (gateway proxy), N+1 (admin API and dashboard), N+2 (demo sites), N+3 (the "
        f"device's local proxy), all on 127.0.0.1 (default: {DEFAULT_PORT_BASE})",
    )  # fmt: skip
    parser.add_argument(
        "--keep", action="store_true", help="leave the directory (logs, databases) when stopping"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the demo does to stderr")
    parser.set_defaults(func=run)
    sub = parser.add_subparsers(dest="demo_command", metavar="COMMAND")
    posture = sub.add_parser(
        "posture",
        help="flip the demo device's posture: fail (certificate removed) or pass (restored), reported at once",
        description="Remove (fail) or restore (pass) the demo device's client certificate in its NSS "
        "database, then run `gateway agent report` for it at once.",
    )
    posture.add_argument("outcome", choices=("pass", "fail"))
    posture.add_argument(
        "--dir", type=Path, default=DEFAULT_DIR, metavar="DIR",
        help=f"the running demo's directory (default: ./{DEFAULT_DIR})",
    )  # fmt: skip
    posture.set_defaults(func=flip)


def run(args: argparse.Namespace) -> int:
    from proxy.demo.admin import AdminError
    from proxy.demo.children import ChildError
    from proxy.demo.lab import Lab
    from proxy.demo.layout import LabOptions, Layout, LayoutError, Ports

    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    program = "gateway" if Path(sys.argv[0]).name != "gateway" else sys.argv[0]
    try:
        options = LabOptions(
            Layout(args.dir.absolute()), Ports(args.port_base), keep=args.keep, program=program
        )
        return asyncio.run(Lab(options).run())
    except (LayoutError, ChildError, AdminError) as e:
        raise CliError(str(e)) from e


def flip(args: argparse.Namespace) -> int:
    from proxy.demo.children import ChildError
    from proxy.demo.lab import flip_posture
    from proxy.demo.layout import Layout, LayoutError

    passing = args.outcome == "pass"
    try:
        printed = flip_posture(Layout(args.dir.absolute()), passing)
    except (LayoutError, ChildError) as e:
        raise CliError(str(e)) from e
    sys.stdout.write(printed)
    expected = "pass (verified)" if passing else "fail"
    return 0 if expected in printed else 3
