"""Conformance with Cloudflare's expression language, construct by construct.

Each row is an expression, what it gives on ``SAMPLE`` (True/False) or the message it is refused
with, and where the behaviour comes from: a page of Cloudflare's documentation (URL) or a test of
Cloudflare's engine (``wf:<path>::<test>`` in https://github.com/cloudflare/wirefilter). Rows
marked ``doc-over-engine`` follow the documentation where it and the engine differ, and
``gateway`` rows are this project's own documented choices (docs/expressions.md, "Differences
from Cloudflare"). The fields are Gateway's (the engine's tests use ``http.host``,
``tcp.port``, ``ip.addr``...; the construct is the same).
"""

from __future__ import annotations

import ipaddress

import pytest

from policies.expression import ExpressionError, compile_expression

SAMPLE: dict[str, object] = {
    "http.request.host": "www.Example.org",
    "http.request.domains": ("www.example.org", "example.org"),
    "http.request.uri": "https://www.Example.org/Articles/2008/index.php?q=1",
    "http.request.uri.path": "/Articles/2008/index.php",
    "http.request.uri.query": "q=1",
    "http.request.method": "POST",
    "http.conn.src_ip": ipaddress.ip_address("10.1.2.3"),
    "http.conn.dst_ip": ipaddress.ip_address("2001:db8::5"),
    "http.conn.dst_port": 443,
    "net.sni.host": "www.example.org",
    "identity.email": "ana@company.com",
    "identity.groups.name": ("Engineering", "Security"),
    "device_posture.checks.passed": ("1308749e-fcfb-4ebc-b051-fe022b632644",),
    "http.response.status_code": 200,
}

# Sources.
OPERATORS = "https://developers.cloudflare.com/ruleset-engine/rules-language/operators/"
VALUES = "https://developers.cloudflare.com/ruleset-engine/rules-language/values/"
GATEWAY = "https://developers.cloudflare.com/cloudflare-one/traffic-policies/expression-syntax/"
FUNCTIONS = "https://developers.cloudflare.com/ruleset-engine/rules-language/functions/"
HEADERS = "https://developers.cloudflare.com/firewall/recipes/require-specific-headers"
WF_FIELD = "wf:engine/src/ast/field_expr.rs::"
WF_BYTES = "wf:engine/src/rhs_types/bytes.rs::"
WF_INT = "wf:engine/src/rhs_types/int.rs::test"
WF_IP = "wf:engine/src/rhs_types/ip.rs::test_lex"
WF_WILD = "wf:engine/src/rhs_types/wildcard.rs::"
WF_REGEX = "wf:engine/src/rhs_types/regex/mod.rs::test"
WF_LOGIC = "wf:engine/src/ast/logical_expr.rs::test"
WF_LEX = "wf:engine/src/lex.rs (skip_space)"
WF_TYPES = "wf:engine/src/types.rs (lex_rhs_values)"
OWN = "gateway"  # docs/expressions.md, Differences from Cloudflare

