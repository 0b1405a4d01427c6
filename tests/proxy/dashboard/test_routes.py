"""The dashboard's files at the admin server's root: public, with a strict CSP and no framing;
the API refuses browsers on other sites and never answers CORS."""

from __future__ import annotations

import re

import pytest

from proxy.dashboard.routes import FILES, STATIC
from tests.support.server import Client, Gateway, call


@pytest.mark.parametrize(("path", "content_type"), [(p, t) for p, (_, t) in FILES.items()])
async def test_files_are_public_with_security_headers(client: Client, path: str, content_type: str) -> None:
    async with client.get(path) as response:
        assert response.status == 200
        assert response.content_type == content_type
        await response.read()
        headers = response.headers
    csp = headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "default-src 'none'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert "Access-Control-Allow-Origin" not in headers


def test_the_page_has_no_inline_script_or_style() -> None:
    """What the CSP would block anyway: no <script> body, no on* handler, no style attribute."""
    html = (STATIC / "index.html").read_text()
    assert re.findall(r"<script[^>]*>([^<]+)</script>", html) == []
    assert re.search(r"\son[a-z]+=", html) is None
    assert re.search(r"\sstyle=", html) is None and "<style" not in html
    assert 'src="/dashboard/app.js"' in html


def test_the_script_never_puts_api_data_into_html_or_the_token_into_urls_or_the_console() -> None:
    script = (STATIC / "app.js").read_text()
    assert "innerHTML" not in script and "outerHTML" not in script and "insertAdjacentHTML" not in script
    assert re.search(r"\bconsole\.[a-z]+\(", script) is None
    assert "sessionStorage" in script and "localStorage" not in script
    assert "document.cookie" not in script
    assert "?token" not in script and "&token" not in script


def test_the_token_field_has_no_name_so_no_form_can_send_it() -> None:
    html = (STATIC / "index.html").read_text()
    (field,) = re.findall(r'<input id="token"[^>]*>', html)
    assert "name=" not in field and 'type="password"' in field


async def test_the_page_does_not_need_a_token_but_its_data_does(client: Client, gateway: Gateway) -> None:
    async with client.get("/") as response:
        assert response.status == 200
    reply = await call(
        client, "GET", f"/client/v4/accounts/{gateway.account_id}/gateway/certificates", token=None
    )
    assert reply.status == 401


@pytest.mark.parametrize(
    "headers",
    [
        {"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"},
        {"Sec-Fetch-Site": "same-site", "Origin": "http://other.localhost:8081"},
        {"Origin": "https://evil.example"},  # a browser without Fetch Metadata
        {"Origin": "null"},
    ],
)
async def test_cross_site_browser_requests_are_refused_even_with_the_token(
    client: Client, gateway: Gateway, headers: dict[str, str]
) -> None:
    path = f"/client/v4/accounts/{gateway.account_id}/gateway/certificates"
    async with client.post(path, headers={"Authorization": f"Bearer {gateway.token}", **headers}) as response:
        body = await response.json()
        assert response.status == 403
        assert "Access-Control-Allow-Origin" not in response.headers
    assert "cross-origin browser requests are refused" in body["errors"][0]["message"]
    assert len(gateway.store.certificates.list(gateway.account_id)) == 1  # nothing generated


async def test_cors_preflights_are_refused(client: Client, gateway: Gateway) -> None:
    path = f"/client/v4/accounts/{gateway.account_id}/gateway/configuration"
    headers = {"Origin": "https://evil.example", "Access-Control-Request-Method": "PATCH"}
    async with client.options(path, headers=headers) as response:
        assert response.status == 403
        assert not any(h.lower().startswith("access-control-") for h in response.headers)


@pytest.mark.parametrize("headers", [{"Sec-Fetch-Site": "same-origin"}, {"Sec-Fetch-Site": "none"}, {}])
async def test_same_origin_and_non_browser_clients_pass(
    client: Client, gateway: Gateway, headers: dict[str, str]
) -> None:
    path = f"/client/v4/accounts/{gateway.account_id}/gateway/certificates"
    async with client.get(path, headers={"Authorization": f"Bearer {gateway.token}", **headers}) as response:
        assert response.status == 200


async def test_same_origin_by_origin_header_passes(client: Client, gateway: Gateway) -> None:
    origin = f"http://{client.host}:{client.port}"
    path = f"/client/v4/accounts/{gateway.account_id}/gateway/certificates"
    headers = {"Authorization": f"Bearer {gateway.token}", "Origin": origin}
    async with client.get(path, headers=headers) as response:
        assert response.status == 200
