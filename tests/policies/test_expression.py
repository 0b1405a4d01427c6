"""policies/expression.py: the facade — errors with carets, explanations, host hints, limits."""

from __future__ import annotations

import ipaddress
import pickle

import pytest

from policies.errors import ExpressionError, PolicyError
from policies.expression import HostHints, Limits, compile_expression
from policies.scheme import BOOL, GATEWAY_SCHEME, INT, STRING, Field, Scheme, array_of, domains_of

ip = ipaddress.ip_address


def error_of(source: str, **kwargs: object) -> ExpressionError:
    with pytest.raises(ExpressionError) as caught:
        compile_expression(source, **kwargs)  # type: ignore[arg-type]
    return caught.value


# -- the Expression ---------------------------------------------------------------------------


def test_fields_are_the_ones_read() -> None:
    expression = compile_expression(
        'any(http.request.domains[*] == "example.com") and not (http.conn.src_ip in {10.0.0.0/8}'
        ' or lower(identity.email) contains "x")'
    )
    assert expression.fields == {"http.request.domains", "http.conn.src_ip", "identity.email"}
    assert expression.source.startswith("any(")


def test_gateway_scheme_fields_and_types() -> None:
    expected = {
        "http.request.host": "string",
        "http.request.domains": "array<string>",
        "http.conn.domains": "array<string>",
        "http.conn.hostname": "string",
        "http.request.uri": "string",
        "http.request.uri.path": "string",
        "http.request.uri.query": "string",
        "http.request.uri.path_and_query": "string",
        "http.request.method": "string",
        "http.conn.src_ip": "ip",
        "http.conn.dst_ip": "ip",
        "http.conn.dst_port": "int",
        "net.sni.host": "string",
        "identity.email": "string",
        "identity.name": "string",
        "identity.groups.name": "array<string>",
        "identity.groups.id": "array<string>",
        "identity.groups.email": "array<string>",
        "device_posture.checks.passed": "array<string>",
        "device_posture.checks.failed": "array<string>",
        "http.response.status_code": "int",
    }
    assert {f.name: str(f.type) for f in GATEWAY_SCHEME.fields} == expected


def test_compiles_are_cached_and_shareable() -> None:
    source = 'http.request.host == "cached.example"'
    assert compile_expression(source) is compile_expression(source)
    assert compile_expression(source, limits=Limits(max_depth=3)) is not compile_expression(source)


def test_source_must_be_a_string() -> None:
    with pytest.raises(TypeError, match="expression source must be a str, not NoneType"):
        compile_expression(None)  # type: ignore[arg-type]


def test_custom_scheme() -> None:
    scheme = Scheme([Field("x.flag", BOOL), Field("x.count", INT)])
    expression = compile_expression("x.flag and x.count > 2", scheme=scheme)
    assert expression.evaluate({"x.flag": True, "x.count": 3})
    assert "unknown field 'http.request.host'" in error_of('http.request.host == "a"', scheme=scheme).message
    with pytest.raises(ValueError, match="field a declared twice"):
        Scheme([Field("a", BOOL), Field("a", INT)])
    with pytest.raises(ValueError, match="s: quoted_ints only applies to int fields"):
        Field("s", STRING, quoted_ints=True)


# -- errors -------------------------------------------------------------------------------------

TYPE_ERRORS = [
    # (source, column, message fragment)
    ('http.conn.dst_port == "80"', 23, 'http.conn.dst_port is an int, but "80" is a string'),
    ("http.request.host > 3", 21, "http.request.host is a string, but 3 is an int"),
    ("http.request.host == 10.0.0.1", 22, "http.request.host is a string, but 10.0.0.1 is an ip"),
    ('http.conn.dst_port contains "8"', 20, "contains needs a string, but http.conn.dst_port is an int"),
    ('http.conn.src_ip matches "10"', 18, "matches needs a string, but http.conn.src_ip is an ip"),
    ("http.request.host in {10.0.0.0/8}", 23, "http.request.host is a string, but 10.0.0.0/8 is a CIDR"),
    ('http.conn.src_ip == "10.0.0.1"', 21, 'http.conn.src_ip is an ip, but "10.0.0.1" is a string'),
    ("http.conn.src_ip == 10.0.0.0/8", 21, "a CIDR only works in a set: http.conn.src_ip in {10.0.0.0/8}"),
    ('http.conn.src_ip in {10.0.0.0/8 "x"}', 33, 'is an ip, but "x" is a string'),
    ("http.conn.dst_port in {80 10.0.0.1}", 27, "is an int, but 10.0.0.1 is an ip"),
    ('http.request.method in {"GET" 1..2}', 31, "is a string, but 1..2 is an int range"),
    ("lower(http.conn.dst_port) == 1", 1, "lower() takes a string, but http.conn.dst_port is an int"),
    ("http.request.host", 18, "http.request.host is a string: compare it with an operator"),
    ('http.request.host[0] == "a"', 1, "http.request.host is a string, not an array"),
    (
        'http.request.domains == "a"',
        1,
        "http.request.domains is an array<string>: compare its elements inside any(",
    ),
    ('lower(http.request.domains) == "a"', 7, "is an array<string>"),
    ('http.request.domains[*] == "a"', 1, "http.request.domains[*] can only be used inside any() or all()"),
    ('any(http.request.host == "a")', 1, "any() needs an array field written with [*] inside"),
    ('all(identity.email == "a")', 1, "all() needs an array field"),
    (
        'any(identity.groups.name[*] == "a" and identity.groups.id[*] == "b")',
        40,
        "any() iterates over one array: it already reads identity.groups.name[*]",
    ),
    ('http.request.hots == "a"', 1, "unknown field 'http.request.hots' (did you mean http.request.host?)"),
    ('any(identity.group.name[*] == "a")', 5, "(did you mean identity.groups.name?)"),
    ("zzz == 1", 1, "unknown field 'zzz'"),
    ('http.response.status_code == "2xx"', 30, 'is an int, but "2xx" is a string'),
]


