"""Gateway lists in expressions: ``$<id>`` parsed, type-checked against the list's type, compiled
to lookups with each type's matching (DOMAIN subdomains, HOST exact, IP CIDRs, URL prefix,
EMAIL/SERIAL exact); list values validated; explanations name the item that matched; a changed
list recompiles only the rules that refer to it; policy files carry lists."""

from __future__ import annotations

import ipaddress

import pytest

from policies import ast
from policies.errors import ExpressionError
from policies.expression import compile_expression, referenced_lists
from policies.list_matchers import ListRegistry, ListType, static_lookup
from policies.lists import GatewayList, ListItem
from policies.parser import parse
from policies.rules import FieldError, GatewayRule
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
