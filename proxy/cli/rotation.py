"""``gateway ca rotate`` and ``gateway ca rotation ...``: CA rotations (issue 12, docs/rotation.md)
through the admin API. ``proxy.cli.ca`` registers them among its subcommands."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import urllib.parse
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from proxy.cli.client import AdminClient, account_of, connect
from proxy.cli.errors import CliError

logger = logging.getLogger(__name__)

ACTIONS = ("show", "list", "pause", "resume", "continue", "cancel")
OPEN = ("running", "paused", "held")
KEY_TYPES = ("ec-p256", "ec-p384", "rsa-2048", "rsa-3072", "rsa-4096")
WATCH_INTERVAL = 1.0
MAX_LISTED = 20

Handler = Callable[[argparse.Namespace], int]
Command = tuple[str, Handler, str, str, Callable[[argparse.ArgumentParser], None]]


def add_rotate(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--coverage", type=int, metavar="PERCENT",
        help="turn the new CA on once this percentage of the devices that report their trust "
        "stores have installed it (0-100, default: 100)",
    )  # fmt: skip
    parser.add_argument(
        "--deadline", metavar="DURATION",
        help='stop waiting for devices after this long ("30s", "10m", "12h", "7d") or at this '
        "RFC 3339 time (default: 7d); then --on-deadline decides",
    )  # fmt: skip
    parser.add_argument(
        "--grace", metavar="DURATION",
        help="keep the old CA available (installed, trusted) this long after the switch, then "
        "deactivate it (default: 1d)",
    )  # fmt: skip
    parser.add_argument(
        "--on-deadline", choices=("hold", "proceed"),
        help="at the deadline with coverage short: hold (stop and name the devices lacking the "
        "new CA; the default) or proceed (turn it on anyway)",
    )  # fmt: skip
    parser.add_argument(
        "--upload-id", metavar="ID",
        help="rotate to this inactive uploaded CA (`gateway ca upload` without --activate) "
        "instead of generating one",
    )  # fmt: skip
    parser.add_argument(
        "--days", type=int, metavar="N", help="validity of a generated CA in days (default: 1825)"
    )
    parser.add_argument(
        "--key-type", choices=KEY_TYPES, metavar="TYPE", help="key of a generated CA (default: ec-p256)"
    )
    parser.add_argument(
        "--watch", action="store_true",
        help="then follow it until it completes or stops (as `gateway ca rotation --watch`)",
    )  # fmt: skip


def add_rotation(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "action", nargs="?", default="show", choices=ACTIONS, metavar="ACTION",
        help="show (default): the open rotation, else the latest; list: every rotation; pause, "
        "resume, continue (go on past the deadline whatever the coverage), cancel",
    )  # fmt: skip
    parser.add_argument(
        "id", nargs="?", metavar="ID", help="the rotation (default: the open one, else the latest)"
    )
    parser.add_argument(
        "--watch", action="store_true",
        help="follow it: print each change until it completes or stops (exit 0 when completed, 1 otherwise)",
    )  # fmt: skip
    parser.add_argument(
        "--deadline", metavar="DURATION",
        help="with resume: a new deadline (a duration from now or an RFC 3339 time); a held rotation needs one",
    )  # fmt: skip


class _Rotations:
    """The rotation paths of one account."""

    def __init__(self, client: AdminClient, account: str) -> None:
        self.client = client
        self.base = f"/accounts/{urllib.parse.quote(account, safe='')}/gateway/certificates/rotations"

    def path(self, rotation_id: str = "", action: str = "") -> str:
        one = f"/{urllib.parse.quote(rotation_id, safe='')}" if rotation_id else ""
        return f"{self.base}{one}{'/' + action if action else ''}"

    def get(self, rotation_id: str | None) -> dict[str, Any]:
        result = self.client.get(self.path(rotation_id or "current")).result
        if not isinstance(result, dict):
            raise CliError("the admin API did not answer with a rotation")
        return result


def rotate(args: argparse.Namespace) -> int:
    client = connect(args)
    rotations = _Rotations(client, account_of(client, args.account))
    body: dict[str, Any] = {}
    for key, value in (
        ("coverage", args.coverage), ("deadline", args.deadline), ("grace", args.grace),
        ("on_deadline", args.on_deadline), ("upload_id", args.upload_id),
        ("validity_period_days", args.days), ("key_type", args.key_type),
    ):  # fmt: skip
        if value is not None:
            body[key] = value
    started = client.post(rotations.path(), body).result
    if not isinstance(started, dict):
        raise CliError("the admin API did not answer with a rotation")
    if args.json and not args.watch:
        _print_json(started)
        return 0
    print(f"rotation {started['id']} started: {started.get('message', '')}", file=_progress(args))
    if args.watch:
        return watch(rotations, started["id"], as_json=args.json)
    print(
        f"follow it with `gateway ca rotation --watch` (coverage {_coverage(started)})", file=_progress(args)
    )
    return 0


def rotation(args: argparse.Namespace) -> int:
    client = connect(args)
    rotations = _Rotations(client, account_of(client, args.account))
    if args.deadline is not None and args.action != "resume":
        raise CliError("--deadline goes with resume only")
    if args.action == "list":
        listed = client.get(rotations.path()).result or []
        if args.json:
            _print_json(listed)
        elif not listed:
            print("no CA rotation yet (start one with `gateway ca rotate`)")
        else:
            print(format_list(listed))
        return 0
    if args.action == "show":
        if args.watch:
            return watch(rotations, args.id or rotations.get(None)["id"], as_json=args.json)
        shown = rotations.get(args.id)
        _print_json(shown) if args.json else print(format_rotation(shown, now=datetime.now(UTC)))
        return 0
    rotation_id = args.id or rotations.get(None)["id"]
    body = {"deadline": args.deadline} if args.deadline is not None else {}
    changed = client.post(rotations.path(rotation_id, args.action), body).result
    if not isinstance(changed, dict):
        raise CliError("the admin API did not answer with a rotation")
    if args.json and not args.watch:
        _print_json(changed)
    else:
        print(
            f"rotation {rotation_id}: {changed.get('state')} at step {changed.get('step')}: {changed.get('message')}"
        )
    if args.watch:
        return watch(rotations, rotation_id, as_json=args.json)
    return 0


def watch(rotations: _Rotations, rotation_id: str, *, as_json: bool, interval: float = WATCH_INTERVAL) -> int:
    """Print the rotation at every change until it is completed, cancelled, failed or held."""
    last: tuple[Any, ...] | None = None
    while True:
        current = rotations.get(rotation_id)
        key = (current.get("state"), current.get("step"), json.dumps(current.get("coverage"), sort_keys=True))
        if key != last:
            if as_json:
                print(json.dumps(current), flush=True)
            else:
                print(watch_line(current, now=datetime.now(UTC)), flush=True)
            last = key
        state = current.get("state")
        if state == "completed":
            return 0
        if state not in OPEN or state == "held":
            print(f"rotation {rotation_id} is {state}: {current.get('message', '')}", file=sys.stderr)
            return 1
        time.sleep(interval)


# --- output ------------------------------------------------------------------------------------------


def watch_line(r: dict[str, Any], *, now: datetime) -> str:
    missing = _missing(r)
    lacking = f"; lacking: {missing}" if missing else ""
    return f"{now:%H:%M:%S} {r.get('state')} step {r.get('step')}: coverage {_coverage(r)}{lacking}"


def format_rotation(r: dict[str, Any], *, now: datetime) -> str:
    rows = [
        ("rotation", f"{r.get('id')} ({r.get('trigger')})"),
        ("state", f"{r.get('state')}, step {r.get('step')}"),
        ("new CA", str(r.get("new_certificate_id"))),
        ("old CA", str(r.get("old_certificate_id") or "none")),
        ("coverage", _coverage(r)),
        ("lacking it", _missing(r) or "none"),
        ("deadline", f"{r.get('deadline')}{_from_now(r.get('deadline'), now)} (then {r.get('on_deadline')})"),
        ("grace", str(r.get("grace"))),
        ("switched at", str(r.get("switched_at") or "not yet")),
        ("message", str(r.get("message"))),
    ]
    width = max(len(k) for k, _ in rows)
    lines = [f"{k.ljust(width)}  {v}" for k, v in rows]
    lines.append("steps:")
    lines += [
        f"  {s.get('at')}  {str(s.get('step')).ljust(7)} {str(s.get('state')).ljust(9)} {s.get('message')}"
        for s in r.get("steps") or []
    ]
    return "\n".join(lines)


def format_list(items: Sequence[Any]) -> str:
    header = ("ID", "STATE", "STEP", "TRIGGER", "NEW CA", "STARTED")
    rows = [header] + [
        (str(r.get("id")), str(r.get("state")), str(r.get("step")), str(r.get("trigger")),
         str(r.get("new_certificate_id")), str(r.get("created_at")))
        for r in items if isinstance(r, dict)
    ]  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows)


def _coverage(r: dict[str, Any]) -> str:
    c = r.get("coverage") or {}
    return (
        f"{c.get('installed', 0)}/{c.get('reporting', 0)} reporting devices have it "
        f"(need {c.get('required_percent', 100)}%)"
    )


def _missing(r: dict[str, Any]) -> str:
    missing = (r.get("coverage") or {}).get("missing") or []
    names = [f"{m.get('name') or '?'} ({m.get('device_id')})" for m in missing if isinstance(m, dict)]
    more = len(names) - MAX_LISTED
    return ", ".join(names[:MAX_LISTED]) + (f" and {more} more" if more > 0 else "")


def _from_now(value: object, now: datetime) -> str:
    if not isinstance(value, str):
        return ""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return ""
    seconds = int((moment - now).total_seconds())
    return f" (in {seconds}s)" if seconds >= 0 else f" ({-seconds}s ago)"


def _progress(args: argparse.Namespace) -> Any:
    return sys.stderr if args.json else sys.stdout


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2))


COMMANDS: tuple[Command, ...] = (
    (
        "rotate",
        rotate,
        "rotate the root CA safely: a new CA is turned on only once the devices have installed it",
        "gateway ca rotate --coverage 100 --deadline 7d --grace 1d --watch",
        add_rotate,
    ),
    (
        "rotation",
        rotation,
        "show, watch, pause, resume, continue or cancel a CA rotation",
        "gateway ca rotation --watch",
        add_rotation,
    ),
)
