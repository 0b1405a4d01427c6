"""Access applications and policies: shapes, validation, the include/require/exclude truth table,
Cloudflare's order of execution and deny by default."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from policies.access import (
    AccessApplication,
    AccessEngine,
    AccessPolicy,
    AccessRule,
    PolicyDecision,
    PolicyRef,
    RuleKind,
)
from policies.facts import Identity, PostureNote, PostureState, RequestFacts
from policies.rules import ConflictError, FieldError

POSTURE = "6f1c2a3b-4d5e-4f60-8a71-92b3c4d5e6f7"


def facts(
    url: str = "https://intranet.example.com/",
    *,
    email: str = "",
    src_ip: str = "10.0.0.1",
    passed: tuple[str, ...] = (),
    cn: str | None = None,
) -> RequestFacts:
    identity = Identity.of(email=email, passed=passed, verified_certificate_cn=cn)
    return RequestFacts.from_url(url, src_ip=src_ip, identity=identity)


def policy(decision: str = "allow", **lists: list[dict[str, Any]]) -> AccessPolicy:
    body: dict[str, Any] = {
        "id": f"p-{decision}",
        "name": f"{decision} policy",
        "decision": decision,
    }
    body["include"] = lists.get("include", [{"everyone": {}}])
    body.update({k: v for k, v in lists.items() if k != "include"})
    return AccessPolicy.from_api(body, where="policy")


def app(domain: str, *policy_ids: str | dict[str, Any]) -> AccessApplication:
    return AccessApplication.from_api(
        {"name": domain, "domain": domain, "policies": list(policy_ids)}, where="app"
    )


# --- rule objects ---------------------------------------------------------------------------------

RULES: list[tuple[dict[str, Any], dict[str, Any], bool]] = [
    ({"everyone": {}}, {}, True),
    ({"email": {"email": "Ana@Example.com"}}, {"email": "ana@example.COM"}, True),
    ({"email": {"email": "ana@example.com"}}, {"email": "bo@example.com"}, False),
    ({"email": {"email": "ana@example.com"}}, {}, False),
    ({"email_domain": {"domain": "Example.com"}}, {"email": "ana@EXAMPLE.com"}, True),
    ({"email_domain": {"domain": "example.com"}}, {"email": "ana@sub.example.com"}, False),
    ({"email_domain": {"domain": "example.com"}}, {"email": "ana@badexample.com"}, False),
    ({"email_domain": {"domain": "example.com"}}, {}, False),
    ({"ip": {"ip": "10.0.0.0/8"}}, {"src_ip": "10.9.8.7"}, True),
    ({"ip": {"ip": "10.0.0.0/8"}}, {"src_ip": "11.0.0.1"}, False),
    ({"ip": {"ip": "10.0.0.5"}}, {"src_ip": "10.0.0.5"}, True),
    ({"ip": {"ip": "2001:db8::/32"}}, {"src_ip": "2001:db8::1"}, True),
    (
        {"ip": {"ip": "::ffff:10.0.0.0/104"}},
        {"src_ip": "10.0.0.1"},
        False,
    ),  # IPv4 and IPv6 never compare equal
    ({"device_posture": {"integration_uid": POSTURE}}, {"passed": (POSTURE,)}, True),
    ({"device_posture": {"integration_uid": POSTURE}}, {}, False),
    ({"certificate": {}}, {"cn": "laptop-1"}, True),
    ({"certificate": {}}, {"cn": ""}, True),
    ({"certificate": {}}, {}, False),
    ({"common_name": {"common_name": "Laptop-1"}}, {"cn": "laptop-1"}, True),
    ({"common_name": {"common_name": "laptop-1"}}, {"cn": "laptop-2"}, False),
    ({"common_name": {"common_name": "laptop-1"}}, {}, False),
]


@pytest.mark.parametrize(("wire", "who", "holds"), RULES)
def test_rule_holds(wire: dict[str, Any], who: dict[str, Any], holds: bool) -> None:
    rule = AccessRule.from_api(wire, where="policy", path=("include", 0))
    assert rule.holds(facts(**who)) is holds
    assert rule.to_api() == {k: ({kk: vv.strip() for kk, vv in v.items()}) for k, v in wire.items()}


BAD_RULES: list[tuple[object, str]] = [
    ("everyone", r"include\[0\]: must be one rule object"),
    ({"everyone": {}, "email": {"email": "a@b.c"}}, r"must be one rule object"),
    ({"geo": {"country_code": "US"}}, r"include\[0\]: unknown or unsupported Access rule 'geo'"),
    ({"email": {}}, r"include\[0\]\.email\.email: required"),
    ({"email": {"email": "not-an-email"}}, r"must be an email address"),
    (
        {"email": {"address": "a@b.c"}},
        r"include\[0\]\.email: unknown key 'address' \(email takes only 'email'\)",
    ),
    ({"email": {"emial": "a@b.c"}}, r"unknown key 'emial' \(email takes only 'email'\)"),
    (
        {"everyone": {"all": True}},
        r"include\[0\]\.everyone: unknown key 'all' \(everyone takes nothing: write \{\}\)",
    ),
    ({"email_domain": {"domain": "@example.com"}}, r"must be a domain such as corp.example"),
    ({"ip": {"ip": "10.0.0.1/8"}}, r"has host bits set \(did you mean 10.0.0.0/8\?\)"),
    ({"ip": {"ip": "ten"}}, r"is not an IP address or CIDR"),
    ({"device_posture": {"integration_uid": ""}}, r"integration_uid: must not be empty"),
    ({"common_name": {"common_name": 5}}, r"common_name: must be a string, got 5"),
    ({"certificate": []}, r"include\[0\]\.certificate: must be a mapping"),
]


@pytest.mark.parametrize(("wire", "message"), BAD_RULES)
def test_rule_refused(wire: object, message: str) -> None:
    with pytest.raises(FieldError, match=message):
        AccessRule.from_api(wire, where="policy", path=("include", 0))


# --- the truth table --------------------------------------------------------------------------------

YES = {"everyone": {}}
NO = {"email": {"email": "nobody@example.com"}}


@pytest.mark.parametrize(
    ("include", "require", "exclude"),
    list(itertools.product([(), (True,), (False,), (False, True), (False, False)], repeat=3))[:],
)
def test_policy_matches_when_any_include_all_require_no_exclude(
    include: tuple[bool, ...], require: tuple[bool, ...], exclude: tuple[bool, ...]
) -> None:
    if not include:
        return  # include is required (checked below)
    wire = {
        "id": "p",
        "name": "p",
        "decision": "allow",
        "include": [YES if b else NO for b in include],
        "require": [YES if b else NO for b in require],
        "exclude": [YES if b else NO for b in exclude],
    }
    expected = any(include) and all(require) and not any(exclude)
    assert AccessPolicy.from_api(wire, where="p").matches(facts()) is expected
    matched, lines = AccessPolicy.from_api(wire, where="p").explain(facts())
    assert matched is expected
    assert lines[0].startswith("include (any of")


# --- policies ------------------------------------------------------------------------------------------


def test_policy_round_trips() -> None:
    wire = {
        "id": "5a0e8c1f",
        "name": "Employees",
        "decision": "allow",
        "include": [{"email_domain": {"domain": "example.com"}}],
        "require": [{"device_posture": {"integration_uid": POSTURE}}, {"certificate": {}}],
        "exclude": [{"email": {"email": "former@example.com"}}],
        "session_duration": "2h45m",
        "created_at": "2025-01-31T12:00:00Z",
        "updated_at": "2025-02-01T08:30:00.250000Z",
    }
    parsed = AccessPolicy.from_api(wire, where="policy")
    assert parsed.to_api() == wire
    assert AccessPolicy.from_api(parsed.to_api(), where="policy") == parsed


def test_policy_accepts_cloudflare_response_fields() -> None:
    wire = {
        "id": "p",
        "name": "p",
        "decision": "deny",
        "include": [{"everyone": {}}],
        "reusable": True,
        "app_count": 2,
        "account_id": "a" * 32,
        "approval_required": False,
        "isolation_required": False,
        "mfa_config": None,
    }
    assert AccessPolicy.from_api(wire, where="policy").decision is PolicyDecision.DENY


BAD_POLICIES: list[tuple[dict[str, Any], str]] = [
    ({"decision": "allow", "include": [YES]}, r"policy: name: required"),
    ({"name": "p", "include": [YES]}, r"policy 'p': decision: required"),
    (
        {"name": "p", "decision": "permit", "include": [YES]},
        r"decision: unknown decision 'permit' \(one of: allow, deny, bypass, non_identity\)",
    ),
    ({"name": "p", "decision": "allow"}, r"include: required"),
    ({"name": "p", "decision": "allow", "include": []}, r"include: needs at least one rule"),
    ({"name": "p", "decision": "allow", "include": YES}, r"include: must be a list"),
    (
        {"name": "p", "decision": "allow", "include": [YES], "require": [{"nope": {}}]},
        r"require\[0\]: unknown or unsupported",
    ),
    (
        {"name": "p", "decision": "allow", "include": [YES], "session_duration": "1 day"},
        r"session_duration: must be a duration such as 24h",
    ),
    (
        {"name": "p", "decision": "allow", "include": [YES], "approval_required": True},
        r"'approval_required' is not supported by this gateway",
    ),
    (
        {"name": "p", "decision": "allow", "include": [YES], "incldue": []},
        r"unknown key 'incldue' \(did you mean include\?\)",
    ),
    (
        {"name": "p", "decision": "bypass", "include": [{"email": {"email": "a@b.c"}}]},
        r"include\[0\]: decision 'bypass' is decided without a login.*not 'email'",
    ),
    (
        {
            "name": "p",
            "decision": "non_identity",
            "include": [YES],
            "exclude": [{"email_domain": {"domain": "b.c"}}],
        },
        r"exclude\[0\]: decision 'non_identity'",
    ),
    ({"name": "", "decision": "allow", "include": [YES]}, r"name: must not be empty"),
]


@pytest.mark.parametrize(("wire", "message"), BAD_POLICIES)
def test_policy_refused(wire: dict[str, Any], message: str) -> None:
    with pytest.raises(FieldError, match=message):
        AccessPolicy.from_api(wire, where="policy")


def test_device_posture_rule_accepts_cloudflares_account_id() -> None:
    wire = {"device_posture": {"integration_uid": POSTURE, "account_id": "a" * 32}}
    rule = AccessRule.from_api(wire, where="policy", path=("include", 0))
    assert rule.value == POSTURE and rule.to_api() == {"device_posture": {"integration_uid": POSTURE}}


def test_policy_not_a_mapping() -> None:
    with pytest.raises(FieldError, match=r"policy: must be a mapping of keys to values, got a list"):
        AccessPolicy.from_api([], where="policy")


# --- applications -----------------------------------------------------------------------------------


def test_application_round_trips() -> None:
    wire = {
        "id": "7d3b",
        "type": "self_hosted",
        "name": "Intranet",
        "domain": "intranet.example.com",
        "policies": ["p1", {"id": "p2", "precedence": 3}],
        "session_duration": "24h",
    }
    parsed = AccessApplication.from_api(wire, where="app")
    assert parsed.policies == (PolicyRef("p1"), PolicyRef("p2", 3))
    assert parsed.to_api() == wire
    assert AccessApplication.from_api(parsed.to_api(), where="app") == parsed


def test_application_reads_a_cloudflare_response() -> None:
    wire = {
        "id": "7d3b",
        "aud": "abc",
        "type": "self_hosted",
        "name": "Intranet",
        "domain": "Intranet.Example.com",
        "app_launcher_visible": True,
        "same_site_cookie_attribute": "lax",
        "allowed_idps": [],
        "self_hosted_domains": ["intranet.example.com"],
        "destinations": [{"type": "public", "uri": "intranet.example.com"}],
        "policies": [{"id": "p1", "precedence": 1, "name": "expanded", "decision": "allow"}],
    }
    parsed = AccessApplication.from_api(wire, where="app")
    assert parsed.domain == "intranet.example.com"
    assert parsed.policies == (PolicyRef("p1", 1),)


BAD_APPS: list[tuple[dict[str, Any], str]] = [
    ({"name": "a"}, r"app 'a': domain: required"),
    (
        {"name": "a", "domain": "https://a.example.com"},
        r"domain: is a host name such as intranet.example.com, without a scheme",
    ),
    (
        {"name": "a", "domain": "a.example.com/admin"},
        r"domain: paths are not supported: protect the whole host \('a.example.com'\)",
    ),
    ({"name": "a", "domain": "a.example.com:8443"}, r"domain: ports are not supported"),
    ({"name": "a", "domain": "a..example.com"}, r"domain: must be a host such as"),
    ({"name": "a", "domain": "*.com"}, r"domain: must be a host such as"),
    ({"name": "a", "domain": "a.*.example.com"}, r"domain: must be a host such as"),
    (
        {"name": "a", "domain": "a.example.com", "type": "saas"},
        r"type: only 'self_hosted' applications are supported, got 'saas'",
    ),
    ({"name": "a", "domain": "a.example.com", "policies": "p1"}, r"policies: must be a list"),
    (
        {"name": "a", "domain": "a.example.com", "policies": [{"precedence": 1}]},
        r"inline policies are not supported",
    ),
    (
        {"name": "a", "domain": "a.example.com", "policies": [{"id": "p", "precedence": "1"}]},
        r"policies\[0\]\.precedence: must be an integer",
    ),
    (
        {
            "name": "a",
            "domain": "a.example.com",
            "policies": [{"name": "x", "decision": "allow", "include": []}],
        },
        r"inline policies are not supported",
    ),
    (
        {"name": "a", "domain": "a.example.com", "self_hosted_domains": ["b.example.com"]},
        r"self_hosted_domains\[0\]: only the one domain 'a.example.com'",
    ),
    (
        {"name": "a", "domain": "a.example.com", "cors_headers": {}, "launcher": 1},
        r"unknown key 'launcher'",
    ),
]


@pytest.mark.parametrize(("wire", "message"), BAD_APPS)
def test_application_refused(wire: dict[str, Any], message: str) -> None:
    with pytest.raises(FieldError, match=message):
        AccessApplication.from_api(wire, where="app")


# --- the engine -------------------------------------------------------------------------------------


def test_no_application_no_decision() -> None:
    engine = AccessEngine.build([app("intranet.example.com", "p-allow")], [policy("allow")])
    assert engine.decide(facts("https://www.example.com/")) is None
    assert engine.explain(facts("https://www.example.com/")) is None


def test_application_without_matching_policy_denies() -> None:
    engine = AccessEngine.build(
        [app("intranet.example.com", "p-allow")],
        [policy("allow", include=[{"email_domain": {"domain": "example.com"}}])],
    )
    decision = engine.decide(facts(email="x@other.example"))
    assert decision is not None and not decision.allowed and decision.policy is None
    assert "Access denies by default" in decision.render()
    assert engine.decide(facts(email="x@example.com")).allowed  # type: ignore[union-attr]


def test_application_without_policies_denies() -> None:
    decision = AccessEngine.build([app("intranet.example.com")], []).explain(facts())
    assert decision is not None and not decision.allowed
    assert "it has no policies" in "\n".join(decision.trace)


@pytest.mark.parametrize(
    ("decision", "allowed"),
    [("allow", True), ("bypass", True), ("non_identity", True), ("deny", False)],
)
def test_first_matching_policy_decides(decision: str, allowed: bool) -> None:
    engine = AccessEngine.build([app("intranet.example.com", f"p-{decision}")], [policy(decision)])
    result = engine.decide(facts())
    assert result is not None and result.allowed is allowed and result.policy is not None
    assert result.policy.decision.value == decision


def test_order_of_execution_is_cloudflares() -> None:
    """Bypass and non_identity first (each in order), then allow/deny in order: here
    deny (listed first) beats allow, and bypass (listed last) beats both."""
    deny = AccessPolicy.from_api({"id": "d", "name": "d", "decision": "deny", "include": [YES]}, where="p")
    allow = AccessPolicy.from_api({"id": "a", "name": "a", "decision": "allow", "include": [YES]}, where="p")
    bypass = AccessPolicy.from_api(
        {"id": "b", "name": "b", "decision": "bypass", "include": [{"ip": {"ip": "10.20.0.0/16"}}]},
        where="p",
    )
    engine = AccessEngine.build([app("intranet.example.com", "d", "a", "b")], [deny, allow, bypass])
    assert engine.decide(facts(src_ip="10.20.1.1")).policy == bypass  # type: ignore[union-attr]
    assert engine.decide(facts(src_ip="10.30.1.1")).policy == deny  # type: ignore[union-attr]
    explained = engine.explain(facts(src_ip="10.30.1.1"))
    assert explained is not None
    text = "\n".join(explained.trace)
    assert text.index("'b' (bypass") < text.index("'d' (deny") and "'a' (allow" not in text


def test_precedence_orders_policies() -> None:
    deny = AccessPolicy.from_api({"id": "d", "name": "d", "decision": "deny", "include": [YES]}, where="p")
    allow = AccessPolicy.from_api({"id": "a", "name": "a", "decision": "allow", "include": [YES]}, where="p")
    engine = AccessEngine.build(
        [app("intranet.example.com", {"id": "d", "precedence": 2}, {"id": "a", "precedence": 1})],
        [deny, allow],
    )
    assert engine.decide(facts()).allowed  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("intranet.example.com", "exact"),
        ("INTRANET.example.com", "exact"),
        ("a.apps.example.com", "apps"),
        ("b.a.apps.example.com", "apps"),
        ("x.deep.apps.example.com", "deep"),
        ("apps.example.com", None),
        ("example.com", None),
        ("intranet.example.com.evil.example", None),
    ],
)
def test_application_for_host(host: str, expected: str | None) -> None:
    engine = AccessEngine.build(
        [
            AccessApplication(name="exact", domain="intranet.example.com"),
            AccessApplication(name="apps", domain="*.apps.example.com"),
            AccessApplication(name="deep", domain="*.deep.apps.example.com"),
        ],
        [],
    )
    found = engine.covers(host)
    assert (found.name if found else None) == expected


def test_build_refuses_conflicts() -> None:
    with pytest.raises(
        ConflictError,
        match=r"refers to policy id 'missing', which does not exist \(known: p-allow\)",
    ):
        AccessEngine.build([app("a.example.com", "missing")], [policy("allow")])
    with pytest.raises(
        ConflictError,
        match=r"'a.example.com' \(a.example.com\) and 'again' \(a.example.com\) protect the same domain",
    ):
        AccessEngine.build(
            [app("a.example.com"), AccessApplication(name="again", domain="a.example.com")], []
        )
    with pytest.raises(ConflictError, match=r"share the id 'p-allow'"):
        AccessEngine.build([], [policy("allow"), policy("allow")])
    nameless = AccessPolicy(
        id="", name="n", decision=PolicyDecision.ALLOW, include=(AccessRule(RuleKind.EVERYONE),)
    )
    with pytest.raises(ConflictError, match=r"has no id"):
        AccessEngine.build([], [nameless])


def test_explain_names_the_deciding_clause() -> None:
    employees = AccessPolicy.from_api(
        {
            "id": "e",
            "name": "employees",
            "decision": "allow",
            "include": [{"email_domain": {"domain": "example.com"}}],
            "require": [{"device_posture": {"integration_uid": POSTURE}}],
            "exclude": [{"email": {"email": "former@example.com"}}],
        },
        where="p",
    )
    engine = AccessEngine.build([app("intranet.example.com", "e")], [employees])
    unmanaged = engine.explain(facts(email="ana@example.com"))
    assert unmanaged is not None and not unmanaged.allowed
    assert f"require (all of 1): no, device_posture {POSTURE} does not hold" in "\n".join(unmanaged.trace)
    former = engine.explain(facts(email="former@example.com", passed=(POSTURE,)))
    assert former is not None and "excluded, email former@example.com holds" in "\n".join(former.trace)
    good = engine.explain(facts(email="ana@example.com", passed=(POSTURE,)))
    assert good is not None and good.allowed
    assert (
        good.trace[-1]
        == "Access application 'intranet.example.com' (intranet.example.com): allowed by policy 'employees' (allow, id e)"
    )


# --- why a request is denied ----------------------------------------------------------------------

OTHER = "0a1b2c3d-0000-4000-8000-000000000002"
NOTES = (
    PostureNote(POSTURE, "Client certificate", PostureState.FAILED, "no certificate matched"),
    PostureNote(
        OTHER, "Disk encryption", PostureState.EXPIRED, "its last pass expired at 2026-01-01T00:00:00Z"
    ),
)
NEEDS_POSTURE = {"include": [{"device_posture": {"integration_uid": POSTURE}}]}


@pytest.mark.parametrize(
    ("lists", "decision", "identity", "why"),
    [
        (NEEDS_POSTURE, "allow", Identity.of(), "no device identified"),
        (
            NEEDS_POSTURE,
            "allow",
            Identity.of(device_id="d1", failed=[POSTURE], notes=NOTES),
            "posture check 'Client certificate' failed: no certificate matched",
        ),
        (
            {"include": [{"device_posture": {"integration_uid": OTHER}}]},
            "allow",
            Identity.of(device_id="d1", failed=[OTHER], notes=NOTES),
            "posture check 'Disk encryption' expired: its last pass expired at 2026-01-01T00:00:00Z",
        ),
        (
            {"include": [{"everyone": {}}], "require": [{"device_posture": {"integration_uid": POSTURE}}]},
            "allow",
            Identity.of(device_id="d1"),
            f"posture check '{POSTURE}': no result from this device",
        ),
        (
            {"include": [{"email_domain": {"domain": "example.com"}}]},
            "allow",
            Identity.of(email="x@other.example"),
            "no policy matched (policy 'allow policy' needs email_domain example.com)",
        ),
        (
            {"include": [{"common_name": {"common_name": "laptop.example.com"}}]},
            "allow",
            Identity.of(device_id="d1", failed=[POSTURE], notes=NOTES),
            "policy 'allow policy' needs common_name laptop.example.com: the device has no verified "
            "client certificate (posture check 'Client certificate' failed: no certificate matched)",
        ),
        (
            {"include": [{"certificate": {}}]},
            "allow",
            Identity.of(device_id="d1"),
            "policy 'allow policy' needs certificate: the device has no verified client certificate",
        ),
        ({"include": [{"everyone": {}}]}, "deny", Identity.of(), "policy 'deny policy' (deny) matched"),
        ({"include": [{"everyone": {}}]}, "allow", Identity.of(), ""),
    ],
)
def test_why_denied_names_what_failed(
    lists: dict[str, Any], decision: str, identity: Identity, why: str
) -> None:
    engine = AccessEngine.build([app("intranet.example.com", f"p-{decision}")], [policy(decision, **lists)])
    request = RequestFacts.from_url("https://intranet.example.com/", identity=identity)
    assert engine.why_denied(request) == why
    verdict = engine.decide(request)
    assert verdict is not None and verdict.allowed == (not why)
    assert verdict.posture == tuple(
        r["device_posture"]["integration_uid"]
        for r in lists["include"] + lists.get("require", [])
        if "device_posture" in r
    )


def test_why_denied_without_policies_or_application() -> None:
    assert AccessEngine.build([app("intranet.example.com")], []).why_denied(facts()) == (
        "no policy matched: the application has no policies"
    )
    assert AccessEngine.build([], []).why_denied(facts()) == ""
