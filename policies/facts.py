"""What the proxy knows about a connection and a request, and the expression context made of it.

The proxy (or the policy test runner, or a dry run) fills :class:`ConnectionFacts` at the TLS
ClientHello and :class:`RequestFacts` per HTTP request; :func:`connection_context` and
:func:`request_context` turn them into the mapping the compiled expressions read. Unknown identity
or posture is the empty :class:`Identity`: no email, no groups, nothing passed, nothing failed.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

from policies import scheme

logger = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
UNSPECIFIED: Final[IPAddress] = ipaddress.IPv4Address("0.0.0.0")
DEFAULT_PORTS: Final = {"http": 80, "https": 443}


class PostureState(StrEnum):
    """Where a device stands on one posture rule, in the words a denial uses."""

    PASSED = "passed"
    FAILED = "failed"
    EXPIRED = "expired"  # it passed, and that result is too old to count
    NO_RESULT = "no result"  # the device never reported on this rule (or it does not apply)


@dataclass(frozen=True)
class PostureNote:
    """One posture rule as the device stands on it, for explanations: its name, its state and
    the stored result's reason. Made when the identity is (cached per device), never per request."""

    rule_id: str
    rule_name: str
    state: PostureState
    reason: str = ""

    @property
    def label(self) -> str:
        return repr(self.rule_name) if self.rule_name else repr(self.rule_id)

    def describe(self) -> str:
        """``posture check 'Client certificate' failed: no certificate found``."""
        if self.state is PostureState.NO_RESULT:
            return f"posture check {self.label}: no result from this device"
        reason = f": {self.reason}" if self.reason and self.state is not PostureState.PASSED else ""
        return f"posture check {self.label} {self.state.value}{reason}"


@dataclass(frozen=True)
class Identity:
    """Who and what is behind a connection, as far as the gateway verified it.

    ``posture_passed`` / ``posture_failed`` hold posture rule ids (kept sorted and unique);
    ``verified_certificate_cn`` is the CN of a client certificate the server verified (proof of
    possession), ``None`` when there is none (a certificate with an empty CN is ``""``).
    Unknown identity is the empty one: no email, no groups, no posture. ``posture_notes`` (not
    compared) name each applicable rule and why it stands where it does, for denials and logs.
    """

    email: str = ""
    groups: tuple[str, ...] = ()
    device_id: str = ""
    posture_passed: tuple[str, ...] = ()
    posture_failed: tuple[str, ...] = ()
    verified_certificate_cn: str | None = None
    posture_notes: tuple[PostureNote, ...] = field(default=(), compare=False, repr=False)
    account_id: str = ""  # the device's account ("": no known device, the gateway's default account)

    def __post_init__(self) -> None:
        for name in ("groups", "posture_passed", "posture_failed"):
            value = getattr(self, name)
            normal = tuple(sorted(set(value))) if name != "groups" else tuple(value)
            if normal != value or not isinstance(value, tuple):
                object.__setattr__(self, name, normal)

    @classmethod
    def of(
        cls,
        *,
        email: str = "",
        groups: Iterable[str] = (),
        device_id: str = "",
        passed: Iterable[str] = (),
        failed: Iterable[str] = (),
        verified_certificate_cn: str | None = None,
        notes: Iterable[PostureNote] = (),
        account_id: str = "",
    ) -> Identity:
        return cls(
            email,
            tuple(groups),
            device_id,
            tuple(passed),
            tuple(failed),
            verified_certificate_cn,
            tuple(notes),
            account_id,
        )

    def posture_note(self, rule_id: str) -> PostureNote:
        """How this identity stands on ``rule_id``: its note when the directory made one, else
        what ``posture_passed`` / ``posture_failed`` say (no name, no reason)."""
        for note in self.posture_notes:
            if note.rule_id == rule_id:
                return note
        if rule_id in self.posture_passed:
            state = PostureState.PASSED
        elif rule_id in self.posture_failed:
            state = PostureState.FAILED
        else:
            state = PostureState.NO_RESULT
        return PostureNote(rule_id, "", state)


ANONYMOUS: Final = Identity()


@dataclass(frozen=True)
class ConnectionFacts:
    """Known at the ClientHello. ``sni`` is ``None`` for plain HTTP (no TLS)."""

    sni: str | None
    src_ip: IPAddress
    dst_ip: IPAddress = UNSPECIFIED
    dst_port: int = 443
    identity: Identity = ANONYMOUS


