"""Compiled right-hand sides: RE2 searches, wildcard patterns, and interval sets for ranges,
CIDRs and IP sets."""

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


def rust_only_construct(pattern: str) -> str | None:
    """Why ``pattern`` would mean something else to Cloudflare's engine (Rust's ``regex``) than
    to RE2, or None. Inside ``[...]`` Rust reads a nested class (``[a[^b]]``) and the set
    operators ``&&``, ``--`` and ``~~``; RE2 reads those characters literally, so the same
    pattern would silently match other text. Everything else either means the same in both or
    is refused by RE2 with its own message."""
    i, n, depth = 0, len(pattern), 0
    while i < n:
        ch = pattern[i]
        if ch == "\\":
            i += 2
            continue
        if depth == 0:
            if ch == "[":
                depth, i = 1, _class_body_start(pattern, i + 1)
                continue
        elif ch == "[":
            if pattern.startswith("[:", i):
                close = pattern.find(":]", i + 2)
                if close >= 0:
                    i = close + 2
                    continue
            return "a '[' inside [...] opens a nested class in Cloudflare's engine but is a literal '[' in RE2: write \\["
        elif ch == "]":
            depth = 0
        elif pattern.startswith(("&&", "--", "~~"), i):
            op = pattern[i : i + 2]
            return (
                f"'{op}' inside [...] is a class operation in Cloudflare's engine but literal "
                f"characters in RE2: escape them (\\{op[0]}\\{op[1]}) or rewrite the class"
            )
        i += 1
    return None


def _class_body_start(pattern: str, i: int) -> int:
    """Skip a class's leading ``^`` and a ``]`` right after the opening, which is a literal."""
    if pattern.startswith("^", i):
        i += 1
    if pattern.startswith("]", i):
        i += 1
    return i


class WildcardError(ValueError):
    """A wildcard pattern Cloudflare's engine refuses; ``offset`` is where, in the pattern."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.offset = offset


def wildcard_match(pattern: str, *, case_sensitive: bool) -> Callable[[str], bool]:
    """A function telling whether a whole string matches ``pattern``, where ``*`` stands for any
    run of characters (also none), ``\\*`` for a ``*`` and ``\\\\`` for a backslash (Cloudflare's
    ``wildcard`` / ``strict wildcard``; ``?`` is an ordinary character there). Without
    ``case_sensitive`` ASCII letters match either case, as in the engine.

    Matching is greedy over the literal pieces between stars, leftmost first, which is exact for
    patterns whose only metacharacter is ``*`` and costs at most one pass of ``str.find`` per
    piece: no backtracking, whatever the pattern."""
    pieces = _wildcard_pieces(pattern)
    fold: Callable[[str], str] = (lambda text: text) if case_sensitive else ascii_lower
    pieces = [fold(piece) for piece in pieces]
    if len(pieces) == 1:
        only = pieces[0]
        return lambda text: fold(text) == only
    first, middle, last = pieces[0], tuple(pieces[1:-1]), pieces[-1]
    least = sum(map(len, pieces))
    if not middle:
        if not first:
            return (lambda text: fold(text).endswith(last)) if last else (lambda text: True)
        if not last:
            return lambda text: fold(text).startswith(first)
    if not first and not last and len(middle) == 1:
        needle = middle[0]
        return lambda text: needle in fold(text)

    def match(text: str) -> bool:
        if len(text) < least:
            return False
        value = fold(text)
        if not value.startswith(first) or not value.endswith(last):
            return False
        position, stop = len(first), len(value) - len(last)
        for piece in middle:
            found = value.find(piece, position, stop)
            if found < 0:
                return False
            position = found + len(piece)
        return True

    return match


def _wildcard_pieces(pattern: str) -> list[str]:
    """The literal pieces between unescaped stars; refuses what the engine refuses."""
    pieces: list[str] = []
    current: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "\\":
            if i + 1 >= n:
                raise WildcardError("a wildcard cannot end with a lone backslash (write \\\\)", i)
            escaped = pattern[i + 1]
            if escaped not in "*\\":
                raise WildcardError(
                    f"invalid escape '\\{escaped}' in a wildcard: only \\* and \\\\ are escapes there", i
                )
            current.append(escaped)
            i += 2
            continue
        if ch == "*":
            if pattern.startswith("**", i):
                raise WildcardError("a wildcard cannot hold '**' (one '*' already matches any run)", i)
            pieces.append("".join(current))
            current = []
        else:
            current.append(ch)
        i += 1
    pieces.append("".join(current))
    return pieces


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_ASCII_UPPER = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def ascii_lower(text: str) -> str:
    """Cloudflare's ``lower()`` (and its case-insensitive wildcard): only ASCII letters change."""
    return text.lower() if text.isascii() else text.translate(_ASCII_LOWER)


def ascii_upper(text: str) -> str:
    return text.upper() if text.isascii() else text.translate(_ASCII_UPPER)


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
