"""``gateway logs requests|posture``: the request log and the posture log of a running gateway,
through its admin API (``GET .../gateway/requests``, ``GET .../devices/posture/logs``).
``gateway posture logs`` is a deprecated alias of ``gateway logs posture``: the same options and
output, after a one-line notice on stderr.

One readable line per record, oldest first, as ``tail`` prints (``--json``: the records as the API
gives them, one JSON object a line). ``--follow`` keeps asking for what is newer than the last
record printed (``since`` = its time; records of that same instant already printed are skipped)
until Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from proxy.cli import options as shared
from proxy.cli.client import AdminClient, account_of, add_admin_options, connect
from proxy.cli.device import resolve_device, resolve_rule
from proxy.cli.errors import CliError

logger = logging.getLogger(__name__)

ACTIONS: Final = ("allow", "block", "redirect", "error")  # the request log's words
OUTCOMES: Final = ("passed", "failed", "refused")  # the posture log's words
DEFAULT_LIMIT: Final = 20
MAX_LIMIT: Final = 1000  # what both endpoints answer at most per call
DEFAULT_INTERVAL: Final = 1.0
DEPRECATED_POSTURE_LOGS: Final = (
    "gateway: `gateway posture logs` is deprecated; use `gateway logs posture` (same options)"
)

_sleep: Callable[[float], None] = time.sleep  # tests replace it to stop --follow


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "logs",
        help="the request log and the posture log of a running gateway",
        description="Read the request log (one line per proxied request: its decision, rule and "
        "status) and the posture log (each result agents reported) of a running gateway through "
        "its admin API.",
        epilog="examples:\n"
        "  gateway logs requests --action block --since 10m\n"
        "  gateway logs requests --follow --device DEVICE_ID\n"
        "  gateway logs posture --follow --outcome failed\n"
        "  gateway logs requests --json --limit 1000 > requests.jsonl",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="logs_command", required=True, metavar="LOG")

    requests = commands.add_parser(
        "requests",
        help="proxied requests: time, device, action, host and path, rule, status (and why a block)",
        description="The newest requests of the proxy's request log (DATA_DIR/requests.jsonl), oldest first.",
    )
    requests.add_argument("--device", metavar="ID", help="only this device's requests")
    requests.add_argument(
        "--action", action="append", choices=ACTIONS, help="only requests with this action (repeatable)"
    )
    requests.add_argument("--host", metavar="TEXT", help="only hosts containing TEXT (case-insensitive)")
    requests.set_defaults(func=_requests)
    _common_options(requests)

    posture = commands.add_parser(
        "posture",
        help="posture results agents reported: time, device, outcome, rule, reason",
        description="The newest entries of the posture log, oldest first.",
    )
    _posture_options(posture)
    posture.set_defaults(func=_posture)
    _register_deprecated(subparsers)


def _register_deprecated(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``gateway posture logs``: what ``gateway logs posture`` was called before."""
    parser = subparsers.add_parser(
        "posture",
        help="deprecated: `gateway posture logs` is now `gateway logs posture`",
        description="Deprecated: use `gateway logs posture`.",
    )
    commands = parser.add_subparsers(dest="posture_command", required=True, metavar="COMMAND")
    alias = commands.add_parser(
        "logs",
        help="deprecated alias of `gateway logs posture` (same options and output)",
        description="Deprecated: runs `gateway logs posture` with the same options, after a "
        "one-line notice on stderr.",
    )
    _posture_options(alias)
    alias.set_defaults(func=_deprecated_posture_logs)


def _posture_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device",
        metavar="ID",
        help="only this device's results: its id, a unique prefix of it, or its name",
    )
    parser.add_argument("--rule", metavar="ID", help="only this posture rule's results: its id or its name")
    parser.add_argument(
        "--outcome", action="append", choices=OUTCOMES, help="only results with this outcome (repeatable)"
    )
    _common_options(parser)


def _common_options(command: argparse.ArgumentParser) -> None:
    """--since, --limit, --follow, --interval, --json and the admin API options of both logs."""
    command.add_argument(
        "--since",
        metavar="WHEN",
        help="only records from then on: a duration such as 10m or 2h, or an RFC 3339 time",
    )
    command.add_argument(
        "--limit", type=_limit, default=DEFAULT_LIMIT, metavar="N",
        help=f"at most N records at first (1-{MAX_LIMIT}, default {DEFAULT_LIMIT})",
    )  # fmt: skip
    command.add_argument("-f", "--follow", action="store_true", help="keep printing new records until Ctrl-C")
    command.add_argument(
        "--interval", type=_interval, default=DEFAULT_INTERVAL, metavar="SECONDS",
        help=f"with --follow: how often to ask (default {DEFAULT_INTERVAL:g})",
    )  # fmt: skip
    shared.JSON.add(command, note="one JSON object per line, as the API gives them")
    add_admin_options(command.add_argument_group("admin API options"))


def _limit(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer from 1 to {MAX_LIMIT}, got {text!r}") from None
    if not 1 <= value <= MAX_LIMIT:
        raise argparse.ArgumentTypeError(f"must be an integer from 1 to {MAX_LIMIT}, got {value}")
    return value


def _interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, got {text!r}") from None
    if not 0.05 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"must be from 0.05 to 3600 seconds, got {text}")
    return value


