"""``gateway device ...`` (enrollment tokens, enrolled devices), through the admin API of a
running ``gateway run``. The posture log is ``gateway logs posture`` (``proxy.cli.logs``)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from proxy.cli import options as shared
from proxy.cli.client import AdminClient, account_of, add_admin_options, connect
from proxy.cli.errors import CliError

Handler = Callable[[argparse.Namespace], int]
type Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]


def register(subparsers: Subparsers) -> None:
    _register_device(subparsers)


def _register_device(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "device",
        help="make enrollment tokens and list enrolled devices",
        description="Enroll devices and see them: an enrollment token (single use) is what\n"
        "`gateway agent enroll --token T` needs on the device.",
        epilog="examples:\n  gateway device token --email ana@example.com --ttl 30m\n"
        "  gateway device list\n  gateway device delete 3f2a\n  gateway device wireguard 3f2a\n"
        "  gateway device bind 3f2a 10.0.0.0/24   # transparent mode: this network is that device",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="device_command", required=True, metavar="COMMAND")
    token = _command(commands, "token", _token, "make a single-use enrollment token (printed alone on stdout)",
                     "T=$(gateway device token --email ana@example.com)")  # fmt: skip
    token.add_argument(
        "--email", metavar="E", help="the user of the device it enrolls (default: the device names one)"
    )
    token.add_argument(
        "--ttl", metavar="DURATION", help='how long it may be used, such as "30m" or "1d" (default: 1h)'
    )
    _command(commands, "list", _list, "list enrolled devices", "gateway device list --json")
    delete = _command(commands, "delete", _delete, "forget a device: its secret stops working at once",
                      "gateway device delete 3f2a")  # fmt: skip
    delete.add_argument("device", metavar="DEVICE", help="device id, a unique prefix of it, or its name")
    wireguard = _command(commands, "wireguard", _wireguard,
                         "print a device's WireGuard configuration (its private key included)",
                         "gateway device wireguard laptop-7 > laptop-7.conf")  # fmt: skip
    add_wireguard_options(wireguard)
    wireguard.add_argument("device", metavar="DEVICE", help="device id, a unique prefix of it, or its name")
    _register_addresses(commands)


def _register_addresses(commands: Subparsers) -> None:
    """``bind``, ``unbind`` and ``addresses``: transparent mode's identity by source address."""
    for name, body, summary, example in (
        ("bind", _bind, "bind an address or CIDR network to a device (transparent mode identifies it by it)",
         "gateway device bind laptop-7 10.0.0.0/24"),
        ("unbind", _unbind, "unbind a network from a device", "gateway device unbind laptop-7 10.0.0.0/24"),
    ):  # fmt: skip
        command = _command(commands, name, body, summary, example)
        command.add_argument("device", metavar="DEVICE", help="device id, a unique prefix of it, or its name")
        command.add_argument("network", metavar="CIDR", help="an IP address or a CIDR network")
    addresses = _command(commands, "addresses", _addresses,
                         "list a device's addresses: registered by its agent, bound by an admin",
                         "gateway device addresses laptop-7")  # fmt: skip
    addresses.add_argument("device", metavar="DEVICE", help="device id, a unique prefix of it, or its name")


def _addresses_path(session: Session, device: dict[str, Any]) -> str:
    return session.url(f"/devices/{urllib.parse.quote(str(device['id']), safe='')}/addresses")


def _bind(session: Session, args: argparse.Namespace) -> None:
    device = resolve_device(_devices(session), args.device)
    bound = session.client.put(_addresses_path(session, device), {"network": args.network}).result
    if session.as_json:
        _print_json(bound)
    else:
        print(f"bound {bound['network']} to device {device['id']} ({device.get('name', '')})")


def _unbind(session: Session, args: argparse.Namespace) -> None:
    device = resolve_device(_devices(session), args.device)
    gone = session.client.delete(_addresses_path(session, device), {"network": args.network}).result
    if session.as_json:
        _print_json(gone)
    else:
        print(f"unbound {gone['network']} from device {device['id']} ({device.get('name', '')})")


def _addresses(session: Session, args: argparse.Namespace) -> None:
    device = resolve_device(_devices(session), args.device)
    rows = session.client.get(_addresses_path(session, device)).result
    if session.as_json:
        _print_json(rows)
        return
    header = ("NETWORK", "SOURCE", "FIRST SEEN", "LAST SEEN")
    print(table(header, [(r["network"], r["source"], r["first_seen"], r["last_seen"]) for r in rows]))


def _command(
    commands: Subparsers,
    name: str,
    body: Callable[[Session, argparse.Namespace], None],
    summary: str,
    example: str,
) -> argparse.ArgumentParser:
    parser = commands.add_parser(
        name,
        help=summary,
        description=summary[0].upper() + summary[1:] + ".",
        epilog=f"example:\n  {example}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    options = parser.add_argument_group("admin API options")
    add_admin_options(options)
    shared.JSON.add(options)
    parser.set_defaults(func=_handler(body))
    return parser


@dataclass(frozen=True)
class Session:
    client: AdminClient
    account: str
    as_json: bool

    def url(self, suffix: str) -> str:
        return f"/accounts/{urllib.parse.quote(self.account, safe='')}{suffix}"


def _handler(body: Callable[[Session, argparse.Namespace], None]) -> Handler:
    def handler(args: argparse.Namespace) -> int:
        client = connect(args)
        session = Session(client, account_of(client, args.account), bool(args.json))
        try:
            body(session, args)
            sys.stdout.flush()
        except BrokenPipeError:  # `gateway device list | head`: the reader has all it wanted
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        except (KeyError, TypeError, AttributeError) as e:  # an answer not shaped as documented
            raise CliError(f"the admin API at {client.server} gave an unexpected answer ({e!r})") from None
        return 0

    return handler


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2))


