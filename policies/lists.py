"""Gateway lists: named sets of values that expressions refer to as ``$<list id>``.

A :class:`GatewayList` is a value in Cloudflare's API shape (``from_api`` / ``to_api``), its items
checked and normalised for its type. How expressions match against a list (and why a change to
one needs no recompiling) is ``policies.list_matchers``'. Matching follows the type, as
Cloudflare documents it:

- ``DOMAIN``: the domain and all its subdomains (``example.com`` matches ``a.example.com``);
- ``HOST``: exact host names;
- ``IP``: addresses and CIDRs;
- ``URL``: by prefix, the scheme ignored (``example.com/docs`` matches ``https://example.com/docs/a``);
- ``EMAIL``, ``SERIAL``: exact values.

Host names and domains are kept lowercased without a trailing dot, IP items in their canonical
form; emails, serials and URLs exactly as written.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from policies.list_matchers import SCHEME, ListType
from policies.rules import ApiReader, FieldError, Path, format_timestamp, render_path
from policies.scheme import host_name_problem

logger = logging.getLogger(__name__)

MAX_ITEMS: Final = 500_000
MAX_VALUE_LENGTH: Final = 2048
MAX_NAME_LENGTH: Final = 255

# Read-only keys a server adds to a list; accepted on input (an export reads back) and dropped.
READ_ONLY_KEYS: Final = frozenset({"count", "read_only", "account_id"})


_PLAIN_KEYS: Final = frozenset({"value", "description"})
_SPACE: Final = re.compile(r"\s")
_HOST_CHARS = re.compile(r"[a-z0-9_\-]+(?:\.[a-z0-9_\-]+)*\Z")


# --- the value ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ListItem:
    value: str
    description: str = ""
    created_at: datetime | None = None  # None: when the list holding it was saved

    def to_api(self) -> dict[str, object]:
        out: dict[str, object] = {"value": self.value, "description": self.description}
        if self.created_at is not None:
            out["created_at"] = format_timestamp(self.created_at)
        return out


@dataclass(frozen=True)
class GatewayList:
    """One list as the API and the policy files spell it."""

    name: str
    type: ListType
    id: str = ""
    description: str = ""
    items: tuple[ListItem, ...] = ()
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @classmethod
    def from_api(cls, value: object, *, where: str) -> GatewayList:
        """Validate a list mapping: ``name``, ``type``, ``description``, ``items`` (each
        ``{value, description}``); item values are normalised for the type (see the module)."""
        if isinstance(value, Mapping) and isinstance(value.get("name"), str) and value["name"].strip():
            where = f"{where} {value['name']!r}"
        reader = ApiReader(value, where=where, ignored=READ_ONLY_KEYS)
        name = reader.string("name", non_empty=True)
        if len(name) > MAX_NAME_LENGTH:
            reader.fail(f"must be at most {MAX_NAME_LENGTH} characters", "name")
        type_ = reader.choice("type", ListType)
        items = read_items(reader.sequence("items", default=()), type_, where=where, path=("items",))
        result = cls(
            name=name,
            type=type_,
            id=reader.string("id", ""),
            description=reader.string("description", ""),
            items=items,
            created_at=reader.timestamp("created_at"),
            updated_at=reader.timestamp("updated_at"),
        )
        reader.finish()
        return result

    def to_api(self) -> dict[str, object]:
        out: dict[str, object] = {}
        if self.id:
            out["id"] = self.id
        out["name"] = self.name
        out["description"] = self.description
        out["type"] = self.type.value
        out["count"] = len(self.items)
        saved = self.updated_at  # an item without a time of its own was added when the list was saved
        out["items"] = [
            item.to_api()
            if item.created_at or saved is None
            else {**item.to_api(), "created_at": format_timestamp(saved)}
            for item in self.items
        ]
        if self.created_at is not None:
            out["created_at"] = format_timestamp(self.created_at)
        if self.updated_at is not None:
            out["updated_at"] = format_timestamp(self.updated_at)
        return out

    @property
    def label(self) -> str:
        return f"{self.name!r} ({self.type.value}{', id ' + self.id if self.id else ''})"


def read_items(
    values: Iterable[object], type_: ListType, *, where: str, path: Path, taken: Iterable[str] = ()
) -> tuple[ListItem, ...]:
    """Items (``{value, description}``, or a bare string value) checked and normalised for
    ``type_``; a value twice, or one already in ``taken``, is refused naming both places."""
    seen: dict[str, int | None] = dict.fromkeys(taken)
    items: list[ListItem] = []
    for index, raw in enumerate(values):
        if len(items) >= MAX_ITEMS:
            raise FieldError(where, path, f"a list holds at most {MAX_ITEMS} items")
        item = _plain_item(raw, type_)  # the common case, ten times faster than the reader
        if item is None:
            item = _read_item(raw, type_, where, (*path, index))
        if item.value in seen:
            first = seen[item.value]
            again = "already in the list" if first is None else f"repeats {render_path((*path, first))}"
            raise FieldError(where, (*path, index, "value"), f"{item.value!r} {again}")
        seen[item.value] = index
        items.append(item)
    return tuple(items)


def _plain_item(raw: object, type_: ListType) -> ListItem | None:
    """A bare string, or ``{value, description?}`` of strings, that is a good item; else None."""
    given: object = raw
    description: object = ""
    if isinstance(raw, dict) and raw.keys() <= _PLAIN_KEYS:
        given, description = raw.get("value"), raw.get("description", "")
    if not isinstance(given, str) or not isinstance(description, str):
        return None
    value = given
    problem, normalised = normalise(type_, value)
    return None if problem is not None or not value else ListItem(normalised, description)


def _read_item(raw: object, type_: ListType, where: str, path: Path) -> ListItem:
    """The item, or the FieldError naming what is wrong with it."""
    if isinstance(raw, str):
        raw = {"value": raw}
    reader = ApiReader(raw, where=where, path=path)
    text = reader.string("value", non_empty=True)
    problem, value = normalise(type_, text)
    if problem is not None:
        reader.fail(problem, "value")
    item = ListItem(value, reader.string("description", ""), reader.timestamp("created_at"))
    reader.finish()
    return item


def normalise(type_: ListType, text: str) -> tuple[str | None, str]:
    """(why ``text`` is no item of ``type_`` or None, the value as the list keeps it)."""
    if len(text) > MAX_VALUE_LENGTH:
        return f"is {len(text)} characters long; an item has at most {MAX_VALUE_LENGTH}", text
    if _SPACE.search(text):
        return f"{text!r} holds white space", text
    if type_ in (ListType.DOMAIN, ListType.HOST):
        return _host_item(type_, text)
    if type_ is ListType.IP:
        return _ip_item(text)
    if type_ is ListType.EMAIL and (text.count("@") != 1 or text.startswith("@") or text.endswith("@")):
        return f"{text!r} is not an email address (user@domain)", text
    if type_ is ListType.URL and SCHEME.match(text) and not text.startswith(("http://", "https://")):
        return f"{text!r}: a URL item is http(s) or has no scheme (example.com/path)", text
    return None, text


def _host_item(type_: ListType, text: str) -> tuple[str | None, str]:
    value = text.lower().removesuffix(".")
    what = "domain" if type_ is ListType.DOMAIN else "host name"
    if value.startswith("*."):
        hint = (
            f" (a DOMAIN item covers its subdomains: write {value[2:]})" if type_ is ListType.DOMAIN else ""
        )
        return f"{text!r}: wildcards are not items{hint}", value
    if "/" in value or (":" in value and not _is_ip(value)):
        return f"{text!r} is not a {what} (no scheme, path or port)", value
    if not _HOST_CHARS.match(value) and not _is_ip(value):
        return f"{text!r} is not a {what} (letters, digits, '-', '_' and dots; IDNs as punycode)", value
    problem = host_name_problem(value)
    if problem is not None:
        return f"{text!r} {problem}", value
    return None, value


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _ip_item(text: str) -> tuple[str | None, str]:
    try:
        if "/" not in text:
            return None, str(ipaddress.ip_address(text))
        return None, str(ipaddress.ip_network(text, strict=True))
    except ValueError as e:
        if "host bits set" in str(e):
            fixed = ipaddress.ip_network(text, strict=False)
            return f"CIDR {text} has host bits set (did you mean {fixed}?)", text
        return f"{text!r} is not an IP address or CIDR", text
