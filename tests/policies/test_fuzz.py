"""Fuzzing the expression language: random text either compiles or raises ExpressionError, and
random grammatical expressions compile, evaluate, explain and hint consistently."""

from __future__ import annotations

import ipaddress

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policies.errors import ExpressionError
from policies.expression import Expression, compile_expression
from policies.scheme import domains_of

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SHORT = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
GRAMMAR = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def compiles_or_refuses(source: str) -> Expression | None:
    try:
        return compile_expression(source)
    except ExpressionError as e:
        assert e.line >= 1 and e.column >= 1
        assert e.render("x.yaml").startswith(f"x.yaml:{e.line}:{e.column}: ")
        return None


# -- random text ------------------------------------------------------------------------------

TOKENS = [
    "http.request.host", "http.request.domains", "http.conn.src_ip", "http.conn.dst_port",
    "identity.groups.name", "http.request.uri.path", "lower", "upper", "any", "all", "not",
    "and", "or", "xor", "in", "contains", "matches", "eq", "ne", "lt", "ge",
    "==", "!=", "<", "<=", ">", ">=", "~", "!", "&&", "||", "^^", "(", ")", "{", "}", "[", "]",
    "[*]", "[]", "*", ",", '"', '"a"', '"\\x41"', '"\\', 'r#"', '"#', "r", "#", "$x", ".name",
    "80", "-1", "0x10", "80..443", "443..80", "10.0.0.1", "10.0.0.0/8", "::1", "fe80::/10",
    "10.0.0.1..10.0.0.9", "1.2.3", "07", "\n", "\t", "é", "\x00", "\\",
]  # fmt: skip


@FUZZ
@given(st.text(max_size=200))
def test_random_text(source: str) -> None:
    compiles_or_refuses(source)


@FUZZ
@given(st.lists(st.sampled_from(TOKENS), max_size=30), st.sampled_from([" ", "", "\n"]))
def test_token_soup(tokens: list[str], separator: str) -> None:
    compiles_or_refuses(separator.join(tokens))


@SHORT
@given(st.text(alphabet="()!not ", max_size=600))
def test_deep_nesting_soup(source: str) -> None:
    compiles_or_refuses(source + 'http.request.host == "a"' + ")" * source.count("("))


@SHORT
@given(st.text(max_size=80))
def test_random_regexes(pattern: str) -> None:
    literal = 'r#"' + pattern + '"#' if '"#' not in pattern else '"x"'
    compiles_or_refuses(f"http.request.uri matches {literal}")


# -- grammatical expressions ----------------------------------------------------------------------

STRING_FIELDS = [
    "http.request.host", "net.sni.host", "http.request.uri.path", "http.request.method",
    "identity.email", "http.conn.hostname",
]  # fmt: skip
ARRAY_FIELDS = ["http.request.domains", "http.conn.domains", "identity.groups.name"]
HOSTS = ["example.com", "a.example.com", "b.example.org", "Example.com", ""]
WORDS = HOSTS + ["GET", "POST", "/admin", "ann@corp.com", "eng", 'é"\\']


def string_literal(value: str) -> st.SearchStrategy[str]:
    escaped = "".join(
        "\\" + ch if ch in '"\\' else ch if ch.isprintable() else "".join(f"\\x{b:02x}" for b in ch.encode())
        for ch in value
    )
    options = [f'"{escaped}"']
    if '"#' not in value:
        options.append(f'r#"{value}"#')
    return st.sampled_from(options)


words = st.sampled_from(WORDS) | st.text(max_size=8)
string_values = words.flatmap(string_literal)
string_sets = st.lists(string_values, min_size=1, max_size=4).map(lambda items: "{" + " ".join(items) + "}")
regexes = st.sampled_from(['"^/admin"', '"example\\.com$"', 'r"\\d+"', '"(?i)eng"', '"a|b"', '""'])


@st.composite
def string_leaf(draw: st.DrawFn, subject: str) -> str:
    if draw(st.booleans()):
        subject = f"{draw(st.sampled_from(['lower', 'upper']))}({subject})"
    op = draw(st.sampled_from(["==", "!=", "eq", "ne", "contains", "matches", "~", "in", "<", ">="]))
    if op in ("matches", "~"):
        return f"{subject} {op} {draw(regexes)}"
    if op == "in":
        return f"{subject} in {draw(string_sets)}"
    return f"{subject} {op} {draw(string_values)}"