# --- commands ---------------------------------------------------------------------------------------


def _token(session: Session, args: argparse.Namespace) -> None:
    body = {key: value for key, value in (("email", args.email), ("expires_in", args.ttl)) if value}
    issued = session.client.post(session.url("/devices/enrollment_tokens"), body).result
    if session.as_json:
        _print_json(issued)
        return
    print(issued["token"])
    user = issued.get("email") or "named by the device"
    print(
        f"enrollment token {issued['id']}: single use, expires {issued['expires_at']}, user {user}\n"
        f"on the device: gateway agent enroll --token <the token above>",
        file=sys.stderr,
    )


def _list(session: Session, args: argparse.Namespace) -> None:
    devices = _devices(session)
    if session.as_json:
        _print_json(devices)
    elif not devices:
        print("no enrolled devices (make a token with `gateway device token`)")
    else:
        header = ("ID", "NAME", "OS", "SERIAL", "USER", "IP", "LAST SEEN")
        rows = [
            (str(d["id"]), str(d.get("name", "")), str(d.get("device_type", "")), str(d.get("serial_number", "")),
             str((d.get("user") or {}).get("email", "")), str(d.get("ip", "")), str(d.get("last_seen", "")))
            for d in devices
        ]  # fmt: skip
        print(table(header, rows))


def _delete(session: Session, args: argparse.Namespace) -> None:
    device = resolve_device(_devices(session), args.device)
    deleted = session.client.delete(
        session.url(f"/devices/{urllib.parse.quote(str(device['id']), safe='')}")
    ).result
    if session.as_json:
        _print_json(deleted)
    else:
        print(f"deleted device {device['id']} ({device.get('name', '')})")


WIREGUARD_FORMATS = ("wg-quick", "wg")


def add_wireguard_options(parser: argparse.ArgumentParser) -> None:
    """``--format``, ``--allowed-ips`` and ``--dns`` of ``gateway device wireguard``."""
    parser.add_argument(
        "--format", choices=WIREGUARD_FORMATS, default="wg-quick",
        help="wg-quick: for `wg-quick up FILE` (with Address); wg: for `wg setconf IFACE FILE` "
        "(no Address or DNS: set the address with `ip address add`) (default: wg-quick)",
    )  # fmt: skip
    parser.add_argument(
        "--allowed-ips", metavar="CIDRS",
        help="what the device sends through the tunnel, comma-separated (default: 0.0.0.0/0, everything)",
    )  # fmt: skip
    parser.add_argument(
        "--dns", metavar="ADDRESSES", help="DNS servers for wg-quick, comma-separated (default: none)"
    )


def wireguard_query(args: argparse.Namespace) -> dict[str, str]:
    wanted = (("format", args.format), ("allowed_ips", args.allowed_ips), ("dns", args.dns))
    return {key: value for key, value in wanted if value}


def _wireguard(session: Session, args: argparse.Namespace) -> None:
    device = resolve_device(_devices(session), args.device)
    path = f"/devices/{urllib.parse.quote(str(device['id']), safe='')}/wireguard"
    answer = session.client.get(session.url(path), wireguard_query(args)).result
    if session.as_json:
        _print_json(answer)
        return
    print(answer["config"], end="")
    print(
        f"device {device['id']} ({device.get('name', '')}): its private key is in this configuration; "
        "hand it to that device only",
        file=sys.stderr,
    )


def _devices(session: Session) -> list[dict[str, Any]]:
    return [d for d in session.client.get(session.url("/devices")).result or [] if isinstance(d, dict)]


# --- helpers ----------------------------------------------------------------------------------------


def resolve_device(devices: Sequence[dict[str, Any]], wanted: str) -> dict[str, Any]:
    """The device whose id is ``wanted``, starts with it, or whose name is it (one only)."""
    key = wanted.strip()
    if not key:
        raise CliError("empty device id")
    rules: tuple[Callable[[dict[str, Any]], bool], ...] = (
        lambda d: str(d.get("id", "")).lower() == key.lower(),
        lambda d: str(d.get("id", "")).lower().startswith(key.lower()),
        lambda d: str(d.get("name", "")) == key,
    )
    for rule in rules:
        matches = [d for d in devices if rule(d)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            ids = ", ".join(sorted(str(d["id"]) for d in matches))
            raise CliError(f"device {wanted!r} is ambiguous: it matches {ids}")
    raise CliError(f"no device with id, id prefix or name {wanted!r} (see `gateway device list`)")


def resolve_rule(rules: Sequence[Any], wanted: str) -> str:
    for field in ("id", "name"):
        matches = [r for r in rules if isinstance(r, dict) and r.get(field) == wanted]
        if len(matches) == 1:
            return str(matches[0]["id"])
        if len(matches) > 1:
            raise CliError(f"several posture rules are named {wanted!r}: give the id")
    raise CliError(f"no posture rule with id or name {wanted!r}")


def table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> str:
    everything = [header, *rows]
    widths = [max(len(row[i]) for row in everything) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in everything
    )
