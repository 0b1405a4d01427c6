"""The typed fields an expression may read (wirefilter's "scheme"), and the Gateway's own scheme."""

from __future__ import annotations

import difflib
import ipaddress
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum

from policies.errors import PolicyError

logger = logging.getLogger(__name__)

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class Kind(Enum):
    STRING = "string"
    INT = "int"
    BOOL = "bool"
    IP = "ip"
    ARRAY = "array"


@dataclass(frozen=True)
class Type:
    """A field's type; arrays carry their element type (arrays of arrays are not used)."""

    kind: Kind
    element: Type | None = None

    def __post_init__(self) -> None:
        if (self.kind is Kind.ARRAY) != (self.element is not None):
            raise ValueError("an array type needs an element type, and only arrays have one")
        if self.element is not None and self.element.kind is Kind.ARRAY:
            raise ValueError("arrays of arrays are not supported")

    @property
    def is_array(self) -> bool:
        return self.kind is Kind.ARRAY

    def __str__(self) -> str:
        if self.element is not None:
            return f"array<{self.element}>"
        return self.kind.value


STRING = Type(Kind.STRING)
INT = Type(Kind.INT)
BOOL = Type(Kind.BOOL)
IP = Type(Kind.IP)


def array_of(element: Type) -> Type:
    return Type(Kind.ARRAY, element)


def empty_value(type_: Type) -> object:
    """The value a field has when the context does not carry it (an absent IP is ``None``)."""
    return _EMPTY[type_.kind]


_EMPTY: dict[Kind, object] = {
    Kind.STRING: "",
    Kind.INT: 0,
    Kind.BOOL: False,
    Kind.IP: None,
    Kind.ARRAY: (),
}


@dataclass(frozen=True)
class Field:
    """One field. ``quoted_ints`` lets an int field be compared with a quoted number
    (``http.response.status_code == "200"``, as Cloudflare's documentation writes it)."""

    name: str
    type: Type
    description: str = ""
    quoted_ints: bool = False

    def __post_init__(self) -> None:
        if self.quoted_ints and self.type.kind is not Kind.INT:
            raise ValueError(f"{self.name}: quoted_ints only applies to int fields")


class Scheme:
    """An immutable set of fields, looked up by name."""

    def __init__(self, fields: Iterable[Field]) -> None:
        by_name: dict[str, Field] = {}
        for field in fields:
            if field.name in by_name:
                raise ValueError(f"field {field.name} declared twice")
            by_name[field.name] = field
        self._fields = by_name

    def __contains__(self, name: object) -> bool:
        return name in self._fields

    def __len__(self) -> int:
        return len(self._fields)

    @property
    def fields(self) -> tuple[Field, ...]:
        return tuple(self._fields.values())

    def get(self, name: str) -> Field | None:
        return self._fields.get(name)

    def suggest(self, name: str) -> str | None:
        """The known field name closest to ``name``, if one is close enough."""
        close = difflib.get_close_matches(name, list(self._fields), n=1, cutoff=0.6)
        return close[0] if close else None

    def check_context(self, ctx: Mapping[str, object]) -> None:
        """Raise PolicyError when a value in ``ctx`` does not have its field's declared type.

        ``Expression.evaluate`` trusts the context for speed; callers that build contexts from
        user input (policy tests, dry runs) check them here first. Unknown keys are allowed.
        """
        for name, value in ctx.items():
            field = self._fields.get(name)
            if field is None or value is None:
                continue
            if not _has_type(value, field.type):
                raise PolicyError(
                    f"context value for {name} must be {_describe(field.type)}, "
                    f"got {type(value).__name__} {value!r}"
                )


def _has_type(value: object, type_: Type) -> bool:
    if type_.element is not None:
        return isinstance(value, (tuple, list)) and all(_has_type(v, type_.element) for v in value)
    if type_.kind is Kind.STRING:
        return isinstance(value, str)
    if type_.kind is Kind.INT:
        return isinstance(value, int) and not isinstance(value, bool)
    if type_.kind is Kind.BOOL:
        return isinstance(value, bool)
    return isinstance(value, (ipaddress.IPv4Address, ipaddress.IPv6Address))


