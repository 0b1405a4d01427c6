"""A small synchronous client for the admin API (Cloudflare API v4 envelope), used by the CLI.

Every failure becomes a ``CliError`` with one line that says what went wrong; the token is sent
only in the ``Authorization`` header of requests to the configured server and never appears in a
message.

Over https the server's certificate is verified with host names as usual: against the system's
roots, or against ``--cacert FILE`` / ``GATEWAY_ADMIN_CACERT`` alone (a gateway's self-signed
``DATA_DIR/admin-tls.crt`` is its own trust anchor). ``add_admin_options`` and ``connect`` are
the one place the commands' ``--server``, ``--token``, ``--cacert`` and ``--account`` live.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from proxy.cli.errors import CliError

logger = logging.getLogger(__name__)

API_PREFIX = "/client/v4"
DEFAULT_TIMEOUT = 30.0
TOKEN_REFUSED = "the admin token was refused (set --token or GATEWAY_ADMIN_TOKEN)"
DEFAULT_SERVER = "http://127.0.0.1:8081"
SERVER_ENV = "GATEWAY_SERVER"
TOKEN_ENV = "GATEWAY_ADMIN_TOKEN"
CACERT_ENV = "GATEWAY_ADMIN_CACERT"
CACERT_HINT = f"pass --cacert DATA_DIR/admin-tls.crt (or set {CACERT_ENV}) for a gateway's own certificate"


def add_admin_options(group: argparse._ArgumentGroup, *, default: Any = None, account: bool = True) -> None:
    """``--server``, ``--token``, ``--cacert`` and (unless ``account=False``) ``--account`` on a
    command's option group (``default=argparse.SUPPRESS`` on a subcommand leaves the group's
    value when not given)."""
    group.add_argument(
        "--server", metavar="URL", default=default,
        help=f"admin API address (default: ${SERVER_ENV} or {DEFAULT_SERVER})",
    )  # fmt: skip
    group.add_argument(
        "--token", metavar="TOKEN", default=default, help=f"admin API token (default: ${TOKEN_ENV})"
    )
    group.add_argument(
        "--cacert", metavar="FILE", default=default,
        help="trust this certificate (PEM) for an https admin API instead of the system's roots, "
        f"such as the gateway's own DATA_DIR/admin-tls.crt (default: ${CACERT_ENV})",
    )  # fmt: skip
    if not account:
        return
    group.add_argument(
        "--account", metavar="ID", default=default,
        help="account id (default: the first account the token may use)",
    )  # fmt: skip


def connect(args: argparse.Namespace) -> AdminClient:
    """The client for the options of ``add_admin_options`` and their environment variables."""
    cacert = getattr(args, "cacert", None) or os.environ.get(CACERT_ENV) or None
    return AdminClient(
        getattr(args, "server", None) or os.environ.get(SERVER_ENV) or DEFAULT_SERVER,
        getattr(args, "token", None) or os.environ.get(TOKEN_ENV) or "",
        cacert=Path(cacert) if cacert else None,
    )


def account_of(client: AdminClient, account: str | None) -> str:
    """``account`` when given, else the first account the token may use."""
    if account:
        return account
    accounts = client.get("/accounts").result
    first = accounts[0] if isinstance(accounts, list) and accounts else None
    if not isinstance(first, dict) or not first.get("id"):
        raise CliError(f"the admin API at {client.server} lists no account for this token")
    return str(first["id"])


@dataclass(frozen=True)
class Reply:
    """The useful part of one envelope: ``result`` and the ``messages`` (warnings) beside it."""

    result: Any
    messages: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class Download:
    """A body that is not an envelope (a certificate file), with its content type."""

    body: bytes
    content_type: str


class AdminClient:
    """Calls ``{server}/client/v4{path}`` with a bearer token; ``path`` starts with ``/``."""

    def __init__(
        self, server: str, token: str, *, cacert: Path | None = None, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        parsed = urllib.parse.urlsplit(server)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise CliError(f"invalid server URL {server!r}: expected http://HOST:PORT or https://HOST:PORT")
        if not token:
            raise CliError("no admin token: pass --token or set GATEWAY_ADMIN_TOKEN")
        if not token.isascii() or not token.isprintable() or " " in token:
            raise CliError(
                "the admin token holds spaces or control characters: check --token or GATEWAY_ADMIN_TOKEN"
            )
        self.server = server.rstrip("/")
        self._token = token
        self._timeout = timeout
        self._cacert = cacert
        # The admin API is reached directly: HTTP(S)_PROXY often points at this very gateway.
        self._opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=_tls_context(cacert))
        )

    def __repr__(self) -> str:
        return f"AdminClient({self.server!r})"

    def get(self, path: str, query: Mapping[str, str] | None = None) -> Reply:
        return self._envelope(self._send("GET", path, query=query))

    def post(self, path: str, body: Mapping[str, Any] | None = None) -> Reply:
        return self._envelope(self._send("POST", path, body=body))

    def patch(self, path: str, body: Mapping[str, Any]) -> Reply:
        return self._envelope(self._send("PATCH", path, body=body))

    def put(self, path: str, body: Mapping[str, Any]) -> Reply:
        return self._envelope(self._send("PUT", path, body=body))

    def delete(self, path: str, query: Mapping[str, str] | None = None) -> Reply:
        return self._envelope(self._send("DELETE", path, query=query))

    def post_text(self, path: str, text: str, content_type: str) -> Reply:
        """POST a body that is not JSON (a YAML policy file)."""
        return self._envelope(self._send("POST", path, text=(text, content_type)))

    def download(self, path: str, query: Mapping[str, str] | None = None) -> Download:
        """GET a file; an envelope in answer (``result`` a string) is unwrapped to its text."""
        status, content_type, body = self._send("GET", path, query=query)
        if content_type.endswith("json"):
            result = self._envelope((status, content_type, body)).result
            if not isinstance(result, str):
                raise CliError(f"the admin API sent JSON instead of a file for {path}")
            return Download(result.encode(), "text/plain")
        return Download(body, content_type)

    def _send(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: Mapping[str, Any] | None = None,
        text: tuple[str, str] | None = None,
    ) -> tuple[int, str, bytes]:
        url = f"{self.server}{API_PREFIX}{path}"
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = json.dumps(body if body is not None else {}).encode() if method != "GET" else None
        content_type = "application/json"
        if text is not None:
            data, content_type = text[0].encode("utf-8"), text[1]
        request = urllib.request.Request(url, data=data, method=method)
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", content_type)
        # Unredirected: a redirect to another host must not carry the token along.
        request.add_unredirected_header("Authorization", f"Bearer {self._token}")
        logger.debug("%s %s", method, url)
        try:
            with self._opener.open(request, timeout=self._timeout) as response:
                return response.status, response.headers.get_content_type(), response.read()
        except urllib.error.HTTPError as e:
            with e:
                raise self._http_error(e.code, e.headers.get_content_type(), e.read()) from None
        except urllib.error.URLError as e:
            raise self._unreachable(e.reason) from None
        except TimeoutError as e:
            raise self._unreachable(e) from None
        except (ConnectionError, OSError) as e:  # reset mid-answer, bad status line, ...
            hint = (
                " (does it serve https? then use an https:// --server)"
                if self.server.startswith("http:")
                else ""
            )
            raise CliError(f"the admin API at {self.server} broke off the answer: {e}{hint}") from None

    def _envelope(self, response: tuple[int, str, bytes]) -> Reply:
        status, content_type, body = response
        envelope = _json_or_none(body)
        if not isinstance(envelope, dict):
            raise CliError(
                f"the admin API at {self.server} did not answer with JSON (HTTP {status}, {content_type})"
            )
        if envelope.get("success") is False:
            raise self._http_error(status, content_type, body)
        return Reply(envelope.get("result"), _texts(envelope.get("messages")))

    def _http_error(self, status: int, content_type: str, body: bytes) -> CliError:
        if status == 401:
            return CliError(TOKEN_REFUSED)
        envelope = _json_or_none(body)
        errors = _texts(envelope.get("errors")) if isinstance(envelope, dict) else ()
        if errors:
            return CliError(f"{errors[0]} (HTTP {status})")
        return CliError(f"the admin API answered HTTP {status} without an error message ({content_type})")

    def _unreachable(self, reason: object) -> CliError:
        if isinstance(reason, ConnectionRefusedError):
            return CliError(f"cannot reach the admin API at {self.server}: is `gateway run` running?")
        if isinstance(reason, TimeoutError | socket.timeout):
            return CliError(f"the admin API at {self.server} did not answer within {self._timeout:g} s")
        if isinstance(reason, ssl.SSLCertVerificationError):
            trusted = f"--cacert {self._cacert}" if self._cacert else "the system's roots"
            hint = "check --server and --cacert" if self._cacert else CACERT_HINT
            return CliError(
                f"cannot reach the admin API at {self.server}: its TLS certificate is not trusted "
                f"by {trusted} ({reason.verify_message}): {hint}"
            )
        if isinstance(reason, ssl.SSLError):
            return CliError(
                f"cannot reach the admin API at {self.server}: TLS failed ({reason.reason or reason})"
            )
        if isinstance(reason, socket.gaierror):
            return CliError(f"cannot reach the admin API at {self.server}: unknown host")
        detail = reason.strerror if isinstance(reason, OSError) and reason.strerror else reason
        return CliError(f"cannot reach the admin API at {self.server}: {detail}")


def _tls_context(cacert: Path | None) -> ssl.SSLContext:
    """Host names verified; with ``cacert``, that file is the only trust anchor."""
    if cacert is None:
        return ssl.create_default_context()
    try:
        return ssl.create_default_context(cafile=str(cacert))
    except FileNotFoundError:
        raise CliError(f"--cacert {cacert}: no such file") from None
    except ssl.SSLError:
        raise CliError(f"--cacert {cacert}: no PEM certificate in the file") from None
    except OSError as e:
        raise CliError(f"--cacert {cacert}: cannot read it: {e.strerror or e}") from None


def _json_or_none(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None


def _texts(items: object) -> tuple[str, ...]:
    """The ``message`` of each ``{code, message}`` item (a bare string counts as a message)."""
    if not isinstance(items, list):
        return ()
    texts = []
    for item in items:
        if isinstance(item, dict) and item.get("message"):
            texts.append(str(item["message"]))
        elif isinstance(item, str) and item:
            texts.append(item)
    return tuple(texts)
