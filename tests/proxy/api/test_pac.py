"""GET /proxy.pac: public, the PAC content type, names the proxy as clients reach it, follows
settings.pac_file.exclude, and ignores whatever query string comes with it."""

from __future__ import annotations

from dataclasses import replace

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from proxy.api import create_app
from proxy.api.pac import proxy_address
from tests.policies.pac_eval import find_proxy
from tests.support.server import Gateway, call

Client = TestClient[web.Request, web.Application]


async def _pac(client: Client, path: str = "/proxy.pac") -> str:
    async with client.get(path) as response:
        assert response.status == 200, await response.text()
        assert response.content_type == "application/x-ns-proxy-autoconfig"
        assert response.headers["Cache-Control"] == "no-cache"
        return await response.text()


async def test_pac_is_public_and_names_the_proxy(gateway: Gateway) -> None:
    deps = replace(gateway.api(), proxy_listen="127.0.0.1:18080")
    async with TestClient(TestServer(create_app(deps))) as client:
        pac = await _pac(client)
    got = find_proxy(pac, ["example.com", "127.0.0.1", "10.0.0.1", "192.168.0.10"])
    assert got == {
        "example.com": "PROXY 127.0.0.1:18080",
        "127.0.0.1": "DIRECT",
        "10.0.0.1": "DIRECT",
        "192.168.0.10": "DIRECT",
    }


@pytest.mark.parametrize(
    ("listen", "public_url", "named"),
    [
        ("127.0.0.1:8080", "http://127.0.0.1:8081", "127.0.0.1:8080"),
        ("0.0.0.0:3129", "https://gw.example.com:8443", "gw.example.com:3129"),
        ("[::]:3129", "https://gw.example.com", "gw.example.com:3129"),
        ("[2001:db8::1]:8080", "https://gw.example.com", "[2001:db8::1]:8080"),
        ("", "https://gw.example.com:8443", "gw.example.com:8080"),
    ],
)
def test_proxy_is_named_as_clients_reach_it(
    gateway: Gateway, listen: str, public_url: str, named: str
) -> None:
    assert proxy_address(replace(gateway.api(), proxy_listen=listen, public_base_url=public_url)) == named


async def test_admin_host_goes_direct(gateway: Gateway) -> None:
    deps = replace(gateway.api(), proxy_listen="0.0.0.0:8080", public_base_url="https://gw.example.com:8081")
    async with TestClient(TestServer(create_app(deps))) as client:
        pac = await _pac(client)
    got = find_proxy(pac, ["gw.example.com", "example.com"])
    assert got == {"gw.example.com": "DIRECT", "example.com": "PROXY gw.example.com:8080"}


async def test_configured_exclusions_follow_the_configuration(client: Client, gateway: Gateway) -> None:
    path = f"/client/v4/accounts/{gateway.account_id}/gateway/configuration"
    settings = {"pac_file": {"exclude": ["intranet.example", "*.corp.example", "203.0.113.0/24"]}}
    reply = await call(client, "PATCH", path, token=gateway.token, json={"settings": settings})
    assert reply.status == 200, reply.body
    assert reply.result["settings"]["pac_file"] == settings["pac_file"]
    hosts = ["wiki.intranet.example", "a.corp.example", "203.0.113.5", "example.com"]
    got = find_proxy(await _pac(client), hosts)
    assert got == {h: ("PROXY 127.0.0.1:8080" if h == "example.com" else "DIRECT") for h in hosts}
    reply = await call(client, "PATCH", path, token=gateway.token, json={"settings": {"pac_file": None}})
    assert reply.status == 200, reply.body
    assert set(find_proxy(await _pac(client), hosts).values()) == {"PROXY 127.0.0.1:8080"}


@pytest.mark.parametrize(
    ("settings", "field", "message"),
    [
        ({"pac_file": {"exclude": "a.example"}}, "settings.pac_file.exclude", "must be a list of strings"),
        ({"pac_file": {"exclude": [1]}}, "settings.pac_file.exclude", "must be a list of strings"),
        ({"pac_file": {"exclude": ["ok.example", "2001:db8::/32"]}}, "settings.pac_file.exclude[1]", "IPv6"),
        ({"pac_file": {"exclude": ['");alert(1)//']}}, "settings.pac_file.exclude[0]", "not an IP address"),
        ({"pac_file": {"exclude": ["a.example"] * 501}}, "settings.pac_file.exclude", "at most 500"),
        ({"pac_file": {"exclud": []}}, "settings.pac_file.exclud", "unknown field"),
        ({"pac_file": []}, "settings.pac_file", "must be an object"),
    ],
)
async def test_bad_exclusions_are_refused_naming_the_field(
    client: Client, gateway: Gateway, settings: dict[str, object], field: str, message: str
) -> None:
    path = f"/client/v4/accounts/{gateway.account_id}/gateway/configuration"
    reply = await call(client, "PATCH", path, token=gateway.token, json={"settings": settings})
    assert reply.status == 400, reply.body
    assert reply.error.startswith(f"{field}: ") and message in reply.error, reply.error


@pytest.mark.parametrize(
    "query",
    [
        "?",
        "?a=1&a=2",
        "?%zz=%%",
        "?x=%ff%fe",
        "?;;;&&==",
        "?url=http://x/&host=" + "a" * 2000,
        "?\u00e9=\u00e8",
    ],
)
async def test_odd_query_strings_get_the_same_file(client: Client, query: str) -> None:
    assert await _pac(client, "/proxy.pac" + query) == await _pac(client)


async def test_head_answers_as_get(client: Client) -> None:
    async with client.head("/proxy.pac") as response:
        assert response.status == 200
        assert response.content_type == "application/x-ns-proxy-autoconfig"
