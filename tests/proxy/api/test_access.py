"""access/policies and access/apps over HTTP: shapes, paging that ends (the SDK iterates until an
empty page), refusals with the store untouched, and the official SDK end to end."""

from __future__ import annotations

from typing import Any

import cloudflare
import pytest
from cloudflare import AsyncCloudflare

from proxy.api import ApiDeps
from tests.support.policies import Api, deps_with_policies
from tests.support.server import Gateway

STAFF = {
    "name": "Staff",
    "decision": "allow",
    "include": [{"email_domain": {"domain": "example.com"}}],
    "require": [{"device_posture": {"integration_uid": "6f1c2a3b-4d5e-4f60-8a71-92b3c4d5e6f7"}}],
    "exclude": [{"email": {"email": "former@example.com"}}],
    "session_duration": "8h",
}


async def test_policy_crud(api: Api) -> None:
    created = await api("POST", "access/policies", json=STAFF)
    assert created.status == 200
    policy = created.result
    assert policy == {
        "id": policy["id"], **STAFF, "created_at": "2026-03-01T12:00:00Z",
        "updated_at": "2026-03-01T12:00:00Z", "reusable": True, "app_count": 0, "read_only": False,
    }  # fmt: skip
    assert (await api("GET", f"access/policies/{policy['id']}")).result == policy
    replaced = await api(
        "PUT", f"access/policies/{policy['id']}", json={**STAFF, "decision": "deny", "require": []}
    )
    assert replaced.result["decision"] == "deny" and replaced.result["require"] == []
    deleted = await api("DELETE", f"access/policies/{policy['id']}")
    assert deleted.result == {"id": policy["id"]}
    assert (await api("GET", f"access/policies/{policy['id']}")).status == 404


async def test_policy_lists_page_until_empty(api: Api) -> None:
    for index in range(4):
        await api("POST", "access/policies", json={**STAFF, "name": f"p{index}"})
    names: list[str] = []
    for page in (1, 2, 3):
        reply = await api("GET", f"access/policies?page={page}&per_page=2")
        names.extend(p["name"] for p in reply.result)
        assert reply.body["result_info"] == {
            "page": page, "per_page": 2, "count": len(reply.result), "total_count": 5,
            "total_pages": 3,
        }  # fmt: skip
    assert names == ["Everyone (file)", "p0", "p1", "p2", "p3"]
    past = await api("GET", "access/policies?page=4&per_page=2")
    assert past.result == [] and past.body["result_info"]["count"] == 0
    default = await api("GET", "access/policies")
    assert default.body["result_info"]["per_page"] == 25
    too_many = await api("GET", "access/policies?per_page=1001")
    assert (too_many.status, too_many.error) == (400, "per_page: must be at most 1000, got 1001")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {**STAFF, "decision": "maybe"},
            "request body 'Staff': decision: unknown decision 'maybe' (one of: allow, deny, bypass, non_identity)",
        ),
        (
            {**STAFF, "include": []},
            "request body 'Staff': include: needs at least one rule (e.g. {\"everyone\": {}})",
        ),
        (
            {**STAFF, "include": [{"group": {"id": "x"}}]},
            (
                "request body 'Staff': include[0]: unknown or unsupported Access rule 'group' (one of: "
                "everyone, email, email_domain, ip, device_posture, certificate, common_name)"
            ),
        ),
        (
            {**STAFF, "decision": "bypass"},
            (
                "request body 'Staff': include[0]: decision 'bypass' is decided without a login, so it "
                "takes only rules that need no identity (everyone, ip, device_posture, certificate, common_name), "
                "not 'email_domain'"
            ),
        ),
        (
            {**STAFF, "session_duration": 5},
            "request body 'Staff': session_duration: must be a string, got 5",
        ),
    ],
)
async def test_policy_refusals(api: Api, body: dict[str, Any], message: str) -> None:
    before = api.gateway.store.dump()
    reply = await api("POST", "access/policies", json=body)
    assert (reply.status, reply.body["errors"][0]["code"], reply.error) == (400, 1002, message)
    assert api.gateway.store.dump() == before


