"""Source text → tokens, with wirefilter's literal syntax.

Words (fields, keywords, numbers, IP addresses, CIDRs and ranges) are runs of
``[A-Za-z0-9_.:/-]`` classified as a whole, so ``fe80::1``, ``10.0.0.0/8`` and ``80..443`` need
no quoting while field names keep their dots. Strings come in three forms:

- ``"..."``: escapes ``\\"``, ``\\\\``, ``\\xHH`` and ``\\OOO`` (one byte, in hex or in three
  octal digits); any other escape is an error. Bytes that do not form UTF-8 stand for themselves
  as Python's ``surrogateescape`` writes them (U+DC80-U+DCFF).
- ``"..."`` right after ``matches``/``~``: a regex literal as wirefilter lexes it: ``\\"`` outside
  a character class stands for ``"``, every other backslash sequence reaches the regex engine
  unchanged (``"\\d+"`` is the pattern ``\\d+``), and a ``"`` inside ``[...]`` does not end it.
- ``r"..."``, ``r#"..."#`` (up to 255 ``#``): raw, no escapes.

Words that are neither numbers nor addresses may be byte strings, wirefilter's third string
form: two hex digits per byte, separated by ``:``, ``-`` or ``.`` (``6F:72:67`` is ``"org"``).
Some words are both an address and a byte string (``10.20.30.40``, an IPv6 address of eight
two-digit groups); their token carries both readings and the field's type decides later.
Integers follow wirefilter: decimal, ``0x`` hex, and a leading ``0`` means octal (``010`` is 8).
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
    BYTES = "byte string"
    LIST_REF = "list reference"
    EQ = "'=='"
    NE = "'!='"
    LT = "'<'"
    LE = "'<='"
    GT = "'>'"
    GE = "'>='"
    TILDE = "'~'"
    AMP = "'&'"
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

    Values: STRING and BYTES → str (``raw``/``regex`` tell how a string was written); INT → int;
    IP → address; CIDR → network; INT_RANGE → (int, int); IP_RANGE → (address, address); IDENT,
    DOT_NAME and LIST_REF → the name text (without the dot or ``$``); others → None.
    ``as_bytes`` is the byte-string reading of an IP or IDENT word that also spells one.
    ``loose`` marks an IPv4 address or CIDR written with leading zeros (``1.1.1.01``), which
    wirefilter reads as decimal inside a set only.
    """

    kind: TokenKind
    text: str
    start: int
    end: int
    value: object = None
    raw: bool = False
    regex: bool = False
    as_bytes: str | None = None
    loose: bool = False


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
    "&": TokenKind.AMP,
}
_LONE_HINTS = {"=": "==", "|": "||", "^": "^^"}
_WORD = re.compile(r"[A-Za-z0-9_.:/\-]+")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*\Z")
_LIST_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_\-]*")  # a list's UUID, or a wirefilter list name
_DOT_NAME = re.compile(r"\.[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*\Z")
_DECIMAL = re.compile(r"-?[0-9]+\Z")
_HEX = re.compile(r"0x[0-9A-Fa-f]+\Z")
_BYTES = re.compile(r"[0-9A-Fa-f]{2}(?:[:.\-][0-9A-Fa-f]{2})+\Z")
_BYTE_LIKE = re.compile(r"[0-9A-Za-z]{2}(?:[:.\-][0-9A-Za-z]{0,2})+\Z")
_BYTE_SPLIT = re.compile(r"[:.\-]")
_LOOSE_V4 = re.compile(r"([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})\Z")
_WHITESPACE = " \t\r\n"
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")
_OCTAL_DIGITS = frozenset("01234567")


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

    def emit(
        self,
        kind: TokenKind,
        start: int,
        end: int,
        value: object = None,
        *,
        raw: bool = False,
        regex: bool = False,
        as_bytes: str | None = None,
        loose: bool = False,
    ) -> int:
        token = Token(kind, self.source[start:end], start, end, value, raw, regex, as_bytes, loose)
        self.tokens.append(token)
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
            match = _LIST_ID.match(src, pos + 1)
            if match is None:
                raise self.error("expected a list id after '$' ($<list id>)", pos + 1, ("list id",))
            return self.emit(TokenKind.LIST_REF, pos, match.end(), match.group())
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
            try:
                out += src[pos:end].encode("utf-8", "surrogateescape")
            except UnicodeEncodeError as e:
                raise self.error(
                    "string holds a lone surrogate, which is no character", pos + e.start
                ) from None
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
        if kind in _OCTAL_DIGITS:
            digits = src[backslash + 1 : backslash + 4]
            if len(digits) < 3 or any(d not in _OCTAL_DIGITS for d in digits):
                raise self.error(
                    "invalid escape: an octal escape needs three octal digits (\\000 to \\377)",
                    backslash,
                    ("\\OOO",),
                )
            if int(digits, 8) > 0o377:
                raise self.error(
                    f"invalid escape: \\{digits} is past \\377 (one byte)", backslash, ("\\OOO",)
                )
            out.append(int(digits, 8))
            return backslash + 4
        shown = kind if kind.isprintable() else repr(kind)
        raise self.error(
            f"invalid escape '\\{shown}' in a string (allowed: \\\" \\\\ \\xHH \\OOO; "
            'use a raw string r"..." to write backslashes freely)',
            backslash,
            ('\\"', "\\\\", "\\xHH", "\\OOO"),
        )

    def finish_string(self, start: int, end: int, data: bytes) -> int:
        return self.emit(TokenKind.STRING, start, end, text_of(data))

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
        spelled = byte_string(text)
        if _IDENT.match(text):
            return self.emit(TokenKind.IDENT, start, end, text, as_bytes=spelled)
        if _DOT_NAME.match(text):
            return self.emit(TokenKind.DOT_NAME, start, end, text[1:])
        if ".." in text:
            return self.range_(text, start)
        number = self.integer(text, start, spelled is None)
        if number is not None:
            return self.emit(TokenKind.INT, start, end, number)
        if "/" in text:
            network, loose = self.network(text, start)
            return self.emit(TokenKind.CIDR, start, end, network, loose=loose)
        address, loose = _address(text), False
        if address is None:
            address, loose = _loose_v4(text), True
        if address is not None:
            return self.emit(TokenKind.IP, start, end, address, as_bytes=spelled, loose=loose)
        if spelled is not None:
            return self.emit(TokenKind.BYTES, start, end, spelled)
        if _looks_like_ip(text):
            what = "IP address or byte string" if _BYTE_LIKE.match(text) else "IP address"
            raise self.error(f"invalid {what} {text!r}", start)
        raise self.error(f'unexpected {text!r}: strings must be quoted, like "{text}"', start, ("a value",))

    def integer(self, text: str, start: int, strict: bool = True) -> int | None:
        """wirefilter's integers: ``0x`` hex, a leading ``0`` octal, else decimal (``-`` allowed
        on decimal only, so ``-012`` is -12 as in the engine). None when ``text`` is no integer."""
        if _HEX.match(text):
            value = int(text, 16)
        elif _DECIMAL.match(text):
            octal = len(text) > 1 and text.startswith("0")
            if octal and any(d not in _OCTAL_DIGITS for d in text):
                if not strict:
                    return None  # e.g. 09 inside a byte string
                raise self.error(
                    f"integer {text!r} has a leading zero, so it is octal (as in Cloudflare's engine), "
                    "and octal digits are 0-7; write it without the zero",
                    start,
                )
            value = int(text, 8) if octal else int(text)
        elif text[:2] in ("0X", "0o", "0O", "0b", "0B") and strict:
            raise self.error(
                f"integer {text!r}: prefixes are 0x (hex) and a leading 0 (octal)", start, ("0x...", "0...")
            )
        else:
            return None
        if not MIN_INT <= value <= MAX_INT:
            raise self.error(f"integer {text} is out of range (64-bit signed)", start)
        return value

    def network(self, text: str, start: int) -> tuple[IpNetwork, bool]:
        address, _, length = text.partition("/")
        loose = _address(address) is None and _loose_v4(address) is not None
        if loose:
            text = f"{_loose_v4(address)}/{length}"
        try:
            return ipaddress.ip_network(text, strict=True), loose
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
            if _loose_v4(low_text if first is None else high_text) is not None:
                raise self.error(
                    "an IP range's ends are written without leading zeros (Cloudflare's engine "
                    f"refuses them there): {text!r}",
                    bad,
                )
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


def text_of(data: bytes) -> str:
    """Bytes of a literal as text: UTF-8, with bytes that are not UTF-8 kept as surrogates."""
    return data.decode("utf-8", "surrogateescape")


def byte_string(text: str) -> str | None:
    """The text a wirefilter byte string (``6F:72:67``) spells, or None if ``text`` is not one."""
    if not _BYTES.match(text):
        return None
    return text_of(bytes(int(pair, 16) for pair in _BYTE_SPLIT.split(text)))


def _loose_v4(text: str) -> ipaddress.IPv4Address | None:
    """A dotted IPv4 address whose octets may have leading zeros, read as decimal."""
    match = _LOOSE_V4.match(text)
    if match is None:
        return None
    octets = [int(group) for group in match.groups()]
    if any(octet > 255 for octet in octets):
        return None
    return ipaddress.IPv4Address(".".join(map(str, octets)))


def _address(text: str) -> IpAddress | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _looks_like_ip(text: str) -> bool:
    return ":" in text or (text[:1].isdigit() and "." in text)
