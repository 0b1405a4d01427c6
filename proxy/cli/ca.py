"""``gateway ca ...``: manage the root CAs (gateway certificates) through the admin API."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from proxy.cli import options as shared
from proxy.cli import rotation as rotation_cli
from proxy.cli.client import AdminClient, Reply, account_of, add_admin_options, connect
from proxy.cli.errors import CliError

logger = logging.getLogger(__name__)

KEY_TYPES = ("ec-p256", "ec-p384", "rsa-2048", "rsa-3072", "rsa-4096")
EXPIRY_WARNING = timedelta(days=30)
IN_USE = "in-use"
WAIT_AVAILABLE_SECONDS = 30.0

Handler = Callable[[argparse.Namespace], int]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "ca",
        help="manage the root CAs that sign inspected connections",
        description="Manage the gateway's root CAs (gateway certificates) through the admin API of a\n"
        "running `gateway run`: generate or upload one, activate it on every node, turn it on,\n"
        "download it for trust stores, retire it.",
        epilog="examples:\n  gateway ca list\n  gateway ca generate --days 1825 --use\n"
        "  gateway ca download in-use -o gateway-ca.pem\n  gateway ca rotate --deadline 7d --watch\n\n"
        "lifecycle: inactive -> activate -> available -> use (in use) ... deactivate -> inactive -> delete",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_connection_options(parser, default=None)
    commands = parser.add_subparsers(dest="ca_command", required=True, metavar="COMMAND")
    for name, handler, summary, example, add_arguments in _COMMANDS:
        command = commands.add_parser(
            name,
            help=summary,
            description=summary[0].upper() + summary[1:] + ".",
            epilog=f"example:\n  {example}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        add_arguments(command)
        _add_connection_options(command, default=argparse.SUPPRESS)
        command.set_defaults(func=handler)


def _add_connection_options(parser: argparse.ArgumentParser, *, default: Any) -> None:
    """On the group and on every subcommand; a subcommand's copy overrides only when given."""
    options = parser.add_argument_group("admin API options")
    add_admin_options(options, default=default)
    shared.JSON.add(options, default=default if default is argparse.SUPPRESS else False)


def _add_id(parser: argparse.ArgumentParser, *, in_use: bool = False) -> None:
    extra = f', or "{IN_USE}" for the certificate in use' if in_use else ""
    parser.add_argument("id", metavar="ID", help=f"certificate id or a unique prefix of it{extra}")


def _add_turn_on(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--activate", action="store_true", help=f"activate the {what} certificate on every node"
    )
    parser.add_argument(
        "--use",
        action="store_true",
        help=f"activate the {what} certificate, wait until it is available and turn it on",
    )
    _add_force(parser, "with --use, turn it on")


def _add_force(parser: argparse.ArgumentParser, what: str = "turn it on") -> None:
    parser.add_argument(
        "--force",
        action="store_true",
        help=f"{what} even when devices whose agent reports its trust stores have not installed it "
        "(TLS breaks for them until their agent syncs)",
    )


def _add_use(parser: argparse.ArgumentParser) -> None:
    _add_id(parser)
    _add_force(parser)


