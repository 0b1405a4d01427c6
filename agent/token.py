"""Enrollment tokens: ``"gwe1." + base64url(JSON {"u", "a", "s", "f"})`` (docs/architecture.md).

``u`` is the server URL, ``a`` the account id, ``s`` the one-time secret and ``f`` the SHA-256
fingerprint of the server's TLS certificate (colon hex), or ``""`` for plain HTTP on loopback.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import urllib.parse
from dataclasses import dataclass

from agent.errors import AgentError

logger = logging.getLogger(__name__)

PREFIX = "gwe1."
MAX_TOKEN_LENGTH = 8192
_HEX_FINGERPRINT = re.compile(r"[0-9A-Fa-f]{64}")


@dataclass(frozen=True)
class EnrollmentToken:
    server: str
    account_id: str
    secret: str
    fingerprint: str  # "AB:CD:..." upper case, or "" when the token names plain HTTP on loopback

    def __repr__(self) -> str:  # the secret never reaches a log line or a traceback
        return f"EnrollmentToken(server={self.server!r}, account_id={self.account_id!r}, fingerprint={self.fingerprint!r})"


def parse_token(text: str) -> EnrollmentToken:
    """The token's fields, or an ``AgentError`` saying what is wrong with it."""
    token = text.strip()
    if not token:
        raise AgentError("empty enrollment token")
    if len(token) > MAX_TOKEN_LENGTH:
        raise AgentError(f"the enrollment token is too long ({len(token)} characters; tokens are short)")
    if not token.startswith(PREFIX):
        raise AgentError(
            f"not an enrollment token: it should start with {PREFIX!r} (copy it whole from `gateway device token`)"
        )
    body = token[len(PREFIX) :]
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        fields = json.loads(raw.decode("utf-8"))
    except (binascii.Error, ValueError):
        raise AgentError(
            "the enrollment token is damaged: it is not base64url-encoded JSON (was it cut short?)"
        ) from None
    if not isinstance(fields, dict):
        raise AgentError("the enrollment token is damaged: it does not hold a JSON object")
    server = _text(fields, "u", "server URL")
    account_id = _text(fields, "a", "account id")
    secret = _text(fields, "s", "secret")
    fingerprint = fields.get("f", "")
    if not isinstance(fingerprint, str):
        raise AgentError("the enrollment token's certificate fingerprint ('f') is not a string")
    return EnrollmentToken(check_server_url(server), account_id, secret, normalize_fingerprint(fingerprint))


def check_server_url(url: str) -> str:
    """``http(s)://host[:port]`` without a path, query or credentials; returned without a trailing slash."""
    parts = urllib.parse.urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise AgentError(f"invalid server URL {url!r}: expected https://HOST[:PORT] (or http:// on loopback)")
    if parts.username or parts.password:
        raise AgentError(f"invalid server URL {url!r}: it must not carry a user name or password")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise AgentError(f"invalid server URL {url!r}: give only the scheme, host and port")
    try:
        port = parts.port
    except ValueError:
        raise AgentError(f"invalid server URL {url!r}: bad port") from None
    if port == 0:
        raise AgentError(f"invalid server URL {url!r}: bad port")
    return f"{parts.scheme}://{parts.netloc}"


def normalize_fingerprint(value: str) -> str:
    """SHA-256 fingerprint as upper-case colon hex; ``""`` stays ``""``."""
    if value == "":
        return ""
    compact = value.replace(":", "").strip()
    if not _HEX_FINGERPRINT.fullmatch(compact):
        raise AgentError(
            f"invalid certificate fingerprint {value!r}: expected a SHA-256 digest as 32 colon-separated hex bytes"
        )
    compact = compact.upper()
    return ":".join(compact[i : i + 2] for i in range(0, 64, 2))


def _text(fields: dict[str, object], key: str, what: str) -> str:
    value = fields.get(key)
    if not isinstance(value, str) or not value.strip():
        raise AgentError(f"the enrollment token has no {what} ({key!r})")
    return value.strip()
