"""POST gateway/policy_test: one request in, the decision and its trace out, against the live
policies (the example set as policy files, plus what the API adds)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.policies import Api, api_for
from tests.support.server import Gateway

CORP = (Path(__file__).resolve().parents[3] / "policies" / "examples" / "corp.yaml").read_text()
UPLOADS = "0c1d6a52-59d1-4c39-9a5b-3e0f1a2b3c20"
MANAGED = "6f1c2a3b-4d5e-4f60-8a71-92b3c4d5e6f7"


@pytest.fixture
async def api(gateway: Gateway) -> AsyncIterator[Api]:
    async with api_for(gateway, files=CORP) as api:
        yield api


async def test_a_blocked_request(api: Api) -> None:
    body = {
        "request": {
            "method": "POST",
            "url": "https://files.example.net/upload",
            "src_ip": "10.1.2.3",
        },
        "identity": {"email": "ana@example.com", "groups": ["engineering"]},
        "posture": {"passed": [], "failed": [MANAGED]},
    }
    reply = await api("POST", "gateway/policy_test", json=body)
    assert reply.status == 200
    result = reply.result
    assert {k: result[k] for k in ("action", "rule", "stage", "access")} == {
        "action": "block",
        "rule": {
            "id": UPLOADS,
            "name": "Block uploads to file sharing from unmanaged devices",
            "precedence": 200,
        },
        "stage": "request",
        "access": None,
    }
    trace = result["trace"].splitlines()
    assert trace[0] == (
        "request: POST https://files.example.net/upload from 10.1.2.3 (ana@example.com, groups "
        f"engineering; posture passed none, failed ['{MANAGED}'])"
    )
    assert "  [200] 'Block uploads to file sharing from unmanaged devices' (block): MATCH" in trace
    assert trace[-1] == (
        "result: block by rule 'Block uploads to file sharing from unmanaged devices' "
        f"(precedence 200, id {UPLOADS})"
    )


async def test_the_same_request_from_a_managed_device_is_allowed(api: Api) -> None:
    body = {
        "request": {"method": "POST", "url": "https://files.example.net/upload"},
        "posture": {"passed": [MANAGED], "failed": []},
    }
    result = (await api("POST", "gateway/policy_test", json=body)).result
    assert (result["action"], result["rule"], result["access"]) == ("allow", None, None)


async def test_do_not_inspect_is_decided_at_the_client_hello(api: Api) -> None:
    body = {"request": {"url": "https://www.mybank.example/login"}}
    result = (await api("POST", "gateway/policy_test", json=body)).result
    assert (result["action"], result["stage"], result["rule"]["name"]) == (
        "off", "connection", "Do not inspect online banking",
    )  # fmt: skip


async def test_access_decides_after_gateway(api: Api) -> None:
    body = {
        "request": {"url": "https://intranet.example.com/"},
        "identity": {"email": "ana@example.com"},
        "posture": {"passed": [MANAGED]},
        "expect": {"action": "allow", "access": "allow"},
    }
    result = (await api("POST", "gateway/policy_test", json=body)).result
    assert result["access"] == {
        "application": {"id": "7d3b9e20-0000-4000-8000-000000000001", "name": "Intranet", "domain": "intranet.example.com"},
        "policy": {"id": "5a0e8c1f-0000-4000-8000-000000000001", "name": "Employees on managed devices", "decision": "allow"},
        "allowed": True,
    }  # fmt: skip
    assert (result["passed"], result["problems"]) == (True, [])


async def test_a_rule_added_through_the_api_decides_at_once(api: Api) -> None:
    rule = {"name": "Block example.org", "action": "block", "precedence": 1,
            "traffic": 'http.request.host == "example.org"'}  # fmt: skip
    created = (await api("POST", "gateway/rules", json=rule)).result
    result = (
        await api("POST", "gateway/policy_test", json={"request": {"url": "http://example.org/"}})
    ).result
    assert result["rule"] == {"id": created["id"], "name": "Block example.org", "precedence": 1}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "request body: request: required"),
        ({"request": {"url": "ftp://x.example/"}}, "request body: request.url: URL must start with http:// or https://, got 'ftp://x.example/'"),
        ({"request": {"url": "https://a.example/", "src_ip": "nope"}}, "request body: request.src_ip: must be an IP address such as 10.0.0.1, got 'nope'"),
        ({"request": {"url": "https://a.example/"}, "posture": {"passed": "x"}}, "request body: posture.passed: must be a list, got 'x'"),
        ({"request": {"url": "https://a.example/"}, "identty": {}}, "request body: unknown key 'identty' (did you mean identity?)"),
    ],
)  # fmt: skip
async def test_bad_cases_are_400(api: Api, body: dict[str, object], message: str) -> None:
    reply = await api("POST", "gateway/policy_test", json=body)
    assert (reply.status, reply.body["errors"][0]["code"], reply.error) == (400, 1002, message)
