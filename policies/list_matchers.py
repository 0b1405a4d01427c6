"""Gateway lists compiled for lookups, and the handles compiled expressions hold for ``$<id>``.

Expressions do not hold a list's items: the compiler resolves ``$<id>`` through a
:class:`ListLookup` to a :class:`ListHandle` and the compiled leaf keeps a reference to it. A
:class:`ListRegistry` keeps an account's handles between builds, so a change to one list makes
one new matcher and recompiles only the rules that refer to that list. Every lookup costs a few
hash probes, whatever the list's size (see each matcher).
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Final, Protocol

from policies.scheme import domains_of

logger = logging.getLogger(__name__)

SCHEME: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://")


class ListType(StrEnum):
    DOMAIN = "DOMAIN"
    HOST = "HOST"
    URL = "URL"
    IP = "IP"
    EMAIL = "EMAIL"
    SERIAL = "SERIAL"


# Which list types a field may be compared with (``field in $list``); an array field's elements.
FIELD_LIST_TYPES: Final[Mapping[str, frozenset[ListType]]] = {
    "http.request.host": frozenset({ListType.DOMAIN, ListType.HOST}),
    "net.sni.host": frozenset({ListType.DOMAIN, ListType.HOST}),
    "http.conn.hostname": frozenset({ListType.DOMAIN, ListType.HOST}),
    "http.request.domains": frozenset({ListType.DOMAIN, ListType.HOST}),
    "http.conn.domains": frozenset({ListType.DOMAIN, ListType.HOST}),
    "http.request.uri": frozenset({ListType.URL}),
    "http.conn.src_ip": frozenset({ListType.IP}),
    "http.conn.dst_ip": frozenset({ListType.IP}),
    "identity.email": frozenset({ListType.EMAIL}),
    "identity.groups.email": frozenset({ListType.EMAIL}),
}

# --- matching ----------------------------------------------------------------------------------


class Matcher(Protocol):
    """One list's items compiled for lookups: built once per change, then only read."""

    def find(self, value: object) -> str | None:
        """The item that ``value`` matches (for explanations), or None."""
        ...

    def __contains__(self, value: object) -> bool: ...

    @property
    def size(self) -> int:
        """How many items it holds."""
        ...


class ExactMatcher:
    """HOST, EMAIL and SERIAL lists (hosts compared lowercased): one hash lookup."""

    __slots__ = ("_fold", "_values", "size", "values")

    def __init__(self, values: Iterable[str], *, hosts: bool) -> None:
        self._values = self.values = frozenset(values)
        self._fold = hosts
        self.size = len(self._values)

    def _key(self, value: object) -> str | None:
        if not isinstance(value, str):
            return None
        return value.lower().removesuffix(".") if self._fold else value

    def __contains__(self, value: object) -> bool:
        return self._key(value) in self._values

    def find(self, value: object) -> str | None:
        key = self._key(value)
        return key if key in self._values else None


class DomainMatcher:
    """DOMAIN lists: the host and each parent domain, looked up in a hash set. A set of the
    items' last two labels answers most misses with one probe (a matching item always ends
    with the host's last two labels)."""

    __slots__ = ("_tails", "_values", "size", "values")

    def __init__(self, values: Iterable[str]) -> None:
        self._values = self.values = frozenset(values)
        self._tails = frozenset(_tail(v) for v in self._values)
        self.size = len(self._values)

    def __contains__(self, value: object) -> bool:
        if not isinstance(value, str) or not value.islower() or value[-1] == ".":
            return self.find(value) is not None
        last = value.rfind(".")
        if value[value.rfind(".", 0, last) + 1 :] not in self._tails:
            return False
        values = self._values
        if value in values:
            return True
        dot = value.find(".")
        while 0 <= dot < last:
            if value[dot + 1 :] in values:
                return True
            dot = value.find(".", dot + 1)
        return False

    def find(self, value: object) -> str | None:
        if not isinstance(value, str) or not value:
            return None
        values = self._values
        return next((d for d in domains_of(value) if d in values), None)


def _tail(domain: str) -> str:
    """The last two labels (or the only one)."""
    return domain[domain.rfind(".", 0, domain.rfind(".")) + 1 :]


class UrlMatcher:
    """URL lists, by prefix without the scheme: one lookup per item length the list holds."""

    __slots__ = ("_lengths", "_values", "size")

    def __init__(self, values: Iterable[str]) -> None:
        self._values = frozenset(strip_scheme(v) for v in values)
        self._lengths = tuple(sorted({len(v) for v in self._values}))
        self.size = len(self._values)

    def __contains__(self, value: object) -> bool:
        return self.find(value) is not None

    def find(self, value: object) -> str | None:
        if not isinstance(value, str):
            return None
        url = strip_scheme(value)
        values = self._values
        for length in self._lengths:
            if length > len(url):
                break
            prefix = url[:length]
            if prefix in values:
                return prefix
        return None


def strip_scheme(url: str) -> str:
    match = SCHEME.match(url)
    return url[match.end() :] if match else url


IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class IpMatcher:
    """IP lists: addresses in a hash set; CIDRs bucketed by (family, prefix length), each bucket a
    hash set of network numbers, so a lookup costs one probe per prefix length present."""

    __slots__ = ("_buckets", "_by_key", "size")

    def __init__(self, values: Iterable[str]) -> None:
        buckets: dict[tuple[int, int], set[int]] = {}
        by_key: dict[tuple[int, int, int], str] = {}
        for text in values:
            network = ipaddress.ip_network(text, strict=True)
            bits = network.max_prefixlen
            key = int(network.network_address) >> (bits - network.prefixlen)
            buckets.setdefault((network.version, network.prefixlen), set()).add(key)
            by_key[(network.version, network.prefixlen, key)] = text
        # longest prefixes first, so an address finds its most specific item
        ordered = sorted(buckets.items(), key=lambda kv: (kv[0][0], -kv[0][1]))
        self._buckets = tuple((v, plen, frozenset(s)) for (v, plen), s in ordered)
        self._by_key = by_key
        self.size = len(by_key)

    def __contains__(self, value: object) -> bool:
        return self._probe(value) is not None

    def find(self, value: object) -> str | None:
        found = self._probe(value)
        return None if found is None else self._by_key[found]

    def _probe(self, value: object) -> tuple[int, int, int] | None:
        if not isinstance(value, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
            return None
        version, number = value.version, int(value)
        bits = 32 if version == 4 else 128
        for family, prefixlen, keys in self._buckets:
            if family != version:
                continue
            key = number >> (bits - prefixlen)
            if key in keys:
                return (version, prefixlen, key)
        return None


def matcher_for(type_: ListType, values: Iterable[str]) -> Matcher:
    if type_ is ListType.DOMAIN:
        return DomainMatcher(values)
    if type_ is ListType.URL:
        return UrlMatcher(values)
    if type_ is ListType.IP:
        return IpMatcher(values)
    return ExactMatcher(values, hosts=type_ is ListType.HOST)


# Arrays that hold a host and every parent domain of it: ``any(f[*] in $list)`` over them with a
# DOMAIN or HOST list is "some element is an item", one set operation (a DOMAIN item matching a
# parent of an element matches that parent, which is an element too).
PARENT_ARRAYS: Final = frozenset({"http.request.domains", "http.conn.domains"})


def exact_values(handle: ListHandle, field: str) -> frozenset[str] | None:
    """The item set to test ``any(field[*] in $list)`` with, when membership is enough."""
    matcher = handle.matcher
    if field in PARENT_ARRAYS and isinstance(matcher, (DomainMatcher, ExactMatcher)):
        if handle.type in (ListType.DOMAIN, ListType.HOST):
            return matcher.values
    return None


class ListHandle:
    """What a compiled expression holds for ``$<id>``: the list's type, name and matcher."""

    __slots__ = ("id", "matcher", "name", "type")

    def __init__(self, list_id: str, type_: ListType, name: str, matcher: Matcher) -> None:
        self.id = list_id
        self.type = type_
        self.name = name
        self.matcher = matcher

    def __contains__(self, value: object) -> bool:
        return value in self.matcher

    def __repr__(self) -> str:
        return f"ListHandle({self.id!r}, {self.type.value}, {self.name!r})"


class ItemValue(Protocol):
    @property
    def value(self) -> str: ...


class ListValue(Protocol):
    """What a registry reads of a list (``policies.lists.GatewayList``)."""

    @property
    def id(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def type(self) -> ListType: ...

    @property
    def items(self) -> tuple[ItemValue, ...]: ...


class ListLookup(Protocol):
    """How the compiler resolves ``$<id>``: the handle, or None for no such list."""

    def get(self, list_id: str, /) -> ListHandle | None: ...


class ListRegistry:
    """One account's handles, kept from one build of its rules to the next.

    ``lookup(lists)`` gives the handles for a new set of lists: a list whose type and items are
    unchanged keeps its handle (so the rules compiled against it are reused as they are); a
    list whose items changed gets a new handle with a new matcher, and only the rules that
    refer to it are compiled again. The engines built from them replace the old ones whole, so
    a decision sees either the old list or the new one, never a mix."""

    def __init__(self) -> None:
        self._handles: dict[str, tuple[ListHandle, tuple[ItemValue, ...]]] = {}

    def lookup(self, lists: Iterable[ListValue]) -> ListLookup:
        handles: dict[str, tuple[ListHandle, tuple[ItemValue, ...]]] = {}
        for gateway_list in lists:
            list_id, type_, items = gateway_list.id, gateway_list.type, gateway_list.items
            known = self._handles.get(list_id)
            if (
                known is not None
                and known[0].type is type_
                and known[0].name == gateway_list.name
                and (known[1] is items or known[1] == items)
            ):
                handles[list_id] = known
                continue
            matcher = matcher_for(type_, (item.value for item in items))
            handles[list_id] = (ListHandle(list_id, type_, gateway_list.name, matcher), items)
        self._handles = handles
        return {list_id: handle for list_id, (handle, _) in handles.items()}


def static_lookup(lists: Iterable[ListValue]) -> ListLookup:
    """Handles for a fixed set of lists (policy files, tests): nothing ever swaps them."""
    return {
        gateway_list.id: ListHandle(
            gateway_list.id,
            gateway_list.type,
            gateway_list.name,
            matcher_for(gateway_list.type, (i.value for i in gateway_list.items)),
        )
        for gateway_list in lists
    }
