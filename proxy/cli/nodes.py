"""``gateway nodes``: the proxy nodes of a running gateway (``gateway run``, its workers,
``gateway node`` processes), through its admin API (``GET .../gateway/nodes``)."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import Any

from proxy.cli import options as shared
from proxy.cli.client import account_of, add_admin_options, connect
from proxy.cli.errors import CliError


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "nodes",
        help="the proxy nodes of a running gateway: live or not, last seen, the CAs each loaded",
        description="List the proxy nodes registered in a running gateway's store (gateway run, its "
        "workers, gateway node processes): whether each is live (heartbeat within --node-timeout), "
        "when it was last seen, and which certificates it has loaded.",
        epilog="examples:\n  gateway nodes\n  gateway nodes --json\n  gateway nodes --server https://gw:8081 --cacert admin-tls.crt",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_admin_options(parser.add_argument_group("admin API"))
    shared.JSON.add(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    client = connect(args)
    account = account_of(client, args.account)
    nodes = client.get(f"/accounts/{account}/gateway/nodes").result
    if not isinstance(nodes, list):
        raise CliError("the admin API answered gateway/nodes with something other than a list")
    if args.json:
        print(json.dumps(nodes, indent=2))
    else:
        print(format_table(nodes, now=datetime.now(UTC)))
    return 0


def format_table(nodes: list[dict[str, Any]], *, now: datetime) -> str:
    if not nodes:
        return "no nodes (none is running, or every one stopped cleanly)"
    rows = [("NODE", "LIVE", "LAST SEEN", "LOADED", "NAME")]
    for node in nodes:
        loaded = node.get("loaded_certificates") or []
        rows.append(
            (
                str(node.get("id", ""))[:12] + ("*" if node.get("current") else ""),
                "yes" if node.get("live") else "no",
                _ago(node.get("last_heartbeat"), now),
                ", ".join(str(c.get("id", ""))[:8] for c in loaded) or "-",
                str(node.get("name", "")),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)) + "  " + row[-1]
        for row in rows
    )


def _ago(stamp: object, now: datetime) -> str:
    if not isinstance(stamp, str):
        return "?"
    try:
        seen = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return stamp
    return f"{max(0.0, (now - seen).total_seconds()):.0f} s ago"
