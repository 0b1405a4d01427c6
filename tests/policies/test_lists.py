"""Gateway lists in expressions: ``$<id>`` parsed, type-checked against the list's type, compiled
to lookups with each type's matching (DOMAIN subdomains, HOST exact, IP CIDRs, URL prefix,
EMAIL/SERIAL exact); list values validated; explanations name the item that matched; a changed
list recompiles only the rules that refer to it; policy files carry lists; the engine indexes a
rule that tests a host against a DOMAIN/HOST list by that list (a host in no item never evaluates
it), and the index follows the list's changes."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policies import ast
from policies.engine import GatewayEngine
from policies.errors import ExpressionError
from policies.expression import compile_expression, referenced_lists
from policies.facts import ConnectionFacts, RequestFacts
from policies.list_matchers import ListRegistry, ListType, static_lookup
from policies.lists import GatewayList, ListItem
from policies.parser import parse
from policies.rules import Action, CompiledRule, FieldError, GatewayRule
from policies.yaml_io import PolicyFileError, dump, load

L = "0c1d6a52-59d1-4c39-9a5b-3e0f1a2b3c20"


def gateway_list(type_: str, *values: str | dict[str, str], list_id: str = L) -> GatewayList:
    return GatewayList.from_api(
        {"id": list_id, "name": "test", "type": type_, "items": list(values)}, where="t"
    )


def evaluate(source: str, lists: list[GatewayList], **ctx: object) -> bool:
    fields = {k.replace("__", "."): v for k, v in ctx.items()}
    return compile_expression(source, lists=static_lookup(lists)).evaluate(fields)


def test_list_reference_parses_where_a_set_stands() -> None:
    tree = parse(f"http.request.host in ${L}")
    assert isinstance(tree, ast.Comparison) and tree.rhs == ast.ListRef(L, 21, 21 + 1 + len(L))
    assert referenced_lists(f'any(http.request.domains[*] in ${L}) or http.request.host == "x"') == {L}


@pytest.mark.parametrize(
    ("type_", "items", "source", "ctx", "expected"),
    [
        ("DOMAIN", ["example.com"], "http.request.host in $L", {"http.request.host": "a.b.example.com"}, True),
        ("DOMAIN", ["example.com"], "http.request.host in $L", {"http.request.host": "example.com"}, True),
        ("DOMAIN", ["example.com"], "http.request.host in $L", {"http.request.host": "badexample.com"}, False),
        ("DOMAIN", ["example.com"], "http.request.host in $L", {"http.request.host": "EXAMPLE.com."}, True),
        ("DOMAIN", ["b.example.com"], "any(http.request.domains[*] in $L)",
         {"http.request.domains": ("a.b.example.com", "b.example.com", "example.com")}, True),
        ("DOMAIN", ["b.example.com"], "any(http.request.domains[*] in $L)",
         {"http.request.domains": ("example.com",)}, False),
        ("HOST", ["example.com"], "http.request.host in $L", {"http.request.host": "a.example.com"}, False),
        ("HOST", ["example.com"], "net.sni.host in $L", {"net.sni.host": "example.com"}, True),
        ("IP", ["10.0.0.0/8", "192.0.2.7"], "http.conn.dst_ip in $L",
         {"http.conn.dst_ip": ipaddress.ip_address("10.200.1.1")}, True),
        ("IP", ["10.0.0.0/8", "192.0.2.7"], "http.conn.dst_ip in $L",
         {"http.conn.dst_ip": ipaddress.ip_address("192.0.2.8")}, False),
        ("IP", ["2001:db8::/32"], "http.conn.src_ip in $L",
         {"http.conn.src_ip": ipaddress.ip_address("2001:db8::1")}, True),
        ("IP", ["10.0.0.0/8"], "http.conn.src_ip in $L", {}, False),
        ("URL", ["example.com/docs"], "http.request.uri in $L",
         {"http.request.uri": "https://example.com/docs/a?b=1"}, True),
        ("URL", ["https://example.com/docs"], "http.request.uri in $L",
         {"http.request.uri": "http://example.com/doc"}, False),
        ("EMAIL", ["ana@example.com"], "identity.email in $L", {"identity.email": "ana@example.com"}, True),
        ("EMAIL", ["ana@example.com"], "identity.email in $L", {"identity.email": "bo@example.com"}, False),
        ("DOMAIN", ["example.com"], "not(http.request.host in $L)", {"http.request.host": "x.example.com"}, False),
    ],
)  # fmt: skip
def test_matching_follows_the_list_type(
    type_: str, items: list[str], source: str, ctx: dict[str, object], expected: bool
) -> None:
    lists = [gateway_list(type_, *items)]
    assert (
        compile_expression(source.replace("$L", f"${L}"), lists=static_lookup(lists)).evaluate(ctx)
        is expected
    )


@pytest.mark.parametrize(
    ("type_", "source", "column", "message"),
    [
        ("DOMAIN", "http.request.uri in $L", 21,
         "is a DOMAIN list, which cannot be compared with http.request.uri (a string); http.request.uri takes a URL list"),
        ("IP", "http.request.host in $L", 22, "is a IP list, which cannot be compared with http.request.host"),
        ("SERIAL", "http.request.method in $L", 24, "no list type fits http.request.method"),
        ("DOMAIN", "http.request.host in $nope", 22, "unknown list $nope"),
        ("DOMAIN", "http.request.host == $L", 19, "a list needs 'in', not '=='"),
        ("DOMAIN", "http.request.host in $", 23, "expected a list id after '$'"),
    ],
)  # fmt: skip
def test_list_errors_say_where(type_: str, source: str, column: int, message: str) -> None:
    with pytest.raises(ExpressionError, match="line 1, column") as caught:
        compile_expression(source.replace("$L", f"${L}"), lists=static_lookup([gateway_list(type_)]))
    assert caught.value.column == column and message in caught.value.message


def test_without_lists_every_reference_is_unknown() -> None:
    with pytest.raises(ExpressionError, match=f"unknown list \\${L}"):
        compile_expression(f"http.request.host in ${L}")


@pytest.mark.parametrize(
    ("type_", "value", "message"),
    [
        ("DOMAIN", "*.example.com", "write example.com"),
        ("DOMAIN", "https://example.com", "no scheme, path or port"),
        ("HOST", "exa mple.com", "holds white space"),
        ("IP", "10.0.0.1/8", "did you mean 10.0.0.0/8?"),
        ("IP", "example.com", "is not an IP address or CIDR"),
        ("EMAIL", "ana", "not an email address"),
        ("URL", "ftp://example.com/x", "a URL item is http(s) or has no scheme"),
    ],
)
def test_bad_items_are_refused(type_: str, value: str, message: str) -> None:
    with pytest.raises(FieldError, match="items\\[1\\].value") as caught:
        gateway_list(
            type_,
            *(["10.9.9.9"] if type_ == "IP" else ["ok@x.example"] if type_ == "EMAIL" else ["ok.example"]),
            value,
        )
    assert message in str(caught.value)


def test_items_are_normalised_and_unique() -> None:
    listed = gateway_list("DOMAIN", "Example.COM.", {"value": "b.example", "description": "why"})
    assert listed.items == (ListItem("example.com"), ListItem("b.example", "why"))
    assert gateway_list("IP", "2001:DB8::1").items[0].value == "2001:db8::1"
    with pytest.raises(FieldError, match="'example.com' repeats items\\[0\\]"):
        gateway_list("DOMAIN", "example.com", "EXAMPLE.com")
    assert GatewayList.from_api(listed.to_api(), where="t") == listed


def test_explain_names_the_item_that_matched() -> None:
    lists = static_lookup([gateway_list("DOMAIN", "example.com")])
    explained = compile_expression(f"http.request.host in ${L}", lists=lists).explain(
        {"http.request.host": "a.example.com"}
    )
    assert f"matched item \"example.com\" of list 'test' (DOMAIN, id {L})" in explained.note
    missed = compile_expression(f"http.request.host in ${L}", lists=lists).explain(
        {"http.request.host": "other.org"}
    )
    assert "in no item of list 'test' (DOMAIN)" in missed.note


def test_a_changed_list_recompiles_only_the_rules_that_use_it() -> None:
    registry = ListRegistry()
    first = gateway_list("DOMAIN", "a.example")
    uses = GatewayRule.from_api({"name": "u", "action": "block", "precedence": 1, "traffic": f"http.request.host in ${L}"},
                                where="t", check_expressions=False)  # fmt: skip
    other = GatewayRule.from_api({"name": "o", "action": "block", "precedence": 2, "traffic": 'http.request.host == "x"'},
                                 where="t")  # fmt: skip
    lookup = registry.lookup([first])
    compiled = [r.compile(lists=lookup) for r in (uses, other)]
    assert registry.lookup([first]).get(L) is lookup.get(L)  # unchanged: same handle, nothing to compile
    changed = registry.lookup(
        [GatewayList(first.name, ListType.DOMAIN, L, items=(*first.items, ListItem("b.example")))]
    )
    assert [c.uses_current_lists(changed) for c in compiled] == [False, True]
    fresh = uses.compile(lists=changed)
    assert fresh.matches({"http.request.host": "b.example"}) and not compiled[0].matches(
        {"http.request.host": "b.example"}
    )


def test_ip_lists_look_up_by_prefix_length() -> None:
    items = [f"10.{i // 256}.{i % 256}.0/24" for i in range(20_000)] + ["192.0.2.0/28", "2001:db8::5"]
    handle = static_lookup([gateway_list("IP", *items)]).get(L)
    assert handle is not None
    assert handle.matcher.find(ipaddress.ip_address("10.3.7.200")) == "10.3.7.0/24"
    assert handle.matcher.find(ipaddress.ip_address("192.0.2.15")) == "192.0.2.0/28"
    assert ipaddress.ip_address("192.0.2.16") not in handle.matcher
    assert ipaddress.ip_address("2001:db8::5") in handle.matcher
    assert ipaddress.ip_address("::ffff:10.0.0.1") not in handle.matcher  # families never mix


FILE = f"""
lists:
  - id: {L}
    name: blocked
    type: DOMAIN
    items: [casino.example, {{value: bets.example, description: betting}}]
