"""Gateway rules: the Cloudflare shape both ways, every validation message, compiled form."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from policies.errors import ExpressionError
from policies.rules import (
    Action,
    FieldError,
    GatewayRule,
    Part,
    RedirectSettings,
    RuleSettings,
    UntrustedCertAction,
)


def wire(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "block example",
        "action": "block",
        "precedence": 100,
        "traffic": 'http.request.host == "example.com"',
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not ...}


def test_minimal_rule_defaults() -> None:
    rule = GatewayRule.from_api(wire(), where="rule")
    assert rule == GatewayRule(
        name="block example",
        action=Action.BLOCK,
        precedence=100,
        traffic='http.request.host == "example.com"',
    )
    assert (
        rule.enabled
        and rule.filters == ("http",)
        and rule.identity == ""
        and rule.rule_settings == RuleSettings()
    )


def test_to_api_always_carries_the_sdk_required_fields() -> None:
    body = GatewayRule.from_api(wire(traffic=...), where="rule").to_api()
    for key in ("action", "enabled", "filters", "name", "precedence", "traffic"):
        assert key in body
    assert body["traffic"] == "" and body["identity"] == "" and body["device_posture"] == ""
    assert body["filters"] == ["http"]


def test_full_rule_round_trips() -> None:
    body = {
        "id": "c6cd09ae-0000-4000-8000-000000000001",
        "name": "uploads",
        "description": "no uploads from unmanaged devices",
        "precedence": 200,
        "enabled": False,
        "action": "block",
        "filters": ["http"],
        "traffic": 'http.request.method == "POST"',
        "identity": 'identity.email == "ana@example.com"',
        "device_posture": 'not(any(device_posture.checks.passed[*] in {"571b21d4"}))',
        "rule_settings": {"block_page_enabled": True, "block_reason": "lab"},
        "created_at": "2025-01-31T12:00:00Z",
        "updated_at": "2025-02-01T08:30:00.123456Z",
    }
    rule = GatewayRule.from_api(body, where="rule")
    assert rule.to_api() == body
    assert GatewayRule.from_api(rule.to_api(), where="rule") == rule
    assert rule.created_at == datetime(2025, 1, 31, 12, tzinfo=UTC)


def test_settings_round_trip() -> None:
    redirect = GatewayRule.from_api(
        wire(
            action="redirect",
            rule_settings={
                "redirect": {
                    "target_uri": "https://wiki.example.com",
                    "preserve_path_and_query": True,
                }
            },
        ),
        where="rule",
    )
    assert redirect.rule_settings.redirect == RedirectSettings("https://wiki.example.com", True, False)
    assert redirect.to_api()["rule_settings"] == {
        "redirect": {
            "target_uri": "https://wiki.example.com",
            "preserve_path_and_query": True,
            "include_context": False,
        }
    }
    allow = GatewayRule.from_api(
        wire(action="allow", rule_settings={"untrusted_cert": {"action": "pass_through"}}),
        where="rule",
    )
    assert allow.rule_settings.untrusted_cert is UntrustedCertAction.PASS_THROUGH
    assert allow.to_api()["rule_settings"] == {"untrusted_cert": {"action": "pass_through"}}


def test_reads_a_cloudflare_response() -> None:
    """A Cloudflare server's answer: read-only fields and empty unsupported settings read back."""
    body = wire(
        id="c6cd09ae",
        deleted_at=None,
        version=1,
        warning_status=None,
        read_only=False,
        sharable=False,
        source_account="",
        schedule=None,
        expiration=None,
        rule_settings={
            "block_page_enabled": False,
            "block_reason": "",
            "override_ips": None,
            "add_headers": {},
            "biso_admin_controls": None,
            "check_session": None,
            "l4override": None,
            "ip_categories": False,
        },
    )
    assert GatewayRule.from_api(body, where="rule").rule_settings == RuleSettings()


@pytest.mark.parametrize("action", list(Action))
def test_every_action_parses(action: Action) -> None:
    settings: dict[str, Any] = (
        {"redirect": {"target_uri": "https://a.example"}} if action is Action.REDIRECT else {}
    )
    traffic = (
        'net.sni.host == "a.example"' if action in (Action.ON, Action.OFF) else 'http.request.host == "a"'
    )
    rule = GatewayRule.from_api(
        wire(action=action.value, traffic=traffic, rule_settings=settings), where="rule"
    )
    assert rule.action is action


