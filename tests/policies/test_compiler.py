"""policies/compiler.py through the facade: wirefilter's semantics, one row per rule of SPEC §6."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

import pytest

from policies.compiler import ascii_lower
from policies.expression import compile_expression
from policies.scheme import BOOL, GATEWAY_SCHEME, INT, IP, Field, Scheme, array_of

ip = ipaddress.ip_address

# The Gateway's fields plus a few shapes it lacks (bools, arrays of ints/IPs/bools).
SCHEME = Scheme(
    [
        *GATEWAY_SCHEME.fields,
        Field("t.a", BOOL),
        Field("t.b", BOOL),
        Field("t.c", BOOL),
        Field("t.n", INT),
        Field("t.ports", array_of(INT)),
        Field("t.ips", array_of(IP)),
        Field("t.flags", array_of(BOOL)),
    ]
)

HOST = "http.request.host"
PATH = "http.request.uri.path"
URI = "http.request.uri"
METHOD = "http.request.method"
PORT = "http.conn.dst_port"
SRC = "http.conn.src_ip"
DST = "http.conn.dst_ip"
GROUPS = "identity.groups.name"
DOMAINS = "http.request.domains"
STATUS = "http.response.status_code"

CASES: list[tuple[str, Mapping[str, object], bool]] = [
    # == and != (and their words), case-sensitive, missing fields read as empty
    ('http.request.host == "example.com"', {HOST: "example.com"}, True),
    ('http.request.host == "example.com"', {HOST: "Example.com"}, False),
    ('http.request.host eq "example.com"', {HOST: "example.com"}, True),
    ('http.request.host != "example.com"', {HOST: "example.com"}, False),
    ('http.request.host ne "example.com"', {HOST: "other.com"}, True),
    ('http.request.host != "example.com"', {}, True),
    ('http.request.host == ""', {}, True),
    ("http.conn.dst_port == 0", {}, True),
    ("http.conn.dst_port == 443", {PORT: 443}, True),
    ("http.conn.dst_port == 0x1bb", {PORT: 443}, True),
    ("t.n == -5", {"t.n": -5}, True),
    # ordering: ints, strings (code point order)
    ("http.conn.dst_port > 1024", {PORT: 8080}, True),
    ("http.conn.dst_port gt 1024", {PORT: 1024}, False),
    ("http.conn.dst_port >= 1024", {PORT: 1024}, True),
    ("http.conn.dst_port ge 1025", {PORT: 1024}, False),
    ("http.conn.dst_port < 1024", {PORT: 80}, True),
    ("http.conn.dst_port lt 80", {PORT: 80}, False),
    ("http.conn.dst_port <= 80", {PORT: 80}, True),
    ("http.conn.dst_port le 79", {PORT: 80}, False),
    ('http.request.uri.path < "/b"', {PATH: "/a"}, True),
    ('http.request.uri.path >= "/b"', {PATH: "/a"}, False),
    # contains: substring, case-sensitive, strings only
    ('http.request.uri.path contains "/admin"', {PATH: "/x/admin/y"}, True),
    ('http.request.uri.path contains "/admin"', {PATH: "/x/ADMIN/y"}, False),
    ('http.request.uri.path contains ""', {}, True),
    # matches: a regex *search*, RE2 syntax, case-sensitive unless (?i)
    ('http.request.uri matches "/r/gaming"', {URI: "https://reddit.com/r/gaming/top"}, True),
    ('http.request.uri ~ "/r/gaming"', {URI: "https://reddit.com/r/news"}, False),
    ('http.request.uri.path matches "^/r/"', {PATH: "/x/r/y"}, False),
    ('http.request.uri.path matches "^/r/"', {PATH: "/r/y"}, True),
    (r'http.request.uri.path matches "\.php$"', {PATH: "/index.php"}, True),
    (r'http.request.uri.path matches "\.php$"', {PATH: "/indexXphp"}, False),
    (r'http.request.uri.path matches "\.php$"', {PATH: "/a.php/x"}, False),
    ('http.request.uri.path matches "^/exact$"', {PATH: "/exact"}, True),
    ('http.request.uri.path matches "^/exact$"', {PATH: "/exact/"}, False),
    ('http.request.uri.path matches "admin"', {PATH: "/ADMIN"}, False),
    ('http.request.uri.path matches "(?i)admin"', {PATH: "/ADMIN"}, True),
    (r'http.request.uri.path matches "\d{3}"', {PATH: "/a/123"}, True),
    (r'http.request.uri.path matches "\d{3}"', {PATH: "/a/12"}, False),
    (r'http.request.uri.path matches r"^/v\d+/"', {PATH: "/v2/x"}, True),
    (r'http.request.uri.path matches "a\"b"', {PATH: 'xa"by'}, True),
    ('http.request.uri.path matches "a.c"', {PATH: "/aéc"}, True),  # . is one code point
    ('http.request.uri.path matches ""', {}, True),
    ('identity.email matches ".*@corp.com"', {"identity.email": "ann@corp.com"}, True),
    ('identity.email matches "^ann|bob$"', {"identity.email": "x@bob"}, True),
    # in {...}: strings, ints, inclusive ranges, commas or spaces
    ('http.request.method in {"GET" "HEAD"}', {METHOD: "HEAD"}, True),
    ('http.request.method in {"GET", "HEAD"}', {METHOD: "POST"}, False),
    ('http.request.method in {"GET" "HEAD"}', {METHOD: "get"}, False),
    ("http.conn.dst_port in {80 443}", {PORT: 443}, True),
    ("http.conn.dst_port in {80..443}", {PORT: 80}, True),
    ("http.conn.dst_port in {80..443}", {PORT: 443}, True),
    ("http.conn.dst_port in {80..443}", {PORT: 444}, False),
    ("http.conn.dst_port in {80..443}", {PORT: 79}, False),
    ("http.conn.dst_port in {22 8000..8999 9000..9001}", {PORT: 9001}, True),
    ("http.conn.dst_port in {22 8000..8999}", {PORT: 21}, False),
    # IPs: equality, CIDR membership, ranges; IPv4 and IPv6 never equal; absent is false
    ("http.conn.src_ip == 10.0.0.1", {SRC: ip("10.0.0.1")}, True),
    ("http.conn.src_ip != 10.0.0.1", {SRC: ip("10.0.0.2")}, True),
    ("http.conn.src_ip in {10.0.0.0/8}", {SRC: ip("10.20.30.40")}, True),
    ("http.conn.src_ip in {10.0.0.0/8}", {SRC: ip("11.0.0.1")}, False),
    ("http.conn.src_ip in {10.0.0.0/8 ::1}", {SRC: ip("::1")}, True),
    ("http.conn.src_ip in {192.168.1.10..192.168.1.20}", {SRC: ip("192.168.1.20")}, True),
    ("http.conn.src_ip in {192.168.1.10..192.168.1.20}", {SRC: ip("192.168.1.21")}, False),
    ("http.conn.src_ip in {2001:db8::/32}", {SRC: ip("2001:db8::5")}, True),
    ("http.conn.src_ip == ::ffff:10.0.0.1", {SRC: ip("10.0.0.1")}, False),
    ("http.conn.src_ip != ::ffff:10.0.0.1", {SRC: ip("10.0.0.1")}, True),
    ("http.conn.src_ip in {::ffff:0:0/96}", {SRC: ip("10.0.0.1")}, False),
    ("http.conn.src_ip in {0.0.0.0/0}", {SRC: ip("::1")}, False),
    ("http.conn.src_ip in {::/0}", {SRC: ip("10.0.0.1")}, False),
    ("http.conn.src_ip > 10.0.0.1", {SRC: ip("10.0.0.2")}, True),
    ("http.conn.src_ip > 10.0.0.1", {SRC: ip("::2")}, False),
    ("http.conn.src_ip == 10.0.0.1", {}, False),
    ("http.conn.src_ip != 10.0.0.1", {}, False),
    ("http.conn.src_ip in {0.0.0.0/0 ::/0}", {}, False),
    ("http.conn.src_ip < 255.255.255.255", {SRC: None}, False),
    ("not (http.conn.src_ip == 10.0.0.1)", {}, True),
    # any()/all() over arrays: empty any is false, empty all is true; [] is [*]
    ('any(identity.groups.name[*] == "eng")', {GROUPS: ("ops", "eng")}, True),
    ('any(identity.groups.name[*] == "eng")', {GROUPS: ("Eng",)}, False),
    ('any(identity.groups.name[*] == "eng")', {GROUPS: ()}, False),
    ('any(identity.groups.name[*] == "eng")', {}, False),
    ('all(identity.groups.name[*] == "eng")', {}, True),
    ('all(identity.groups.name[*] == "eng")', {GROUPS: ["eng", "eng"]}, True),
    ('all(identity.groups.name[*] == "eng")', {GROUPS: ["eng", "ops"]}, False),
    ('any(identity.groups.name[] == "eng")', {GROUPS: ["eng"]}, True),
    ('any(identity.groups[*].name == "eng")', {GROUPS: ["eng"]}, True),
    ('any(identity.groups.name[*] in {"a" "b"})', {GROUPS: ["c", "b"]}, True),
    ('all(identity.groups.name[*] in {"a" "b"})', {GROUPS: ["a", "b", "a"]}, True),
    ('all(identity.groups.name[*] in {"a" "b"})', {GROUPS: ["a", "c"]}, False),
    ('all(identity.groups.name[*] in {"a" "b"})', {}, True),
    ('any(identity.groups.name[*] != "a")', {GROUPS: ["a"]}, False),
    ('any(identity.groups.name[*] contains "eng")', {GROUPS: ["x-eng-y"]}, True),
    ('any(identity.groups.name[*] matches "^eng-")', {GROUPS: ["ops", "eng-1"]}, True),
    ('any(lower(identity.groups.name[*]) == "eng")', {GROUPS: ["ENG"]}, True),
    (
        'any(identity.groups.name[*] == "a" and identity.email == "e")',
        {GROUPS: ["a"], "identity.email": "e"},
        True,
    ),
    ('any(identity.groups.name[*] == "a" and identity.email == "e")', {GROUPS: ["a"]}, False),
    ('any(identity.groups.name[*] == "a" or identity.groups.name[*] == "b")', {GROUPS: ["b"]}, True),
    ('any(not identity.groups.name[*] == "a")', {GROUPS: ["a", "b"]}, True),
    ('all(not identity.groups.name[*] == "a")', {GROUPS: ["a", "b"]}, False),
    ("any(t.ports[*] in {80..90})", {"t.ports": (22, 85)}, True),
    ("any(t.ports[*] == 22)", {"t.ports": (22,)}, True),
    ("all(t.ports[*] > 1000)", {"t.ports": (22, 8080)}, False),
    ("any(t.ips[*] in {10.0.0.0/8})", {"t.ips": (ip("::1"), ip("10.1.1.1"))}, True),
    ("all(t.ips[*] in {10.0.0.0/8})", {"t.ips": (ip("::1"), ip("10.1.1.1"))}, False),
    ("any(t.flags[*])", {"t.flags": (False, True)}, True),
    ("all(t.flags[*])", {"t.flags": (False, True)}, False),
    (
        'any(identity.groups.name[*] == "a" and any(device_posture.checks.passed[*] == "p"))',
        {GROUPS: ["a"], "device_posture.checks.passed": ["p"]},
        True,
    ),
    # [*] on a scalar field: a one-element array (Cloudflare's docs write any(http.conn.dst_ip[*] ...))
    ("any(http.conn.dst_ip[*] in {10.0.0.0/8})", {DST: ip("10.2.3.4")}, True),
    ("any(http.conn.dst_ip[*] in {10.0.0.0/8})", {}, False),
    ("all(http.conn.dst_ip[*] in {10.0.0.0/8})", {}, True),
    ('any(http.request.host[*] == "a")', {HOST: "a"}, True),
    # indexes: out of range is false whatever the operator
    ('http.request.domains[0] == "a.example.com"', {DOMAINS: ("a.example.com", "example.com")}, True),
    ('http.request.domains[1] == "example.com"', {DOMAINS: ("a.example.com", "example.com")}, True),
    ('http.request.domains[5] == "x"', {DOMAINS: ("a.example.com",)}, False),
    ('http.request.domains[5] != "x"', {DOMAINS: ("a.example.com",)}, False),
    ('http.request.domains[5] contains ""', {}, False),
    ('http.request.domains[5] matches ""', {}, False),
    ("t.ports[0] in {1..100}", {"t.ports": (50,)}, True),
    ('lower(http.request.domains[0]) == "a.com"', {DOMAINS: ("A.COM",)}, True),
    # lower()/upper(): ASCII only, as Cloudflare documents
    ('lower(http.request.host) == "example.com"', {HOST: "ExAmple.COM"}, True),
    ('upper(http.request.method) == "POST"', {METHOD: "post"}, True),
    ('lower(identity.name) == "émile"', {"identity.name": "Émile"}, False),
    ('lower(identity.name) == "Émile"', {"identity.name": "ÉMILE"}, True),
    ('lower(upper(http.request.host)) == "abc"', {HOST: "aBc"}, True),
    ('lower(http.request.uri.path) contains "/admin"', {PATH: "/ADMIN"}, True),
    ('lower(http.request.uri.path) matches "^/admin"', {PATH: "/ADMIN"}, True),
    ('lower(http.request.host) in {"a.com"}', {HOST: "A.com"}, True),
    # strings: escapes and raw strings
    (r'http.request.host == "\x41"', {HOST: "A"}, True),
    (r'identity.name == "caf\xc3\xa9"', {"identity.name": "café"}, True),
    ('identity.name == "café"', {"identity.name": "café"}, True),
    (r'http.request.uri.path == "a\\b"', {PATH: "a\\b"}, True),
    (r'http.request.uri.path == r"a\b"', {PATH: "a\\b"}, True),
    (r'http.request.uri.path == "say \"hi\""', {PATH: 'say "hi"'}, True),
    # booleans, not/!, and/&&, or/||, xor/^^, precedence not > and > xor > or
    ("t.a", {"t.a": True}, True),
    ("t.a", {}, False),
    ("not t.a", {}, True),
    ("!t.a", {"t.a": True}, False),
    ("t.a and t.b", {"t.a": True, "t.b": False}, False),
    ("t.a && t.b", {"t.a": True, "t.b": True}, True),
    ("t.a or t.b", {"t.b": True}, True),
    ("t.a || t.b", {}, False),
    ("t.a xor t.b", {"t.a": True, "t.b": True}, False),
    ("t.a ^^ t.b", {"t.a": True}, True),
    ("t.a xor t.b xor t.c", {"t.a": True, "t.b": True, "t.c": True}, True),
    ("t.a or t.b and t.c", {"t.a": True}, True),  # a or (b and c)
    ("(t.a or t.b) and t.c", {"t.a": True}, False),
    ("not t.a and t.b", {"t.a": True, "t.b": True}, False),  # (not a) and b
    ("not (t.a and t.b)", {"t.a": True}, True),
    ("t.a xor t.b or t.c", {"t.a": True, "t.b": True, "t.c": True}, True),  # (a xor b) or c
    ("t.a or t.b xor t.c", {"t.a": True, "t.b": True, "t.c": True}, True),  # a or (b xor c)
    ("t.a and t.b xor t.c", {"t.a": True, "t.b": True, "t.c": True}, False),  # (a and b) xor c
    ("t.a and t.b and t.c", {"t.a": True, "t.b": True, "t.c": True}, True),
    ("t.a or t.b or t.c", {"t.c": True}, True),
    ("not not t.a", {"t.a": True}, True),
    # quoted numbers for status_code, as Cloudflare's docs write them
    ('http.response.status_code == "200"', {STATUS: 200}, True),
    ('http.response.status_code in {"200" 204}', {STATUS: 204}, True),
    ('http.response.status_code in {"200" 300..399}', {STATUS: 302}, True),
    # a whole rule, over several lines
    (
        'any(http.request.domains[*] == "example.com")\n  and http.request.method == "POST"',
        {DOMAINS: ("www.example.com", "example.com"), METHOD: "POST"},
        True,
    ),
]


@pytest.mark.parametrize(("source", "ctx", "expected"), CASES)
def test_semantics(source: str, ctx: Mapping[str, object], expected: bool) -> None:
    expression = compile_expression(source, scheme=SCHEME)
    assert expression.evaluate(ctx) is expected
    assert expression.explain(ctx).value is expected


def test_evaluate_takes_any_mapping_and_lists() -> None:
    class Lazy(Mapping[str, object]):
        def __getitem__(self, key: str) -> object:
            if key == GROUPS:
                return ["eng"]
            raise KeyError(key)

        def __iter__(self):  # type: ignore[no-untyped-def]
            return iter([GROUPS])

        def __len__(self) -> int:
            return 1

    assert compile_expression('any(identity.groups.name[*] == "eng")').evaluate(Lazy())


def test_ascii_lower_leaves_other_letters() -> None:
    assert ascii_lower("ÀBC") == "Àbc"
    assert ascii_lower("ABC") == "abc"


def test_regex_is_compiled_once() -> None:
    expression = compile_expression(r'http.request.uri.path matches "^/api/v\d+/"')
    for path in ("/api/v1/x", "/api/v22/", "/api/vx/"):
        expression.evaluate({PATH: path})
    assert [expression.evaluate({PATH: p}) for p in ("/api/v1/x", "/api/vx/")] == [True, False]


def test_no_catastrophic_backtracking() -> None:
    """RE2 runs in linear time: the classic (a+)+$ on a long non-match returns at once."""
    expression = compile_expression('http.request.uri.path matches "^(a+)+$"')
    assert expression.evaluate({PATH: "a" * 50_000 + "!"}) is False


def test_values_with_surrogates_do_not_break_regexes() -> None:
    expression = compile_expression('http.request.uri.path matches "a.b"')
    assert expression.evaluate({PATH: "a\udcffb"}) in (True, False)
