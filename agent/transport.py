"""HTTP(S) to the gateway server: plain HTTP only to loopback, HTTPS only with a pinned certificate.

The enrollment token carries the SHA-256 fingerprint of the server's TLS certificate. The agent
does not consult any CA store: it completes the handshake, compares the fingerprint of the leaf
certificate the server presented with the pin, and sends nothing (not even the request line) on a
mismatch. That makes enrollment safe before the device trusts anything, as ``kubeadm join`` pins
its discovery hash. Redirects are not followed and proxy environment variables are ignored.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import ipaddress
import json
import logging
import socket
import ssl
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agent.errors import AgentError
from agent.token import check_server_url, normalize_fingerprint

logger = logging.getLogger(__name__)

API_PREFIX = "/client/v4"
DEFAULT_TIMEOUT = 30.0
MAX_ANSWER_BYTES = 16 * 1024 * 1024
NONCE_MARGIN = 20.0  # seconds an offered nonce must stay valid for the agent to use it


@dataclass(frozen=True)
class Credentials:
    device_id: str
    secret: str

    def __repr__(self) -> str:
        return f"Credentials(device_id={self.device_id!r})"

    def header(self) -> str:
        raw = f"{self.device_id}:{self.secret}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")


def fingerprint_of(der: bytes) -> str:
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def is_loopback_host(host: str) -> bool:
    """A loopback address literal, or a name every address of which is loopback (``localhost``)."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    if host.lower().rstrip(".") != "localhost":
        return False
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0]).is_loopback for info in infos)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """Checks the peer's leaf certificate against the pin right after the handshake."""

    def __init__(self, host: str, port: int | None, *, pin: str, timeout: float) -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.check_hostname = False  # the pin names the certificate exactly; a CA store is not consulted
        context.verify_mode = ssl.CERT_NONE
        super().__init__(host, port, timeout=timeout, context=context)
        self._pin = pin

    def connect(self) -> None:
        super().connect()
        assert isinstance(self.sock, ssl.SSLSocket)
        der = self.sock.getpeercert(binary_form=True)
        seen = fingerprint_of(der) if der else "(no certificate)"
        if seen != self._pin:
            self.sock.close()
            self.sock = None
            raise PinMismatch(self.host, self.port, self._pin, seen)


class PinMismatch(AgentError):
    """The server's certificate is not the pinned one; raised before anything is sent."""

    def __init__(self, host: str, port: int | None, expected: str, seen: str) -> None:
        super().__init__(
            f"the server at {host}:{port} presented a certificate with SHA-256 fingerprint {seen}, "
            f"not the pinned {expected}: refusing to talk to it (wrong server, or its certificate changed: enroll again)"
        )


NONCE_HEADER = "Gateway-Nonce"
NONCE_EXPIRES_HEADER = "Gateway-Nonce-Expires-In"


@dataclass(frozen=True)
class OfferedNonce:
    """A nonce the server handed out with an answer, and until when (``time.monotonic``)."""

    nonce: str
    deadline: float


