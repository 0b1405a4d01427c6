"""``gateway agent ...``: the device agent -- enroll, check client certificates, report, run."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from proxy.cli.errors import CliError

logger = logging.getLogger(__name__)

TOKEN_ENV = "GATEWAY_ENROLL_TOKEN"
EXIT_FAILED_RULE = 3

Handler = Callable[[argparse.Namespace], int]

EPILOG = """\
examples:
  gateway agent enroll --token gwe1.eyJ1Ijoi... --email ann@example.com
  gateway agent check
  gateway agent report
  gateway agent run

files:
  state   ~/.config/gateway-agent/state.json (0600): device id and secret, server URL,
          pinned server certificate fingerprint, account (--state FILE for another)
  reads   the PEM paths each rule lists, /etc/pki/nssdb and ~/.pki/nssdb (NSS certutil)
see docs/agent.md"""


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "agent",
        help="device agent: enroll this device, check its client certificates, report posture",
        description="The device agent: enroll this device with an enrollment token, check the client\n"
        "certificates the posture rules ask for, and report the results with a proof of\n"
        "possession of each passing certificate's private key.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="agent_command", required=True, metavar="COMMAND")
    for name, handler, summary, description, example, add_arguments in _COMMANDS:
        command = sub.add_parser(
            name,
            help=summary,
            description=description,
            epilog=f"example:\n  {example}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        add_arguments(command)
        command.add_argument(
            "--state", type=Path, metavar="FILE",
            help="state file (default: $XDG_CONFIG_HOME/gateway-agent/state.json, "
            "else ~/.config/gateway-agent/state.json)",
        )  # fmt: skip
        command.add_argument(
            "--timeout", type=float, default=30.0, metavar="SECONDS", help="per request (default: 30)"
        )
        command.add_argument("-v", "--verbose", action="store_true", help="log what the agent does to stderr")
        command.set_defaults(func=handler)


def _add_enroll(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--token", metavar="TOKEN",
        help=f"enrollment token from `gateway device token` (default: ${TOKEN_ENV}; '-' reads it from stdin)",
    )  # fmt: skip
    parser.add_argument(
        "--server", metavar="URL",
        help="server URL (default: the one in the token); the token's certificate pin applies either way",
    )  # fmt: skip
    parser.add_argument("--name", help="device name (default: the host name)")
    parser.add_argument("--email", help="the device user's email")
    parser.add_argument(
        "--serial-number", metavar="S",
        help="serial number for ${serial_number} (default: /sys/class/dmi/id/product_serial if readable, "
        "else /etc/machine-id)",
    )  # fmt: skip
    parser.add_argument("--force", action="store_true", help="enroll again even if the state file exists")


def _add_output(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _add_run(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--interval-scale", type=float, default=1.0, metavar="X",
        help="multiply every schedule and the rule refresh interval by X (default: 1; labs and tests)",
    )  # fmt: skip
    parser.add_argument("--max-rounds", type=int, metavar="N", help="stop after N rounds of reports")
    parser.add_argument("--once", action="store_true", help="one round of every rule, then stop (as report)")


# --- plumbing -------------------------------------------------------------------------------------


def _command(body: Callable[[argparse.Namespace], int]) -> Handler:
    def handler(args: argparse.Namespace) -> int:
        from proxy.agent.errors import AgentError

        if args.verbose:
            logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        try:
            code = body(args)
            sys.stdout.flush()
            return code
        except AgentError as e:
            raise CliError(str(e)) from None
        except BrokenPipeError:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
            return 0

    return handler


def _state_path(args: argparse.Namespace) -> Path:
    from proxy.agent.state import default_state_path

    return Path(args.state) if args.state else default_state_path()


def _session(args: argparse.Namespace) -> Any:
    from proxy.agent.session import AgentSession
    from proxy.agent.state import load_state

    session = AgentSession(load_state(_state_path(args)), timeout=args.timeout)
    warning = session.hostname_warning()
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    return session


# --- commands -------------------------------------------------------------------------------------


def _enroll(args: argparse.Namespace) -> int:
    from proxy.agent import device
    from proxy.agent.enroll import Enrollment, enroll
    from proxy.agent.token import check_server_url, parse_token

    path = _state_path(args)
    if path.exists() and not args.force:
        raise CliError(f"this device is already enrolled ({path} exists): pass --force to enroll again")
    text = args.token if args.token is not None else os.environ.get(TOKEN_ENV, "")
    if text == "-":
        text = sys.stdin.readline()
    if not text.strip():
        raise CliError(f"no enrollment token: pass --token TOKEN or set {TOKEN_ENV}")
    token = parse_token(text)
    hostname = device.hostname()
    request = Enrollment(
        token=token,
        server=check_server_url(args.server) if args.server else token.server,
        name=(args.name or hostname).strip(),
        email=(args.email or "").strip(),
        serial_number=(args.serial_number.strip() if args.serial_number else device.serial_number()),
        hostname=hostname,
    )
    state = enroll(request, path, timeout=args.timeout)
    pin = f", server certificate pinned to {state.fingerprint}" if state.fingerprint else ""
    print(f"enrolled as device {state.device_id} ({state.name}) with {state.server}{pin}")
    print(f"state saved to {path} (0600)")
    if not state.serial_number:
        print("warning: no serial number found: rules using ${serial_number} will fail (enroll with --serial-number)",
              file=sys.stderr)  # fmt: skip
    return 0


def _check(args: argparse.Namespace) -> int:
    session = _session(args)
    checks = session.check(session.fetch_rules())
    if args.json:
        print(json.dumps([_check_json(c) for c in checks], indent=2))
    elif not checks:
        print("no posture rules apply to this device")
    else:
        print(format_checks(checks))
    return 0 if all(c.passed for c in checks) else EXIT_FAILED_RULE


def _report(args: argparse.Namespace) -> int:
    session = _session(args)
    checks = session.check(session.fetch_rules())
    stored = session.report(checks)
    if args.json:
        print(json.dumps([s.__dict__ for s in stored], indent=2))
    elif not stored:
        print("no posture rules apply to this device: nothing to report")
    else:
        print(format_stored(stored, {c.rule_id: c.name for c in checks}))
    return 0


def _run(args: argparse.Namespace) -> int:
    from proxy.agent.run import AgentLoop, Round

    if args.max_rounds is not None and args.max_rounds < 1:
        raise CliError("--max-rounds must be at least 1")
    session = _session(args)
    stop = threading.Event()
    names: dict[str, str] = {}

    def show(done: Round) -> None:
        names.update({c.rule_id: c.name for c in done.checks})
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        if not done.stored:
            print(f"{stamp} round {done.number}: nothing stored (see warnings)", flush=True)
        for entry in done.stored:
            print(f"{stamp} {names.get(entry.rule_id, entry.rule_id)}: {_outcome(entry)}"
                  + (f": {entry.reason}" if entry.reason else ""), flush=True)  # fmt: skip

    max_rounds = 1 if args.once else args.max_rounds
    loop = AgentLoop(session, interval_scale=args.interval_scale, max_rounds=max_rounds, stop=stop, on_round=show)
    if not args.verbose:
        logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s: %(message)s")
    with _stop_on_signals(stop):
        loop.run()
    return 0


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    def handler(signum: int, frame: FrameType | None) -> None:
        logger.info("signal %d: stopping", signum)
        stop.set()

    if threading.current_thread() is not threading.main_thread():  # embedded (tests): the caller stops it
        yield
        return
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


_COMMANDS: tuple[tuple[str, Handler, str, str, str, Callable[[argparse.ArgumentParser], None]], ...] = (
    ("enroll", _command(_enroll), "enroll this device with a one-time token",
     ("Register this device (name, OS, serial number, host name, user email) with the server named\n"
     "in the enrollment token, pinning the server's certificate by the fingerprint the token\n"
     "carries, and save the device id and secret to the 0600 state file."),
     "gateway agent enroll --token gwe1.eyJ1Ijoi... --email ann@example.com", _add_enroll),
    ("check", _command(_check), "check this device's client certificates against its posture rules",
     ("Fetch this device's posture rules and their signing certificates, look at every location\n"
     "each rule lists, and print a table: rule, outcome, the passing certificate or the reason,\n"
     "and beneath it every rejected certificate with its reason. Nothing is reported.\n"
     f"Exit status {EXIT_FAILED_RULE} when a rule fails."),
     "gateway agent check", _add_output),
    ("report", _command(_report), "check once and report the results, with proof, to the server",
     ("Check as `check` does, then send every result: a passing one with its certificate and a\n"
     "signature over a fresh server nonce made with its private key. Prints what the server\n"
     "stored (a pass counts only when the server verified it)."),
     "gateway agent report", _add_output),
    ("run", _command(_run), "check and report each rule on its schedule until stopped",
     ("Check and report each rule on its own schedule (sooner if its results would expire\n"
     "first), fetching the rules again every minute. SIGINT or SIGTERM stops it cleanly."),
     "gateway agent run --interval-scale 0.01 --max-rounds 3", _add_run),
)


# --- output ---------------------------------------------------------------------------------------


def _outcome(entry: Any) -> str:
    if entry.success and entry.verified:
        return "pass (verified)"
    return "pass (not verified)" if entry.success else "fail"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    everything = [tuple(header), *[tuple(r) for r in rows]]
    widths = [max(len(row[i]) for row in everything) for i in range(len(header) - 1)]
    return "\n".join(
        "  ".join([*(cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=True)), row[-1]]).rstrip()
        for row in everything
    )


def format_checks(checks: Sequence[Any]) -> str:
    rows = []
    for check in checks:
        if check.passed:
            cn = _cn(check.certificate)
            detail = check.candidate.source + (f" (CN {cn})" if cn else "")
            if check.key is None:
                detail += f"; cannot prove it: {check.key_problem}"
        else:
            detail = check.reason
        rows.append((check.name, "pass" if check.passed else "fail", detail))
    lines = [_table(("RULE", "OUTCOME", "CERTIFICATE OR REASON"), rows)]
    for check in checks:
        if check.rejected:
            lines.append("")
            lines.append(f"rejected for {check.name}:")
            for item in check.rejected:
                what = item.source + (f" (CN {item.cn})" if item.cn else "")
                lines.append(f"  {what}: {item.reason}")
    return "\n".join(lines)


def format_stored(stored: Sequence[Any], names: dict[str, str]) -> str:
    rows = [(names.get(s.rule_id, s.rule_id), _outcome(s), s.expires_at if s.success else "", s.reason) for s in stored]
    return _table(("RULE", "STORED", "PASS EXPIRES", "REASON"), rows)


def _cn(cert: Any) -> str | None:
    from certs.client_check import common_name

    return common_name(cert) if cert is not None else None


def _check_json(check: Any) -> dict[str, Any]:
    return {
        "rule_id": check.rule_id,
        "name": check.name,
        "passed": check.passed,
        "reason": check.reason,
        "certificate": check.candidate.source if check.candidate else None,
        "cn": _cn(check.certificate),
        "private_key": check.key is not None,
        "rejected": [{"source": r.source, "cn": r.cn, "reason": r.reason} for r in check.rejected],
    }