def _add_generate(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--days", type=int, metavar="N", help="validity in days, 1-10950 (default: 1825)")
    parser.add_argument(
        "--key-type",
        choices=KEY_TYPES,
        metavar="TYPE",
        help=f"key algorithm: {', '.join(KEY_TYPES)} (default: ec-p256)",
    )
    _add_turn_on(parser, "new")


def _add_upload(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name", required=True, help="a name for the uploaded CA")
    parser.add_argument(
        "--cert",
        required=True,
        type=Path,
        metavar="FILE",
        help="PEM file with the CA certificate (optionally followed by its chain)",
    )
    parser.add_argument(
        "--key", required=True, type=Path, metavar="FILE", help="PEM file with the CA's private key"
    )
    _add_turn_on(parser, "uploaded")


def _add_download(parser: argparse.ArgumentParser) -> None:
    _add_id(parser, in_use=True)
    parser.add_argument("--format", choices=("pem", "der"), default="pem", help="file format (default: pem)")
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        metavar="FILE",
        help="write to FILE (default: stdout; DER is not written to a terminal)",
    )


# --- the session: one client, one account, the warnings to print at the end ----------------------


@dataclass(frozen=True)
class Session:
    client: AdminClient
    account: str
    as_json: bool
    warnings: list[str] = field(default_factory=list)

    def url(self, suffix: str) -> str:
        return f"/accounts/{urllib.parse.quote(self.account, safe='')}{suffix}"

    def certificate(self, cert_id: str, action: str = "") -> str:
        return self.url(f"/gateway/certificates/{urllib.parse.quote(cert_id, safe='')}{action}")

    def keep(self, reply: Reply) -> Any:
        self.warnings.extend(m for m in reply.messages if m not in self.warnings)
        return reply.result

    def list_certificates(self, *, warn: bool = False) -> list[dict[str, Any]]:
        """With ``warn``, the listing's messages (expiry warnings about every certificate as it
        is now) replace earlier ones; listings made only to resolve an id stay quiet."""
        reply = self.client.get(self.url("/gateway/certificates"))
        if warn:
            self.warnings[:] = reply.messages
        return [c for c in reply.result or [] if isinstance(c, dict)]


def _session(args: argparse.Namespace) -> Session:
    client = connect(args)
    return Session(client, account_of(client, args.account), bool(args.json))


def _command(body: Callable[[Session, argparse.Namespace], None]) -> Handler:
    def handler(args: argparse.Namespace) -> int:
        session = _session(args)
        try:
            body(session, args)
            sys.stdout.flush()
        except BrokenPipeError:  # `gateway ca list | head -1`: the reader has all it wanted
            _silence_stdout()
        except (KeyError, TypeError, AttributeError) as e:  # an answer not shaped as documented
            logger.debug("unexpected answer", exc_info=True)
            raise CliError(
                f"the admin API at {session.client.server} gave an unexpected answer ({e!r})"
            ) from None
        finally:
            for warning in session.warnings:
                print(f"warning: {warning}", file=sys.stderr)
        return 0

    return handler


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that the flush at exit does not fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2))


# --- commands ---------------------------------------------------------------------------------------


def _list(session: Session, args: argparse.Namespace) -> None:
    certificates = session.list_certificates(warn=True)
    if session.as_json:
        _print_json(certificates)
    elif not certificates:
        print("no gateway certificates (make one with `gateway ca generate`)")
    else:
        print(format_table(certificates, now=datetime.now(UTC)))


def _generate(session: Session, args: argparse.Namespace) -> None:
    body: dict[str, Any] = {}
    if args.days is not None:
        body["validity_period_days"] = args.days
    if args.key_type:
        body["key_type"] = args.key_type
    cert = session.keep(session.client.post(session.url("/gateway/certificates"), body))
    _say(session, f"generated {cert['id']} (expires {_date(cert.get('expires_on'))})")
    _finish(session, args, cert)


def _upload(session: Session, args: argparse.Namespace) -> None:
    body = {"name": args.name, "certificates": _read(args.cert), "private_key": _read(args.key), "ca": True}
    cert = session.keep(session.client.post(session.url("/mtls_certificates"), body))
    _say(
        session,
        f"uploaded {cert['id']} ({cert.get('name', args.name)}, expires {_date(cert.get('expires_on'))})",
    )
    _finish(session, args, cert)


def _finish(session: Session, args: argparse.Namespace, cert: dict[str, Any]) -> None:
    if args.activate or args.use:
        cert = _activate_id(session, cert["id"])
    if args.use:
        cert = _use_id(session, cert["id"], force=args.force)
    if session.as_json:
        _print_json(cert)


def _activate(session: Session, args: argparse.Namespace) -> None:
    cert = _activate_id(session, resolve(session, args.id)["id"])
    if session.as_json:
        _print_json(cert)


def _activate_id(session: Session, cert_id: str) -> dict[str, Any]:
    cert: dict[str, Any] = session.keep(session.client.post(session.certificate(cert_id, "/activate")))
    status = cert.get("binding_status")
    note = " (available once every running node has loaded it)" if status == "pending_deployment" else ""
    _say(session, f"activated {cert_id}: {status}{note}")
    return cert


def _deactivate(session: Session, args: argparse.Namespace) -> None:
    cert_id = resolve(session, args.id)["id"]
    cert = session.keep(session.client.post(session.certificate(cert_id, "/deactivate")))
    _say(session, f"deactivated {cert_id}: {cert.get('binding_status')}")
    if session.as_json:
        _print_json(cert)