@st.composite
def leaf(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["string", "port", "ip", "array", "index"]))
    if kind == "string":
        return draw(string_leaf(draw(st.sampled_from(STRING_FIELDS))))
    if kind == "port":
        op = draw(st.sampled_from(["==", "!=", "<", ">", "<=", ">=", "in"]))
        if op == "in":
            return (
                f"http.conn.dst_port in {{{draw(st.sampled_from(['80 443', '80..443', '22 8000..8999']))}}}"
            )
        return f"http.conn.dst_port {op} {draw(st.integers(-1, 70000))}"
    if kind == "ip":
        field = draw(st.sampled_from(["http.conn.src_ip", "http.conn.dst_ip"]))
        rhs = draw(
            st.sampled_from(["== 10.0.0.1", "!= ::1", "in {10.0.0.0/8 ::1}", "in {10.0.0.1..10.0.0.9}"])
        )
        return f"{field} {rhs}"
    field = draw(st.sampled_from(ARRAY_FIELDS))
    if kind == "index":
        return draw(string_leaf(f"{field}[{draw(st.integers(0, 3))}]"))
    star = draw(st.sampled_from(["[*]", "[]"]))
    quantifier = draw(st.sampled_from(["any", "all"]))
    return f"{quantifier}({draw(string_leaf(field + star))})"


def combine(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    binary = st.tuples(children, st.sampled_from(["and", "&&", "or", "||", "xor", "^^"]), children)
    return (
        binary.map(lambda t: f"{t[0]} {t[1]} {t[2]}")
        | children.map(lambda c: f"({c})")
        | children.map(lambda c: f"not {c}")
        | children.map(lambda c: f"!({c})")
    )


expressions = st.recursive(leaf(), combine, max_leaves=12)


@st.composite
def contexts(draw: st.DrawFn) -> dict[str, object]:
    host = draw(st.sampled_from(HOSTS))
    sni = draw(st.sampled_from(HOSTS))
    ctx: dict[str, object] = {
        "http.request.host": host,
        "http.request.domains": domains_of(host),
        "net.sni.host": sni,
        "http.conn.hostname": sni,
        "http.conn.domains": domains_of(sni),
        "http.request.uri.path": draw(st.sampled_from(["/", "/admin/x", "/v1/123"])),
        "http.request.method": draw(st.sampled_from(["GET", "POST"])),
        "identity.email": draw(st.sampled_from(["", "ann@corp.com"])),
        "identity.groups.name": tuple(draw(st.lists(st.sampled_from(["eng", "ENG", "ops"]), max_size=3))),
        "http.conn.dst_port": draw(st.sampled_from([80, 443, 8080])),
    }
    if draw(st.booleans()):
        ctx["http.conn.src_ip"] = ipaddress.ip_address(
            draw(st.sampled_from(["10.0.0.1", "::1", "192.0.2.1"]))
        )
    return {k: v for k, v in ctx.items() if draw(st.integers(0, 9)) > 0}  # sometimes absent


@GRAMMAR
@given(expressions, st.lists(contexts(), min_size=1, max_size=3))
def test_grammatical_expressions_compile_and_agree(source: str, ctxs: list[dict[str, object]]) -> None:
    expression = compile_expression(source)
    hints = expression.host_hints()
    for ctx in ctxs:
        value = expression.evaluate(ctx)
        explanation = expression.explain(ctx)
        assert explanation.value is value
        assert explanation.render()
        if value and hints is not None:
            hosts = {ctx.get("http.request.host", ""), ctx.get("net.sni.host", "")}
            domains = set(ctx.get("http.request.domains", ())) | set(ctx.get("http.conn.domains", ()))  # type: ignore[call-overload]
            assert hosts & hints.hosts or domains & hints.domains, (source, ctx, hints)


@GRAMMAR
@given(expressions, st.integers(0, 10_000), st.sampled_from(["", "(", ")", '"', "{", "[*]", " and", "\\"]))
def test_mutated_expressions(source: str, where: int, insert: str) -> None:
    at = where % (len(source) + 1)
    compiles_or_refuses(source[:at] + insert + source[at + 1 :])
