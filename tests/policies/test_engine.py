"""The Gateway engine: order (Do Not Inspect first, precedence, first match, none → allow), the
ClientHello decision, explanations, and the host index (same decisions with and without it)."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policies.engine import Decision, GatewayEngine, Stage
from policies.facts import ConnectionFacts, Identity, RequestFacts
from policies.rules import Action, ConflictError, FieldError, GatewayRule, UntrustedCertAction

POSTURE = "6f1c2a3b-4d5e-4f60-8a71-92b3c4d5e6f7"


def rule(name: str, precedence: int, action: str = "block", **fields: Any) -> GatewayRule:
    body: dict[str, Any] = {"name": name, "precedence": precedence, "action": action, **fields}
    if action == "redirect":
        body.setdefault("rule_settings", {"redirect": {"target_uri": "https://new.example"}})
    return GatewayRule.from_api(body, where="rule")


def request(
    url: str = "https://www.example.com/",
    *,
    method: str = "GET",
    email: str = "",
    groups: tuple[str, ...] = (),
    passed: tuple[str, ...] = (),
    sni: str | None = "",
) -> RequestFacts:
    identity = Identity.of(email=email, groups=groups, passed=passed)
    facts = RequestFacts.from_url(url, method=method, identity=identity)
    if sni != "":
        connection = ConnectionFacts(sni, facts.connection.src_ip, facts.connection.dst_ip, 443, identity)
        facts = RequestFacts(facts.method, facts.url, facts.host, facts.path, facts.query, connection)
    return facts


HOST = 'http.request.host == "www.example.com"'


# --- build --------------------------------------------------------------------------------------


def test_duplicate_precedence_names_both_rules() -> None:
    with pytest.raises(
        ConflictError,
        match=r"gateway rules 'a' and 'b' both have precedence 10; give each enabled rule its own",
    ) as caught:
        GatewayEngine.build([rule("a", 10, traffic=HOST), rule("b", 10, action="allow")])
    assert [r.name for r in caught.value.subjects] == ["a", "b"]  # type: ignore[attr-defined]


def test_disabled_rules_do_not_count() -> None:
    engine = GatewayEngine.build([rule("a", 10, traffic=HOST), rule("b", 10, enabled=False)])
    assert [r.name for r in engine.rules] == ["a"]
    assert engine.decide(request("https://other.example/")).rule is None


def test_broken_expression_is_refused_at_build() -> None:
    broken = GatewayRule.from_api(
        {"name": "x", "precedence": 1, "action": "block", "traffic": "http.request.host =="},
        where="r",
        check_expressions=False,
    )
    with pytest.raises(FieldError, match=r"gateway rule 'x': traffic: 1:"):
        GatewayEngine.build([broken])


# --- order ----------------------------------------------------------------------------------------


def test_no_rules_allow() -> None:
    decision = GatewayEngine.build([]).decide(request())
    assert decision == Decision(Action.ALLOW, None, Stage.REQUEST)
    assert decision.summary() == "allow (no rule matched)"


@pytest.mark.parametrize(
    ("rules", "expected"),
    [
        (
            [rule("block", 20, traffic=HOST), rule("allow", 10, action="allow", traffic=HOST)],
            "allow",
        ),
        (
            [rule("block", 5, traffic=HOST), rule("allow", 10, action="allow", traffic=HOST)],
            "block",
        ),
        (
            [rule("other", 1, traffic='http.request.host == "x.example"'), rule("catch-all", 99)],
            "catch-all",
        ),
        ([rule("redirect", 3, action="redirect", traffic=HOST), rule("block", 4)], "redirect"),
        (
            [
                rule("off-by-host", 1, traffic='http.request.method == "POST"'),
                rule("later", 2, traffic=HOST),
            ],
            "later",
        ),
    ],
)
def test_first_match_by_precedence_decides(rules: list[GatewayRule], expected: str) -> None:
    for ordering in (rules, rules[::-1]):
        decision = GatewayEngine.build(ordering).decide(request())
        assert decision.rule is not None and decision.rule.name == expected
        assert decision.action is decision.rule.action


def test_every_non_empty_part_must_hold() -> None:
    uploads = rule(
        "uploads",
        10,
        traffic='http.request.host == "files.example.net" and http.request.method == "POST"',
        identity='identity.email matches "@example[.]com$"',
        device_posture=f'not(any(device_posture.checks.passed[*] == "{POSTURE}"))',
    )
    engine = GatewayEngine.build([uploads])
    url = "https://files.example.net/upload"
    assert engine.decide(request(url, method="POST", email="ana@example.com")).action is Action.BLOCK
    assert (
        engine.decide(request(url, method="POST", email="ana@example.com", passed=(POSTURE,))).action
        is Action.ALLOW
    )
    assert engine.decide(request(url, method="POST", email="ana@other.example")).action is Action.ALLOW
    assert engine.decide(request(url, method="GET", email="ana@example.com")).action is Action.ALLOW


def test_do_not_inspect_rules_come_first() -> None:
    """An ``off`` rule decides before a block rule with a lower precedence number."""
    block = rule("block all", 1)
    off = rule("bank", 500, action="off", traffic='any(http.conn.domains[*] == "bank.example")')
    engine = GatewayEngine.build([block, off])
    connection = engine.decide_connection(
        ConnectionFacts("www.bank.example", ipaddress.ip_address("10.0.0.1"))
    )
    assert connection.passes_through and connection.rule == off
    late = engine.decide(request("https://www.bank.example/"))
    assert late.action is Action.ALLOW and late.rule == off and late.stage is Stage.REQUEST
    assert "Do Not Inspect rule matched an inspected request" in late.note
    assert engine.decide(request("https://www.example.com/")).rule == block


def test_on_is_an_exception_to_do_not_inspect() -> None:
    off = rule("bank", 10, action="off", traffic='any(http.conn.domains[*] == "bank.example")')
    on = rule("promo", 5, action="on", traffic='net.sni.host == "promo.bank.example"')
    block = rule("block promo", 100, traffic='http.request.host == "promo.bank.example"')
    engine = GatewayEngine.build([off, on, block])
    src = ipaddress.ip_address("10.0.0.1")
    assert engine.decide_connection(ConnectionFacts("promo.bank.example", src)).action is Action.ON
    assert engine.decide_connection(ConnectionFacts("promo.bank.example", src)).rule == on
    assert engine.decide_connection(ConnectionFacts("www.bank.example", src)).action is Action.OFF
    # after `on`, the HTTP rules decide the request
    assert engine.decide(request("https://promo.bank.example/")).rule == block


def test_connection_decision_without_match_inspects() -> None:
    engine = GatewayEngine.build([rule("block", 1)])
    decision = engine.decide_connection(ConnectionFacts("a.example", ipaddress.ip_address("10.0.0.1")))
    assert decision == Decision(Action.ON, None, Stage.CONNECTION)
    assert not decision.passes_through
    assert decision.summary() == "inspect (no Do Not Inspect rule matched)"


def test_connection_decision_sees_identity_and_posture() -> None:
    off = rule(
        "managed devices skip inspection",
        1,
        action="off",
        traffic='net.sni.host == "a.example"',
        device_posture=f'any(device_posture.checks.passed[*] == "{POSTURE}")',
    )
    engine = GatewayEngine.build([off])
    src = ipaddress.ip_address("10.0.0.1")
    managed = Identity.of(passed=[POSTURE])
    assert engine.decide_connection(ConnectionFacts("a.example", src, identity=managed)).passes_through
    assert not engine.decide_connection(ConnectionFacts("a.example", src)).passes_through


def test_settings_travel_with_the_decision() -> None:
    lab = rule(
        "lab",
        1,
        action="allow",
        traffic=HOST,
        rule_settings={"untrusted_cert": {"action": "pass_through"}},
    )
    reason = rule(
        "blocked",
        2,
        traffic='http.request.host == "b.example"',
        rule_settings={"block_page_enabled": True, "block_reason": "no"},
    )
    engine = GatewayEngine.build([lab, reason])
    assert engine.decide(request()).untrusted_cert is UntrustedCertAction.PASS_THROUGH
    blocked = engine.decide(request("https://b.example/"))
    assert blocked.settings.block_reason == "no" and blocked.untrusted_cert is UntrustedCertAction.BLOCK
    assert engine.decide(request("https://c.example/")).untrusted_cert is UntrustedCertAction.BLOCK


# --- explain ----------------------------------------------------------------------------------------


def test_explain_names_rules_parts_and_clauses() -> None:
    engine = GatewayEngine.build(
        [
            rule("gambling", 10, traffic='any(http.request.domains[*] in {"casino.example"})'),
            rule(
                "uploads",
                20,
                traffic='http.request.method == "POST"',
                device_posture=f'not(any(device_posture.checks.passed[*] == "{POSTURE}"))',
            ),
            rule("exe", 30, traffic='http.request.uri.path matches "[.]exe$"'),
        ]
    )
    decision = engine.explain(request("https://files.example.net/a.exe", method="POST", passed=(POSTURE,)))
    assert decision.action is Action.BLOCK and decision.rule is not None and decision.rule.name == "exe"
    text = decision.render()
    assert (
        "[10] 'gambling' (block): skipped, applies only to *.casino.example or casino.example, not files.example.net"
        in text
    )
    assert "[20] 'uploads' (block): no match" in text
    assert '    traffic holds: http.request.method == "POST" is true (http.request.method = "POST")' in text
    assert "    device_posture does not hold:" in text
    assert "[30] 'exe' (block): MATCH" in text
    assert text.endswith("decision: block by rule 'exe' (precedence 30)")
    assert [t.matched for t in decision.trace] == [None, False, True]


def test_explain_connection() -> None:
    engine = GatewayEngine.build([rule("bank", 10, action="off", traffic='net.sni.host == "bank.example"')])
    decision = engine.explain_connection(ConnectionFacts("bank.example", ipaddress.ip_address("10.0.0.1")))
    assert decision.passes_through and len(decision.trace) == 1 and decision.trace[0].matched
    assert "decision: do not inspect by rule 'bank' (precedence 10)" in decision.render()


def test_explain_rule_without_conditions() -> None:
    decision = GatewayEngine.build([rule("everything", 1)]).explain(request())
    assert "no conditions: matches everything" in decision.render()


# --- the index --------------------------------------------------------------------------------------


def test_a_request_evaluates_only_its_candidates() -> None:
    rules = [rule(f"host {i}", i, traffic=f'http.request.host == "h{i}.example"') for i in range(1, 300)]
    rules += [
        rule(f"domain {i}", 1000 + i, traffic=f'any(http.request.domains[*] == "d{i}.example")')
        for i in range(300)
    ]
    rules += [rule("regex", 5000, traffic='http.request.uri.path matches "^/admin"')]
    engine = GatewayEngine.build(rules)
    names = [r.name for r in engine.candidates("www.d7.example")]
    assert names == ["domain 7", "regex"]
    assert [r.name for r in engine.candidates("h5.example")] == ["host 5", "regex"]
    assert [r.name for r in engine.candidates("x.example", "h9.example")] == ["host 9", "regex"]


def test_index_follows_sni_and_connection_domains() -> None:
    engine = GatewayEngine.build(
        [
            rule("sni", 1, traffic='net.sni.host == "front.example"'),
            rule("conn", 2, traffic='any(http.conn.domains[*] == "cdn.example")'),
        ]
    )
    fronted = request("https://hidden.example/", sni="front.example")
    assert engine.decide(fronted).rule is not None and engine.decide(fronted).rule.name == "sni"  # type: ignore[union-attr]
    via_cdn = request("https://hidden.example/", sni="edge.cdn.example")
    assert engine.decide(via_cdn).rule.name == "conn"  # type: ignore[union-attr]
    plain = request("http://edge.cdn.example/")  # no TLS: conn domains are the host's
    assert engine.decide(plain).rule.name == "conn"  # type: ignore[union-attr]


HOSTS = [
    "a.example",
    "www.a.example",
    "b.example",
    "x.b.example",
    "c.example.org",
    "A.example",
    "bank.example",
    "10.0.0.1",
]
DOMAINS = ["a.example", "b.example", "example", "example.org", "bank.example"]
CLAUSES = st.one_of(
    st.sampled_from(HOSTS).map(lambda h: f'http.request.host == "{h}"'),
    st.lists(st.sampled_from(HOSTS), min_size=1, max_size=3).map(
        lambda hs: "http.request.host in {" + " ".join(f'"{h}"' for h in hs) + "}"
    ),
    st.sampled_from(DOMAINS).map(lambda d: f'any(http.request.domains[*] == "{d}")'),
    st.sampled_from(DOMAINS).map(lambda d: f'any(http.conn.domains[*] in {{"{d}"}})'),
    st.sampled_from(HOSTS).map(lambda h: f'net.sni.host == "{h}"'),
    st.sampled_from(["GET", "POST"]).map(lambda m: f'http.request.method == "{m}"'),
    st.sampled_from(["^/admin", "[.]exe$", "login"]).map(lambda r: f'http.request.uri.path matches "{r}"'),
    st.sampled_from(HOSTS).map(lambda h: f'lower(http.request.host) == "{h.lower()}"'),
    st.sampled_from(HOSTS).map(lambda h: f'http.request.host != "{h}"'),
)


@st.composite
def expressions(draw: st.DrawFn, depth: int = 0) -> str:
    if depth >= 2 or draw(st.booleans()):
        return draw(CLAUSES)
    op = draw(st.sampled_from(["and", "or", "not"]))
    if op == "not":
        return f"not({draw(expressions(depth + 1))})"
    return f"({draw(expressions(depth + 1))} {op} {draw(expressions(depth + 1))})"


@st.composite
def rule_sets(draw: st.DrawFn) -> list[GatewayRule]:
    count = draw(st.integers(min_value=0, max_value=12))
    precedences = draw(st.lists(st.integers(1, 1000), min_size=count, max_size=count, unique=True))
    rules = []
    for index, precedence in enumerate(precedences):
        action = draw(st.sampled_from(["allow", "block", "redirect"]))
        traffic = draw(st.one_of(st.just(""), expressions()))
        posture = draw(st.sampled_from(["", f'any(device_posture.checks.passed[*] == "{POSTURE}")']))
        rules.append(rule(f"r{index}", precedence, action, traffic=traffic, device_posture=posture))
    return rules


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rules=rule_sets(),
    host=st.sampled_from(HOSTS),
    sni=st.sampled_from([None, "same", *HOSTS]),
    path=st.sampled_from(["/", "/admin/x", "/setup.exe", "/login"]),
    method=st.sampled_from(["GET", "POST"]),
    managed=st.booleans(),
)
def test_index_gives_the_same_decisions(
    rules: list[GatewayRule], host: str, sni: str | None, path: str, method: str, managed: bool
) -> None:
    facts = request(
        f"https://{host}{path}",
        method=method,
        passed=(POSTURE,) if managed else (),
        sni=host.lower() if sni == "same" else sni,
    )
    indexed = GatewayEngine.build(rules)
    linear = GatewayEngine.build(rules, indexed=False)
    decided = indexed.decide(facts)
    assert (decided.action, decided.rule) == (
        linear.decide(facts).action,
        linear.decide(facts).rule,
    )
    explained = indexed.explain(facts)
    assert (explained.action, explained.rule) == (decided.action, decided.rule)


def test_the_index_reads_the_sni_in_lower_case_as_the_rules_do() -> None:
    """Found by the property test above: a ClientHello's 'A.example' missed the index's
    'a.example' entry while the rule itself (which reads the SNI lowercased) matched it."""
    rules = [
        rule("any", 2, "allow"),
        rule("sni", 1, "block", traffic='net.sni.host == "a.example"'),
    ]
    facts = request("https://www.a.example/", sni="A.example")
    for engine in (GatewayEngine.build(rules), GatewayEngine.build(rules, indexed=False)):
        decided = engine.decide(facts)
        assert (decided.action, decided.rule and decided.rule.name) == (Action.BLOCK, "sni")