@pytest.mark.parametrize(("source", "column", "fragment"), TYPE_ERRORS)
def test_type_errors(source: str, column: int, fragment: str) -> None:
    error = error_of(source)
    assert fragment in error.message
    assert (error.line, error.column) == (1, column)
    assert isinstance(error, PolicyError)


def test_unknown_field_without_a_close_name_suggests_nothing() -> None:
    assert "did you mean" not in error_of("zzz == 1").message


def test_bool_fields_stand_alone() -> None:
    scheme = Scheme([Field("t.a", BOOL)])
    error = error_of("t.a == 1", scheme=scheme)
    assert "t.a is a bool: use it alone (t.a) or negated (not t.a)" in error.message
    assert error.column == 5


def test_regex_limits() -> None:
    long = "a" * 4097
    error = error_of(f'http.request.uri matches "{long}"')
    assert error.message == "regex is 4097 characters long; the limit is 4096"
    assert error.column == 26
    compile_expression(f'http.request.uri matches "{long[:-1]}"')

    error = error_of('http.request.uri matches "(("')
    assert error.message.startswith("invalid regex: missing )")
    assert error.column == 26

    error = error_of(r'http.request.uri matches "\pL{100}"')  # a Unicode class, repeated
    assert error.message.startswith("regex too large")
    compile_expression(r'http.request.uri matches "\pL{100}"', limits=Limits(regex_max_mem=4 << 20))
    error = error_of('http.request.uri matches "[a-z]{500}"', limits=Limits(regex_max_mem=4096))
    assert "regex too large" in error.message

    error = error_of(r'http.request.uri matches "a\Z"')  # Perl's \Z: RE2 refuses it
    assert error.message.startswith("invalid regex")


def test_set_size_limit() -> None:
    items = " ".join(str(i) for i in range(10_001))
    error = error_of(f"http.conn.dst_port in {{{items}}}")
    assert error.message == "set has more than 10000 items"
    compile_expression(f"http.conn.dst_port in {{{items.rsplit(' ', 1)[0]}}}")


def test_nesting_limit() -> None:
    source = "(" * 129 + 'http.request.host == "a"' + ")" * 129
    error = error_of(source)
    assert error.message == "nesting deeper than 128 levels"
    assert error.column == 129
    compile_expression(source[1:-1])


def test_empty_expression() -> None:
    assert error_of("").message == "empty expression"
    assert error_of(" \n\t").message == "empty expression"


def test_render_with_caret() -> None:
    error = error_of('http.request.hots == "a"')
    assert error.render("policies/corp.yaml") == (
        "policies/corp.yaml:1:1: unknown field 'http.request.hots' (did you mean http.request.host?)\n"
        '    http.request.hots == "a"\n'
        "    ^"
    )
    assert error.render() == (
        "line 1, column 1: unknown field 'http.request.hots' (did you mean http.request.host?)\n"
        '    http.request.hots == "a"\n'
        "    ^"
    )


def test_render_on_a_later_line_and_inside_a_file() -> None:
    source = 'http.request.host == "a"\n  and http.request.hots == "b"'
    error = error_of(source)
    assert (error.line, error.column) == (2, 7)
    assert error.render("f.yaml") == (
        "f.yaml:2:7: unknown field 'http.request.hots' (did you mean http.request.host?)\n"
        '      and http.request.hots == "b"\n'
        "          ^"
    )
    # the expression starts at line 12, column 9 of the file
    assert (
        error_of('http.request.hots == "a"')
        .render("policies/corp.yaml", origin=(12, 9))
        .startswith(
            "policies/corp.yaml:12:9: unknown field 'http.request.hots' (did you mean http.request.host?)"
        )
    )
    assert error.render("f.yaml", origin=(12, 9)).startswith("f.yaml:13:7: ")