def _use(session: Session, args: argparse.Namespace) -> None:
    cert = _use_id(session, resolve(session, args.id)["id"], force=args.force)
    if session.as_json:
        _print_json(cert)


def _use_id(session: Session, cert_id: str, *, force: bool = False) -> dict[str, Any]:
    """Turn a certificate on; say which one is in use now and which went back to available.
    Refused (unless ``force``) while reporting devices have not installed it."""
    before = session.list_certificates()
    previous = next((c["id"] for c in before if c.get("in_use")), None)
    if previous == cert_id:
        _say(session, f"{cert_id} is already in use")
        return next(c for c in before if c["id"] == cert_id)
    if not force:
        _check_devices(session, cert_id)
    _wait_until_available(session, cert_id, before)
    body = {"settings": {"certificate": {"id": cert_id}}}
    turned_on = session.client.patch(session.url("/gateway/configuration"), body)
    after = {c["id"]: c for c in session.list_certificates(warn=True)}
    session.keep(turned_on)  # its warning (devices lacking it, with --force) outlives the listing's
    _say(session, f"in use now: {cert_id}")
    if previous is None:
        _say(session, "no certificate was in use before")
    else:
        _say(session, f"back to {after.get(previous, {}).get('binding_status', 'available')}: {previous}")
    return after.get(cert_id) or {"id": cert_id, "in_use": True}


def _check_devices(session: Session, cert_id: str) -> None:
    """Ask the API how many reporting devices lack the certificate (``gateway_devices``, issue 5)
    and refuse when some do. A server that does not answer with the field refuses nothing."""
    from proxy.services.device_trust import missing_message

    devices = session.client.get(session.certificate(cert_id)).result.get("gateway_devices")
    if not isinstance(devices, dict):
        return
    missing, reporting = devices.get("missing"), devices.get("reporting")
    if isinstance(missing, int) and isinstance(reporting, int) and missing > 0:
        raise CliError(
            f"{missing_message(missing, reporting, cert_id)}; wait until their agents have synced, "
            "or pass --force to turn it on now"
        )


def _wait_until_available(session: Session, cert_id: str, certificates: Sequence[dict[str, Any]]) -> None:
    """A just-activated certificate is pending until every node loaded it; turning it on needs it available."""
    status = next((c.get("binding_status") for c in certificates if c["id"] == cert_id), None)
    deadline = time.monotonic() + WAIT_AVAILABLE_SECONDS
    delay = 0.1
    while status == "pending_deployment":
        if time.monotonic() > deadline:
            raise CliError(
                f"certificate {cert_id} is still pending_deployment after {WAIT_AVAILABLE_SECONDS:g} s: "
                "a node has not loaded it yet"
            )
        time.sleep(delay)
        delay = min(delay * 2, 1.0)
        status = session.keep(session.client.get(session.certificate(cert_id))).get("binding_status")


def _download(session: Session, args: argparse.Namespace) -> None:
    cert_id = resolve(session, args.id)["id"]
    if args.output is None and args.format == "der" and sys.stdout.isatty():
        raise CliError("DER is binary: pass -o FILE or redirect stdout to a file")
    data = session.client.download(session.certificate(cert_id, "/download"), {"format": args.format}).body
    if args.format == "pem" and b"-----BEGIN CERTIFICATE-----" not in data:
        raise CliError(f"the admin API did not send a PEM certificate for {cert_id}")
    if args.format == "der" and not data.startswith(b"\x30"):
        raise CliError(f"the admin API did not send a DER certificate for {cert_id}")
    if args.output is None:
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    try:
        args.output.write_bytes(data)
    except OSError as e:
        raise CliError(f"cannot write {args.output}: {e.strerror or e}") from None
    if session.as_json:
        _print_json({"id": cert_id, "format": args.format, "path": str(args.output), "bytes": len(data)})
    else:
        print(f"wrote {args.output}: certificate {cert_id} ({args.format.upper()}, {len(data)} bytes)")


def _delete(session: Session, args: argparse.Namespace) -> None:
    cert_id = resolve(session, args.id)["id"]
    cert = session.keep(session.client.delete(session.certificate(cert_id)))
    _say(session, f"deleted {cert_id}")
    if session.as_json:
        _print_json(cert)