async def test_a_policy_in_use_cannot_be_deleted(api: Api) -> None:
    policy = (await api("POST", "access/policies", json=STAFF)).result
    app = (
        await api("POST", "access/apps", json={"name": "Intranet", "domain": "intranet.example", "policies": [policy["id"]]})
    ).result  # fmt: skip
    assert (await api("GET", f"access/policies/{policy['id']}")).result["app_count"] == 1
    before = api.gateway.store.dump()
    reply = await api("DELETE", f"access/policies/{policy['id']}")
    assert (reply.status, reply.body["errors"][0]["code"]) == (400, 1004)
    assert reply.error == (
        f"Access policy 'Staff' (id {policy['id']}) is used by Access application 'Intranet' "
        f"(intranet.example) (id {app['id']}): remove it from the application's policies first"
    )
    assert api.gateway.store.dump() == before


async def test_application_crud(api: Api) -> None:
    staff = (await api("POST", "access/policies", json=STAFF)).result
    body = {
        "type": "self_hosted", "name": "Intranet", "domain": "intranet.example", "session_duration": "24h",
        "policies": [staff["id"], {"id": "file-policy-1", "precedence": 7}],
    }  # fmt: skip
    created = await api("POST", "access/apps", json=body)
    assert created.status == 200
    app = created.result
    assert {k: app[k] for k in ("type", "name", "domain", "session_duration", "read_only")} == {
        "type": "self_hosted", "name": "Intranet", "domain": "intranet.example",
        "session_duration": "24h", "read_only": False,
    }  # fmt: skip
    assert [(p["id"], p["name"], p["precedence"]) for p in app["policies"]] == [
        (staff["id"], "Staff", 1), ("file-policy-1", "Everyone (file)", 7),
    ]  # fmt: skip
    assert (await api("GET", f"access/apps/{app['id']}")).result == app

    # what GET returns can be PUT back (expanded policies are read as references)
    replaced = await api("PUT", f"access/apps/{app['id']}", json={**app, "name": "Intranet 2"})
    assert replaced.status == 200 and replaced.result["name"] == "Intranet 2"
    assert [p["precedence"] for p in replaced.result["policies"]] == [1, 7]

    listed = await api("GET", "access/apps?name=intra")
    assert [a["id"] for a in listed.result] == [app["id"]]
    assert (await api("GET", "access/apps?name=intra&exact=true")).result == []
    assert len((await api("GET", "access/apps?search=example")).result) == 2  # the file's too
    assert (await api("DELETE", f"access/apps/{app['id']}")).result == {"id": app["id"]}
    assert (await api("GET", f"access/apps/{app['id']}")).status == 404


@pytest.mark.parametrize(
    ("body", "status", "code", "message"),
    [
        (
            {"name": "X", "domain": "x.example", "policies": ["no-such-policy"]}, 400, 1002,
            ("request body 'X': policies[0]: no Access policy with id 'no-such-policy' in this account "
            "(create it under access/policies first)"),
        ),
        (
            {"type": "saas", "name": "X", "domain": "x.example"}, 400, 1002,
            "request body 'X': type: only 'self_hosted' applications are supported, got 'saas'",
        ),
        (
            {"name": "X", "domain": "wiki.example"}, 400, 1002,
            "Access applications 'Wiki (file)' (wiki.example) and 'X' (wiki.example) protect the same domain",
        ),
        (
            {"name": "X", "domain": "x.example/path"}, 400, 1002,
            ("request body 'X': domain: paths are not supported: protect the whole host ('x.example'); "
            "got 'x.example/path'"),
        ),
        ({"name": "X"}, 400, 1002, "request body 'X': domain: required"),
    ],
)  # fmt: skip
async def test_application_refusals(
    api: Api, body: dict[str, Any], status: int, code: int, message: str
) -> None:
    before = api.gateway.store.dump()
    reply = await api("POST", "access/apps", json=body)
    assert (reply.status, reply.body["errors"][0]["code"], reply.error) == (status, code, message)
    assert api.gateway.store.dump() == before


