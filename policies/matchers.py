"""Compiled right-hand sides: RE2 searches and interval sets for ranges, CIDRs and IP sets."""

from __future__ import annotations

import bisect
import ipaddress
import logging
from collections.abc import Callable, Iterable

import re2  # type: ignore[import-untyped]

from policies.scheme import IpAddress

logger = logging.getLogger(__name__)

_REGEX_SPECIAL = frozenset("\\.^$|?*+()[]{}")


class RegexError(ValueError):
    """A pattern RE2 refuses; ``too_large`` when only the memory budget is at fault."""

    def __init__(self, message: str, *, too_large: bool) -> None:
        super().__init__(message)
        self.too_large = too_large


def regex_search(pattern: str, *, max_mem: int) -> Callable[[str], bool]:
    """A function telling whether ``pattern`` occurs anywhere in a string (RE2, linear time).

    Plain literals (optionally anchored with ``^``/``$``) skip RE2 altogether: for them a
    substring, prefix, suffix or equality test is the same search, several times faster.
    RE2's ``$`` (without ``(?m)``) matches only at the very end, so ``abc$`` is ``endswith``.
    """
    options = re2.Options()
    options.max_mem = max_mem
    options.log_errors = False
    options.never_capture = True
    try:
        program = re2._re2.RE2(pattern.encode("utf-8", "surrogatepass"), options)
    except AttributeError:  # pragma: no cover - a google-re2 without the private binding
        return _public_search(pattern, options)
    if not program.ok():
        message = program.error()
        message = message.decode("utf-8", "replace") if isinstance(message, bytes) else str(message)
        raise RegexError(message, too_large="too large" in message)
    literal = _literal(pattern)
    if literal is not None:
        return literal
    match = program.Match
    unanchored = re2._re2.RE2.Anchor.UNANCHORED

    def search(text: str) -> bool:
        data = text.encode("utf-8", "surrogatepass")
        return bool(match(unanchored, data, 0, len(data))[0][0] != -1)

    return search


def _public_search(pattern: str, options: object) -> Callable[[str], bool]:  # pragma: no cover
    try:
        compiled = re2.compile(pattern, options)
    except re2.error as e:
        message = str(e.args[0] if e.args else e)
        raise RegexError(message, too_large="too large" in message) from None
    return lambda text: compiled.search(text) is not None


def _literal(pattern: str) -> Callable[[str], bool] | None:
    start = pattern.startswith("^")
    end = pattern.endswith("$")
    body = pattern[int(start) : len(pattern) - int(end)]
    if any(ch in _REGEX_SPECIAL for ch in body) or (end and not body and not start):
        return None
    if start and end:
        return body.__eq__
    if start:
        return lambda text: text.startswith(body)
    if end:
        return lambda text: text.endswith(body)
    return lambda text: body in text


class Intervals:
    """A set of integers given as inclusive ranges, merged and searched by bisection."""

    __slots__ = ("_highs", "_lows")

    def __init__(self, ranges: Iterable[tuple[int, int]]) -> None:
        merged: list[tuple[int, int]] = []
        for low, high in sorted(ranges):
            if merged and low <= merged[-1][1] + 1:
                merged[-1] = (merged[-1][0], max(merged[-1][1], high))
            else:
                merged.append((low, high))
        self._lows = [low for low, _ in merged]
        self._highs = [high for _, high in merged]

    def __contains__(self, value: int) -> bool:
        i = bisect.bisect_right(self._lows, value) - 1
        return i >= 0 and value <= self._highs[i]

    def __len__(self) -> int:
        return len(self._lows)


class IpSet:
    """Addresses, CIDRs and address ranges; IPv4 and IPv6 kept apart, so they never match."""

    __slots__ = ("_families",)

    def __init__(self, ranges: Iterable[tuple[IpAddress, IpAddress]]) -> None:
        pairs = list(ranges)
        self._families: dict[type, Intervals] = {
            ipaddress.IPv4Address: Intervals((int(a), int(b)) for a, b in pairs if a.version == 4),
            ipaddress.IPv6Address: Intervals((int(a), int(b)) for a, b in pairs if a.version == 6),
        }

    def __contains__(self, address: object) -> bool:
        family = self._families.get(type(address))
        if family is None:
            if isinstance(address, ipaddress.IPv4Address):
                family = self._families[ipaddress.IPv4Address]
            elif isinstance(address, ipaddress.IPv6Address):
                family = self._families[ipaddress.IPv6Address]
            else:
                return False
        return int(address) in family  # type: ignore[call-overload]


def network_range(network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> tuple[IpAddress, IpAddress]:
    return network.network_address, network.broadcast_address
