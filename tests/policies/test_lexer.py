"""policies/lexer.py: words, literals, strings in their three forms, and where errors point."""

from __future__ import annotations

import ipaddress

import pytest

from policies.errors import ExpressionError
from policies.lexer import TokenKind, tokenize

K = TokenKind


def kinds(source: str) -> list[TokenKind]:
    return [t.kind for t in tokenize(source)][:-1]


def values(source: str) -> list[object]:
    return [t.value for t in tokenize(source)][:-1]


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("http.request.host", [K.IDENT]),
        ("a == b", [K.IDENT, K.EQ, K.IDENT]),
        ("a!=b", [K.IDENT, K.NE, K.IDENT]),
        ("< <= > >= ~ !", [K.LT, K.LE, K.GT, K.GE, K.TILDE, K.BANG]),
        ("&& || ^^", [K.AND_AND, K.OR_OR, K.XOR_XOR]),
        (
            "( ) { } [ ] * ,",
            [K.LPAREN, K.RPAREN, K.LBRACE, K.RBRACE, K.LBRACKET, K.RBRACKET, K.STAR, K.COMMA],
        ),
        ("f[*]", [K.IDENT, K.LBRACKET, K.STAR, K.RBRACKET]),
        ("f[]", [K.IDENT, K.LBRACKET, K.RBRACKET]),
        ("f[0]", [K.IDENT, K.LBRACKET, K.INT, K.RBRACKET]),
        ("identity.groups[*].name", [K.IDENT, K.LBRACKET, K.STAR, K.RBRACKET, K.DOT_NAME]),
        ("80 -5 0x1F 0", [K.INT, K.INT, K.INT, K.INT]),
        ("80..443", [K.INT_RANGE]),
        ("10.0.0.1 ::1 fe80::1 ::ffff:1.2.3.4", [K.IP, K.IP, K.IP, K.IP]),
        ("10.0.0.0/8 2001:db8::/32", [K.CIDR, K.CIDR]),
        ("10.0.0.1..10.0.0.9 ::1..::ff", [K.IP_RANGE, K.IP_RANGE]),
        ("$list_1", [K.LIST_REF]),
        ('"a" r"b" r#"c"#', [K.STRING, K.STRING, K.STRING]),
        ("  \t\r\n a \n", [K.IDENT]),
    ],
)
def test_token_kinds(source: str, expected: list[TokenKind]) -> None:
    assert kinds(source) == expected


def test_values_are_decoded() -> None:
    assert values("80 -5 0x1F 80..443") == [80, -5, 31, (80, 443)]
    assert values("10.0.0.0/8 ::1") == [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_address("::1")]
    first, last = values("10.0.0.1..10.0.0.9")[0]  # type: ignore[misc]
    assert (str(first), str(last)) == ("10.0.0.1", "10.0.0.9")
    assert values("identity.groups[*].name")[-1] == "name"
    assert values("$abc") == ["abc"]


def test_tokens_know_their_span() -> None:
    tokens = tokenize('a.b  ==\n "x"')
    assert [(t.start, t.end, t.text) for t in tokens] == [
        (0, 3, "a.b"),
        (5, 7, "=="),
        (9, 12, '"x"'),
        (12, 12, ""),
    ]


@pytest.mark.parametrize(
    ("source", "value"),
    [
        (r'"plain"', "plain"),
        (r'"a\"b"', 'a"b'),
        (r'"a\\b"', "a\\b"),
        (r'"\x41\x7a"', "Az"),
        (r'"caf\xc3\xa9"', "café"),
        ('"café ☃"', "café ☃"),
        ('""', ""),
        (r'r"a\b"', "a\\b"),
        (r'r"\d+\""', None),  # r"\d+\" ends at the second quote: value \d+\ then a stray quote
        (r'r#"say "hi""#', 'say "hi"'),
        (r'r##"a"#b"##', 'a"#b'),
        ('r""', ""),
    ],
)
def test_strings(source: str, value: str | None) -> None:
    if value is None:
        with pytest.raises(ExpressionError):
            tokenize(source)
        return
    (token,) = [t for t in tokenize(source) if t.kind is K.STRING]
    assert token.value == value
    assert token.raw == source.startswith("r")


