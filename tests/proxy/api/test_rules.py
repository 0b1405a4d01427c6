"""gateway/rules over HTTP: Cloudflare's shapes, every refusal with its status and message (and
the store untouched), export/import as YAML, /metrics, and the official SDK end to end."""

from __future__ import annotations

from typing import Any

import cloudflare
import pytest
from aiohttp.test_utils import TestClient, TestServer
from cloudflare import AsyncCloudflare
from prometheus_client import CONTENT_TYPE_LATEST

from policies.yaml_io import load
from proxy.api import ApiDeps, create_app
from proxy.metrics import Metrics
from tests.support.clock import START
from tests.support.policies import Api, api_for, deps_with_policies
from tests.support.server import Gateway, call

RULE = {
    "name": "Block casino",
    "action": "block",
    "filters": ["http"],
    "traffic": 'http.request.host == "casino.example"',
    "rule_settings": {"block_page_enabled": True, "block_reason": "No gambling"},
}
SHAPE = {
    "id", "name", "description", "precedence", "enabled", "action", "filters", "traffic",
    "identity", "device_posture", "rule_settings", "created_at", "updated_at", "read_only",
}  # fmt: skip


async def test_create_list_get_replace_delete(api: Api) -> None:
    created = await api("POST", "gateway/rules", json=RULE)
    assert created.status == 200
    rule = created.result
    assert set(rule) == SHAPE
    assert rule | {"id": "-"} == {
        "id": "-", "name": "Block casino", "description": "", "precedence": rule["precedence"],
        "enabled": True, "action": "block", "filters": ["http"], "traffic": RULE["traffic"],
        "identity": "", "device_posture": "", "rule_settings": RULE["rule_settings"],
        "created_at": "2026-03-01T12:00:00Z", "updated_at": "2026-03-01T12:00:00Z", "read_only": False,
    }  # fmt: skip
    assert 11 <= rule["precedence"] <= 110  # after the file's rule (10): max + 1..100

    listed = await api("GET", "gateway/rules?filter=action:block&unknown=1")
    assert [(r["id"], r["read_only"]) for r in listed.result] == [
        ("file-rule-1", True), (rule["id"], False),
    ]  # fmt: skip
    assert listed.body["result_info"]["total_count"] == 2
    assert (await api("GET", f"gateway/rules/{rule['id']}")).result == rule

    api.gateway.clock.advance(seconds=30)
    replaced = await api("PUT", f"gateway/rules/{rule['id']}", json={"name": "Allow", "action": "allow"})
    assert replaced.status == 200
    assert replaced.result["action"] == "allow" and replaced.result["traffic"] == ""
    assert replaced.result["rule_settings"] == {} and replaced.result["precedence"] == rule["precedence"]
    assert replaced.result["updated_at"] == "2026-03-01T12:00:30Z"
    assert replaced.result["created_at"] == rule["created_at"]

    deleted = await api("DELETE", f"gateway/rules/{rule['id']}")
    assert (deleted.status, deleted.result) == (200, {"id": rule["id"]})
    missing = await api("GET", f"gateway/rules/{rule['id']}")
    assert (missing.status, missing.body["errors"][0]["code"]) == (404, 1007)
    assert missing.error == f"no gateway rule with id '{rule['id']}' in this account"