async def test_file_managed_access_objects_are_read_only(api: Api) -> None:
    before = api.gateway.store.dump()
    reply = await api("PUT", "access/apps/file-app-1", json={"name": "Mine", "domain": "wiki.example"})
    assert (reply.status, reply.error) == (
        400,
        (
            "Access application 'Wiki (file)' (id file-app-1) is managed by file corp/files.yaml (line 13); "
            "edit the file (the API cannot change or delete it)"
        ),
    )
    reply = await api("DELETE", "access/policies/file-policy-1")
    assert reply.status == 400 and "is managed by file corp/files.yaml (line 8)" in reply.error
    assert api.gateway.store.dump() == before
    listed = (await api("GET", "access/policies")).result
    assert [(p["id"], p["read_only"], p["app_count"]) for p in listed] == [("file-policy-1", True, 1)]


# --- the official SDK ----------------------------------------------------------------------------


@pytest.fixture
def deps(gateway: Gateway) -> ApiDeps:
    """What ``sdk`` serves: the gateway with a PolicyService without policy files."""
    return deps_with_policies(gateway, files=None)[0]


async def test_sdk_pages_through_every_access_policy(sdk: AsyncCloudflare, gateway: Gateway) -> None:
    policies = sdk.zero_trust.access.policies
    a = gateway.account_id
    created = [
        await policies.create(account_id=a, name=f"policy {i}", decision="allow", include=[{"everyone": {}}])
        for i in range(5)
    ]
    assert all(p.reusable and p.app_count == 0 for p in created)
    seen = [p.id async for p in policies.list(account_id=a, per_page=2)]  # pages 1, 2, 3, then []
    assert seen == [p.id for p in created]
    got = await policies.get(created[0].id, account_id=a)
    assert got.include and got.name == "policy 0"
    updated = await policies.update(
        created[0].id, account_id=a, name="renamed", decision="deny", include=[{"everyone": {}}]
    )
    assert (updated.name, updated.decision) == ("renamed", "deny")
    deleted = await policies.delete(created[0].id, account_id=a)
    assert deleted and deleted.id == created[0].id


async def test_sdk_drives_access_applications(sdk: AsyncCloudflare, gateway: Gateway) -> None:
    zt = sdk.zero_trust.access
    a = gateway.account_id
    policy = await zt.policies.create(
        account_id=a,
        name="staff",
        decision="allow",
        include=[{"email_domain": {"domain": "example.com"}}],
    )
    assert policy.id
    app = await zt.applications.create(
        account_id=a, type="self_hosted", name="intranet", domain="intranet.lab",
        policies=[policy.id], session_duration="24h",
    )  # fmt: skip
    assert app.id and getattr(app, "domain", None) == "intranet.lab"
    assert [p.id for p in getattr(app, "policies", [])] == [policy.id]
    listed = [x async for x in zt.applications.list(account_id=a, per_page=1)]
    assert [x.id for x in listed] == [app.id]
    got = await zt.applications.get(app.id, account_id=a)
    assert getattr(got, "name", None) == "intranet"
    with pytest.raises(cloudflare.BadRequestError) as e:
        await zt.policies.delete(policy.id, account_id=a)
    assert "is used by Access application 'intranet'" in str(e.value)
    with pytest.raises(cloudflare.BadRequestError):
        await zt.applications.create(account_id=a, type="saas", name="x", domain="x.lab")
    deleted = await zt.applications.delete(app.id, account_id=a)
    assert deleted and deleted.id == app.id
    with pytest.raises(cloudflare.NotFoundError):
        await zt.applications.get(app.id, account_id=a)