@pytest.mark.parametrize(
    ("source", "pattern"),
    [
        (r'matches "\d+"', r"\d+"),  # other escapes reach the regex engine unchanged
        (r'matches "a\.b"', r"a\.b"),
        (r'matches "a\\b"', r"a\\b"),
        (r'matches "say \"hi\""', 'say "hi"'),
        (r'matches "[\"]"', r"[\"]"),  # inside a class the backslash stays
        ('matches "["]"', '["]'),  # and an unescaped quote does not end the literal
        (r'~ "\x41"', r"\x41"),
        (r'matches r"\d+"', r"\d+"),
        (r'matches r#"a"b"#', 'a"b'),
    ],
)
def test_regex_literals_follow_wirefilter(source: str, pattern: str) -> None:
    token = tokenize(source)[1]
    assert token.kind is K.STRING and token.regex
    assert token.value == pattern


def test_a_string_not_after_matches_is_not_a_regex() -> None:
    assert tokenize('a == "\\\\d"')[2].regex is False
    with pytest.raises(ExpressionError, match="invalid escape"):
        tokenize(r'a == "\d"')


@pytest.mark.parametrize(
    ("source", "offset", "fragment"),
    [
        ('a == "abc', 5, "unterminated string"),
        ('a == "abc\\"', 5, "unterminated string"),
        ('a == "abc\\', 9, "unterminated string"),
        ('a matches "abc', 10, "unterminated regex"),
        (r'a == "x\nb"', 7, r"invalid escape '\n'"),
        (r'a == "\x4g"', 6, r"\x needs two hex digits"),
        (r'a == "\x4"', 6, r"\x needs two hex digits"),
        ('a == "\ud800"', 6, "lone surrogate"),
        (r'a == "\400"', 6, "past \\377"),
        (r'a == "\18"', 6, "three octal digits"),
        ("a == \udc80", 5, "unexpected character"),
        ('a == r#"abc"', 5, "unterminated raw string"),
        ("a == r#abc", 7, "expected '\"' to open the raw string"),
        ("a = 1", 2, "did you mean '=='"),
        ("a == 0X1F", 5, "prefixes are 0x"),
        ("a == 09", 5, "octal digits are 0-7"),
        ("a | b", 2, "did you mean '||'"),
        ("a ^ b", 2, "did you mean '^^'"),
        ("a == @", 5, "unexpected character '@'"),
        ("a == 1.2.3", 5, "invalid IP address '1.2.3'"),
        ("a == 1.2.3.4/33", 5, "invalid CIDR"),
        ("a == 10.0.0.1/8", 5, "host bits set (did you mean 10.0.0.0/8?)"),
        ("a == 080", 5, "leading zero"),
        ("a in {1.1.1.01..1.1.1.09}", 6, "without leading zeros"),
        ("a == 99999999999999999999", 5, "out of range"),
        ("a in {443..80}", 6, "ends before it starts"),
        ("a in {10.0.0.1..::1}", 6, "mixes IPv4 and IPv6"),
        ("a in {10.0.0.9..10.0.0.1}", 6, "ends before it starts"),
        ("a in {1..x}", 6, "invalid integer range"),
        ("a == some-host", 5, "strings must be quoted"),
        ("a in $", 6, "expected a list id"),
    ],
)
def test_lexer_errors_point_at_the_spot(source: str, offset: int, fragment: str) -> None:
    with pytest.raises(ExpressionError) as caught:
        tokenize(source)
    assert fragment in caught.value.message
    assert caught.value.offset == offset
    assert caught.value.column == offset + 1


def test_raw_string_hash_limit() -> None:
    hashes = "#" * 255
    assert tokenize(f'r{hashes}"x"{hashes}')[0].value == "x"
    with pytest.raises(ExpressionError, match="at most 255"):
        tokenize(f'r{hashes}#"x"{hashes}#')
