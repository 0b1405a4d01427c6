"""Envelope errors at the edge: auth, routing, bodies, size limit, unexpected exceptions."""

from __future__ import annotations

import json
import logging

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from proxy.api import create_app
from proxy.services import accounts
from proxy.services.accounts import create_account
from proxy.store import TokenOrigin
from tests.support.server import Gateway, call

Client = TestClient[web.Request, web.Application]


async def test_missing_token_is_401(client: Client, gateway: Gateway) -> None:
    reply = await call(client, "GET", "/client/v4/accounts", token=None)
    assert reply.status == 401
    assert reply.error == "missing Authorization header: send 'Authorization: Bearer <token>'"
    assert reply.body["errors"][0]["code"] == 10000


async def test_wrong_token_and_wrong_scheme_are_401(client: Client, gateway: Gateway) -> None:
    reply = await call(
        client,
        "GET",
        f"/client/v4/accounts/{gateway.account_id}/gateway/certificates",
        token="nope",
    )
    assert reply.status == 401 and reply.error.startswith("invalid API token")
    async with client.get(
        "/client/v4/accounts", headers={"Authorization": f"Basic {gateway.token}"}
    ) as response:
        assert response.status == 401
        assert (await response.json())["errors"][0][
            "message"
        ] == "Authorization header must be 'Bearer <token>'"


async def test_unknown_routes_need_a_token_before_they_are_404(client: Client, gateway: Gateway) -> None:
    assert (await call(client, "GET", "/client/v4/zones", token=None)).status == 401
    reply = await call(client, "GET", "/client/v4/zones", token=gateway.token)
    assert (reply.status, reply.error) == (404, "no route for GET /client/v4/zones")
    assert reply.body["errors"][0]["code"] == 7000
    public = await call(client, "GET", "/nothing-here", token=None)
    assert (public.status, public.error) == (404, "no route for GET /nothing-here")


async def test_wrong_method_is_405_with_allow(client: Client, gateway: Gateway) -> None:
    path = f"/client/v4/accounts/{gateway.account_id}/gateway/configuration"
    reply = await call(client, "POST", path, token=gateway.token)
    assert reply.status == 405
    assert reply.error == f"method POST is not allowed on {path} (allowed: GET, HEAD, PATCH, PUT)"
    assert reply.headers["Allow"] == "GET, HEAD, PATCH, PUT"


async def test_unknown_account_is_404_and_a_foreign_account_403(client: Client, gateway: Gateway) -> None:
    unknown = "f" * 32
    reply = await call(
        client, "GET", f"/client/v4/accounts/{unknown}/gateway/certificates", token=gateway.token
    )
    assert (reply.status, reply.error) == (404, f"no account with id {unknown!r}")
    other = create_account(gateway.store, "Other", gateway.clock)
    scoped = "scoped-token-0123456789abcdefgh"
    accounts.add_token(gateway.store, scoped, TokenOrigin.GENERATED, gateway.clock, account_id=other.id)
    reply = await call(
        client,
        "GET",
        f"/client/v4/accounts/{gateway.account_id}/gateway/certificates",
        token=scoped,
    )
    assert (reply.status, reply.error) == (
        403,
        f"this token is scoped to account {other.id}: it may not act on account {gateway.account_id!r} "
        "(use a token of that account, or one for every account)",
    )
    listed = await call(client, "GET", "/client/v4/accounts", token=scoped)
    assert [a["id"] for a in listed.result] == [other.id]