def test_render_keeps_tabs_and_cuts_long_lines() -> None:
    error = error_of('\thttp.request.host ==\t"a" and x')
    assert error.render().splitlines()[-1] == "    \t" + " " * 20 + "\t" + " " * 8 + "^"
    source = 'http.request.host == "' + "a" * 300 + '" and bogus == 1'
    error = error_of(source)
    shown, caret = error.render().splitlines()[1:]
    assert len(shown) <= 4 + 102
    assert shown[caret.index("^") :].startswith("bogus")


def test_unterminated_string_points_at_the_quote() -> None:
    error = error_of('http.request.host == "abc')
    assert error.message.startswith("unterminated string")
    assert error.render().splitlines()[-1] == "    " + " " * 21 + "^"


def test_error_str_and_pickle() -> None:
    error = error_of("http.request.host ==")
    assert str(error) == "line 1, column 21: expected a value after '==', found end of expression"
    assert error.expected == ("a string", "an integer", "an IP address")
    assert error.source == "http.request.host =="
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.message, copy.line, copy.column, copy.expected) == (
        error.message,
        error.line,
        error.column,
        error.expected,
    )


# -- explain ---------------------------------------------------------------------------------------

RULE = 'any(http.request.domains[*] == "example.com") and http.request.method == "POST"'


def test_explain_names_the_deciding_clause() -> None:
    ctx = {"http.request.domains": ("www.example.com", "example.com"), "http.request.method": "GET"}
    explanation = compile_expression(RULE).explain(ctx)
    assert explanation.value is False and explanation.result is False
    assert [c.text for c in explanation.deciding()] == ['http.request.method == "POST"']
    first, second = explanation.children
    assert (first.value, first.decisive) == (True, False)
    assert (second.value, second.decisive) == (False, True)
    assert second.note == 'http.request.method = "GET"'
    assert first.note == "element 1 of 2 decided"
    assert first.children[0].note == 'http.request.domains[1] = "example.com"'
    assert explanation.render() == (
        "* false   " + RULE + "\n"
        '    true    any(http.request.domains[*] == "example.com")    [element 1 of 2 decided]\n'
        '      true    http.request.domains[*] == "example.com"    [http.request.domains[1] = "example.com"]\n'
        '  * false   http.request.method == "POST"    [http.request.method = "GET"]'
    )


def test_explain_short_circuits() -> None:
    expression = compile_expression(
        'http.request.host == "a" or http.request.host == "b" or identity.email == "c"'
    )
    explanation = expression.explain({"http.request.host": "b"})
    assert [c.value for c in explanation.children] == [False, True, None]
    assert [c.decisive for c in explanation.children] == [False, True, False]
    assert [c.text for c in explanation.deciding()] == ['http.request.host == "b"']
    assert "skipped" in explanation.render()

    explanation = compile_expression('http.request.host == "a" and identity.email == "c"').explain({})
    assert [c.value for c in explanation.children] == [False, None]


def test_explain_true_and_needs_every_clause() -> None:
    explanation = compile_expression('http.request.host == "a" and not identity.email == "c"').explain(
        {"http.request.host": "a"}
    )
    assert explanation.value is True
    assert [c.text for c in explanation.deciding()] == ['http.request.host == "a"', 'identity.email == "c"']


def test_explain_any_all_and_absent_values() -> None:
    expression = compile_expression('all(identity.groups.name[*] in {"a" "b"})')
    explanation = expression.explain({"identity.groups.name": ["a", "z", "q"]})
    assert explanation.value is False
    assert explanation.note == "element 1 of 3 decided"
    assert explanation.deciding()[0].note == 'identity.groups.name[1] = "z"'
    empty = expression.explain({})
    assert (empty.value, empty.note) == (True, "identity.groups.name is empty: all() is true")

    explanation = compile_expression("http.conn.src_ip in {10.0.0.0/8}").explain({})
    assert explanation.note == "http.conn.src_ip is absent"
    explanation = compile_expression('http.request.domains[3] == "x"').explain(
        {"http.request.domains": ("a",)}
    )
    assert explanation.note == "http.request.domains[3] is absent (1 elements)"
    explanation = compile_expression('lower(http.request.host) == "x"').explain(
        {"http.request.host": "X\x01"}
    )
    assert explanation.note == 'lower(http.request.host) = "x\\x01"'


