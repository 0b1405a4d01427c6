"""``gateway agent ...`` and ``gateway-agent ...``: the device agent's command line -- enroll,
check client certificates, report, keep the trust stores in step, run, show the proxy credentials.

The same commands are reached two ways: as the ``agent`` group of the ``gateway`` command
(``register``, found through the ``gateway.commands`` entry point, so the server never imports the
agent) and as the agent's own program ``gateway-agent`` (``main``) for devices that install only
the agent. Either way each command handles its own errors: an ``AgentError`` becomes one line on
stderr, ``<program>: error: <message>``, and exit status 1.
"""

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
from typing import TYPE_CHECKING, Any

from agent.errors import AgentError

if TYPE_CHECKING:  # the modules themselves are imported by the commands: `gateway --help` stays fast
    from agent.host import Host
    from agent.run import Round
    from agent.session import AgentSession
    from agent.state import AgentState
    from agent.trust import SyncReport, TrustSync
    from agent.trust_store import StoreOptions

logger = logging.getLogger(__name__)

TOKEN_ENV = "GATEWAY_ENROLL_TOKEN"
EXIT_ERROR = 1
EXIT_FAILED_RULE = 3
EXIT_TRUST_TROUBLE = 3
PROXY_PORT = 8080  # `gateway run --proxy-listen`'s default port

Handler = Callable[[argparse.Namespace], int]

EPILOG = """\
examples:
  {prog} enroll --token gwe1.eyJ1Ijoi... --email ann@example.com
  {prog} check
  {prog} report
  {prog} sync-ca
  {prog} run
  {prog} credentials --format header
  {prog} proxy --listen 127.0.0.1:3128
  {prog} wireguard --output /etc/wireguard/gateway.conf

exit status:
  0    done; every rule passed (check, report); every store in step (sync-ca);
       stopped by --once, --max-rounds, SIGINT or SIGTERM (run)
  1    an error, said in one line on stderr: not enrolled, the server cannot be reached
       or refuses this device, a bad option value
  2    the command line cannot be parsed (usage)
  3    a rule failed (check, report); a certificate was refused or a store has a
       problem (sync-ca)
  130  interrupted (Ctrl-C) in any command but run, which stops cleanly with 0

files:
  state   ~/.config/gateway-agent/state.json (0600): device id and secret, server URL,
          pinned server certificate fingerprint, account, trust store options and the
          root certificates this agent installed (--state FILE for another)
          (macOS: ~/Library/Application Support/gateway-agent; Windows:
          %LOCALAPPDATA%\\gateway-agent)
  reads   the PEM paths each rule lists, /etc/pki/nssdb and ~/.pki/nssdb (NSS certutil);
          macOS: the System (and login) keychain (security); Windows: Cert:\\LocalMachine\\My
          (and CurrentUser\\My) (PowerShell)
  writes  (sync-ca, run) the gateway's root CAs into /usr/local/share/ca-certificates
          (+ update-ca-certificates), ~/.pki/nssdb and /etc/pki/nssdb (certutil); macOS: the
          System keychain as a trusted root; Windows: Cert:\\LocalMachine\\Root (--user: also
          CurrentUser\\Root). sync-ca --dry-run prints the commands instead
see docs/agent.md"""

DESCRIPTION = (
    "The device agent: enroll this device with an enrollment token, check the client\n"
    "certificates the posture rules ask for, and report the results with a proof of\n"
    "possession of each passing certificate's private key."
)


