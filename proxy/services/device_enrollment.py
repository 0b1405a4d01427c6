"""Enrollment: the token an admin hands to a device, what the device says about itself, and
:class:`Enrollment`, which issues tokens and admits devices with them.

Token (docs/architecture.md): ``"gwe1." + base64url(JSON {"u": server URL, "a": account id,
"s": one-time secret, "f": SHA-256 fingerprint of the server's TLS certificate or ""})``. The
server keeps only the secret's SHA-256; the token is shown once.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from certs.clock import Clock
from policies.posture import Platform, parse_duration
from proxy.services.device_errors import Unauthenticated
from proxy.services.errors import InvalidInput, Refused
from proxy.store import Device, EnrollmentToken, Store

logger = logging.getLogger(__name__)

TOKEN_PREFIX: Final = "gwe1."
DEFAULT_TOKEN_LIFETIME: Final = timedelta(hours=1)
MIN_TOKEN_LIFETIME: Final = timedelta(minutes=1)
MAX_TOKEN_LIFETIME: Final = timedelta(days=30)
MAX_FIELD_CHARS: Final = 255
MAX_EMAIL_CHARS: Final = 320
MAX_SECRET_CHARS: Final = 512
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+")

# What agents may call their operating system, and the platform (Cloudflare's names) it is.
_PLATFORMS: Final[Mapping[str, Platform]] = {
    **{p.value: p for p in Platform},
    "darwin": Platform.MAC,
    "macos": Platform.MAC,
    "osx": Platform.MAC,
    "win32": Platform.WINDOWS,
    "cygwin": Platform.WINDOWS,
}


def secret_hash(secret: str) -> bytes:
    """SHA-256 of a secret (enrollment or device): 256 random bits need no slow hash."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()


def encode_token(*, server_url: str, account_id: str, secret: str, fingerprint: str) -> str:
    fields = {"u": server_url, "a": account_id, "s": secret, "f": fingerprint}
    raw = json.dumps(fields, separators=(",", ":")).encode()
    return TOKEN_PREFIX + base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def token_lifetime(text: str | None) -> timedelta:
    """``expires_in`` of a token request (``"1h"``, ``"30m"``); default 1 hour."""
    if text is None or not text.strip():
        return DEFAULT_TOKEN_LIFETIME
    try:
        lifetime = parse_duration(text)
    except ValueError as e:
        raise InvalidInput("expires_in", str(e)) from None
    if not MIN_TOKEN_LIFETIME <= lifetime <= MAX_TOKEN_LIFETIME:
        raise InvalidInput("expires_in", f"must be between 1m and 30d, got {text!r}")
    return lifetime