def test_explain_lists_elements_when_none_decides() -> None:
    expression = compile_expression('any(identity.groups.name[*] == "z")')
    explanation = expression.explain({"identity.groups.name": [str(i) for i in range(12)]})
    assert explanation.value is False
    assert len(explanation.children) == 10
    assert explanation.note == "12 elements, 2 not shown"


def test_explain_xor_and_not() -> None:
    scheme = Scheme([Field("a", BOOL), Field("b", BOOL)])
    explanation = compile_expression("a xor not b", scheme=scheme).explain({"a": True, "b": True})
    assert explanation.value is True
    assert [c.value for c in explanation.children] == [True, False]
    assert explanation.children[1].children[0].value is True


# -- host hints -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "hosts", "domains"),
    [
        ('http.request.host == "a.com"', {"a.com"}, set()),
        ('http.request.host in {"a.com" "b.com"}', {"a.com", "b.com"}, set()),
        ('net.sni.host == "s.com"', {"s.com"}, set()),
        ('any(http.request.domains[*] == "example.com")', set(), {"example.com"}),
        ('any(http.request.domains[] == "example.com")', set(), {"example.com"}),
        ('any(http.conn.domains[*] in {"a.com" "b.com"})', set(), {"a.com", "b.com"}),
        ('http.request.host == "a.com" and http.request.method == "GET"', {"a.com"}, set()),
        ('http.request.method == "GET" and any(http.request.domains[*] == "d.com")', set(), {"d.com"}),
        (
            'http.request.host in {"a.com" "b.com"} and any(http.request.domains[*] == "c.com")',
            set(),
            {"c.com"},
        ),
        ('http.request.host == "a.com" or any(http.request.domains[*] == "b.com")', {"a.com"}, {"b.com"}),
        ('http.request.host == "a.com" xor net.sni.host == "b.com"', {"a.com", "b.com"}, set()),
        (
            '(http.request.host == "a" or http.request.host == "b") and identity.email == "e"',
            {"a", "b"},
            set(),
        ),
        ('any(http.request.domains[*] == "a.com" and identity.email == "e")', set(), {"a.com"}),
        ('any(http.request.domains[*] == "a.com" or http.request.host == "h")', {"h"}, {"a.com"}),
        ('any(identity.groups.name[*] == "g" and http.request.host == "h")', {"h"}, set()),
        ('any(http.request.host[*] == "h")', {"h"}, set()),
    ],
)
def test_host_hints(source: str, hosts: set[str], domains: set[str]) -> None:
    assert compile_expression(source).host_hints() == HostHints(frozenset(hosts), frozenset(domains))


@pytest.mark.parametrize(
    "source",
    [
        'http.request.method == "GET"',
        'not http.request.host == "a.com"',
        'not (http.request.host == "a.com")',
        'http.request.host != "a.com"',
        'http.request.host contains "a.com"',
        'http.request.host matches "a.com"',
        'lower(http.request.host) == "a.com"',
        'http.request.host == "a.com" or identity.email == "e"',
        'all(http.request.domains[*] == "a.com")',
        'any(not http.request.domains[*] == "a.com")',
        'any(http.request.domains[*] != "a.com")',
        'http.request.domains[0] == "a.com"',
        'any(http.request.domains[*] == "a.com" or identity.email == "e")',
        'http.conn.hostname == "a.com"',
        'any(identity.groups.name[*] == "a.com")',
    ],
)
def test_no_host_hints(source: str) -> None:
    assert compile_expression(source).host_hints() is None


# -- scheme helpers ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("a.b.example.com", ("a.b.example.com", "b.example.com", "example.com")),
        ("Example.COM.", ("example.com",)),
        ("localhost", ("localhost",)),
        ("10.0.0.1", ("10.0.0.1",)),
        ("[::1]", ("[::1]",)),
        ("", ()),
    ],
)
def test_domains_of(host: str, expected: tuple[str, ...]) -> None:
    assert domains_of(host) == expected


def test_check_context() -> None:
    GATEWAY_SCHEME.check_context(
        {
            "http.request.host": "a",
            "http.conn.dst_port": 443,
            "http.conn.src_ip": ip("10.0.0.1"),
            "http.conn.dst_ip": None,
            "identity.groups.name": ["g"],
            "other": object(),
        }
    )
    for bad in (
        {"http.request.host": 1},
        {"http.conn.dst_port": "443"},
        {"http.conn.dst_port": True},
        {"http.conn.src_ip": "10.0.0.1"},
        {"identity.groups.name": "g"},
        {"identity.groups.name": [1]},
    ):
        with pytest.raises(PolicyError, match="context value for"):
            GATEWAY_SCHEME.check_context(bad)
    Scheme([Field("f", BOOL), Field("g", array_of(BOOL))]).check_context({"f": True, "g": (False,)})
