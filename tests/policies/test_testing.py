"""Policy tests: the case shape, the proxy's flow (ClientHello → HTTP rules → Access), results."""

from __future__ import annotations

from typing import Any

import pytest

from policies.access import AccessEngine
from policies.engine import GatewayEngine
from policies.facts import RequestFacts
from policies.rules import Action, FieldError
from policies.testing import AccessVerdict, PolicyTest, evaluate, run_test, run_tests
from policies.yaml_io import load

POSTURE = "6f1c2a3b-4d5e-4f60-8a71-92b3c4d5e6f7"

POLICIES = f"""\
gateway_rules:
  - {{name: bank, precedence: 1, action: "off", traffic: 'any(http.conn.domains[*] == "bank.example")'}}
  - {{name: gambling, precedence: 10, action: block, traffic: 'http.request.host == "casino.example"',
     rule_settings: {{block_page_enabled: true, block_reason: no gambling}}}}
  - name: intranet uploads
    precedence: 20
    action: block
    traffic: 'http.request.host == "intranet.example.com" and http.request.method == "POST"'
    device_posture: 'not(any(device_posture.checks.passed[*] == "{POSTURE}"))'
access_policies:
  - id: employees
    name: employees
    decision: allow
    include: [{{email_domain: {{domain: example.com}}}}]
    require: [{{certificate: {{}}}}]
access_applications:
  - {{name: intranet, domain: intranet.example.com, policies: [employees]}}
"""


@pytest.fixture(scope="module")
def engines() -> tuple[GatewayEngine, AccessEngine]:
    policy_set = load(POLICIES)
    return policy_set.gateway_engine(), policy_set.access_engine()


def case(**fields: Any) -> PolicyTest:
    body: dict[str, Any] = {
        "name": "case",
        "request": {"url": "https://www.example.com/"},
        "expect": {"action": "allow"},
    }
    body.update(fields)
    return PolicyTest.from_api(body, where="tests[0]")


# --- the shape ------------------------------------------------------------------------------------


def test_case_round_trips() -> None:
    body = {
        "name": "uploads need posture",
        "request": {
            "method": "POST",
            "url": "https://intranet.example.com/up",
            "src_ip": "10.1.2.3",
            "dst_ip": "192.0.2.1",
        },
        "identity": {"email": "ana@example.com", "groups": ["eng"], "certificate_cn": "ana-laptop"},
        "posture": {"passed": [POSTURE], "failed": []},
        "expect": {"action": "block", "rule": "intranet uploads", "access": "deny"},
    }
    test = PolicyTest.from_api(body, where="tests[0]")
    assert test.to_api() == body
    assert PolicyTest.from_api(test.to_api(), where="t") == test
    facts = test.facts()
    assert facts.method == "POST" and facts.identity.verified_certificate_cn == "ana-laptop"
    assert facts.identity.posture_passed == (POSTURE,)