ACCEPTED: list[tuple[str, bool, str]] = [
    # -- comparison operators, both spellings ------------------------------------------------
    ('http.request.method == "POST"', True, OPERATORS),
    ('http.request.method eq "POST"', True, OPERATORS),
    ('http.request.method != "POST"', False, OPERATORS),
    ('http.request.method ne "GET"', True, OPERATORS),
    ("http.conn.dst_port < 8000", True, WF_FIELD + "test_int_compare"),
    ("http.conn.dst_port lt 443", False, OPERATORS),
    ("http.conn.dst_port le 443", True, OPERATORS),
    ("http.conn.dst_port gt 442", True, OPERATORS),
    ("http.conn.dst_port ge 444", False, OPERATORS),
    ('http.request.uri.path contains "/Articles/"', True, OPERATORS),
    ('http.request.uri.path matches "^/Articles/200[7-8]/"', True, OPERATORS),
    ('http.request.uri.path ~ "index\\.php$"', True, OPERATORS),
    ('http.request.uri.path in {"/" "/Articles/2008/index.php"}', True, VALUES),
    # -- wildcard / strict wildcard: whole value, '*' any run, case-(in)sensitive -----------
    ('http.request.uri.path wildcard "/articles/*"', True, OPERATORS),
    ('http.request.uri.path strict wildcard "/articles/*"', False, OPERATORS),
    ('http.request.uri.path strict wildcard "/Articles/*"', True, OPERATORS),
    ('http.request.host wildcard "*.example.org"', True, OPERATORS),
    ('http.request.host wildcard "example.org"', False, OPERATORS),  # a whole-value match
    ('http.request.host wildcard "www.example.org"', True, OPERATORS),
    ('http.request.host wildcard "*"', True, OPERATORS),
    ('http.request.uri.path wildcard "*/2008/*.PHP"', True, WF_WILD + "test_wildcard_reject_double_star"),
    (
        'http.request.uri.path wildcard r"/articles/2008/index.php\\*"',
        False,
        WF_WILD + "test_wildcard_lex_raw_string",
    ),
    ('http.request.uri.query wildcard "q=\\\\*"', False, WF_WILD + "test_wildcard_lex_quoted_string"),
    (
        'http.request.host strict wildcard r#"www.Example.org"#',
        True,
        WF_WILD + "test_wildcard_lex_raw_string",
    ),
    ('any(identity.groups.name[*] wildcard "eng*")', True, OPERATORS),
    # -- bitwise and: true when any masked bit is set ----------------------------------------
    ("http.conn.dst_port & 1", True, WF_FIELD + "test_bitwise_and"),
    ("http.conn.dst_port & 4", False, WF_FIELD + "test_bitwise_and"),
    ("http.conn.dst_port bitwise_and 0x100", True, WF_FIELD + "test_bitwise_and"),
    ("http.conn.dst_port&0x1bb", True, WF_FIELD + "test_bitwise_and"),
    # -- byte strings: two hex digits per byte, ':' '-' or '.' between them ----------------
    ("http.request.host contains 6F:72:67", True, WF_FIELD + "test_contains_str"),
    ("http.request.host contains 6f-72-67", True, WF_BYTES + "test"),
    ("http.request.host contains 45.78", True, WF_BYTES + "test"),
    ("http.request.method == 50:4F:53:54", True, WF_FIELD + "test_bytes_compare"),
    ("http.request.method in {47:45:54 50:4f:53:54}", True, WF_TYPES),
    ("http.request.host >= 10:20:30:40:50:60:70:80", True, WF_FIELD + "test_bytes_compare"),
    ("http.request.host < 12:13", False, WF_FIELD + "test_bytes_compare"),
    ("http.request.host == 10.20.30.40", False, WF_FIELD + "test_bytes_compare"),  # bytes on a string
    ("http.conn.src_ip != 10.20.30.40", True, WF_FIELD + "test_ip_compare"),  # an address on an ip
    # -- strings: escapes and raw strings -----------------------------------------------------
    ('http.request.method == "\\x50OST"', True, WF_BYTES + "test"),
    ('http.request.method == "\\120OST"', True, WF_BYTES + "test"),
    ('http.request.uri.query == "q\\0751"', True, WF_BYTES + "test"),
    ('http.request.method == "P\\"OST"', False, VALUES),
    ('http.request.method == "\\xff"', False, WF_BYTES + "test"),  # a byte that is no UTF-8
    ('http.request.method == r"POST"', True, VALUES),
    ('http.request.method == r#"POST"#', True, VALUES),
    ('http.request.method == r##"P"#OST"##', False, WF_BYTES + "test_raw_string"),
    ('http.request.uri.path matches r"/Articles/\\d{4}/"', True, VALUES),
    ('http.request.uri.path matches "/Articles/\\d{4}/"', True, VALUES),  # regex escaping rules
    ('http.request.uri.path matches "[a-z\\"\\]]+\\d{1,10}"', False, WF_REGEX),  # no letters-then-digits
    ('http.request.uri.query matches r#"^[a-z"\\]]+=\\d{1,10}$"#', True, WF_REGEX),
    ('http.request.uri.query matches "^[a-z\\"\\]]+=\\d{1,10}$"', True, WF_REGEX),
    # -- integers: decimal, 0x hex, a leading 0 is octal ------------------------------------
    ("http.conn.dst_port == 0x1bb", True, WF_INT),
    ("http.conn.dst_port == 0x1BB", True, WF_INT),
    ("http.conn.dst_port == 0673", True, WF_INT),  # octal 673 = 443
    ("http.conn.dst_port == 0443", False, WF_INT),  # octal 443 = 291
    ("http.conn.dst_port > -12", True, WF_INT),
    ("http.conn.dst_port in {0..0x1bb}", True, WF_INT),
    ("http.conn.dst_port in {80 443 2082..2083}", True, WF_FIELD + "test_int_in"),
    ("http.conn.dst_port == 9223372036854775807", False, WF_INT),
    # -- IP addresses: CIDRs and ranges in sets, leading zeros in a set are decimal ---------
    ("http.conn.src_ip in {10.0.0.0/8}", True, GATEWAY),
    ("http.conn.src_ip in {127.0.0.0/8 ::1 10.0.0.0..10.0.255.255}", False, WF_FIELD + "test_ip_in"),
    ("http.conn.src_ip in {127.0.0.0/8 ::1 10.0.0.0..10.1.255.255}", True, WF_FIELD + "test_ip_in"),
    ("http.conn.src_ip in {198.51.100.1 198.51.100.3..198.51.100.7 192.0.2.0/24}", False, VALUES),
    ("http.conn.dst_ip in {2001:0db8::/32}", True, VALUES),
    ("http.conn.src_ip in {010.001.002.003}", True, WF_IP),  # 1.1.1.01 is 1.1.1.1 there
    ("http.conn.src_ip in {010.0.0.0/8}", True, WF_IP),
    ("http.conn.src_ip == 10.1.2.3", True, WF_FIELD + "test_ip_compare"),
    ("http.conn.dst_ip == 2001:db8::5", True, WF_FIELD + "test_ip_compare"),
    ("http.conn.src_ip != ::1", True, WF_FIELD + "test_ip_compare"),
    ("http.conn.src_ip in {::ffff:10.1.2.3}", False, OWN),  # families never mix
    # -- sets ---------------------------------------------------------------------------------
    ('http.request.method in {"GET" "POST"}', True, VALUES),
    ('http.request.method in {"GET""POST"}', True, WF_TYPES),  # no space needed between items
    ('http.request.method in {"GET", "POST"}', True, OWN),  # commas: shown in Cloudflare's docs
    ("http.request.method in {}", False, WF_TYPES),  # an empty set holds nothing
    ("not http.conn.dst_port in {}", True, WF_TYPES),
    ('http.request.method in {"POST" "POST"}', True, VALUES),  # duplicates allowed
    # -- logic: words and symbols, precedence not > and > xor > or ---------------------------
    ('http.request.method == "POST" and http.conn.dst_port == 443', True, GATEWAY),
    ('http.request.method == "GET" or http.conn.dst_port == 443', True, GATEWAY),
    ('http.request.method == "POST" && http.conn.dst_port == 80', False, GATEWAY),
    ('http.request.method == "GET" || http.conn.dst_port == 443', True, GATEWAY),
    ('not(identity.email == "guest@company.com")', True, GATEWAY),
    ('!(http.request.method == "POST")', False, WF_LOGIC),
    ('http.request.method == "POST" xor http.conn.dst_port == 443', False, WF_LOGIC),
    ('http.request.method == "POST" ^^ http.conn.dst_port == 80', True, WF_LOGIC),
    (
        'http.request.method == "GET" or http.request.method == "POST" and http.conn.dst_port == 80',
        False,
        WF_LOGIC,
    ),
    ('not http.request.method == "GET" and http.conn.dst_port == 443', True, WF_LOGIC),
    # -- arrays: any()/all(), [*], [N], functions over elements ------------------------------
    ('any(http.request.domains[*] == "example.org")', True, GATEWAY),
    ('any(identity.groups[*].name in {"Engineering" "Security"})', True, GATEWAY),
    ('all(identity.groups.name[*] in {"Engineering" "Security"})', True, WF_LOGIC),
    ('http.request.domains[0] == "www.example.org"', True, VALUES),
    ('http.request.domains[5] == "x"', False, VALUES),  # out of bounds: missing value
    ('any(lower(identity.groups.name[*])[*] == "engineering")', True, VALUES),
    ('not any(lower(identity.groups.name[*])[*] eq "x-csrf-token")', True, HEADERS),
    (
        'lower(identity.groups.name[*])[1] == "security"',
        True,
        WF_FIELD + "test_map_each_on_array_with_function",
    ),
    ('all(upper(identity.groups.name[*])[*] matches "^[A-Z]+$")', True, FUNCTIONS),
    ('any(device_posture.checks.passed[*] in {"1308749e-fcfb-4ebc-b051-fe022b632644"})', True, GATEWAY),
    # -- whitespace: spaces, tabs, newlines, or none where tokens cannot run together -------
    ('http.request.method=="POST"&&http.conn.dst_port==443', True, WF_LEX),
    ('not(http.request.method=="GET")and(http.conn.dst_port in{443})', True, WF_LEX),
    ('http.request.method\t==\t"POST"', True, OWN),  # tabs: the engine takes only ' ', \r, \n
    ('http.request.method == "POST"\r\n  and\n  http.conn.dst_port == 443', True, WF_LEX),
    ('any(\n  http.request.domains[*] == "example.org"\n)', True, WF_LEX),
    # -- Gateway specifics from Cloudflare's Gateway docs -------------------------------------
    ('http.request.host == "internal.example.com" or identity.email matches ".*@company.com"', True, GATEWAY),
    ('http.response.status_code == "200"', True, OWN),
]

