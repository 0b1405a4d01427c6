"""``gateway transparent rules``: the firewall rules that send clients' connections to a
transparent listener, printed (never applied), each explained, ready to paste as root."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import re
from dataclasses import dataclass
from typing import Any

from proxy.cli.errors import CliError

logger = logging.getLogger(__name__)

EPILOG = """\
examples:
  gateway transparent rules --port 8443                        # every client, ports 80 and 443
  gateway transparent rules --port 8443 --source 10.0.0.0/24 --interface eth1
  gateway transparent rules --port 8443 --to 192.0.2.1          # DNAT to the listener's own address
then: gateway run --mode transparent@0.0.0.0:8443   (or @ the address the rules deliver to)
"""
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,15}")


@dataclass(frozen=True)
class Redirect:
    port: int  # the transparent listener's
    dports: tuple[int, ...] = (80, 443)  # what clients connect to
    source: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None
    interface: str | None = None
    to: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None  # DNAT target; None: REDIRECT
    table: str = "gateway"

    @property
    def family(self) -> int | None:
        """4 or 6 when the source or target says, None for both."""
        for value in (self.source, self.to):
            if value is not None:
                return value.version
        return None


def nftables(r: Redirect) -> str:
    dports = ", ".join(map(str, r.dports))
    match = [f'iifname "{r.interface}"'] if r.interface else []
    if r.source is not None:
        match.append(f"{'ip' if r.source.version == 4 else 'ip6'} saddr {r.source}")
    match.append(f"tcp dport {{ {dports} }}")
    if r.to is None:
        action = f"redirect to :{r.port}"
        how = "REDIRECT: to the gateway's port on the address of the interface the packet came in on"
    else:
        target = f"{r.to}:{r.port}" if r.to.version == 4 else f"[{r.to}]:{r.port}"
        action = f"dnat {'ip' if r.to.version == 4 else 'ip6'} to {target}"
        how = f"DNAT: to the gateway's listener at {target}"
    who = f"from {r.source}" if r.source else "from any client"
    where = f" arriving on {r.interface}" if r.interface else ""
    return "\n".join(
        [
            f"# nftables: paste as root into `nft -f -` (remove with: nft delete table inet {r.table})",
            f"table inet {r.table} {{",
            "  chain prerouting {",
            "    # a NAT chain before routing: it sees connections from other machines (the gateway's",
            "    # own connections, on the output chain, are never redirected: no loop)",
            "    type nat hook prerouting priority dstnat; policy accept;",
            f"    # TCP to port(s) {dports} {who}{where}; {how}.",
            "    # The gateway reads the original destination from the socket (SO_ORIGINAL_DST).",
            f"    {' '.join(match)} {action}",
            "  }",
            "}",
        ]
    )


def iptables(r: Redirect) -> str:
    lines = [
        "# iptables (the same rule, for machines without nft): paste as root; remove with -D instead of -A"
    ]
    families = [r.family] if r.family else [4, 6]
    for family in families:
        command = "iptables" if family == 4 else "ip6tables"
        args = ["-t", "nat", "-A", "PREROUTING"]
        if r.interface:
            args += ["-i", r.interface]
        if r.source is not None:
            args += ["-s", str(r.source)]
        args += ["-p", "tcp", "-m", "multiport", "--dports", ",".join(map(str, r.dports))]
        if r.to is None:
            args += ["-j", "REDIRECT", "--to-ports", str(r.port)]
        else:
            target = f"{r.to}:{r.port}" if family == 4 else f"[{r.to}]:{r.port}"
            args += ["-j", "DNAT", "--to-destination", target]
        lines.append(f"# IPv{family}: the connections go to port {r.port} of this machine")
        lines.append(" ".join([command, *args]))
    return "\n".join(lines)


def notes(r: Redirect) -> str:
    listen = f"{r.to}:{r.port}" if r.to is not None else f"ADDRESS:{r.port}"
    return "\n".join(
        [
            "# Notes:",
            "# - clients must send this traffic through this machine: it is their router (default",
            "#   gateway), or a route sends the destinations above here; no NAT in front of the gateway.",
            f"# - the transparent listener must listen where the rule delivers: --mode transparent@{listen}",
            "#   (REDIRECT delivers to the receiving interface's primary address, not to 127.0.0.1:",
            "#   ADDRESS is that address, or 0.0.0.0).",
            "# - the gateway identifies a transparent client by its source address (docs/modes.md);",
            "#   with a transparent mode it accepts clients with public addresses (mitmproxy's",
            "#   block_global is off), so these rules decide who reaches it: keep --source narrow.",
        ]
    )


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "transparent",
        help="transparent mode helpers: the redirect rules",
        description="Transparent mode (Linux): clients' connections redirected to the gateway by firewall rules.",
    )
    sub = parser.add_subparsers(dest="transparent_command", required=True, metavar="COMMAND")
    rules = sub.add_parser(
        "rules",
        help="print the nftables and iptables rules for a transparent listener (never applies them)",
        description="Print, each explained, the nftables and iptables rules that send clients' TCP "
        "connections to the transparent listener on this machine. Nothing is applied.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    rules.add_argument("--port", required=True, type=int, metavar="P", help="the transparent listener's port")
    rules.add_argument("--source", metavar="CIDR", help="only clients from this network (default: any)")
    rules.add_argument("--interface", metavar="IF", help="only connections arriving on this interface")
    rules.add_argument(
        "--dport",
        action="append",
        type=int,
        metavar="PORT",
        help="destination port to capture (repeatable; default: 80 and 443)",
    )
    rules.add_argument(
        "--to", metavar="ADDRESS", help="DNAT to the listener at this address instead of REDIRECT"
    )
    rules.add_argument(
        "--table", default="gateway", metavar="NAME", help="nftables table name (default: gateway)"
    )
    rules.add_argument(
        "--format",
        choices=["both", "nft", "iptables"],
        default="both",
        help="which rules to print (default: both)",
    )
    rules.set_defaults(func=print_rules)


def redirect_from(args: argparse.Namespace) -> Redirect:
    for option, port in [("--port", args.port), *(("--dport", p) for p in args.dport or [])]:
        if not 1 <= port <= 65535:
            raise CliError(f"{option} {port}: a port is 1-65535", exit_code=2)
    try:
        source = ipaddress.ip_network(args.source) if args.source else None
    except ValueError as e:
        raise CliError(f"--source {args.source}: {e}", exit_code=2) from None
    try:
        to = ipaddress.ip_address(args.to) if args.to else None
    except ValueError as e:
        raise CliError(f"--to {args.to}: {e}", exit_code=2) from None
    if source is not None and to is not None and source.version != to.version:
        raise CliError(f"--source {source} and --to {to} are of different IP versions", exit_code=2)
    for option, name in (("--interface", args.interface), ("--table", args.table)):
        if name is not None and not _NAME.fullmatch(name):
            raise CliError(f"{option} {name!r}: 1-15 letters, digits, '_', '.', '-'", exit_code=2)
    dports = tuple(dict.fromkeys(args.dport)) if args.dport else (80, 443)
    return Redirect(args.port, dports, source, args.interface, to, args.table)


def print_rules(args: argparse.Namespace) -> int:
    r = redirect_from(args)
    parts = []
    if args.format in ("both", "nft"):
        parts.append(nftables(r))
    if args.format in ("both", "iptables"):
        parts.append(iptables(r))
    parts.append(notes(r))
    print("\n\n".join(parts))
    return 0