BAD: list[tuple[dict[str, Any], str]] = [
    (wire(name=...), r"^gateway_rules\[0\]: name: required$"),
    (wire(name="  "), r"name: must not be empty"),
    (wire(name=5), r"name: must be a string, got 5"),
    (
        {**wire(name=...), "nmae": "x"},
        r"^gateway_rules\[0\]: name: required \(is 'nmae' a typo\?\)$",
    ),
    (wire(action=...), r"'block example': action: required"),
    (
        wire(action="isolate"),
        r"action: unknown action 'isolate' \(one of: allow, block, off, on, redirect\)",
    ),
    (wire(action="Block"), r"action: unknown action 'Block'"),
    (wire(action=True), r"action: unknown action true"),
    (wire(precedence=...), r"precedence: required"),
    (wire(precedence="10"), r"precedence: must be an integer, got '10'"),
    (wire(precedence=1.5), r"precedence: must be an integer, got 1.5"),
    (wire(precedence=True), r"precedence: must be an integer, got true"),
    (wire(precedence=-1), r"precedence: must be at least 0, got -1"),
    (wire(enabled="yes"), r"enabled: must be true or false, got 'yes'"),
    (
        wire(filters=["dns"]),
        r"filters: must be \[\"http\"\]: this gateway enforces HTTP policies only, got \['dns'\]",
    ),
    (wire(filters=["http", "l4"]), r"filters: must be \[\"http\"\]"),
    (wire(filters="http"), r"filters: must be a list, got 'http'"),
    (wire(filters=[1]), r"filters\[0\]: must be a string, got 1"),
    (wire(traffic=5), r"traffic: must be a string, got 5"),
    (wire(description=[]), r"description: must be a string, got a list"),
    (
        wire(schedule={"mon": "08:00-12:00"}),
        r"'block example': 'schedule' is not supported by this gateway; remove it",
    ),
    (wire(traffc="x"), r"unknown key 'traffc' \(did you mean traffic\?\)"),
    (
        wire(created_at="yesterday"),
        r"created_at: must be an RFC 3339 time such as 2025-01-31T12:00:00Z, got 'yesterday'",
    ),
    (wire(created_at="2025-01-31T12:00:00"), r"created_at: must carry a time zone"),
    (wire(rule_settings=[]), r"rule_settings: must be a mapping of keys to values, got a list"),
    (
        wire(rule_settings={"add_headers": {"x": ["1"]}}),
        r"rule_settings: setting 'add_headers' is not supported by this gateway \(supported: block_page_enabled, block_reason, untrusted_cert, redirect\)",
    ),
    (wire(rule_settings={"block_reason": 5}), r"rule_settings\.block_reason: must be a string"),
    (
        wire(action="allow", rule_settings={"block_reason": "no"}),
        r"rule_settings\.block_reason: applies only to action 'block', not 'allow'",
    ),
    (
        wire(action="redirect"),
        r"'block example': rule_settings: action 'redirect' needs rule_settings\.redirect\.target_uri",
    ),
    (
        wire(action="redirect", rule_settings={"redirect": {}}),
        r"rule_settings\.redirect\.target_uri: required",
    ),
    (
        wire(action="redirect", rule_settings={"redirect": {"target_uri": "wiki.example.com"}}),
        r"target_uri: must be an absolute http:// or https:// URL, got 'wiki.example.com'",
    ),
    (
        wire(
            action="redirect",
            rule_settings={"redirect": {"target_uri": "https://a", "preserve": True}},
        ),
        r"rule_settings\.redirect: unknown key 'preserve' \(did you mean preserve_path_and_query\?\)",
    ),
    (
        wire(rule_settings={"redirect": {"target_uri": "https://a"}}),
        r"rule_settings\.redirect: applies only to action 'redirect', not 'block'",
    ),
    (
        wire(rule_settings={"untrusted_cert": {"action": "pass_through"}}),
        r"rule_settings\.untrusted_cert: is allowed only on action 'allow' \(this rule's action is 'block'\)",
    ),
    (
        wire(action="allow", rule_settings={"untrusted_cert": {"action": "ignore"}}),
        r"rule_settings\.untrusted_cert\.action: unknown action 'ignore' \(one of: pass_through, block, error\)",
    ),
    (
        wire(action="allow", rule_settings={"untrusted_cert": "pass_through"}),
        r"rule_settings\.untrusted_cert: must be a mapping",
    ),
]


@pytest.mark.parametrize(("body", "message"), BAD)
def test_refused_with_the_field_named(body: dict[str, Any], message: str) -> None:
    with pytest.raises(FieldError, match=message):
        GatewayRule.from_api(body, where="gateway_rules[0]")


def test_not_a_mapping() -> None:
    with pytest.raises(FieldError, match=r"^rule: must be a mapping of keys to values, got a list$"):
        GatewayRule.from_api([1], where="rule")