async def test_accounts_are_cloudflare_account_objects_and_page(client: Client, gateway: Gateway) -> None:
    create_account(gateway.store, "Second", gateway.clock)
    reply = await call(client, "GET", "/client/v4/accounts?per_page=1", token=gateway.token)
    (account,) = reply.result
    assert account == {
        "id": gateway.account_id, "name": "Gateway", "type": "standard", "settings": {},
        "created_on": "2026-03-01T12:00:00Z",
    }  # fmt: skip
    assert reply.body["result_info"] == {
        "page": 1,
        "per_page": 1,
        "count": 1,
        "total_count": 2,
        "total_pages": 2,
    }
    page3 = await call(client, "GET", "/client/v4/accounts?per_page=1&page=3", token=gateway.token)
    assert page3.result == []
    bad = await call(client, "GET", "/client/v4/accounts?page=0", token=gateway.token)
    assert (bad.status, bad.error) == (400, "page: must be a positive integer, got '0'")
    one = await call(client, "GET", f"/client/v4/accounts/{gateway.account_id}", token=gateway.token)
    assert one.result == account


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            "{bad",
            "request body is not valid JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)",
        ),
        ("[1, 2]", "request body must be a JSON object, got an array"),
        ('{"validity_period_days": NaN}', "request body is not valid JSON: NaN is not valid JSON"),
        (b"\xff\xfe", "request body is not UTF-8 text"),
    ],
)
async def test_malformed_json_is_400(
    client: Client, gateway: Gateway, data: str | bytes, message: str
) -> None:
    before = gateway.store.dump()
    path = f"/client/v4/accounts/{gateway.account_id}/gateway/certificates"
    reply = await call(client, "POST", path, token=gateway.token, data=data)
    assert (reply.status, reply.error) == (400, message)
    assert reply.body["errors"][0]["code"] == 1001
    assert gateway.store.dump() == before


async def test_empty_json_bodies_work_on_post_and_delete(client: Client, gateway: Gateway) -> None:
    base = f"/client/v4/accounts/{gateway.account_id}/gateway/certificates"
    cert = (await call(client, "POST", base, token=gateway.token, data=b"")).result
    assert (await call(client, "DELETE", f"{base}/{cert['id']}", token=gateway.token, data=b"")).status == 200


async def test_body_over_1_mib_is_413(client: Client, gateway: Gateway) -> None:
    before = gateway.store.dump()
    body = '{"name": "' + "x" * (1024 * 1024) + '", "ca": true, "certificates": "x"}'
    reply = await call(client, "POST", f"/client/v4/accounts/{gateway.account_id}/mtls_certificates",
                       token=gateway.token, data=body)  # fmt: skip
    assert (reply.status, reply.error) == (413, "request body is larger than 1 MiB (1048576 bytes)")
    assert gateway.store.dump() == before


async def test_unexpected_exception_is_a_generic_500_logged_with_traceback(
    gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(account_id: str) -> list[object]:
        raise RuntimeError(f"secret detail for {account_id}")

    gateway.service.list = broken  # type: ignore[method-assign]
    async with TestClient(TestServer(create_app(gateway.api()))) as client:
        with caplog.at_level(logging.ERROR, logger="proxy.api.middleware"):
            reply = await call(client, "GET", f"/client/v4/accounts/{gateway.account_id}/gateway/certificates",
                               token=gateway.token)  # fmt: skip
    assert (reply.status, reply.error) == (500, "internal error: the gateway logged the details")
    assert "secret detail" not in str(reply.body)
    (record,) = [r for r in caplog.records if r.name == "proxy.api.middleware"]
    assert record.exc_info is not None and gateway.token not in record.getMessage()


async def test_openapi_and_public_paths_need_no_token(client: Client) -> None:
    async with client.get("/client/v4/openapi.json") as response:
        assert response.status == 200
        assert (await response.json())["openapi"].startswith("3.")
    async with client.get("/healthz") as response:
        assert (response.status, await response.json()) == (200, {"status": "ok"})


def _nested(levels: int) -> object:
    value: object = {}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
async def test_json_nested_past_the_limit_is_400_and_at_the_limit_reaches_the_handler(
    client: Client, gateway: Gateway, method: str
) -> None:
    """500 levels in settings.activity_log was a RecursionError (a 500) in a deep copy."""
    path = f"/client/v4/accounts/{gateway.account_id}/gateway/configuration"
    deep = json.dumps({"settings": {"activity_log": _nested(500)}})
    reply = await call(client, method, path, token=gateway.token, data=deep)
    assert (reply.status, reply.error) == (
        400,
        "request body is nested too deeply: at most 32 levels accepted",
    )
    assert reply.body["errors"][0]["code"] == 1001
    # 32 levels in all pass the edge; the handler then judges the field itself (never a 500)
    at_limit = json.dumps({"settings": {"activity_log": _nested(30)}})
    reply = await call(client, method, path, token=gateway.token, data=at_limit)
    assert reply.status in (200, 400)
    if reply.status == 400:
        assert "nested too deeply" not in reply.error