def _describe(type_: Type) -> str:
    if type_.element is not None:
        return f"a tuple or list of {_describe(type_.element)}"
    return {
        Kind.STRING: "a str",
        Kind.INT: "an int",
        Kind.BOOL: "a bool",
        Kind.IP: "an ipaddress.IPv4Address or IPv6Address",
    }[type_.kind]


# DNS's limits (RFC 1035 2.3.4): the proxy port refuses longer names, and so does every input.
MAX_HOST_LENGTH = 253
MAX_LABEL_LENGTH = 63


def host_name_problem(host: str) -> str | None:
    """Why ``host`` is too long to be a DNS name, or ``None``: at most 253 characters (without a
    trailing dot), 63 per label. Checks the total first, so a huge input costs one ``len``."""
    name = host[:-1] if host.endswith(".") else host
    if len(name) > MAX_HOST_LENGTH:
        return f"is {len(name)} characters long; a host name has at most {MAX_HOST_LENGTH}"
    longest = max(name.split("."), key=len)
    if len(longest) > MAX_LABEL_LENGTH:
        return f"has a label of {len(longest)} characters; a label has at most {MAX_LABEL_LENGTH}"
    return None


def domains_of(host: str) -> tuple[str, ...]:
    """``host`` and each parent domain that still has a dot, most specific first.

    ``a.b.example.com`` → ``("a.b.example.com", "b.example.com", "example.com")``; a single
    label (``localhost``) gives itself; an IP literal gives itself only; ``""`` gives ``()``.
    The host is lowercased and a trailing dot dropped, so the values are what rules compare
    against (``any(http.request.domains[*] == "example.com")``). A name longer than DNS allows
    has no parent domains (it gives itself), so the work stays bounded whatever the input.
    """
    host = host.strip().rstrip(".").lower()
    if not host:
        return ()
    if len(host) > MAX_HOST_LENGTH or _is_ip_literal(host):
        return (host,)
    starts = [i + 1 for i, char in enumerate(host) if char == "."]
    if not starts:
        return (host,)
    return (host, *(host[start:] for start in starts[:-1]))


def _is_ip_literal(host: str) -> bool:
    if ":" not in host and not host[-1:].isdigit():
        return False  # IPv4 ends with a digit, IPv6 holds a ':' (and the exception costs µs)
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


_STRINGS = array_of(STRING)

GATEWAY_SCHEME = Scheme(
    [
        Field("http.request.host", STRING, "the request's host (Host header or URL authority)"),
        Field("http.request.domains", _STRINGS, "the request's host and its parent domains"),
        Field("http.request.uri", STRING, "the full URL, scheme://host/path?query"),
        Field("http.request.uri.path", STRING, "the URL path, without the query"),
        Field("http.request.uri.query", STRING, "the URL query, without the leading '?'"),
        Field("http.request.uri.path_and_query", STRING, "the path and the query, as sent"),
        Field("http.request.method", STRING, "the HTTP method, e.g. GET"),
        Field("http.conn.hostname", STRING, "the SNI or CONNECT host of the connection"),
        Field("http.conn.domains", _STRINGS, "http.conn.hostname and its parent domains"),
        Field("http.conn.src_ip", IP, "the client's address"),
        Field("http.conn.dst_ip", IP, "the upstream server's address"),
        Field("http.conn.dst_port", INT, "the upstream server's port"),
        Field("net.sni.host", STRING, "the TLS ClientHello's server name"),
        Field(
            "http.response.status_code",
            INT,
            "the upstream response's status code (response phase only)",
            quoted_ints=True,
        ),
        Field("identity.email", STRING, "the user's email"),
        Field("identity.name", STRING, "the user's display name"),
        Field("identity.groups.name", _STRINGS, "the names of the user's groups"),
        Field("identity.groups.id", _STRINGS, "the ids of the user's groups"),
        Field("identity.groups.email", _STRINGS, "the emails of the user's groups"),
        Field("device_posture.checks.passed", _STRINGS, "ids of posture rules the device passes"),
        Field("device_posture.checks.failed", _STRINGS, "ids of posture rules the device fails"),
    ]
)