def test_field_error_carries_where_and_path() -> None:
    with pytest.raises(FieldError) as caught:
        GatewayRule.from_api(
            wire(action="redirect", rule_settings={"redirect": {"target_uri": 1}}), where="rule"
        )
    assert caught.value.where == "rule 'block example'"
    assert caught.value.path == ("rule_settings", "redirect", "target_uri")
    assert not caught.value.on_key


# --- expressions ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("part", "source", "message"),
    [
        (
            "traffic",
            'http.request.hots == "a"',
            r"traffic: 1:1: unknown field 'http.request.hots'.*http.request.host",
        ),
        ("traffic", 'http.request.host == "a" and', r"traffic: 1:\d+: "),
        ("identity", "identity.email == 5", r"identity: 1:\d+: "),
        ("device_posture", "any(device_posture.checks.passed[*] in {", r"device_posture: 1:\d+: "),
    ],
)
def test_broken_expression_names_rule_and_part(part: str, source: str, message: str) -> None:
    with pytest.raises(FieldError, match=message) as caught:
        GatewayRule.from_api(wire(**{part: source}), where="rule")
    error = caught.value
    assert isinstance(error.expression_error, ExpressionError)
    assert error.path == (part,) and error.where == "rule 'block example'"
    assert str(error).startswith(f"rule 'block example': {part}: ")


def test_check_expressions_false_defers_compiling() -> None:
    rule = GatewayRule.from_api(wire(traffic="nonsense =="), where="rule", check_expressions=False)
    with pytest.raises(FieldError, match=r"gateway rule 'block example': traffic: 1:"):
        rule.compile()


@pytest.mark.parametrize(
    ("part", "source", "message"),
    [
        (
            "traffic",
            'any(device_posture.checks.passed[*] == "x")',
            r"belongs in the rule's device_posture expression",
        ),
        (
            "identity",
            'http.request.host == "a"',
            r"identity: field http.request.host does not belong here: identity uses only identity.\* fields",
        ),
        (
            "device_posture",
            'identity.email == "a"',
            r"device_posture: field identity.email does not belong here",
        ),
    ],
)
def test_fields_belong_to_their_part(part: str, source: str, message: str) -> None:
    with pytest.raises(FieldError, match=message):
        GatewayRule.from_api(wire(**{part: source}), where="rule")


def test_traffic_may_read_identity_as_cloudflare_documents() -> None:
    # https://developers.cloudflare.com/cloudflare-one/traffic-policies/expression-syntax/
    # "Combine identity and traffic conditions"
    source = 'http.request.host == "internal.example.com" and identity.email matches ".*@company.com"'
    rule = GatewayRule.from_api(wire(traffic=source), where="rule")
    compiled = rule.compile()
    assert compiled.matches(
        {"http.request.host": "internal.example.com", "identity.email": "ana@company.com"}
    )
    assert not compiled.matches(
        {"http.request.host": "internal.example.com", "identity.email": "ana@else.org"}
    )


@pytest.mark.parametrize("action", ["off", "on"])
def test_inspection_rules_use_connection_fields_only(action: str) -> None:
    with pytest.raises(
        FieldError,
        match=rf"action '{action}' .* is decided at the TLS ClientHello.*http.request.uri.path is not known then",
    ):
        GatewayRule.from_api(wire(action=action, traffic='http.request.uri.path == "/"'), where="rule")
    ok = GatewayRule.from_api(
        wire(
            action=action,
            traffic='any(http.conn.domains[*] == "bank.example") and http.conn.dst_port == 443',
        ),
        where="rule",
    )
    assert ok.compile().connection_level


def test_compiled_rule_requires_every_part() -> None:
    rule = GatewayRule.from_api(
        wire(
            traffic='http.request.host == "files.example.net"',
            identity='identity.email == "ana@example.com"',
            device_posture='not(any(device_posture.checks.passed[*] == "p1"))',
        ),
        where="rule",
    )
    compiled = rule.compile()
    assert [p for p, _ in compiled.parts] == [Part.TRAFFIC, Part.IDENTITY, Part.DEVICE_POSTURE]
    assert compiled.fields == {
        "http.request.host",
        "identity.email",
        "device_posture.checks.passed",
    }
    ctx = {
        "http.request.host": "files.example.net",
        "identity.email": "ana@example.com",
        "device_posture.checks.passed": (),
    }
    assert compiled.matches(ctx)
    assert not compiled.matches({**ctx, "identity.email": "bo@example.com"})
    assert not compiled.matches({**ctx, "device_posture.checks.passed": ("p1",)})
    assert not compiled.matches({**ctx, "http.request.host": "example.net"})


def test_rule_without_conditions_matches_everything() -> None:
    compiled = GatewayRule.from_api(wire(traffic=""), where="rule").compile()
    assert compiled.parts == () and compiled.matches({})