def user_id(email: str) -> str:
    """A stable user id for an email (case-insensitive): UUID 5 of ``mailto:<email>``."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "mailto:" + email.strip().lower()))


def check_email(value: str, field: str = "email") -> str:
    email = value.strip()
    if len(email) > MAX_EMAIL_CHARS or not _EMAIL.fullmatch(email):
        raise InvalidInput(field, f"must be an email address such as ana@example.com, got {value!r}")
    return email


@dataclass(frozen=True)
class DeviceDetails:
    """What an enrolling device says about itself (checked by :meth:`from_api`)."""

    name: str
    os: Platform
    os_version: str = ""
    serial_number: str = ""
    hostname: str = ""
    email: str = ""

    @classmethod
    def from_api(cls, body: Mapping[str, Any]) -> DeviceDetails:
        texts = {
            key: _text(body, key)
            for key in ("name", "os", "os_version", "serial_number", "hostname", "email")
        }
        name = texts["name"] or texts["hostname"]
        if not name:
            raise InvalidInput("name", "required (or send hostname)")
        email = check_email(texts["email"]) if texts["email"] else ""
        return cls(
            name=name,
            os=_platform(texts["os"]),
            os_version=texts["os_version"],
            serial_number=texts["serial_number"],
            hostname=texts["hostname"],
            email=email,
        )


def _text(body: Mapping[str, Any], key: str) -> str:
    value = body.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidInput(key, "must be a string")
    limit = MAX_EMAIL_CHARS if key == "email" else MAX_FIELD_CHARS
    if len(value) > limit:
        raise InvalidInput(key, f"at most {limit} characters, got {len(value)}")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise InvalidInput(key, "must not contain control characters")
    return value.strip()


def _platform(value: str) -> Platform:
    if not value:
        raise InvalidInput("os", f"required: one of {', '.join(p.value for p in Platform)}")
    platform = _PLATFORMS.get(value.lower())
    if platform is None:
        raise InvalidInput(
            "os", f"unknown operating system {value!r} (one of {', '.join(p.value for p in Platform)})"
        )
    return platform


@dataclass(frozen=True)
class IssuedToken:
    id: str
    token: str  # shown once; the store keeps the secret's hash
    email: str
    created_at: datetime
    expires_at: datetime


@dataclass(frozen=True)
class Enrolled:
    device: Device
    secret: str  # shown once


class Enrollment:
    """Enrollment tokens (single use, expiring) and the devices they admit."""

    def __init__(self, store: Store, clock: Clock, *, server_url: str, fingerprint: str) -> None:
        self._store = store
        self._clock = clock
        self._server_url = server_url
        self._fingerprint = fingerprint

    def issue(self, account_id: str, *, email: str = "", expires_in: str | None = None) -> IssuedToken:
        email = check_email(email) if email.strip() else ""
        lifetime = token_lifetime(expires_in)
        secret = secrets.token_urlsafe(32)
        now = self._clock()
        record = EnrollmentToken(
            id=str(uuid.uuid4()), account_id=account_id, secret_sha256=secret_hash(secret),
            email=email, created_at=now, expires_at=now + lifetime,
        )  # fmt: skip
        with self._store.transaction():
            self._store.enrollment_tokens.delete_expired(now - timedelta(days=1))
            self._store.enrollment_tokens.add(record)
        token = encode_token(
            server_url=self._server_url, account_id=account_id, secret=secret,
            fingerprint=self._fingerprint,
        )  # fmt: skip
        logger.info(
            "account %s: enrollment token %s made (user %s, expires %s)",
            account_id, record.id, email or "named by the device", record.expires_at,
        )  # fmt: skip
        return IssuedToken(record.id, token, email, now, record.expires_at)

    def admit(self, secret: str, details: DeviceDetails, ip: str) -> Enrolled:
        now = self._clock()
        token = self._token(secret, ip, now)
        email = token.email or details.email
        if not email:
            raise InvalidInput("email", "required: the enrollment token names no user, so the device must")
        device_secret = secrets.token_urlsafe(32)
        device = Device(
            id=str(uuid.uuid4()), account_id=token.account_id,
            secret_sha256=secret_hash(device_secret), name=details.name, os=details.os.value,
            os_version=details.os_version, serial_number=details.serial_number,
            hostname=details.hostname, email=email, ip=ip, created_at=now, updated_at=now,
            last_seen=now,
        )  # fmt: skip
        with self._store.transaction():
            if not self._store.enrollment_tokens.use(token.id, device.id, now):
                raise Refused(f"enrollment token {token.id} was already used")
            self._store.devices.add(device)
        logger.info(
            "account %s: enrolled device %s %r (%s, user %s) from %s with token %s",
            device.account_id, device.id, device.name, device.os, email, ip, token.id,
        )  # fmt: skip
        return Enrolled(device, device_secret)

    def _token(self, secret: str, ip: str, now: datetime) -> EnrollmentToken:
        """The unused, unexpired token of ``secret``; else the refusal, logged."""
        token = self._store.enrollment_tokens.by_secret(secret_hash(secret[:MAX_SECRET_CHARS]))
        if token is None or len(secret) > MAX_SECRET_CHARS:
            logger.warning("enrollment from %s refused: unknown enrollment secret", ip)
            raise Unauthenticated(
                "secret: not a valid enrollment token (make one with `gateway device token`)"
            )
        if token.used_at is not None:
            logger.warning("enrollment from %s refused: token %s already used", ip, token.id)
            raise Refused(
                f"enrollment token {token.id} was already used (by device {token.device_id}): "
                "tokens are single use; make a new one with `gateway device token`"
            )
        if token.expires_at <= now:
            logger.warning("enrollment from %s refused: token %s expired", ip, token.id)
            raise Refused(
                f"enrollment token {token.id} expired at {token.expires_at:%Y-%m-%dT%H:%M:%SZ}: "
                "make a new one with `gateway device token`"
            )
        return token
