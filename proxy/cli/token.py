"""``gateway token ...``: admin API tokens, made, listed and revoked in the data directory's store.

These commands open the store of a data directory directly, not through the admin API: what
they need is file access to the data directory (the machine and user that run ``gateway run``),
not an old token, so a lost first-start token can be replaced. They work while the gateway runs
(SQLite in WAL mode; the admin API checks every request against the stored hashes). A token is
printed once, when made; only its SHA-256 is stored.
"""

from __future__ import annotations

import argparse
import logging
import sqlite3
import sys
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path

from certs.clock import utcnow
from proxy.cli import options as shared
from proxy.cli.errors import CliError
from proxy.config import ADMIN_TOKEN_ENV, Config
from proxy.services.accounts import add_token, new_token
from proxy.store import Account, ApiToken, Store, StoreError, TokenOrigin

logger = logging.getLogger(__name__)

Handler = Callable[[argparse.Namespace], int]
type Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]

MAX_NAME_LENGTH = 100


def register(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "token",
        help="make, list and revoke admin API tokens (on the gateway's machine)",
        description="Admin API tokens, in the store of a data directory: needs file access to that\n"
        "directory (run it as the user that runs `gateway run`), not an old token. Works while the\n"
        "gateway runs; a new token is accepted at once.",
        epilog="examples:\n  export GATEWAY_ADMIN_TOKEN=$(gateway token create --name laptop)\n"
        "  gateway token list --data-dir /srv/gateway\n  gateway token revoke 3f2a",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="token_command", required=True, metavar="COMMAND")
    create = _command(
        commands,
        "create",
        _create,
        "make an admin token (for every account, or one with --account) and print it once (alone on "
        "stdout); only its hash is stored",
        "gateway token create --data-dir /srv/gateway --name ci --account Branch",
    )
    create.add_argument("--name", default="", metavar="NAME", help="what the token is for, shown by list")
    create.add_argument(
        "--account",
        metavar="ACCOUNT",
        help="scope the token to this account (its id, a unique prefix of it, or its name): it may act "
        "on that account only (403 elsewhere). Default: every account (an admin's token)",
    )
    _command(commands, "list", _list, "list admin tokens: id, origin, name, creation time (never a token)",
             "gateway token list")  # fmt: skip
    revoke = _command(commands, "revoke", _revoke, "revoke an admin token: it stops working at once",
                      "gateway token revoke 3f2a")  # fmt: skip
    revoke.add_argument("id", metavar="ID", help="token id (from list) or a unique prefix of it")


def _command(
    commands: Subparsers, name: str, handler: Handler, summary: str, example: str
) -> argparse.ArgumentParser:
    command = commands.add_parser(
        name,
        help=summary,
        description=summary[0].upper() + summary[1:] + ".",
        epilog=f"example:\n  {example}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    shared.DATA_DIR.add(command)
    shared.DATABASE.add(command)
    command.set_defaults(func=handler)
    return command


@contextmanager
def opened(data_dir: Path, database: str | None = None) -> Iterator[Store]:
    """The data directory's store (or ``--database``), which must exist: these commands never
    make one."""
    if database:
        yield from _opened_database(database)
        return
    path = Config(data_dir=data_dir).database_path
    try:
        exists = path.is_file()
    except OSError as e:
        raise CliError(
            f"cannot read {data_dir}: {e.strerror} (run as the user that runs `gateway run`)"
        ) from e
    if not exists:
        raise CliError(
            f"no gateway store in {data_dir} (no {path.name}): start `gateway run --data-dir {data_dir}` "
            "once to make one, or pass the --data-dir that `gateway run` uses"
        )
    try:
        store = Store.open(path)
    except (sqlite3.Error, StoreError, OSError) as e:
        raise CliError(f"cannot open the gateway store {path}: {e}") from e
    with closing(store):
        yield store


def _opened_database(database: str) -> Iterator[Store]:
    try:
        store = Store.open(database)
    except (sqlite3.Error, StoreError, OSError) as e:
        raise CliError(f"cannot open the gateway store: {e}", exit_code=2) from e
    with closing(store):
        yield store


def _create(args: argparse.Namespace) -> int:
    name = str(args.name).strip()
    if len(name) > MAX_NAME_LENGTH or not name.isprintable():
        raise CliError(f"--name: use at most {MAX_NAME_LENGTH} printable characters")
    with opened(Path(args.data_dir), args.database) as store:
        if not store.accounts.list():
            raise CliError(f"the store in {args.data_dir} has no account yet: start `gateway run` once first")
        account = _account(store.accounts.list(), args.account, Path(args.data_dir)) if args.account else None
        token = new_token()
        record = add_token(
            store, token, TokenOrigin.GENERATED, utcnow, name=name, account_id=account.id if account else None
        )
    print(token, flush=True)
    scope = f"account {account.id} ({account.name}) only" if account else "every account"
    print(
        f"made admin token {record.id[:8]} for {scope}: shown once, keep it now (only its hash is stored); "
        f"use it as {ADMIN_TOKEN_ENV} or --token",
        file=sys.stderr,
    )
    return 0


def _list(args: argparse.Namespace) -> int:
    with opened(Path(args.data_dir), args.database) as store:
        tokens = store.tokens.list()
    rows = [("ID", "ORIGIN", "NAME", "CREATED", "SCOPE")]
    rows += [
        (
            t.id,
            t.origin.value,
            t.name or "-",
            t.created_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            t.account_id or "all accounts",
        )
        for t in tokens
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return 0


def _revoke(args: argparse.Namespace) -> int:
    with opened(Path(args.data_dir), args.database) as store:
        token = _find(store.tokens.list(), str(args.id), Path(args.data_dir))
        store.tokens.delete(token.id)
        left = store.tokens.count()
    print(f"revoked admin token {token.id}" + (f" ({token.name})" if token.name else ""))
    if token.origin is TokenOrigin.ENV:
        print(
            f"note: it comes back at the next start while {ADMIN_TOKEN_ENV} holds it; unset it there",
            file=sys.stderr,
        )
    if not left:
        print("note: no admin token is left; make one with `gateway token create`", file=sys.stderr)
    return 0


def _account(accounts: list[Account], wanted: str, data_dir: Path) -> Account:
    """The account named by id, a unique prefix of its id, or its name (any case)."""
    exact = [a for a in accounts if a.id == wanted.lower() or a.name.casefold() == wanted.strip().casefold()]
    matches = exact or [a for a in accounts if wanted and a.id.startswith(wanted.lower())]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise CliError(f"--account: no account {wanted!r} in {data_dir}: see `gateway account list`")
    raise CliError(f"--account: {wanted!r} names {len(matches)} accounts: give more of its id")


def _find(tokens: list[ApiToken], wanted: str, data_dir: Path) -> ApiToken:
    matches = [t for t in tokens if t.id.startswith(wanted.lower())] if wanted else []
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise CliError(f"no admin token {wanted!r} in {data_dir}: see `gateway token list`")
    raise CliError(f"{wanted!r} is the start of {len(matches)} token ids: give more of it")