_COMMANDS: tuple[tuple[str, Handler, str, str, Callable[[argparse.ArgumentParser], None]], ...] = (
    (
        "list",
        _command(_list),
        "list the gateway certificates with status, use and expiry",
        "gateway ca list --json",
        lambda p: None,
    ),
    (
        "generate",
        _command(_generate),
        "generate a new root CA (inactive unless --activate or --use)",
        "gateway ca generate --days 730 --key-type ec-p384 --use",
        _add_generate,
    ),
    (
        "upload",
        _command(_upload),
        "upload your own root CA with its private key (bring your own CA)",
        "gateway ca upload --name corp-root --cert corp.pem --key corp.key --activate",
        _add_upload,
    ),
    (
        "activate",
        _command(_activate),
        "deploy a certificate to every node, making it available",
        "gateway ca activate 3f2a",
        _add_id,
    ),
    (
        "deactivate",
        _command(_deactivate),
        "withdraw an available certificate from the nodes",
        "gateway ca deactivate 3f2a",
        _add_id,
    ),
    (
        "use",
        _command(_use),
        "turn an available certificate on: new connections get leaves signed by it",
        "gateway ca use 3f2a",
        _add_use,
    ),
    (
        "download",
        _command(_download),
        "download a certificate (never its key) to install in trust stores",
        "gateway ca download in-use --format der -o gateway-ca.crt",
        _add_download,
    ),
    ("delete", _command(_delete), "delete an inactive certificate", "gateway ca delete 3f2a", _add_id),
    *rotation_cli.COMMANDS,  # rotate, rotation (issue 12)
)


# --- helpers ----------------------------------------------------------------------------------------


def resolve(session: Session, wanted: str) -> dict[str, Any]:
    """The certificate whose id is ``wanted`` or starts with it; ``in-use`` names the one in use."""
    certificates = session.list_certificates()
    if wanted == IN_USE:
        for cert in certificates:
            if cert.get("in_use"):
                return cert
        raise CliError("no certificate is in use (turn one on with `gateway ca use ID`)")
    prefix = wanted.strip().lower()
    if not prefix:
        raise CliError("empty certificate id")
    exact = [c for c in certificates if str(c.get("id", "")).lower() == prefix]
    matches = exact or [c for c in certificates if str(c.get("id", "")).lower().startswith(prefix)]
    if not matches:
        raise CliError(f"no certificate id starts with {wanted!r} (see `gateway ca list`)")
    if len(matches) > 1:
        ids = ", ".join(sorted(str(c["id"]) for c in matches))
        raise CliError(f"certificate id prefix {wanted!r} is ambiguous: it matches {ids}")
    return matches[0]


def format_table(certificates: Sequence[dict[str, Any]], *, now: datetime) -> str:
    header = ("ID", "TYPE", "STATUS", "IN USE", "EXPIRES", "FINGERPRINT")
    rows = [header] + [
        (
            str(c.get("id", "")),
            str(c.get("type", "")),
            str(c.get("binding_status", "")),
            "yes" if c.get("in_use") else "",
            _expires(c.get("expires_on"), now),
            short_fingerprint(str(c.get("fingerprint") or "")),
        )
        for c in certificates
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def short_fingerprint(fingerprint: str) -> str:
    octets = fingerprint.split(":")
    return fingerprint if len(octets) <= 8 else ":".join(octets[:4]) + "..." + ":".join(octets[-4:])


def _expires(value: object, now: datetime) -> str:
    expires = _parse_time(value)
    if expires is None:
        return str(value or "")
    left = expires - now
    if left <= timedelta(0):
        return f"{expires:%Y-%m-%d} EXPIRED"
    if left <= EXPIRY_WARNING:  # whole days left, as the API's own warnings count them
        days = left.days
        span = "less than a day" if days == 0 else f"{days} day{'' if days == 1 else 's'}"
        return f"{expires:%Y-%m-%d} (expires in {span})"
    return f"{expires:%Y-%m-%d}"


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _date(value: object) -> str:
    parsed = _parse_time(value)
    return f"{parsed:%Y-%m-%d}" if parsed else "unknown"


def _say(session: Session, line: str) -> None:
    """Progress lines go to stdout, or to stderr when stdout carries JSON."""
    print(line, file=sys.stderr if session.as_json else sys.stdout)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else "not a PEM text file"
        raise CliError(f"cannot read {path}: {reason}") from None
