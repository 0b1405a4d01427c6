"""Source text → tokens, with wirefilter's literal syntax.

Words (fields, keywords, numbers, IP addresses, CIDRs and ranges) are runs of
``[A-Za-z0-9_.:/-]`` classified as a whole, so ``fe80::1``, ``10.0.0.0/8`` and ``80..443`` need
no quoting while field names keep their dots. Strings come in three forms:

- ``"..."``: escapes ``\\"``, ``\\\\`` and ``\\xHH`` (a byte; the bytes must form UTF-8); any
  other escape is an error.
- ``"..."`` right after ``matches``/``~``: a regex literal as wirefilter lexes it: ``\\"`` outside
  a character class stands for ``"``, every other backslash sequence reaches the regex engine
  unchanged (``"\\d+"`` is the pattern ``\\d+``), and a ``"`` inside ``[...]`` does not end it.
- ``r"..."``, ``r#"..."#`` (up to 255 ``#``): raw, no escapes.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from dataclasses import dataclass
from enum import Enum

from policies.errors import ExpressionError
from policies.scheme import IpAddress

logger = logging.getLogger(__name__)

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_INT = 2**63 - 1
MIN_INT = -(2**63)
_MAX_RAW_HASHES = 255


class TokenKind(Enum):
    IDENT = "name"
    DOT_NAME = "'.name'"
    STRING = "string"
    INT = "integer"
    INT_RANGE = "integer range"
    IP = "IP address"
    CIDR = "CIDR"
    IP_RANGE = "IP range"
    LIST_REF = "list reference"
    EQ = "'=='"
    NE = "'!='"
    LT = "'<'"
    LE = "'<='"
    GT = "'>'"
    GE = "'>='"
    TILDE = "'~'"
    BANG = "'!'"
    AND_AND = "'&&'"
    OR_OR = "'||'"
    XOR_XOR = "'^^'"
    LPAREN = "'('"
    RPAREN = "')'"
    LBRACE = "'{'"
    RBRACE = "'}'"
    LBRACKET = "'['"
    RBRACKET = "']'"
    STAR = "'*'"
    COMMA = "','"
    EOF = "end of expression"


@dataclass(frozen=True)
class Token:
    """One token: its kind, the source text it covers, and its decoded value for literals.

    Values: STRING → str (``raw``/``regex`` tell how it was written); INT → int; IP → address;
    CIDR → network; INT_RANGE → (int, int); IP_RANGE → (address, address); IDENT, DOT_NAME and
    LIST_REF → the name text (without the dot or ``$``); others → None.
    """

    kind: TokenKind
    text: str
    start: int
    end: int
    value: object = None
    raw: bool = False
    regex: bool = False


_PUNCT: dict[str, TokenKind] = {
    "==": TokenKind.EQ,
    "!=": TokenKind.NE,
    "<=": TokenKind.LE,
    ">=": TokenKind.GE,
    "&&": TokenKind.AND_AND,
    "||": TokenKind.OR_OR,
    "^^": TokenKind.XOR_XOR,
    "<": TokenKind.LT,
    ">": TokenKind.GT,
    "~": TokenKind.TILDE,
    "!": TokenKind.BANG,
    "(": TokenKind.LPAREN,
    ")": TokenKind.RPAREN,
    "{": TokenKind.LBRACE,
    "}": TokenKind.RBRACE,
    "[": TokenKind.LBRACKET,
    "]": TokenKind.RBRACKET,
    "*": TokenKind.STAR,
    ",": TokenKind.COMMA,
}
_LONE_HINTS = {"=": "==", "&": "&&", "|": "||", "^": "^^"}
_WORD = re.compile(r"[A-Za-z0-9_.:/\-]+")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*\Z")
_DOT_NAME = re.compile(r"\.[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*\Z")
_DECIMAL = re.compile(r"-?[0-9]+\Z")
_HEX = re.compile(r"0x[0-9A-Fa-f]+\Z")
_WHITESPACE = " \t\r\n"
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


def tokenize(source: str) -> list[Token]:
    """All tokens of ``source``, ending with one EOF token. Raises ExpressionError."""
    return _Lexer(source).run()


class _Lexer:
    def __init__(self, source: str) -> None:
        self.source = source
        self.tokens: list[Token] = []

    def error(self, message: str, offset: int, expected: tuple[str, ...] = ()) -> ExpressionError:
        return ExpressionError(message, source=self.source, offset=offset, expected=expected)

    def run(self) -> list[Token]:
        src, pos, n = self.source, 0, len(self.source)
        while True:
            while pos < n and src[pos] in _WHITESPACE:
                pos += 1
            if pos >= n:
                self.tokens.append(Token(TokenKind.EOF, "", n, n))
                return self.tokens
            pos = self.next_token(pos)

    def emit(self, kind: TokenKind, start: int, end: int, value: object = None, **kw: bool) -> int:
        self.tokens.append(Token(kind, self.source[start:end], start, end, value, **kw))
        return end

    def next_token(self, pos: int) -> int:
        src = self.source
        ch = src[pos]
        if ch == '"':
            if self.after_matches():
                return self.regex_string(pos)
            return self.quoted_string(pos)
        if ch == "r" and src[pos + 1 : pos + 2] in ('"', "#"):
            return self.raw_string(pos)
        if ch == "$":
            match = _WORD.match(src, pos + 1)
            name = match.group() if match else ""
            if not _IDENT.match(name):
                raise self.error("expected a list id after '$'", pos + 1, ("list id",))
            return self.emit(TokenKind.LIST_REF, pos, pos + 1 + len(name), name)
        two = src[pos : pos + 2]
        if len(two) == 2 and two in _PUNCT:
            return self.emit(_PUNCT[two], pos, pos + 2)
        if ch in _PUNCT:
            return self.emit(_PUNCT[ch], pos, pos + 1)
        if ch in _LONE_HINTS:
            raise self.error(f"unexpected '{ch}' (did you mean '{_LONE_HINTS[ch]}'?)", pos)
        match = _WORD.match(src, pos)
        if match is None:
            raise self.error(f"unexpected character {ch!r}", pos)
        return self.word(match.group(), pos)

    def after_matches(self) -> bool:
        if not self.tokens:
            return False
        last = self.tokens[-1]
        return last.kind is TokenKind.TILDE or (last.kind is TokenKind.IDENT and last.text == "matches")

    # -- strings ---------------------------------------------------------------------------

    def quoted_string(self, start: int) -> int:
        src, n = self.source, len(self.source)
        out = bytearray()
        pos = start + 1
        while True:
            end = _next_special(src, pos)
            if end >= n:
                raise self.error("unterminated string: missing closing '\"'", start, ("'\"'",))
            out += src[pos:end].encode("utf-8", "surrogatepass")
            if src[end] == '"':
                return self.finish_string(start, end + 1, bytes(out))
            pos = self.escape(end, out)

    def escape(self, backslash: int, out: bytearray) -> int:
        src = self.source
        if backslash + 1 >= len(src):
            raise self.error("unterminated string: missing closing '\"'", backslash)
        kind = src[backslash + 1]
        if kind in '"\\':
            out.append(ord(kind))
            return backslash + 2
        if kind == "x":
            digits = src[backslash + 2 : backslash + 4]
            if len(digits) == 2 and all(d in _HEX_DIGITS for d in digits):
                out.append(int(digits, 16))
                return backslash + 4
            raise self.error("invalid escape: \\x needs two hex digits", backslash, ("\\xHH",))
        shown = kind if kind.isprintable() else repr(kind)
        raise self.error(
            f"invalid escape '\\{shown}' in a string (allowed: \\\" \\\\ \\xHH; "
            'use a raw string r"..." to write backslashes freely)',
            backslash,
            ('\\"', "\\\\", "\\xHH"),
        )

    def finish_string(self, start: int, end: int, data: bytes) -> int:
        try:
            value = data.decode("utf-8")
        except UnicodeDecodeError:
            raise self.error("string is not valid UTF-8 (check its \\x escapes)", start) from None
        return self.emit(TokenKind.STRING, start, end, value)

    def regex_string(self, start: int) -> int:
        src, n = self.source, len(self.source)
        out: list[str] = []
        in_class = False
        pos = start + 1
        while pos < n:
            ch = src[pos]
            if ch == "\\":
                if pos + 1 >= n:
                    break
                nxt = src[pos + 1]
                out.append(nxt if nxt == '"' and not in_class else "\\" + nxt)
                pos += 2
                continue
            if ch == '"' and not in_class:
                return self.emit(TokenKind.STRING, start, pos + 1, "".join(out), regex=True)
            if ch == "[" and not in_class:
                in_class = True
            elif ch == "]" and in_class:
                in_class = False
            out.append(ch)
            pos += 1
        raise self.error("unterminated regex: missing closing '\"'", start, ("'\"'",))

    def raw_string(self, start: int) -> int:
        src = self.source
        pos = start + 1
        hashes = 0
        while pos < len(src) and src[pos] == "#":
            hashes, pos = hashes + 1, pos + 1
        if hashes > _MAX_RAW_HASHES:
            raise self.error(f"a raw string takes at most {_MAX_RAW_HASHES} '#'", start)
        if src[pos : pos + 1] != '"':
            raise self.error("expected '\"' to open the raw string", pos, ("'\"'",))
        closing = '"' + "#" * hashes
        end = src.find(closing, pos + 1)
        if end < 0:
            raise self.error(f"unterminated raw string: missing closing {closing}", start)
        value = src[pos + 1 : end]
        return self.emit(
            TokenKind.STRING, start, end + len(closing), value, raw=True, regex=self.after_matches()
        )

    # -- words ------------------------------------------------------------------------------

    def word(self, text: str, start: int) -> int:
        end = start + len(text)
        if _IDENT.match(text):
            return self.emit(TokenKind.IDENT, start, end, text)
        if _DOT_NAME.match(text):
            return self.emit(TokenKind.DOT_NAME, start, end, text[1:])
        if ".." in text:
            return self.range_(text, start)
        number = self.integer(text, start)
        if number is not None:
            return self.emit(TokenKind.INT, start, end, number)
        if "/" in text:
            return self.emit(TokenKind.CIDR, start, end, self.network(text, start))
        address = _address(text)
        if address is not None:
            return self.emit(TokenKind.IP, start, end, address)
        if _looks_like_ip(text):
            raise self.error(f"invalid IP address {text!r}", start)
        raise self.error(f'unexpected {text!r}: strings must be quoted, like "{text}"', start, ("a value",))

    def integer(self, text: str, start: int) -> int | None:
        if _HEX.match(text):
            value = int(text, 16)
        elif _DECIMAL.match(text):
            digits = text.lstrip("-")
            if len(digits) > 1 and digits.startswith("0"):
                raise self.error(
                    f"integer {text!r} has a leading zero (wirefilter would read it as octal); "
                    "write it without the zero, or in hex with 0x",
                    start,
                )
            value = int(text)
        else:
            return None
        if not MIN_INT <= value <= MAX_INT:
            raise self.error(f"integer {text} is out of range (64-bit signed)", start)
        return value

    def network(self, text: str, start: int) -> IpNetwork:
        try:
            return ipaddress.ip_network(text, strict=True)
        except ValueError as e:
            if "host bits set" in str(e):
                fixed = ipaddress.ip_network(text, strict=False)
                raise self.error(f"CIDR {text} has host bits set (did you mean {fixed}?)", start) from None
            raise self.error(f"invalid CIDR {text!r}", start) from None

    def range_(self, text: str, start: int) -> int:
        end = start + len(text)
        low_text, _, high_text = text.partition("..")
        high_start = start + len(low_text) + 2
        if _DECIMAL.match(low_text) or _HEX.match(low_text):
            low = self.integer(low_text, start)
            high = self.integer(high_text, high_start)
            if low is None or high is None:
                raise self.error(f"invalid integer range {text!r}", start, ("integer..integer",))
            if high < low:
                raise self.error(f"range {text} ends before it starts", start)
            return self.emit(TokenKind.INT_RANGE, start, end, (low, high))
        first, last = _address(low_text), _address(high_text)
        if first is None or last is None:
            bad = start if first is None else high_start
            raise self.error(f"invalid range {text!r}", bad, ("integer..integer", "IP..IP"))
        if first.version != last.version:
            raise self.error(f"range {text} mixes IPv4 and IPv6", start)
        if int(last) < int(first):
            raise self.error(f"range {text} ends before it starts", start)
        return self.emit(TokenKind.IP_RANGE, start, end, (first, last))


def _next_special(src: str, pos: int) -> int:
    """Offset of the next '"' or backslash at or after ``pos`` (len(src) when none)."""
    quote = src.find('"', pos)
    backslash = src.find("\\", pos, quote if quote >= 0 else len(src))
    if backslash >= 0:
        return backslash
    return quote if quote >= 0 else len(src)


def _address(text: str) -> IpAddress | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _looks_like_ip(text: str) -> bool:
    return ":" in text or (text[:1].isdigit() and "." in text)