async def test_a_change_reaches_the_engines_at_once(api: Api) -> None:
    a = api.gateway.account_id
    before = api.service.engines(a)
    rule = (await api("POST", "gateway/rules", json={**RULE, "precedence": 50})).result
    engines = api.service.engines(a)
    assert engines.version == before.version + 1
    assert [r.id for r in engines.gateway.rules] == ["file-rule-1", rule["id"]]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {**RULE, "traffic": 'http.request.host == "casino.example" and ('},
            "request body 'Block casino': traffic: line 1, column 44: expected a condition, found end of "
            'expression\n    http.request.host == "casino.example" and (\n' + " " * 47 + "^",
        ),
        (
            {**RULE, "traffic": 'http.request.hots == "casino.example"'},
            (
                "request body 'Block casino': traffic: line 1, column 1: unknown field 'http.request.hots' "
                '(did you mean http.request.host?)\n    http.request.hots == "casino.example"\n    ^'
            ),
        ),
        (
            {**RULE, "traffc": 'http.request.host == "a"'},
            "request body 'Block casino': unknown key 'traffc' (did you mean traffic?)",
        ),
        (
            {**RULE, "precedence": "ten"},
            "request body 'Block casino': precedence: must be an integer, got 'ten'",
        ),
        (
            {**RULE, "enabled": "yes"},
            "request body 'Block casino': enabled: must be true or false, got 'yes'",
        ),
        (
            {**RULE, "precedence": -1},
            "request body 'Block casino': precedence: must be at least 0, got -1",
        ),
        (
            {**RULE, "action": "isolate"},
            "request body 'Block casino': action: unknown action 'isolate' (one of: allow, block, off, on, redirect)",
        ),
        (
            {**RULE, "precedence": 10},
            (
                "gateway rules 'Block gambling (file)' and 'Block casino' both have precedence 10; "
                "give each enabled rule its own"
            ),
        ),
        (
            {**RULE, "identity": 'http.request.host == "a"'},
            (
                "request body 'Block casino': identity: field http.request.host does not belong here: "
                "identity uses only identity.* fields"
            ),
        ),
        ({"action": "block"}, "request body: name: required"),
    ],
)
async def test_refusals_name_the_field_and_save_nothing(api: Api, body: dict[str, Any], message: str) -> None:
    before = api.gateway.store.dump()
    version = api.service.engines(api.gateway.account_id).version
    reply = await api("POST", "gateway/rules", json=body)
    assert (reply.status, reply.body["errors"][0]["code"], reply.error) == (400, 1002, message)
    assert api.gateway.store.dump() == before
    assert api.service.engines(api.gateway.account_id).version == version


async def test_a_file_managed_rule_cannot_be_changed(api: Api) -> None:
    before = api.gateway.store.dump()
    message = (
        "gateway rule 'Block gambling (file)' (id file-rule-1) is managed by file corp/files.yaml "
        "(line 2); edit the file (the API cannot change or delete it)"
    )
    for method, body in (("PUT", RULE), ("DELETE", None)):
        reply = await api(method, "gateway/rules/file-rule-1", json=body)
        assert (reply.status, reply.body["errors"][0]["code"], reply.error) == (400, 1004, message)
    assert api.gateway.store.dump() == before


@pytest.mark.parametrize(
    ("data", "status", "code", "message"),
    [
        ("{", 400, 1001, "request body is not valid JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"),
        ("[1]", 400, 1001, "request body must be a JSON object, got an array"),
        ('{"name": ' + '"' + "x" * (1024 * 1024) + '"}', 413, 1008, "request body is larger than 1 MiB (1048576 bytes)"),
    ],
)  # fmt: skip
async def test_bodies_that_are_not_a_rule(api: Api, data: str, status: int, code: int, message: str) -> None:
    before = api.gateway.store.dump()
    reply = await api("POST", "gateway/rules", data=data)
    assert (reply.status, reply.body["errors"][0]["code"], reply.error) == (status, code, message)
    assert api.gateway.store.dump() == before


async def test_what_the_store_cannot_keep_is_refused(api: Api) -> None:
    before = api.gateway.store.dump()
    huge = await api("POST", "gateway/rules", json={**RULE, "precedence": 10**30})
    assert (huge.status, huge.error) == (
        400,
        f"request body 'Block casino': precedence: must be at most 2147483647, got {10**30}",
    )
    lone = await api("POST", "gateway/rules", data='{"name": "\\ud800", "action": "block"}')
    assert (lone.status, lone.body["errors"][0]["code"], lone.error) == (
        400,
        1001,
        ("request body holds a lone surrogate escape (such as \\ud800): strings must be valid Unicode text"),
    )
    yaml = 'gateway_rules: [{name: "\\ud800", action: block, precedence: 1}]\n'
    imported = await api("POST", "gateway/rules/import", data=yaml)
    assert (imported.status, imported.error) == (
        400,
        (
            "request body: gateway_rules[0] '\\ud800': holds a lone surrogate (such as \\ud800): "
            "text must be valid Unicode"
        ),
    )
    too_large = await api("POST", "gateway/rules/import", data="#" * (1024 * 1024 + 1))
    assert (too_large.status, too_large.body["errors"][0]["code"]) == (413, 1008)
    assert api.gateway.store.dump() == before