gateway_rules:
  - name: Block listed
    precedence: 10
    action: block
    traffic: http.request.host in ${L}
"""


def test_policy_files_carry_lists_and_round_trip() -> None:
    loaded = load(FILE, file="p.yaml")
    assert [gl.id for gl in loaded.lists] == [L]
    decision = loaded.gateway_engine().decide(
        __import__("policies.facts", fromlist=["RequestFacts"]).RequestFacts.from_url(
            "https://www.casino.example/"
        )
    )
    assert decision.rule is not None and decision.rule.name == "Block listed"
    assert load(dump(loaded), file="again.yaml") == loaded


def test_policy_file_list_problems_point_at_the_line() -> None:
    bad = FILE.replace("bets.example", "bets .example").replace(f"${L}", "$unknown")
    with pytest.raises(PolicyFileError) as caught:
        load(bad, file="p.yaml")
    shown = [str(p) for p in caught.value.problems]
    assert shown[0].startswith("p.yaml:6:") and "holds white space" in shown[0]
    assert shown[1].startswith("p.yaml:11:35:") and "unknown list $unknown" in shown[1]
    no_id = FILE.replace(f"  - id: {L}\n    name", "  - name")
    with pytest.raises(PolicyFileError, match="id: required in policy files"):
        load(no_id, file="p.yaml")


# --- the engine's host index over lists ---------------------------------------------------------


def list_rule(name: str, precedence: int, traffic: str, action: str = "block") -> GatewayRule:
    body = {
        "name": name,
        "action": action,
        "precedence": precedence,
        "traffic": traffic.replace("$L", f"${L}"),
    }
    return GatewayRule.from_api(body, where="t", check_expressions=False)


def counted(compiled: CompiledRule, seen: list[str]) -> CompiledRule:
    """The same rule, noting its name in ``seen`` each time the engine evaluates it."""
    check = compiled.check

    def counting(ctx: Mapping[str, object]) -> bool:
        seen.append(compiled.rule.name)
        return check(ctx)

    return replace(compiled, check=counting)


def facts(url: str, sni: str | None = "") -> RequestFacts:
    made = RequestFacts.from_url(url)
    if sni == "":
        return made
    connection = ConnectionFacts(sni, made.connection.src_ip)
    return RequestFacts(made.method, made.url, made.host, made.path, made.query, connection)


@pytest.mark.parametrize(
    "traffic",
    ["http.request.host in $L", "any(http.request.domains[*] in $L)", "net.sni.host in $L",
     'any(http.conn.domains[*] in $L) and http.request.method == "GET"',
     'http.request.host in $L or http.request.host == "literal.example"'],
)  # fmt: skip
def test_a_rule_on_a_domain_list_is_evaluated_only_for_listed_names(traffic: str) -> None:
    lookup = static_lookup([gateway_list("DOMAIN", "listed.example", "other.example")])
    seen: list[str] = []
    engine = GatewayEngine.build([counted(list_rule("listed", 10, traffic).compile(lists=lookup), seen)])
    assert [r.name for r in engine.candidates("listed.example")] == ["listed"]
    assert [r.name for r in engine.candidates("a.b.listed.example")] == ["listed"]  # a subdomain
    assert engine.candidates("unlisted.example") == () and engine.candidates("example") == ()
    decided = engine.decide(facts("https://deep.sub.listed.example/x"))
    assert decided.action is Action.BLOCK and seen == ["listed"]
    seen.clear()
    for url in ("https://unlisted.example/", "https://listed.example.org/", "https://xlisted.example/"):
        assert engine.decide(facts(url)).rule is None
    assert seen == []  # hosts in no item never evaluate the rule


def test_a_host_list_is_indexed_by_exact_host() -> None:
    lookup = static_lookup([gateway_list("HOST", "exact.example")])
    seen: list[str] = []
    rules = [counted(list_rule("host", 10, "http.request.host in $L").compile(lists=lookup), seen)]
    engine = GatewayEngine.build(rules)
    assert engine.decide(facts("https://EXACT.example./")).action is Action.BLOCK  # folded as the list does
    assert engine.decide(facts("https://www.exact.example/")).rule is None
    assert seen == ["host"]
    # any(domains[*] in $HOST) tests every parent of the host exactly: subdomains do match
    domains = GatewayEngine.build(
        [list_rule("d", 10, "any(http.request.domains[*] in $L)").compile(lists=lookup)]
    )
    assert domains.decide(facts("https://www.exact.example/")).action is Action.BLOCK
    assert domains.candidates("exact.example.org") == ()


def test_the_sni_reaches_a_list_rule_at_the_client_hello() -> None:
    lookup = static_lookup([gateway_list("DOMAIN", "bank.example")])
    engine = GatewayEngine.build(
        [list_rule("dni", 10, "net.sni.host in $L", action="off").compile(lists=lookup)]
    )
    assert engine.decide_connection(
        ConnectionFacts("Www.Bank.example", ipaddress.ip_address("10.0.0.1"))
    ).passes_through
    assert not engine.decide_connection(
        ConnectionFacts("bank.example.net", ipaddress.ip_address("10.0.0.1"))
    ).passes_through
    # plain HTTP to a listed host: no SNI, the request host still finds the rule
    engine = GatewayEngine.build([list_rule("sni or host", 10, "net.sni.host in $L or http.request.host in $L")
                                  .compile(lists=lookup)])  # fmt: skip
    assert engine.decide(facts("http://www.bank.example/")).action is Action.BLOCK


def test_explain_names_the_list_a_skipped_rule_needs_and_the_item_that_matched() -> None:
    lookup = static_lookup([gateway_list("DOMAIN", "listed.example")])
    engine = GatewayEngine.build([list_rule("listed", 10, "http.request.host in $L").compile(lists=lookup)])
    skipped = engine.explain(facts("https://other.example/")).render()
    assert f"skipped, applies only to a host in list 'test' (DOMAIN, id {L}), not other.example" in skipped
    matched = engine.explain(facts("https://a.listed.example/")).render()
    assert "MATCH" in matched and 'matched item "listed.example"' in matched


def test_append_and_remove_move_the_index_with_the_list() -> None:
    registry = ListRegistry()
    first = gateway_list("DOMAIN", "old.example", "kept.example")
    rules = [list_rule("listed", 10, "http.request.host in $L"), rule_on("literal", 20, "literal.example")]
    compiled = [r.compile(lists=registry.lookup([first])) for r in rules]
    engine = GatewayEngine.build(compiled)
    assert [r.name for r in engine.candidates("www.old.example")] == ["listed"]
    assert engine.candidates("new.example") == ()
    # PATCH: append new.example, remove old.example (a new handle; only the list's rule recompiled)
    changed = GatewayList(
        first.name, ListType.DOMAIN, L, items=(ListItem("kept.example"), ListItem("new.example"))
    )
    lookup = registry.lookup([changed])
    fresh = [c if c.uses_current_lists(lookup) else c.rule.compile(lists=lookup) for c in compiled]
    assert [a is b for a, b in zip(compiled, fresh, strict=True)] == [False, True]
    engine = GatewayEngine.build(fresh)
    assert [r.name for r in engine.candidates("a.new.example")] == ["listed"]
    assert engine.decide(facts("https://a.new.example/")).action is Action.BLOCK
    assert engine.candidates("www.old.example") == ()
    assert engine.decide(facts("https://www.old.example/")).rule is None
    assert [r.name for r in engine.candidates("kept.example")] == ["listed"]


def rule_on(name: str, precedence: int, host: str) -> GatewayRule:
    return list_rule(name, precedence, f'http.request.host == "{host}"', action="allow")


NAMES = ["a.example", "www.a.example", "b.example", "x.b.example", "A.example", "c.example.org", "10.0.0.1"]
LIST_CLAUSES = st.one_of(
    st.sampled_from(["http.request.host", "net.sni.host"]).map(lambda f: f"{f} in $D"),
    st.sampled_from(["http.request.host", "net.sni.host"]).map(lambda f: f"{f} in $H"),
    st.sampled_from(["http.request.domains", "http.conn.domains"]).map(lambda f: f"any({f}[*] in $D)"),
    st.sampled_from(["http.request.domains", "http.conn.domains"]).map(lambda f: f"any({f}[*] in $H)"),
    st.sampled_from(["$D", "$H"]).map(lambda ref: f"all(http.request.domains[*] in {ref})"),
    st.sampled_from(NAMES).map(lambda h: f'http.request.host == "{h}"'),
    st.sampled_from(["GET", "POST"]).map(lambda m: f'http.request.method == "{m}"'),
)


@st.composite
def list_expressions(draw: st.DrawFn, depth: int = 0) -> str:
    if depth >= 2 or draw(st.booleans()):
        return draw(LIST_CLAUSES)
    op = draw(st.sampled_from(["and", "or", "not"]))
    if op == "not":
        return f"not({draw(list_expressions(depth + 1))})"
    return f"({draw(list_expressions(depth + 1))} {op} {draw(list_expressions(depth + 1))})"


D, H = "d0000000-0000-4000-8000-00000000000d", "d0000000-0000-4000-8000-00000000000e"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    traffics=st.lists(list_expressions(), min_size=1, max_size=6),
    domain_items=st.lists(
        st.sampled_from(["a.example", "b.example", "example.org", "10.0.0.1"]), unique=True
    ),
    host_items=st.lists(st.sampled_from(["a.example", "x.b.example", "c.example.org"]), unique=True),
    host=st.sampled_from(NAMES),
    sni=st.sampled_from([None, "same", *NAMES]),
)
def test_the_list_index_gives_the_same_decisions(
    traffics: list[str], domain_items: list[str], host_items: list[str], host: str, sni: str | None
) -> None:
    lookup = static_lookup([
        GatewayList("d", ListType.DOMAIN, D, items=tuple(ListItem(v) for v in domain_items)),
        GatewayList("h", ListType.HOST, H, items=tuple(ListItem(v) for v in host_items)),
    ])  # fmt: skip
    rules = [
        GatewayRule.from_api({"name": f"r{i}", "action": "block", "precedence": i + 1,
                              "traffic": t.replace("$D", f"${D}").replace("$H", f"${H}")},
                             where="t", check_expressions=False)
        for i, t in enumerate(traffics)
    ]  # fmt: skip
    request = facts(f"https://{host}/", sni=host.lower() if sni == "same" else sni)
    indexed = GatewayEngine.build(rules, lists=lookup).decide(request)
    linear = GatewayEngine.build(rules, lists=lookup, indexed=False).decide(request)
    assert (indexed.action, indexed.rule) == (linear.action, linear.rule)
    connection = request.connection
    if connection.sni is not None:
        at_hello = GatewayEngine.build(rules, lists=lookup).decide_connection(connection)
        assert at_hello == GatewayEngine.build(rules, lists=lookup, indexed=False).decide_connection(
            connection
        )