@dataclass(frozen=True)
class LogSource:
    """One log behind the admin API: how to ask for it and how to read a record."""

    path: str
    time_key: str
    query: Mapping[str, str]
    limit_keys: Callable[[int], Mapping[str, str]]
    keep: Callable[[Mapping[str, Any]], bool]
    render: Callable[[Mapping[str, Any]], str]

    def fetch(self, client: AdminClient, since: str | None, limit: int) -> list[Mapping[str, Any]]:
        """Matching records, oldest first."""
        query = {**self.query, **self.limit_keys(limit)}
        if since:
            query["since"] = since
        result = client.get(self.path, query).result
        if not isinstance(result, list):
            raise CliError(f"the admin API at {client.server} sent no list of records for {self.path}")
        records: list[Mapping[str, Any]] = [r for r in result if isinstance(r, dict) and self.keep(r)]
        return records[::-1]


def _requests(args: argparse.Namespace) -> int:
    client = connect(args)
    account = account_of(client, args.account)
    query = {k: v for k, v in (("device", args.device), ("host", args.host)) if v}
    if args.action:
        query["action"] = ",".join(dict.fromkeys(args.action))
    source = LogSource(
        f"/accounts/{account}/gateway/requests",
        "time",
        query,
        lambda n: {"limit": str(n)},
        lambda record: True,
        request_line,
    )
    return _show(client, source, args)


def _deprecated_posture_logs(args: argparse.Namespace) -> int:
    print(DEPRECATED_POSTURE_LOGS, file=sys.stderr)
    return _posture(args)


def _posture(args: argparse.Namespace) -> int:
    client = connect(args)
    account = account_of(client, args.account)
    query: dict[str, str] = {}
    if args.device:  # an id, a unique prefix of one or a name: the API filters by id
        devices = client.get(f"/accounts/{account}/devices").result or []
        query["device_id"] = str(
            resolve_device([d for d in devices if isinstance(d, dict)], args.device)["id"]
        )
    if args.rule:
        query["rule_id"] = resolve_rule(
            client.get(f"/accounts/{account}/devices/posture").result or [], args.rule
        )
    outcomes = frozenset(args.outcome or ())
    source = LogSource(
        f"/accounts/{account}/devices/posture/logs",
        "timestamp",
        query,
        lambda n: {"per_page": str(n), "page": "1"},
        lambda record: not outcomes or record.get("outcome") in outcomes,
        posture_line,
    )
    return _show(client, source, args)


def _show(client: AdminClient, source: LogSource, args: argparse.Namespace) -> int:
    try:
        return _print_records(client, source, args)
    except BrokenPipeError:  # `gateway logs posture | head`: the reader has all it wanted
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 0


def _print_records(client: AdminClient, source: LogSource, args: argparse.Namespace) -> int:
    render: Callable[[Mapping[str, Any]], str] = _json_line if args.json else source.render
    records = source.fetch(client, args.since, args.limit)
    _emit(records, render)
    if not args.follow:
        return 0
    cursor = Cursor(source.time_key)
    cursor.advance(records)
    try:
        while True:
            _sleep(args.interval)
            fresh = cursor.new(source.fetch(client, cursor.since or args.since, MAX_LIMIT))
            _emit(fresh, render)
            cursor.advance(fresh)
    except KeyboardInterrupt:
        return 0


class Cursor:
    """Where ``--follow`` is: the newest time printed and the records of that instant (the next
    ``since`` includes it, so they come again and are skipped)."""

    def __init__(self, time_key: str) -> None:
        self._key = time_key
        self.since: str | None = None
        self._seen: set[str] = set()

    def new(self, records: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        return [r for r in records if _identity(r) not in self._seen]

    def advance(self, records: Iterable[Mapping[str, Any]]) -> None:
        for record in records:
            moment = str(record.get(self._key) or "")
            if self.since is None or moment > self.since:  # RFC 3339 in UTC: text order is time order
                self.since, self._seen = moment, set()
            if moment == self.since:
                self._seen.add(_identity(record))


def _identity(record: Mapping[str, Any]) -> str:
    return json.dumps(record, sort_keys=True, separators=(",", ":"))


def _emit(records: Iterable[Mapping[str, Any]], render: Callable[[Mapping[str, Any]], str]) -> None:
    for record in records:
        print(render(record))
    sys.stdout.flush()


def _json_line(record: Mapping[str, Any]) -> str:
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False)


def request_line(record: Mapping[str, Any]) -> str:
    """``TIME  DEVICE  ACTION  HOST/PATH  RULE  STATUS`` and, for a block, why."""
    status = record.get("status")
    rule = record.get("rule") or record.get("rule_id") or "-"
    fields = [
        str(record.get("time") or "-"),
        str(record.get("device") or "-"),
        f"{record.get('action') or '-':<8}",
        f"{record.get('host') or ''}{record.get('path') or ''}",
        f"rule={rule}",
        str(status) if status is not None else "-",
    ]
    reason = record.get("reason") or record.get("error")
    if reason and record.get("action") != "allow":
        fields.append(f"({reason})")
    return "  ".join(fields)


def posture_line(record: Mapping[str, Any]) -> str:
    """``TIME  DEVICE  OUTCOME  RULE  REASON``."""
    device = record.get("device_name") or record.get("device_id") or "-"
    return "  ".join(
        [
            str(record.get("timestamp") or "-"),
            str(device),
            f"{record.get('outcome') or '-':<7}",
            f"rule={record.get('rule_name') or record.get('rule_id') or '-'}",
            str(record.get("reason") or ""),
        ]
    ).rstrip()
