"""``gateway account ...``: make, list and delete accounts through the admin API of a running
``gateway run`` (with a token for every account: ``gateway token create`` without --account)."""

from __future__ import annotations

import argparse
import json
import sys
import urllib.parse
from collections.abc import Callable
from typing import Any

from proxy.cli import options as shared
from proxy.cli.client import AdminClient, add_admin_options, connect
from proxy.cli.device import table
from proxy.cli.errors import CliError

Handler = Callable[[argparse.Namespace], int]
type Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]


def register(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "account",
        help="make, list and delete accounts (each with its own CAs, policies and devices)",
        description="Accounts: each has its own CAs (one in use), Gateway rules, Access\n"
        "applications, posture rules and devices. A new account gets its own CA, in use at once.",
        epilog="examples:\n  gateway account create Branch\n  gateway account list\n"
        "  gateway token create --account 3f2a...   # a token for that account only\n"
        "  gateway account delete 3f2a...",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="account_command", required=True, metavar="COMMAND")
    create = _command(commands, "create", _create, "make an account with its own CA in use; print its id",
                      "ACCOUNT=$(gateway account create Branch)")  # fmt: skip
    create.add_argument("name", metavar="NAME", help="the account's name (1-100 characters, unique)")
    _command(commands, "list", _list, "list the accounts the token may use", "gateway account list")
    delete = _command(commands, "delete", _delete,
                      "delete an account and everything in it (refused while it has devices, and for the default account)",
                      "gateway account delete 3f2a")  # fmt: skip
    delete.add_argument("account", metavar="ACCOUNT", help="account id, a unique prefix of it, or its name")


def _command(
    commands: Subparsers,
    name: str,
    body: Callable[[AdminClient, argparse.Namespace], None],
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
    add_admin_options(options, account=False)
    shared.JSON.add(options)

    def handler(args: argparse.Namespace) -> int:
        client = connect(args)
        try:
            body(client, args)
        except (KeyError, TypeError) as e:  # an answer not shaped as documented
            raise CliError(f"the admin API at {client.server} gave an unexpected answer ({e!r})") from None
        return 0

    parser.set_defaults(func=handler)
    return parser


def _create(client: AdminClient, args: argparse.Namespace) -> None:
    reply = client.post("/accounts", {"name": args.name})
    if args.json:
        print(json.dumps(reply.result, indent=2))
        return
    print(reply.result["id"])
    for note in reply.messages:
        print(f"account {reply.result['name']!r}: {note}", file=sys.stderr)


def _accounts(client: AdminClient) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    page = 1
    while True:
        result = client.get("/accounts", {"page": str(page), "per_page": "50"}).result
        if not result:
            return found
        found += result
        page += 1


def _list(client: AdminClient, args: argparse.Namespace) -> None:
    accounts = _accounts(client)
    if args.json:
        print(json.dumps(accounts, indent=2))
        return
    print(table(("ID", "NAME", "CREATED"), [(a["id"], a["name"], a["created_on"]) for a in accounts]))


def _delete(client: AdminClient, args: argparse.Namespace) -> None:
    account = resolve(_accounts(client), args.account)
    reply = client.delete(f"/accounts/{urllib.parse.quote(str(account['id']), safe='')}")
    if args.json:
        print(json.dumps(reply.result, indent=2))
        return
    print(f"deleted account {account['id']} ({account['name']}) and everything in it")


def resolve(accounts: list[dict[str, Any]], wanted: str) -> dict[str, Any]:
    """The account whose id is ``wanted`` or starts with it, or whose name it is (any case)."""
    exact = [
        a for a in accounts if a["id"] == wanted.lower() or str(a["name"]).casefold() == wanted.casefold()
    ]
    matches = exact or [a for a in accounts if wanted and str(a["id"]).startswith(wanted.lower())]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise CliError(f"no account {wanted!r} that this token may use: see `gateway account list`")
    raise CliError(f"{wanted!r} is the start of {len(matches)} account ids: give more of it")