class Transport:
    """Calls ``{server}/client/v4{path}``; answers are Cloudflare v4 envelopes. The last nonce
    the server offered with an answer (``Gateway-Nonce``) is kept for :meth:`take_nonce`."""

    def __init__(
        self,
        server: str,
        *,
        fingerprint: str = "",
        credentials: Credentials | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.server = check_server_url(server)
        parts = urllib.parse.urlsplit(self.server)
        self._scheme = parts.scheme
        self._host = parts.hostname or ""
        self._port = parts.port
        self._pin = normalize_fingerprint(fingerprint)
        self._credentials = credentials
        self._timeout = timeout
        self._offered: OfferedNonce | None = None
        if self._scheme == "http" and not is_loopback_host(self._host):
            raise AgentError(
                f"refusing plain HTTP to {self.server}: off loopback the agent talks to the server over HTTPS only"
            )
        if self._scheme == "https" and not self._pin:
            raise AgentError(
                f"no certificate fingerprint to pin for {self.server}: HTTPS needs the fingerprint "
                "from the enrollment token (make a new token on the server)"
            )

    def __repr__(self) -> str:
        return f"Transport({self.server!r})"

    def get(self, path: str) -> Any:
        return self._call("GET", path, None)

    def post(self, path: str, body: Mapping[str, Any]) -> Any:
        return self._call("POST", path, body)

    def put(self, path: str, body: Mapping[str, Any]) -> Any:
        return self._call("PUT", path, body)

    def take_nonce(self, *, margin: float = NONCE_MARGIN) -> str | None:
        """The nonce the server last offered, if it stays valid ``margin`` seconds more; each is
        handed out once."""
        offered, self._offered = self._offered, None
        if offered is None or time.monotonic() + margin >= offered.deadline:
            return None
        return offered.nonce

    def _keep_offered_nonce(self, response: http.client.HTTPResponse, started: float) -> None:
        nonce = response.getheader(NONCE_HEADER)
        seconds = response.getheader(NONCE_EXPIRES_HEADER, "")
        if not nonce or not seconds.isdigit():
            return
        # counted from when the request left: the server's clock is never compared with ours
        self._offered = OfferedNonce(nonce.strip(), started + int(seconds))

    def _connection(self) -> http.client.HTTPConnection:
        if self._scheme == "https":
            return _PinnedHTTPSConnection(self._host, self._port, pin=self._pin, timeout=self._timeout)
        return http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)

    def _call(self, method: str, path: str, body: Mapping[str, Any] | None) -> Any:
        headers = {"Accept": "application/json", "User-Agent": "gateway-agent"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self._credentials is not None:
            headers["Authorization"] = self._credentials.header()
        url = f"{API_PREFIX}{path}"
        logger.debug("%s %s%s", method, self.server, url)
        connection = self._connection()
        started = time.monotonic()
        try:
            connection.request(method, url, body=data, headers=headers)
            response = connection.getresponse()
            status, content_type = response.status, response.getheader("Content-Type", "")
            answer = response.read(MAX_ANSWER_BYTES + 1)
            if status < 400:
                self._keep_offered_nonce(response, started)
        except AgentError:
            raise
        except ssl.SSLError as e:
            raise AgentError(f"TLS with {self.server} failed: {e.reason or e}") from None
        except ConnectionRefusedError:
            raise AgentError(
                f"cannot reach the server at {self.server}: connection refused (is it running?)"
            ) from None
        except TimeoutError:
            raise AgentError(
                f"the server at {self.server} did not answer within {self._timeout:g} s"
            ) from None
        except socket.gaierror:
            raise AgentError(f"cannot reach the server at {self.server}: unknown host") from None
        except (OSError, http.client.HTTPException) as e:
            detail = e.strerror if isinstance(e, OSError) and e.strerror else (str(e) or type(e).__name__)
            raise AgentError(f"the server at {self.server} broke off: {detail}") from None
        finally:
            connection.close()
        if len(answer) > MAX_ANSWER_BYTES:
            raise AgentError(
                f"the server at {self.server} sent an answer larger than {MAX_ANSWER_BYTES} bytes"
            )
        return self._result(status, content_type, answer, f"{method} {url}")

    def _result(self, status: int, content_type: str, answer: bytes, what: str) -> Any:
        try:
            envelope = json.loads(answer)
        except ValueError:
            envelope = None
        if not isinstance(envelope, dict):
            raise AgentError(
                f"the server at {self.server} did not answer {what} with JSON (HTTP {status}, {content_type or 'no type'})",
                status=status,
            )
        if status >= 400 or envelope.get("success") is False:
            message = _first_error(envelope.get("errors"))
            if status == 401 and self._credentials is not None:
                message = message or "the device id or secret was refused"
                raise AgentError(
                    f"{message} (HTTP 401): was this device removed? enroll again", status=status
                )
            raise AgentError(f"{message or 'the server refused ' + what} (HTTP {status})", status=status)
        return envelope.get("result")


def _first_error(errors: object) -> str:
    if isinstance(errors, list):
        for item in errors:
            if isinstance(item, dict) and item.get("message"):
                return str(item["message"])
            if isinstance(item, str) and item:
                return item
    return ""