def test_minimal_case_defaults() -> None:
    test = case()
    assert test.request.method == "GET" and test.request.src_ip == "127.0.0.1"
    assert test.expect.rule is None and test.expect.access is None and test.certificate_cn is None
    assert test.to_api() == {
        "name": "case",
        "request": {"method": "GET", "url": "https://www.example.com/"},
        "expect": {"action": "allow"},
    }


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": ""}, r"tests\[0\]: name: must not be empty"),
        ({"request": None}, r"'case': request: required"),
        (
            {"request": {"url": "www.example.com"}},
            r"request\.url: URL must start with http:// or https://, got 'www.example.com'",
        ),
        ({"request": {"url": "https:///path"}}, r"request\.url: URL has no host"),
        (
            {"request": {"url": "https://a.example:99999/"}},
            r"request\.url: URL has an invalid port",
        ),
        (
            {"request": {"url": "https://a.example/", "src_ip": "10.0.0"}},
            r"request\.src_ip: must be an IP address such as 10.0.0.1, got '10.0.0'",
        ),
        ({"request": {"url": "https://a.example/", "verb": "GET"}}, r"request: unknown key 'verb'"),
        (
            {"identity": {"email": "a@b.c", "groups": "eng"}},
            r"identity\.groups: must be a list, got 'eng'",
        ),
        ({"identity": {"mail": "a@b.c"}}, r"identity: unknown key 'mail'"),
        ({"posture": {"passed": [1]}}, r"posture\.passed\[0\]: must be a string, got 1"),
        (
            {"expect": {"action": "on"}},
            r"expect\.action: 'on' is not supported here \(one of: allow, block, off, redirect\)",
        ),
        ({"expect": {"action": "deny"}}, r"expect\.action: unknown action 'deny'"),
        (
            {"expect": {"action": "allow", "access": "block"}},
            r"expect\.access: unknown access 'block' \(one of: allow, deny\)",
        ),
        ({"expect": {"action": "allow", "rule": ""}}, r"expect\.rule: must not be empty"),
        ({"expect": {}}, r"expect\.action: required"),
        ({"expected": {"action": "allow"}}, r"unknown key 'expected' \(did you mean expect\?\)"),
    ],
)
def test_case_refused(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(FieldError, match=message):
        case(**fields)


# --- the flow -------------------------------------------------------------------------------------


def test_do_not_inspect_decides_at_the_client_hello(
    engines: tuple[GatewayEngine, AccessEngine],
) -> None:
    outcome = evaluate(*engines, RequestFacts.from_url("https://www.bank.example/"))
    assert outcome.action is Action.OFF and outcome.request is None and not outcome.access_reached
    assert outcome.summary() == "do not inspect by rule 'bank' (precedence 1)"


def test_plain_http_has_no_client_hello(engines: tuple[GatewayEngine, AccessEngine]) -> None:
    outcome = evaluate(*engines, RequestFacts.from_url("http://www.bank.example/"))
    assert outcome.connection is None
    assert (
        outcome.action is Action.ALLOW
        and outcome.decision.rule is not None
        and outcome.decision.rule.name == "bank"
    )


def test_blocked_requests_never_reach_access(engines: tuple[GatewayEngine, AccessEngine]) -> None:
    result = run_test(
        case(
            request={"method": "POST", "url": "https://intranet.example.com/"},
            expect={"action": "block", "access": "deny"},
        ),
        *engines,
    )
    assert not result.passed
    assert result.problems == ("expected Access deny, but the request never reached Access",)
    assert "Access: not reached (Gateway decided block)" in result.render()


def test_allowed_requests_go_on_to_access(engines: tuple[GatewayEngine, AccessEngine]) -> None:
    employee = case(
        request={"url": "https://intranet.example.com/"},
        identity={"email": "ana@example.com", "certificate_cn": "ana-laptop"},
        expect={"action": "allow", "access": "allow"},
    )
    result = run_test(employee, *engines)
    assert result.passed, result.render()
    assert result.outcome.access is not None and result.outcome.access.allowed
    assert "Access allow by 'employees' (allow, id employees)" in result.outcome.summary()
    without_certificate = run_test(
        case(
            request={"url": "https://intranet.example.com/"},
            identity={"email": "ana@example.com"},
            expect={"action": "allow", "access": "allow"},
        ),
        *engines,
    )
    assert without_certificate.problems == ("expected Access allow, got deny",)


def test_access_expected_where_no_application_is(
    engines: tuple[GatewayEngine, AccessEngine],
) -> None:
    result = run_test(case(expect={"action": "allow", "access": "allow"}), *engines)
    assert result.problems == ("expected Access allow, but no Access application covers www.example.com",)
    assert "Access: no application covers www.example.com" in result.render()


@pytest.mark.parametrize(
    ("url", "expect", "problems"),
    [
        ("https://casino.example/", {"action": "block", "rule": "gambling"}, ()),
        (
            "https://casino.example/",
            {"action": "block", "rule": "intranet uploads"},
            ("expected rule 'intranet uploads', got 'gambling'",),
        ),
        ("https://casino.example/", {"action": "allow"}, ("expected action allow, got block",)),
        (
            "https://www.example.com/",
            {"action": "allow", "rule": "gambling"},
            ("expected rule 'gambling', but no rule matched",),
        ),
        ("https://www.bank.example/", {"action": "off", "rule": "bank"}, ()),
    ],
)
def test_expectations(
    engines: tuple[GatewayEngine, AccessEngine],
    url: str,
    expect: dict[str, str],
    problems: tuple[str, ...],
) -> None:
    result = run_test(case(request={"url": url}, expect=expect), *engines)
    assert result.problems == problems
    assert result.passed is (not problems)


def test_failure_prints_the_trace(engines: tuple[GatewayEngine, AccessEngine]) -> None:
    result = run_test(
        case(name="wrong", request={"url": "https://casino.example/x"}, expect={"action": "allow"}),
        *engines,
    )
    lines = result.render().splitlines()
    assert lines[0] == "FAIL wrong: expected action allow, got block"
    text = "\n".join(lines)
    assert (
        "    request: GET https://casino.example/x from 127.0.0.1 (no identity; posture passed none, failed none)"
        in text
    )
    assert "    at the TLS ClientHello (SNI casino.example):" in text
    assert "[10] 'gambling' (block): MATCH" in text
    assert "    result: block by rule 'gambling' (precedence 10)" in text


def test_run_tests_keeps_order(engines: tuple[GatewayEngine, AccessEngine]) -> None:
    tests = [case(name=f"t{i}") for i in range(3)]
    results = run_tests(tests, *engines)
    assert [r.test.name for r in results] == ["t0", "t1", "t2"] and all(r.passed for r in results)
    assert results[0].render() == "PASS t0"
    assert AccessVerdict("deny") is AccessVerdict.DENY