async def test_put_of_an_unknown_rule_is_404(api: Api) -> None:
    reply = await api("PUT", "gateway/rules/nope", json=RULE)
    assert (reply.status, reply.error) == (404, "no gateway rule with id 'nope' in this account")


# --- export and import --------------------------------------------------------------------------


async def test_export_is_yaml_that_imports_back(api: Api) -> None:
    rule = (await api("POST", "gateway/rules", json=RULE)).result
    headers = {"Authorization": f"Bearer {api.gateway.token}"}
    async with api.client.get(api.path("gateway/rules/export"), headers=headers) as response:
        assert response.status == 200 and response.content_type == "application/yaml"
        text = await response.text()
    exported = load(text)
    assert [r.id for r in exported.gateway_rules] == ["file-rule-1", rule["id"]]
    before = api.gateway.store.dump()
    reply = await api("POST", "gateway/rules/import", data=text)
    assert reply.result == {
        "gateway_rules": 1, "access_policies": 0, "access_applications": 0, "left_to_policy_files": 3,
    }  # fmt: skip
    assert api.gateway.store.dump() == before


async def test_import_replaces_everything_saved_through_the_api(api: Api) -> None:
    old = (await api("POST", "gateway/rules", json=RULE)).result
    text = (
        "access_policies:\n"
        "  - {id: p1, name: Staff, decision: allow, include: [{email_domain: {domain: example.com}}]}\n"
        "access_applications:\n"
        "  - {id: a1, name: Intranet, domain: intranet.example, policies: [p1]}\n"
        "gateway_rules:\n"
        "  - {id: r1, name: New, precedence: 20, action: block, traffic: 'http.request.host == \"x.example\"'}\n"
    )
    reply = await api("POST", "gateway/rules/import", data=text)
    assert reply.status == 200 and reply.result["gateway_rules"] == 1
    ids = [r["id"] for r in (await api("GET", "gateway/rules")).result]
    assert ids == ["file-rule-1", "r1"] and old["id"] not in ids
    app = (await api("GET", "access/apps/a1")).result
    assert [p["id"] for p in app["policies"]] == ["p1"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            "- just\n- a list\n",
            ("request body:1:1: a policy file is a mapping with any of: gateway_rules, "
            "access_applications, access_policies, tests, lists, not a list\n    - just\n    ^"),
        ),
        (
            "gateway_rules: {name: x}\n",
            ("request body:1:16: gateway_rules must be a list (items start with '- '), not a mapping\n"
            "    gateway_rules: {name: x}\n                   ^"),
        ),
        (
            "gateway_rules:\n  - {name: Clash, precedence: 10, action: block}\n",
            ("gateway rules 'Block gambling (file)' and 'Clash' both have precedence 10; give each "
            "enabled rule its own"),
        ),
        ("", ("request body:1:1: the file is empty; a policy file is a mapping with any of: "
             "gateway_rules, access_applications, access_policies, tests, lists (write {} for none)")),
    ],
)  # fmt: skip
async def test_import_refusals(api: Api, data: str, message: str) -> None:
    await api("POST", "gateway/rules", json=RULE)
    before = api.gateway.store.dump()
    reply = await api("POST", "gateway/rules/import", data=data)
    assert (reply.status, reply.body["errors"][0]["code"], reply.error) == (400, 1002, message)
    assert api.gateway.store.dump() == before


async def test_import_refuses_text_that_is_not_utf8(api: Api) -> None:
    reply = await api("POST", "gateway/rules/import", data=b"gateway_rules: \xff\n")
    assert (reply.status, reply.error) == (400, "request body is not UTF-8 text")


async def test_import_refuses_to_change_a_file_rule(api: Api) -> None:
    data = "gateway_rules:\n  - {id: file-rule-1, name: Mine now, precedence: 10, action: allow}\n"
    reply = await api("POST", "gateway/rules/import", data=data)
    assert (reply.status, reply.body["errors"][0]["code"]) == (400, 1004)
    assert reply.error.startswith("gateway rule 'Block gambling (file)' (id file-rule-1) is managed by file")


# --- without a policy service; /metrics ----------------------------------------------------------


