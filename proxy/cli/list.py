"""``gateway list ...``: Gateway lists on a running gateway, through its admin API
(``/gateway/lists``), the way ``gateway policy export/import`` talk to it."""

from __future__ import annotations

import argparse
import logging
import sys
import urllib.parse
from pathlib import Path
from typing import Any

from proxy.cli.client import AdminClient, account_of, add_admin_options, connect
from proxy.cli.errors import CliError

logger = logging.getLogger(__name__)

TYPES = ("DOMAIN", "HOST", "URL", "IP", "EMAIL", "SERIAL")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "list",
        help="Gateway lists (rules refer to them as $<list id>)",
        description="Create and change the Gateway lists of a running gateway through its admin API. "
        "A rule refers to a list as $<list id>: http.request.host in $<id>.",
        epilog="examples:\n"
        "  gateway list create 'blocked sites' --type DOMAIN --item casino.example --file more.txt\n"
        "  gateway list add ID bets.example\n  gateway list remove ID bets.example\n"
        "  gateway list show ID\n  gateway list ls\n  gateway list delete ID",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="list_command", required=True, metavar="COMMAND")

    listed = commands.add_parser("ls", help="every list: id, type, items, name")
    listed.set_defaults(func=_ls)

    create = commands.add_parser("create", help="a new list; prints its id")
    create.add_argument("name")
    create.add_argument("--type", required=True, choices=TYPES, help="what the items are")
    create.add_argument("--description", default="")
    _add_items(create)
    create.set_defaults(func=_create)

    show = commands.add_parser("show", help="one list and its items")
    show.add_argument("id")
    show.set_defaults(func=_show)

    add = commands.add_parser("add", help="append items (PATCH append)")
    add.add_argument("id")
    _add_items(add)
    add.set_defaults(func=_add)

    remove = commands.add_parser("remove", help="remove items by value (PATCH remove)")
    remove.add_argument("id")
    remove.add_argument("values", nargs="+", metavar="VALUE")
    remove.set_defaults(func=_remove)

    delete = commands.add_parser("delete", help="delete a list (refused while a rule uses it)")
    delete.add_argument("id")
    delete.set_defaults(func=_delete)

    for command in (listed, create, show, add, remove, delete):
        add_admin_options(command.add_argument_group("admin API options"))


def _add_items(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("values", nargs="*", metavar="VALUE", help="items")
    parser.add_argument("--item", action="append", default=[], metavar="VALUE", help="an item (repeatable)")
    parser.add_argument(
        "--file", type=Path, metavar="FILE", help="items, one per line ('#' comments, blank lines skipped)"
    )


def _items(args: argparse.Namespace) -> list[dict[str, str]]:
    values = [*args.values, *args.item]
    if args.file is not None:
        try:
            text = args.file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise CliError(f"cannot read {args.file}: {getattr(e, 'strerror', None) or e}") from None
        values += [
            line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")
        ]
    return [{"value": value} for value in values]


def _connect(args: argparse.Namespace) -> tuple[AdminClient, str]:
    client = connect(args)
    account = account_of(client, args.account)
    return client, f"/accounts/{urllib.parse.quote(account, safe='')}/gateway/lists"


def _one(base: str, list_id: str) -> str:
    return f"{base}/{urllib.parse.quote(list_id, safe='')}"


def _summary(found: dict[str, Any]) -> str:
    return f"{found.get('id')}  {found.get('type'):<6}  {found.get('count', 0):>7} items  {found.get('name')}"


def _ls(args: argparse.Namespace) -> int:
    client, base = _connect(args)
    found = client.get(base).result or []
    for item in found:
        print(_summary(item))
    if not found:
        print("no lists", file=sys.stderr)
    return 0


def _create(args: argparse.Namespace) -> int:
    client, base = _connect(args)
    body = {"name": args.name, "type": args.type, "description": args.description, "items": _items(args)}
    created = client.post(base, body).result
    print(created["id"])
    print(f"created {_summary(created)}", file=sys.stderr)
    return 0


def _show(args: argparse.Namespace) -> int:
    client, base = _connect(args)
    found = client.get(_one(base, args.id)).result
    print(_summary(found))
    if found.get("description"):
        print(f"  {found['description']}")
    for item in found.get("items") or []:
        note = f"  # {item['description']}" if item.get("description") else ""
        print(f"  {item['value']}{note}")
    return 0


def _add(args: argparse.Namespace) -> int:
    items = _items(args)
    if not items:
        raise CliError("no items given: VALUE ..., --item VALUE or --file FILE")
    client, base = _connect(args)
    edited = client.patch(_one(base, args.id), {"append": items}).result
    print(f"added {len(items)}: {_summary(edited)}")
    return 0


def _remove(args: argparse.Namespace) -> int:
    client, base = _connect(args)
    edited = client.patch(_one(base, args.id), {"remove": list(args.values)}).result
    print(f"removed {len(args.values)}: {_summary(edited)}")
    return 0


def _delete(args: argparse.Namespace) -> int:
    client, base = _connect(args)
    client.delete(_one(base, args.id))
    print(f"deleted list {args.id}")
    return 0