def register(commands: Any) -> None:
    """The ``agent`` group of the ``gateway`` command (entry point ``gateway.commands``)."""
    parser: argparse.ArgumentParser = commands.add_parser(
        "agent",
        help="device agent: enroll this device, check its client certificates, report posture",
        description=DESCRIPTION,
        epilog=EPILOG.format(prog="gateway agent"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_commands(parser, program="gateway", prog="gateway agent")


def build_parser(prog: str = "gateway-agent") -> argparse.ArgumentParser:
    """The agent's own program (``gateway-agent``), for devices that install only the agent."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=DESCRIPTION,
        epilog=EPILOG.format(prog=prog),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_commands(parser, program=prog, prog=prog)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130


def _add_commands(parser: argparse.ArgumentParser, *, program: str, prog: str) -> None:
    """Every agent command under ``parser``; ``program`` starts the error lines, ``prog`` the
    examples (``gateway agent`` or ``gateway-agent``)."""
    sub = parser.add_subparsers(dest="agent_command", required=True, metavar="COMMAND")
    for name, body, summary, description, example, add_arguments in _COMMANDS:
        command = sub.add_parser(
            name,
            help=summary,
            description=description,
            epilog="example:\n  " + "\n  ".join(example.format(prog=prog).splitlines()),
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
        command.set_defaults(func=_command(body, program))


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
        "else /etc/machine-id; macOS: ioreg's IOPlatformSerialNumber; Windows: Win32_BIOS.SerialNumber)",
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
    _add_stores(parser)


def _add_stores(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "trust stores",
        "Where the gateway's root CAs are installed. Default: the state file's \"trust_stores\"\n"
        "(all on when absent); these options override it for this run.",
    )
    group.add_argument(
        "--root", type=Path, metavar="DIR",
        help="put every store under DIR, an existing directory (DIR/usr/local/share/ca-certificates, "
        "DIR/$HOME/.pki/nssdb, ...; the folders and empty NSS databases they need are made there): "
        "nothing outside DIR is changed",
    )  # fmt: skip
    group.add_argument(
        "--system", action=argparse.BooleanOptionalAction, default=None,
        help="the system store: /usr/local/share/ca-certificates + update-ca-certificates (Debian), or "
        "/etc/pki/ca-trust/source/anchors + update-ca-trust (RHEL); on macOS the System keychain (as a "
        "trusted root); on Windows Cert:\\LocalMachine\\Root; needs root / an elevated agent",
    )  # fmt: skip
    group.add_argument(
        "--user", action=argparse.BooleanOptionalAction, default=None,
        help="Windows: the user's own Root store, Cert:\\CurrentUser\\Root (Windows asks the user to "
        "confirm each change) (default: off)",
    )  # fmt: skip
    group.add_argument(
        "--nss", action=argparse.BooleanOptionalAction, default=None,
        help="the default NSS databases: ~/.pki/nssdb (Chromium) and /etc/pki/nssdb",
    )  # fmt: skip
    group.add_argument(
        "--nss-db", action="append", metavar="DIR", dest="nss_db",
        help="another NSS database (absolute directory; repeat for more; replaces the configured list)",
    )  # fmt: skip


def _add_sync_ca(parser: argparse.ArgumentParser) -> None:
    _add_output(parser)
    _add_stores(parser)
    parser.add_argument(
        "--dry-run", action="store_true",
        help="read the stores and print the commands that would install or remove a root, for an "
        "administrator to review; change nothing, record nothing, report nothing",
    )  # fmt: skip
    parser.add_argument(
        "--save", action="store_true",
        help="remember --system/--nss/--nss-db in the state file for later runs (not --root)",
    )  # fmt: skip


def _add_proxy(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--listen", default="127.0.0.1:3128", metavar="HOST:PORT",
        help="where the local proxy listens (default: 127.0.0.1:3128); loopback only unless --allow-remote",
    )  # fmt: skip
    parser.add_argument(
        "--upstream", metavar="HOST:PORT",
        help=f"the gateway's proxy (default: the server's host, port {PROXY_PORT})",
    )  # fmt: skip
    parser.add_argument(
        "--allow-remote", action="store_true",
        help="allow a --listen address off loopback. DANGEROUS: anyone who reaches it browses as this "
        "device, with its identity and posture, and without any secret",
    )  # fmt: skip
    parser.add_argument(
        "--max-connections", type=int, default=256, metavar="N",
        help="clients at a time; more are answered 503 (default: 256)",
    )  # fmt: skip


def _add_credentials(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--format", choices=CREDENTIAL_FORMATS, default="userinfo",
        help="userinfo: DEVICE_ID:SECRET (curl --proxy-user); header: the Proxy-Authorization header; "
        "url: the proxy URL with the credentials in it (HTTPS_PROXY); json: all of them (default: userinfo)",
    )  # fmt: skip
    parser.add_argument(
        "--proxy", metavar="HOST:PORT",
        help=f"the gateway's proxy, for --format url and json (default: the server's host, port {PROXY_PORT})",
    )  # fmt: skip


def _add_wireguard(parser: argparse.ArgumentParser) -> None:
    from agent.wireguard import FORMATS

    parser.add_argument(
        "--format", choices=FORMATS, default="wg-quick",
        help="wg-quick: for `wg-quick up FILE`; wg: for `wg setconf IFACE FILE`, without Address "
        "(set it with `ip address add`) (default: wg-quick)",
    )  # fmt: skip
    parser.add_argument(
        "--allowed-ips", metavar="CIDRS",
        help="what to send through the tunnel, comma-separated (default: 0.0.0.0/0, everything)",
    )  # fmt: skip
    parser.add_argument(
        "--dns", metavar="ADDRESSES", help="DNS servers for wg-quick, comma-separated (default: none)"
    )
    parser.add_argument(
        "--output", type=Path, metavar="FILE", help="write it to FILE (0600) instead of stdout"
    )


# --- plumbing -------------------------------------------------------------------------------------


def _command(body: Handler, program: str) -> Handler:
    """``body`` as a command: its ``AgentError`` is one line on stderr and exit status 1 (the
    ``gateway`` command catches only its own errors), a closed stdout is not an error."""

    def handler(args: argparse.Namespace) -> int:
        if args.verbose:
            logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        try:
            code = body(args)
            sys.stdout.flush()
            return code
        except AgentError as e:
            print(f"{program}: error: {e}", file=sys.stderr)
            return EXIT_ERROR
        except BrokenPipeError:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
            return 0

    return handler


def _state_path(args: argparse.Namespace) -> Path:
    from agent.state import default_state_path

    return Path(args.state) if args.state else default_state_path()


def _session(args: argparse.Namespace) -> AgentSession:
    from agent import host
    from agent.session import AgentSession
    from agent.state import load_state

    here = host.current_host()
    session = AgentSession(
        load_state(_state_path(args)), timeout=args.timeout, locator_factory=lambda: host.finder(here)
    )
    warning = session.hostname_warning()
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    return session


def _store_options(args: argparse.Namespace, state: AgentState) -> StoreOptions:
    from agent import host
    from agent.trust_store import StoreOptions

    root = None
    if args.root is not None and host.current_host().system != "linux":
        raise AgentError("--root works with the Linux stores only: on macOS and Windows try --dry-run")
    if args.root is not None:
        root = Path(os.path.abspath(args.root))
        if not root.is_dir():
            raise AgentError(f"--root {args.root}: no such directory")
    databases = None
    if args.nss_db is not None:
        databases = tuple(d.strip() for d in args.nss_db)
        for directory in databases:
            if not directory.startswith(("/", "~")):
                raise AgentError(f"--nss-db {directory}: give the NSS database's absolute directory")
    return StoreOptions.from_config(
        state.trust_stores,
        system=args.system,
        nss=args.nss,
        nss_databases=databases,
        root=root,
        user=args.user,
    )


def _trust_sync(args: argparse.Namespace, session: AgentSession, options: StoreOptions) -> TrustSync:
    from agent import host
    from agent.trust import Ledger, TrustSync, build_stores

    here = host.current_host()
    return TrustSync(session.transport, Ledger(_state_path(args)), lambda: build_stores(options, host=here))


def _dry_sync(session: AgentSession, options: StoreOptions) -> TrustSync:
    """A sync that reads the stores but only collects the commands that would change them: no
    store is changed, no record written, nothing reported to the server."""
    from dataclasses import replace

    from agent import host
    from agent.runner import Command, DryRunner
    from agent.trust import DryNssTools, Ledger, TrustSync, build_stores

    planned: list[Command] = []
    here = host.current_host()
    dry = replace(here, runner=DryRunner(here.runner, planned))
    nss = DryNssTools(planned)
    ledger = Ledger(None, session.state.trust_installed)
    return TrustSync(
        session.transport, ledger, lambda: build_stores(options, host=dry, nss_tools=nss, dry_run=True),
        planned=planned,
    )  # fmt: skip


def _previous_state(path: Path) -> AgentState | None:
    from agent.state import load_state

    try:
        return load_state(path) if path.exists() else None
    except AgentError:
        return None


# --- commands -------------------------------------------------------------------------------------


def _enroll(args: argparse.Namespace) -> int:
    from agent import device, host
    from agent.enroll import Enrollment, enroll
    from agent.token import check_server_url, parse_token

    path = _state_path(args)
    if path.exists() and not args.force:
        raise AgentError(f"this device is already enrolled ({path} exists): pass --force to enroll again")
    text = args.token if args.token is not None else os.environ.get(TOKEN_ENV, "")
    if text == "-":
        text = sys.stdin.readline()
    if not text.strip():
        raise AgentError(f"no enrollment token: pass --token TOKEN or set {TOKEN_ENV}")
    token = parse_token(text)
    hostname = device.hostname()
    here = host.current_host()
    request = Enrollment(
        token=token,
        server=check_server_url(args.server) if args.server else token.server,
        name=(args.name or hostname).strip(),
        email=(args.email or "").strip(),
        serial_number=(args.serial_number.strip() if args.serial_number else _serial_number(here)),
        hostname=hostname,
        operating_system=here.system,
    )
    previous = _previous_state(path)
    state = enroll(request, path, timeout=args.timeout)
    if previous is not None and (previous.trust_installed or previous.trust_stores != state.trust_stores):
        # enrolling again forgets neither the store options nor the roots this agent installed:
        # those are still on the device, and only the records let a later sync remove them
        from dataclasses import replace

        from agent.state import state_lock, update_state

        with state_lock(path):
            state = update_state(path, lambda s: replace(
                s, trust_stores=previous.trust_stores, trust_installed=previous.trust_installed))  # fmt: skip
    pin = f", server certificate pinned to {state.fingerprint}" if state.fingerprint else ""
    print(f"enrolled as device {state.device_id} ({state.name}) with {state.server}{pin}")
    print(f"state saved to {path} (0600)")
    if not state.serial_number:
        print("warning: no serial number found: rules using ${serial_number} will fail (enroll with --serial-number)",
              file=sys.stderr)  # fmt: skip
    return 0


def _serial_number(here: Host) -> str:
    """Linux: the firmware's or the machine id; macOS and Windows: from their own tools."""
    from agent import device
    from agent.serial_number import platform_serial

    return device.serial_number() if here.system == "linux" else platform_serial(here.system, here.runner)


def _check(args: argparse.Namespace) -> int:
    from agent.output import check_json, format_checks

    session = _session(args)
    checks = session.check(session.fetch_rules())
    if args.json:
        print(json.dumps([check_json(c) for c in checks], indent=2))
    elif not checks:
        print("no posture rules apply to this device")
    else:
        print(format_checks(checks))
    return 0 if all(c.passed for c in checks) else EXIT_FAILED_RULE


def _report(args: argparse.Namespace) -> int:
    from agent.output import format_stored

    session = _session(args)
    checks = session.check(session.fetch_rules())
    stored = session.report(checks)
    if args.json:
        print(json.dumps([s.__dict__ for s in stored], indent=2))
    elif not stored:
        print("no posture rules apply to this device: nothing to report")
    else:
        print(format_stored(stored, {c.rule_id: c.name for c in checks}))
    # as `check`: a rule that failed here, or that the server stored as failed, fails the command
    failed = not all(c.passed for c in checks) or not all(s.success for s in stored)
    return EXIT_FAILED_RULE if failed else 0


def _sync_ca(args: argparse.Namespace) -> int:
    from agent.output import format_sync

    session = _session(args)
    options = _store_options(args, session.state)
    if args.save:
        from agent.trust import save_store_options

        save_store_options(_state_path(args), options)
    if not options.enabled():
        raise AgentError(
            "no trust store is enabled: drop --no-system/--no-nss, or name one with --nss-db DIR"
        )
    if args.dry_run:
        from agent.output import format_plan

        if args.save:
            raise AgentError("--dry-run changes nothing: leave out --save")
        report = _dry_sync(session, options).run()
        print(json.dumps(report.to_json(), indent=2) if args.json else format_plan(report))
        return 0
    report = _trust_sync(args, session, options).run()
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print(format_sync(report))
        if args.save:
            print(f"store options saved to {_state_path(args)}")
    return EXIT_TRUST_TROUBLE if report.trouble else 0


def _run(args: argparse.Namespace) -> int:
    from agent.output import outcome, sync_changes
    from agent.run import AgentLoop

    if args.max_rounds is not None and args.max_rounds < 1:
        raise AgentError("--max-rounds must be at least 1")
    session = _session(args)
    options = _store_options(args, session.state)
    ca_sync = _trust_sync(args, session, options).run if options.enabled() else None
    stop = threading.Event()
    names: dict[str, str] = {}

    def show(done: Round) -> None:
        names.update({c.rule_id: c.name for c in done.checks})
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        if not done.checks and not done.failed:
            print(f"{stamp} round {done.number}: no posture rules apply to this device", flush=True)
        elif not done.stored:
            print(f"{stamp} round {done.number}: nothing stored (see warnings)", flush=True)
        for entry in done.stored:
            print(f"{stamp} {names.get(entry.rule_id, entry.rule_id)}: {outcome(entry)}"
                  + (f": {entry.reason}" if entry.reason else ""), flush=True)  # fmt: skip

    told: dict[str, str] = {}  # what was last said on stderr about each store or certificate

    def show_sync(report: SyncReport) -> None:
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        for line in sync_changes(report):
            print(f"{stamp} CA sync: {line}", flush=True)
        problems = {f"certificate {c.id}": f"not installed: {c.refused}" for c in report.refused}
        problems |= {f"store {s.store}": s.error for s in report.stores if s.trouble}
        for what, text in problems.items():
            if told.get(what) != text:
                print(f"warning: CA sync: {what}: {text}", file=sys.stderr, flush=True)
        told.clear()
        told.update(problems)

    max_rounds = 1 if args.once else args.max_rounds
    loop = AgentLoop(
        session, interval_scale=args.interval_scale, max_rounds=max_rounds, stop=stop, on_round=show,
        ca_sync=ca_sync, on_sync=show_sync,
    )  # fmt: skip
    if not args.verbose:
        logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s: %(message)s")
    with _stop_on_signals(stop):
        loop.run()
    return 0


CREDENTIAL_FORMATS = ("userinfo", "header", "url", "json")


def _credentials(args: argparse.Namespace) -> int:
    """The device id and secret as proxy credentials, from the state file (0600: only its owner
    reads it). Printed, never logged; nothing is sent anywhere."""
    from urllib.parse import quote

    from agent.state import load_state
    from agent.transport import Credentials

    state = load_state(_state_path(args))
    header = Credentials(state.device_id, state.device_secret).header()
    userinfo = f"{quote(state.device_id, safe='')}:{quote(state.device_secret, safe='')}"
    url = f"http://{userinfo}@{_proxy_address(args.proxy, state.server)}"
    if args.format == "json":
        print(json.dumps({"device_id": state.device_id, "device_secret": state.device_secret,
                          "proxy_authorization": header, "proxy_url": url}, indent=2))  # fmt: skip
    elif args.format == "header":
        print(f"Proxy-Authorization: {header}")
    elif args.format == "url":
        print(url)
    else:
        print(f"{state.device_id}:{state.device_secret}")
    return 0


def _wireguard(args: argparse.Namespace) -> int:
    """This device's WireGuard configuration from the server (device credentials)."""
    from agent.wireguard import fetch, write_private

    tunnel = fetch(_session(args).transport, format=args.format, allowed_ips=args.allowed_ips, dns=args.dns)
    if args.output is None:
        print(tunnel.text, end="")
    else:
        write_private(args.output, tunnel.text)
        print(
            f"wrote {args.output} (0600): address {tunnel.address}, gateway {tunnel.endpoint}",
            file=sys.stderr,
        )
    return 0


def _local_proxy(args: argparse.Namespace) -> int:
    """The local proxy: requests and CONNECT to the gateway, with this device's credentials."""
    from agent.local_proxy import Limits, LocalProxy, StateCredentials, is_loopback, parse_address, serve
    from agent.state import load_state

    listen = parse_address(args.listen, option="--listen")
    if not is_loopback(listen.host) and not args.allow_remote:
        raise AgentError(
            f"--listen {args.listen}: not a loopback address; anyone reaching it would browse as this "
            "device: add --allow-remote if that is really meant"
        )
    if args.max_connections < 1:
        raise AgentError("--max-connections must be at least 1")
    path = _state_path(args)
    state = load_state(path)
    upstream = parse_address(args.upstream or _proxy_address(None, state.server), option="--upstream")

    def credentials_of(file: Path) -> tuple[str, str]:
        read = load_state(file)
        return read.device_id, read.device_secret

    credentials = StateCredentials(path, credentials_of)
    limits = Limits(max_connections=args.max_connections, connect_timeout=args.timeout)
    if not args.verbose:  # one line per request on stderr: method, host, status
        logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
        logging.getLogger("agent.local_proxy").setLevel(logging.INFO)

    def ready(bound: object) -> None:
        print(f"local proxy  http://{bound} for device {credentials.device_id}, to the gateway at {upstream}")
        print(f"PAC file     http://{bound}/proxy.pac")
        if not is_loopback(listen.host):
            print(
                "warning: listening off loopback: whoever reaches it browses as this device", file=sys.stderr
            )
        print("Stop with Ctrl-C.", flush=True)

    serve(LocalProxy(listen, upstream, credentials, limits=limits), ready)
    return 0


def _proxy_address(given: str | None, server: str) -> str:
    """``HOST:PORT`` of the gateway's proxy: ``given``, else the server's host and port 8080."""
    from urllib.parse import urlsplit

    if given is None:
        host = urlsplit(server).hostname or "127.0.0.1"
        return f"[{host}]:{PROXY_PORT}" if ":" in host else f"{host}:{PROXY_PORT}"
    wrong = AgentError(f"--proxy {given}: give the proxy as HOST:PORT (for example 127.0.0.1:8080)")
    try:
        parts = urlsplit("//" + given.strip().removeprefix("http://"))
        port = parts.port
    except ValueError:
        raise wrong from None
    if not parts.hostname or port is None or parts.path or parts.query or parts.username is not None:
        raise wrong
    return parts.netloc


def _stop_after_signal(stop: threading.Event, signum: int) -> None:
    logger.info("signal %d: stopping", signum)
    stop.set()


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    def handler(signum: int, frame: FrameType | None) -> None:
        # A signal handler runs in the main thread between two bytecodes, possibly while that
        # thread holds the lock inside ``stop`` (in ``Event.wait``): calling ``stop.set()`` here
        # would deadlock. Another thread sets it once the main thread lets go of the lock.
        threading.Thread(target=_stop_after_signal, args=(stop, signum), daemon=True).start()

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
    (
        "enroll",
        _enroll,
        "enroll this device with a one-time token",
        (
            "Register this device (name, OS, serial number, host name, user email) with the server named\n"
            "in the enrollment token, pinning the server's certificate by the fingerprint the token\n"
            "carries, and save the device id and secret to the 0600 state file."
        ),
        "{prog} enroll --token gwe1.eyJ1Ijoi... --email ann@example.com",
        _add_enroll,
    ),
    (
        "check",
        _check,
        "check this device's client certificates against its posture rules",
        (
            "Fetch this device's posture rules and their signing certificates, look at every location\n"
            "each rule lists, and print a table: rule, outcome, the passing certificate or the reason,\n"
            "and beneath it every rejected certificate with its reason. Nothing is reported.\n"
            f"Exit status {EXIT_FAILED_RULE} when a rule fails."
        ),
        "{prog} check",
        _add_output,
    ),
    (
        "report",
        _report,
        "check once and report the results, with proof, to the server",
        (
            "Check as `check` does, then send every result: a passing one with its certificate and a\n"
            "signature over a fresh server nonce made with its private key. Prints what the server\n"
            "stored (a pass counts only when the server verified it).\n"
            f"Exit status {EXIT_FAILED_RULE} when a rule fails (as `check`), or the server stored it as failed."
        ),
        "{prog} report",
        _add_output,
    ),
    (
        "sync-ca",
        _sync_ca,
        "install the gateway's root CAs in this device's trust stores, once",
        (
            "Fetch the gateway's root certificates (every available one, the one in use included),\n"
            "install each that is a CA and matches its listed SHA-256 fingerprint into every enabled\n"
            "trust store, remove the ones this agent installed that are no longer listed (never any\n"
            "other root), list the stores again and report what they hold to the server.\n"
            "A store that is missing or not writable is reported, not fatal.\n"
            f"Exit status {EXIT_TRUST_TROUBLE} when a certificate was refused or a store has a problem."
        ),
        "mkdir /tmp/sandbox\n{prog} sync-ca --root /tmp/sandbox --no-system",
        _add_sync_ca,
    ),
    (
        "run",
        _run,
        "check and report each rule on its schedule until stopped",
        (
            "Check and report each rule on its own schedule (sooner if its results would expire\n"
            "first), fetching the rules again every minute, and keep the trust stores in step with\n"
            "the gateway's root CAs (as sync-ca, at start and every minute; off when no store is\n"
            "enabled). SIGINT or SIGTERM stops it cleanly. A round with no posture rule still counts\n"
            "(--once and --max-rounds end with no rule at all)."
        ),
        "{prog} run --interval-scale 0.01 --max-rounds 3",
        _add_run,
    ),
    (
        "credentials",
        _credentials,
        "print this device's proxy credentials (device id and secret)",
        (
            "Print the device id and secret from the state file, which only its owner can read, as\n"
            "explicit-proxy clients send them to identify this device: DEVICE_ID:SECRET for\n"
            "`curl --proxy-user`, a Proxy-Authorization header, or a proxy URL. Nothing is sent\n"
            "to the server, and the secret is never logged. Keep the output to yourself."
        ),
        'curl -x http://127.0.0.1:8080 --proxy-user "$({prog} credentials)" https://example.com/\n'
        'export HTTPS_PROXY="$({prog} credentials --format url --proxy 127.0.0.1:8080)"',
        _add_credentials,
    ),
    (
        "wireguard",
        _wireguard,
        "print this device's WireGuard tunnel configuration (wg-quick)",
        (
            "Fetch this device's WireGuard configuration from the server: its private key and tunnel\n"
            "address, and the gateway's public key and endpoint (a port for this device alone). Traffic\n"
            "through the tunnel is inspected and identified as this device. It holds the device's\n"
            "private key: keep it to this device (--output writes a 0600 file)."
        ),
        "{prog} wireguard --output /etc/wireguard/gateway.conf && wg-quick up gateway\n"
        "{prog} wireguard --format wg --allowed-ips 10.0.0.0/8 > wg0.conf && wg setconf wg0 wg0.conf",
        _add_wireguard,
    ),
    (
        "proxy",
        _local_proxy,
        "a local proxy that sends this device's traffic to the gateway as this device",
        (
            "Listen on this device (127.0.0.1:3128) and forward every request and CONNECT to the\n"
            "gateway's proxy with this device's credentials from the state file, so a browser or\n"
            "tool pointed at it is this device without holding any secret. A PAC file for it is\n"
            "at http://127.0.0.1:3128/proxy.pac. A gateway that cannot be reached gets a 502 page\n"
            "naming it; after a gateway restart new requests connect again. Logs method, host and\n"
            "status of each request on stderr. Off loopback only with --allow-remote: anyone who\n"
            "reaches it is this device. SIGINT or SIGTERM stops it (exit 0)."
        ),
        "{prog} proxy\nchromium --proxy-server=http://127.0.0.1:3128\n"
        "chromium --proxy-pac-url=http://127.0.0.1:3128/proxy.pac",
        _add_proxy,
    ),
)


if __name__ == "__main__":
    sys.exit(main())