REFUSED: list[tuple[str, str, str]] = [
    # -- operators meet the wrong type --------------------------------------------------------
    (
        "http.request.host & 1",
        "& (bitwise and) needs an int, but http.request.host is a string",
        WF_FIELD + "test_bitwise_and",
    ),
    ("http.conn.dst_port & 1..3", "expected an integer after '&'", WF_FIELD + "test_bitwise_and"),
    ('http.conn.dst_port & "1"', "expected an integer after '&'", WF_FIELD + "test_bitwise_and"),
    (
        'http.conn.dst_port wildcard "4*"',
        "wildcard needs a string, but http.conn.dst_port is an int",
        OPERATORS,
    ),
    ('http.conn.src_ip contains "10"', "contains needs a string", OPERATORS),
    ('http.request.host strict "x"', "expected 'wildcard' after 'strict'", OPERATORS),
    ("http.request.host strict wildcard", "expected a wildcard string after 'strict'", OPERATORS),
    # -- wildcard patterns the engine refuses -------------------------------------------------
    (
        'http.request.host wildcard "*foo**bar*"',
        "cannot hold '**'",
        WF_WILD + "test_wildcard_reject_double_star",
    ),
    (
        'http.request.host wildcard r"*foo\\bar*"',
        "invalid escape '\\b' in a wildcard",
        WF_WILD + "test_wildcard_reject_invalid_wildcard",
    ),
    (
        'http.request.host wildcard r"abc\\"',
        "cannot end with a lone backslash",
        WF_WILD + "test_wildcard_reject_invalid_wildcard",
    ),
    (
        "http.request.host wildcard 61:20:71:75:6F:74",
        "wildcard takes a quoted or raw string, not a byte string",
        WF_WILD + "test_wildcard_lex_reject_bytes_syntax",
    ),
    (
        'http.request.host wildcard r#"abc',
        "unterminated raw string",
        WF_WILD + "test_wildcard_lex_raw_string",
    ),
    (
        'http.request.host wildcard "abcd\\',
        "unterminated string",
        WF_WILD + "test_wildcard_lex_quoted_string",
    ),
    # -- byte strings -------------------------------------------------------------------------
    ("http.request.host contains 01:4x", "invalid IP address or byte string '01:4x'", WF_BYTES + "test"),
    ("http.request.host contains 01:", "invalid IP address or byte string '01:'", WF_BYTES + "test"),
    (
        "http.request.host < 12",
        "http.request.host is a string, but 12 is an int",
        WF_FIELD + "test_bytes_compare",
    ),
    (
        "http.request.uri.path matches 2f:41",
        "matches takes a quoted or raw string, not a byte string",
        WF_REGEX,
    ),
    (
        "http.conn.dst_port == 01:bb",
        "http.conn.dst_port is an int, but 01:bb is a byte string",
        WF_FIELD + "test_int_compare",
    ),
    # -- strings --------------------------------------------------------------------------------
    ('http.request.method == "\\n"', "invalid escape '\\n'", WF_BYTES + "test"),
    ('http.request.method == "\\01"', "three octal digits", WF_BYTES + "test"),
    ('http.request.method == "\\x3"', "\\x needs two hex digits", WF_BYTES + "test"),
    ('http.request.method == "\\400"', "past \\377", WF_BYTES + "test"),
    ('http.request.method == "abcd\\', "unterminated string", WF_BYTES + "test"),
    ('http.request.method == "1', "unterminated string", WF_BYTES + "test"),
    ('http.request.method == r#"a"', "unterminated raw string", WF_BYTES + "test_raw_string"),
    ('http.request.method == r##"a"#', "unterminated raw string", WF_BYTES + "test_raw_string"),
    ("http.request.method == r#ab", "expected '\"' to open the raw string", WF_BYTES + "test_raw_string"),
    (
        "http.request.method == r" + "#" * 256 + '"a"' + "#" * 256,
        "at most 255 '#'",
        WF_BYTES + "test_raw_string",
    ),
    ("http.request.method == POST", 'strings must be quoted: "POST"', VALUES),
    # -- integers -----------------------------------------------------------------------------
    ("http.conn.dst_port == 9223372036854775808", "out of range", WF_INT),
    ("http.conn.dst_port == -9223372036854775809", "out of range", WF_INT),
    ("http.conn.dst_port == 08", "octal digits are 0-7", WF_INT),
    ("http.conn.dst_port == 0X1BB", "prefixes are 0x", WF_INT),
    ("http.conn.dst_port == 0o17", "prefixes are 0x", WF_INT),
    ("http.conn.dst_port in {10..0}", "ends before it starts", WF_INT),
    # -- IP addresses -------------------------------------------------------------------------
    (
        "http.conn.src_ip == 010.1.2.3",
        "leading zeros, which Cloudflare's engine accepts only inside a set",
        WF_IP,
    ),
    ("http.conn.src_ip in {1.1.1.01..1.1.1.09}", "without leading zeros", WF_IP),
    ("http.conn.src_ip in {10.0.0.0/100}", "invalid CIDR", WF_IP),
    ("http.conn.src_ip in {10.0.0.0..::1}", "mixes IPv4 and IPv6", WF_IP),
    ("http.conn.src_ip in {127.0.0.1..10.0.0.0}", "ends before it starts", WF_IP),
    ("http.conn.src_ip in {::2..::1}", "ends before it starts", WF_IP),
    ("http.conn.src_ip in {10.0.0.0.0/10}", "invalid CIDR", WF_IP),
    (
        "http.conn.src_ip == 10.0.0.0/8",
        "a CIDR only works in a set",
        "https://developers.cloudflare.com/firewall/cf-firewall-language/fields",
    ),
    ("http.conn.src_ip in {10.0.0.1/8}", "host bits set (did you mean 10.0.0.0/8?)", OWN),
    # -- sets -----------------------------------------------------------------------------------
    ('http.request.method in {"GET" 80}', "http.request.method is a string, but 80 is an int", VALUES),
    ('http.request.method in {"GET"', "expected '}' to close the set", WF_TYPES),
    ("http.request.method in {{}}", "sets do not nest", WF_TYPES),
    ('http.request.method == {"GET"}', "a set needs 'in', not '=='", VALUES),
    # -- arrays ---------------------------------------------------------------------------------
    ('http.request.domains[*] == "example.org"', "can only be used inside any() or all()", VALUES),
    (
        'lower(http.request.host)[*] == "x"',
        "lower() returns a string here, which cannot be indexed",
        WF_FIELD + "test_map_each_error",
    ),
    ('http.request.host[0] == "x"', "not an array: it cannot be indexed", WF_FIELD + "test_map_each_error"),
    ('http.request.domains == "x"', "compare its elements inside any(", VALUES),
    # -- regexes: RE2 syntax, and constructs Rust would read differently ---------------------
    (
        'http.request.uri.path matches "[x[^xyz]]"',
        "opens a nested class in Cloudflare's engine",
        WF_BYTES + "test_raw_string",
    ),
    (
        'http.request.uri.path matches "[a-y&&xyz]"',
        "'&&' inside [...] is a class operation",
        WF_BYTES + "test_raw_string",
    ),
    (
        'http.request.uri.path matches r"[0-9--4]"',
        "'--' inside [...] is a class operation",
        WF_BYTES + "test_raw_string",
    ),
    (
        'http.request.uri.path matches r"[a-g~~b-h]"',
        "'~~' inside [...] is a class operation",
        WF_BYTES + "test_raw_string",
    ),
    ('http.request.uri.path matches "(?<=a)b"', "invalid regex", OWN),  # RE2: no look-around
    ('http.request.uri.path matches "(a)\\1"', "invalid regex", OWN),  # RE2: no back-references
    ('http.request.uri.path matches "\\u007F"', "invalid regex", WF_BYTES + "test_raw_string"),
    ('http.request.uri.path matches "abc', "unterminated regex", WF_REGEX),
    # -- logic and whitespace -------------------------------------------------------------------
    ('http.request.method == "GET" AND http.conn.dst_port == 443', "keywords are lowercase", OPERATORS),
    (
        'http.request.method == "GET" & http.conn.dst_port == 443',
        "did you mean '&&'?",
        WF_FIELD + "test_bitwise_and",
    ),
    ('http.request.method == "GET" | http.conn.dst_port == 443', "did you mean '||'", OPERATORS),
    ('(http.request.method == "GET"', "expected ')' to close the '('", WF_LOGIC),
    ("((" * 65 + 'http.request.method == "GET"' + "))" * 65, "nesting deeper than 128 levels", WF_LOGIC),
    # -- Gateway: posture selectors stay in their own expression (rules.py), not here -------
    ('http.request.hots == "a"', "unknown field 'http.request.hots' (did you mean http.request.host?)", OWN),
]


@pytest.mark.parametrize(("source", "value", "origin"), ACCEPTED, ids=[row[0][:60] for row in ACCEPTED])
def test_accepted_constructs_give_their_value(source: str, value: bool, origin: str) -> None:
    assert origin
    assert compile_expression(source).evaluate(SAMPLE) is value


@pytest.mark.parametrize(("source", "message", "origin"), REFUSED, ids=[row[0][:60] for row in REFUSED])
def test_refused_constructs_say_why(source: str, message: str, origin: str) -> None:
    assert origin
    with pytest.raises(ExpressionError) as caught:
        compile_expression(source)
    assert message in caught.value.message
    rendered = caught.value.render()
    assert rendered.splitlines()[-1].strip() == "^"  # a caret under the spot


def test_table_covers_every_construct() -> None:
    spelled = " ".join(row[0] for row in ACCEPTED + REFUSED)
    for construct in (
        "wildcard",
        "strict wildcard",
        "&",
        "bitwise_and",
        "6F:72:67",
        "\\120",
        "r#",
        "0x",
        "0673",
        "{}",
        "[*])[*]",
        "\t",
        "\n",
        "010.001",
    ):
        assert construct in spelled, construct