@dataclass(frozen=True)
class RequestFacts:
    """One HTTP request (after decryption, for HTTPS). ``host`` is lower case, without port."""

    method: str
    url: str
    host: str
    path: str
    query: str
    connection: ConnectionFacts

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        method: str = "GET",
        src_ip: IPAddress | str = "127.0.0.1",
        dst_ip: IPAddress | str | None = None,
        identity: Identity = ANONYMOUS,
    ) -> RequestFacts:
        """Facts for an absolute URL, as a client would send it through the proxy: SNI is the
        host for https, none for http; the destination port comes from the URL; the destination
        address is the host when it is an IP literal, else unspecified (0.0.0.0) unless given.
        Raises ``ValueError`` naming what is wrong with the URL."""
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in DEFAULT_PORTS:
            raise ValueError(f"URL must start with http:// or https://, got {url!r}")
        host = (parts.hostname or "").lower()
        if not host:
            raise ValueError(f"URL has no host: {url!r}")
        problem = scheme.host_name_problem(host)
        if problem:
            raise ValueError(f"URL host {problem}")
        try:
            port = parts.port or DEFAULT_PORTS[parts.scheme]
        except ValueError:
            raise ValueError(f"URL has an invalid port: {url!r}") from None
        if dst_ip is None:
            try:
                dst_ip = ipaddress.ip_address(host)
            except ValueError:
                dst_ip = UNSPECIFIED
        connection = ConnectionFacts(
            sni=host if parts.scheme == "https" else None,
            src_ip=ipaddress.ip_address(src_ip) if isinstance(src_ip, str) else src_ip,
            dst_ip=ipaddress.ip_address(dst_ip) if isinstance(dst_ip, str) else dst_ip,
            dst_port=port,
            identity=identity,
        )
        return cls(method.upper(), url, host, parts.path or "/", parts.query, connection)

    @property
    def identity(self) -> Identity:
        return self.connection.identity


@functools.lru_cache(maxsize=8192)
def domains_of(host: str) -> tuple[str, ...]:
    """``scheme.domains_of`` memoized: hosts repeat far more often than they change."""
    return scheme.domains_of(host)


def connection_context(facts: ConnectionFacts) -> dict[str, object]:
    """The fields known at the ClientHello: SNI, addresses, identity, posture. Fields left out
    (``identity.name``, ``identity.groups.id``, ...) read as their type's empty value."""
    identity = facts.identity
    sni = facts.sni.lower() if facts.sni else ""
    return {
        "net.sni.host": sni,
        "http.conn.hostname": sni,
        "http.conn.domains": domains_of(sni),
        "http.conn.src_ip": facts.src_ip,
        "http.conn.dst_ip": facts.dst_ip,
        "http.conn.dst_port": facts.dst_port,
        "identity.email": identity.email,
        "identity.groups.name": identity.groups,
        "device_posture.checks.passed": identity.posture_passed,
        "device_posture.checks.failed": identity.posture_failed,
    }


def request_context(facts: RequestFacts) -> dict[str, object]:
    """Every field: the connection's plus the request's. For plain HTTP (no SNI),
    ``http.conn.hostname`` and ``http.conn.domains`` are the request host's. Response fields
    (``http.response.status_code``) are absent: requests are decided before any response."""
    connection = facts.connection
    identity = connection.identity
    host = facts.host
    domains = domains_of(host)
    if connection.sni is None:
        conn_host, conn_domains, sni = host, domains, ""
    else:
        sni = connection.sni.lower()
        conn_host, conn_domains = sni, (domains if sni == host else domains_of(sni))
    return {
        "net.sni.host": sni,
        "http.conn.hostname": conn_host,
        "http.conn.domains": conn_domains,
        "http.conn.src_ip": connection.src_ip,
        "http.conn.dst_ip": connection.dst_ip,
        "http.conn.dst_port": connection.dst_port,
        "identity.email": identity.email,
        "identity.groups.name": identity.groups,
        "device_posture.checks.passed": identity.posture_passed,
        "device_posture.checks.failed": identity.posture_failed,
        "http.request.host": host,
        "http.request.domains": domains,
        "http.request.method": facts.method,
        "http.request.uri": facts.url,
        "http.request.uri.path": facts.path,
        "http.request.uri.query": facts.query,
        "http.request.uri.path_and_query": f"{facts.path}?{facts.query}" if facts.query else facts.path,
    }