async def test_without_policies_the_endpoints_answer_404(gateway: Gateway) -> None:
    async with TestClient(TestServer(create_app(gateway.api()))) as client:
        path = f"/client/v4/accounts/{gateway.account_id}/gateway/rules"
        reply = await call(client, "GET", path, token=gateway.token)
        assert (reply.status, reply.error) == (
            404, "Gateway rules and Access policies are not enabled here",
        )  # fmt: skip
        async with client.get("/metrics") as response:
            assert response.status == 404
            assert (await response.json())["errors"][0]["message"] == "no metrics are kept by this server"


async def test_metrics_are_public_in_prometheus_format(gateway: Gateway) -> None:
    metrics = Metrics()
    metrics.decisions.labels(action="block", stage="http").inc(3)
    async with api_for(gateway, metrics=metrics) as api, api.client.get("/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == CONTENT_TYPE_LATEST
        text = await response.text()
    assert 'gateway_decisions_total{action="block",stage="http"} 3.0' in text


# --- the official SDK ----------------------------------------------------------------------------


@pytest.fixture
def deps(gateway: Gateway) -> ApiDeps:
    """What ``sdk`` serves: the gateway with a PolicyService over the policy files."""
    return deps_with_policies(gateway)[0]


async def test_sdk_drives_gateway_rules(sdk: AsyncCloudflare, gateway: Gateway) -> None:
    rules = sdk.zero_trust.gateway.rules
    a = gateway.account_id
    created = await rules.create(
        account_id=a, name="Block casino", action="block", filters=["http"], enabled=True,
        traffic='http.request.host == "casino.example"',
        device_posture='not(any(device_posture.checks.passed[*] in {"6f1c2a3b-4d5e-4f60-8a71-92b3c4d5e6f7"}))',
        rule_settings={"block_page_enabled": True, "block_reason": "No gambling"},
    )  # fmt: skip
    assert created.id and created.action == "block" and created.read_only is False
    assert created.created_at == START and created.rule_settings
    assert created.rule_settings.block_reason == "No gambling"
    listed = [r async for r in rules.list(account_id=a)]
    assert [(r.id, r.read_only) for r in listed] == [("file-rule-1", True), (created.id, False)]
    got = await rules.get(created.id, account_id=a)
    assert got.device_posture == created.device_posture
    updated = await rules.update(
        created.id,
        account_id=a,
        name="Allow casino",
        action="allow",
        filters=["http"],
        precedence=500,
    )
    assert (updated.name, updated.action, updated.precedence, updated.traffic) == (
        "Allow casino", "allow", 500, "",
    )  # fmt: skip
    with pytest.raises(cloudflare.BadRequestError) as e:
        await rules.update("file-rule-1", account_id=a, name="x", action="allow")
    assert "managed by file corp/files.yaml" in str(e.value)
    with pytest.raises(cloudflare.BadRequestError) as e:
        await rules.create(account_id=a, name="bad", action="block", traffic="http.request.host ==")
    assert e.value.status_code == 400 and "line 1, column 21" in str(e.value)
    await rules.delete(created.id, account_id=a)
    with pytest.raises(cloudflare.NotFoundError):
        await rules.get(created.id, account_id=a)


async def test_sdk_sees_every_rule_past_a_thousand(gateway: Gateway) -> None:
    """The SDK reads the rule list as a single page: with 1,044 rules it saw only 1,000."""
    rules = "\n".join(
        f"  - {{name: r{i}, precedence: {i + 1000}, action: block, "
        f"traffic: 'http.request.host == \"h{i}.example\"'}}"
        for i in range(1044)
    )
    async with api_for(gateway) as api:
        api.service.import_policies(gateway.account_id, f"gateway_rules:\n{rules}\n")
        base_url = str(api.client.make_url("/client/v4"))
        async with AsyncCloudflare(base_url=base_url, api_token=gateway.token, max_retries=0) as sdk:
            listed = [r async for r in sdk.zero_trust.gateway.rules.list(account_id=gateway.account_id)]
        assert len(listed) == 1044 + 1  # and the rule of the policy file
        reply = await api("GET", "gateway/rules?per_page=5&page=3")  # ignored, as Cloudflare does
    assert len(reply.result) == 1045
    assert reply.body["result_info"] == {
        "page": 1, "per_page": 1045, "count": 1045, "total_count": 1045, "total_pages": 1,
    }  # fmt: skip
