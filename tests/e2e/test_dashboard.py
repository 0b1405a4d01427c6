"""The dashboard in headless Debian Chromium (Playwright's Python package drives /usr/bin/chromium;
no browser is downloaded) against a real `gateway run` and a real HTTPS origin: a wrong token is
refused with a clear message; signed in, a hot swap clicked through (generate, activate, wait for
available, turn on after the coverage warning) shows in the live request log as the next proxied
request's CA; the policy test form shows the explanation. No page error, no CSP violation.

Screenshots go to the test's tmp dir, or to $GATEWAY_DASHBOARD_SCREENSHOTS (docs/ refreshes the
ones docs/dashboard.md shows: `GATEWAY_DASHBOARD_SCREENSHOTS=docs pytest tests/e2e/test_dashboard.py`)."""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.pki import make_ca

from . import curl
from .gateway_process import GatewayProcess
from .origin import Origin, body_for
from .pki import issued_by, load_pem

playwright = pytest.importorskip("playwright.sync_api", reason="the test extras install playwright")

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 20_000
API_REFUSAL = re.compile(r"Failed to load resource: the server responded with a status of 4\d\d")


@pytest.fixture
def page(tmp_path: Path) -> Iterator[playwright.Page]:
    """A fresh page in headless Chromium; fails the test on any page error or console error
    (a Content-Security-Policy violation is one)."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/install-test-deps", pytrace=False)
    problems: list[str] = []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 760}, accept_downloads=True)
            page = context.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on(
                "console",
                lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None,
            )
            yield page
            # An API refusal the page shows (a wrong token, a bad URL to test) is also a console
            # line; script errors and CSP violations ("Refused to ...") are not let through.
            problems = [p for p in problems if not API_REFUSAL.search(p)]
            assert not problems, problems
        finally:
            browser.close()


def _shots(tmp_path: Path) -> Path:
    where = Path(os.environ.get("GATEWAY_DASHBOARD_SCREENSHOTS") or tmp_path)
    where.mkdir(parents=True, exist_ok=True)
    return where


def _row(page: playwright.Page, cert_id: str) -> playwright.Locator:
    return page.locator(f'#certificate-table tr[data-certificate="{cert_id}"]')


def _proxied(gateway: GatewayProcess, origin: Origin, bundle: Path, host: str) -> curl.CurlResult:
    result = curl.via_proxy(gateway.proxy_port, origin.url(host), cacert=bundle)
    assert result.returncode == 0 and body_for(host) in result.body, (result.stderr, result.body[:300])
    return result


def test_wrong_token_is_refused_clearly(
    gateway: GatewayProcess, page: playwright.Page, tmp_path: Path
) -> None:
    page.goto(gateway.admin_url + "/")
    page.fill("#token", "not-the-admin-token-at-all")
    page.click("#sign-in button[type=submit]")
    error = page.locator("#sign-in-error")
    playwright.expect(error).to_be_visible()
    playwright.expect(error).to_contain_text("Sign-in failed: the gateway refused this token")
    playwright.expect(error).to_contain_text("invalid API token")
    assert page.locator("#tabs").is_hidden()
    assert page.evaluate("sessionStorage.length") == 0
    assert "not-the-admin-token" not in page.url
    page.screenshot(path=_shots(tmp_path) / "dashboard-sign-in.png")


def test_hot_swap_from_the_dashboard_shows_in_the_live_log(
    gateway: GatewayProcess, origin: Origin, page: playwright.Page, tmp_path: Path
) -> None:
    assert gateway.token
    shots = _shots(tmp_path)
    with gateway.api() as api:
        account = api.get("/accounts").json()["result"][0]["id"]
        (old,) = api.get(f"/accounts/{account}/gateway/certificates").json()["result"]

    page.goto(gateway.admin_url + "/")
    page.fill("#token", gateway.token)
    page.click("#sign-in button[type=submit]")
    playwright.expect(_row(page, old["id"])).to_contain_text("in use")
    assert page.evaluate("sessionStorage.length") == 1 and gateway.token not in page.url

    # Before the swap: a proxied request signed by the old CA.
    old_only = tmp_path / "old-ca.pem"
    old_only.write_text(old["certificate"])
    _proxied(gateway, origin, old_only, "before.origin.test")

    # Generate → activate → available → turn on (after the confirmation with its warning).
    page.click("#generate")
    new_row = page.locator('#certificate-table tr[data-status="inactive"]')
    playwright.expect(new_row).to_have_count(1)
    new_id = new_row.get_attribute("data-certificate")
    assert new_id and new_id != old["id"]
    _row(page, new_id).locator('button[data-action="Activate"]').click()
    playwright.expect(_row(page, new_id)).to_have_attribute("data-status", "available")
    _row(page, new_id).locator('button[data-action="Turn on"]').click()
    dialog = page.locator("#confirm")
    playwright.expect(dialog).to_be_visible()
    playwright.expect(page.locator("#confirm-warning")).to_contain_text("No device reports its trust stores")
    page.screenshot(path=shots / "dashboard-turn-on.png")
    page.click("#confirm-yes")
    playwright.expect(page.locator("#notice")).to_contain_text(f"Turned on {new_id[:8]}")
    playwright.expect(_row(page, new_id)).to_contain_text("in use")
    playwright.expect(_row(page, old["id"])).not_to_contain_text("in use")
    page.screenshot(path=shots / "dashboard-certificates.png")

    with gateway.api() as api:
        new = api.get(f"/accounts/{account}/gateway/certificates/{new_id}").json()["result"]
    assert new["in_use"] is True

    # The next proxied request (curl trusting both CAs) is signed by the new CA...
    both = tmp_path / "both-cas.pem"
    both.write_text(old["certificate"] + new["certificate"])
    after = _proxied(gateway, origin, both, "after.origin.test")
    assert after.certs and issued_by(after.certs[0], load_pem(new["certificate"]))

    # ... and the live log shows it with the new CA, the earlier one with the old.
    page.click('#tabs button[data-tab="logs"]')
    after_row = page.locator('#request-table tr[data-host="after.origin.test"]')
    before_row = page.locator('#request-table tr[data-host="before.origin.test"]')
    playwright.expect(after_row).to_have_attribute("data-fingerprint", new["fingerprint"])
    playwright.expect(after_row.locator("td.ca")).to_contain_text(new_id[:8])
    playwright.expect(before_row).to_have_attribute("data-fingerprint", old["fingerprint"])
    playwright.expect(before_row.locator("td.ca")).to_contain_text(old["id"][:8])

    # A blocked request names its rule; the filters narrow the live log (polled every 2 s).
    with gateway.api() as api:
        rule = {"name": "No blocked.origin.test", "action": "block", "filters": ["http"], "precedence": 10,
                "traffic": 'http.request.host == "blocked.origin.test"'}  # fmt: skip
        assert api.post(f"/accounts/{account}/gateway/rules", json=rule).status_code == 200
    blocked = curl.via_proxy(gateway.proxy_port, origin.url("blocked.origin.test"), cacert=both)
    assert blocked.status == 403, (blocked.status, blocked.stderr, blocked.body[:300])
    blocked_row = page.locator('#request-table tr[data-host="blocked.origin.test"]')
    playwright.expect(blocked_row).to_contain_text("block")
    playwright.expect(blocked_row).to_contain_text("No blocked.origin.test")
    page.select_option("#requests-action", "block")
    playwright.expect(after_row).to_have_count(0)
    playwright.expect(blocked_row).to_have_count(1)
    page.select_option("#requests-action", "")
    page.fill("#requests-host", "before.origin")
    playwright.expect(after_row).to_have_count(0)
    playwright.expect(before_row).to_have_count(1)
    page.fill("#requests-host", "")
    playwright.expect(after_row).to_have_count(1)
    page.screenshot(path=shots / "dashboard-logs.png")

    # Download .pem hands over the certificate (fetched with the token, saved as a file).
    page.click('#tabs button[data-tab="certificates"]')
    with page.expect_download() as download:
        _row(page, new_id).locator('button[data-action="Download .pem"]').click()
    assert download.value.suggested_filename == f"gateway-ca-{new_id}.pem"
    assert Path(download.value.path()).read_text().strip() == new["certificate"].strip()

    # The old CA can now be deactivated (confirmed), and goes on to inactive.
    _row(page, old["id"]).locator('button[data-action="Deactivate"]').click()
    page.click("#confirm-yes")
    playwright.expect(_row(page, old["id"])).to_have_attribute("data-status", "inactive")
    playwright.expect(_row(page, old["id"]).locator('button[data-action="Delete"]')).to_be_visible()


def test_policy_test_form_shows_the_explanation(
    shared_gateway: GatewayProcess, page: playwright.Page, tmp_path: Path
) -> None:
    gateway = shared_gateway  # the rule made here is deleted at the end
    assert gateway.token
    with gateway.api() as api:
        account = api.get("/accounts").json()["result"][0]["id"]
        rule = {
            "name": "Block the casino",
            "action": "block",
            "enabled": True,
            "filters": ["http"],
            "precedence": 100,
            "traffic": 'http.request.host == "casino.example.com"',
        }
        created = api.post(f"/accounts/{account}/gateway/rules", json=rule)
        assert created.status_code == 200, created.text
    try:
        _test_a_request(gateway, page, tmp_path)
    finally:
        with gateway.api() as api:
            api.delete(f"/accounts/{account}/gateway/rules/{created.json()['result']['id']}")


def _test_a_request(gateway: GatewayProcess, page: playwright.Page, tmp_path: Path) -> None:
    assert gateway.token

    page.goto(gateway.admin_url + "/")
    page.fill("#token", gateway.token)
    page.click("#sign-in button[type=submit]")
    page.click('#tabs button[data-tab="policies"]')
    playwright.expect(page.locator("#rule-table")).to_contain_text("Block the casino")
    page.fill("#test-url", "https://casino.example.com/poker")
    page.click("#policy-test button[type=submit]")
    playwright.expect(page.locator("#policy-action")).to_have_text("block")
    playwright.expect(page.locator("#policy-summary")).to_contain_text("Block the casino")
    playwright.expect(page.locator("#policy-trace")).to_contain_text("casino.example.com")
    page.screenshot(path=_shots(tmp_path) / "dashboard-policies.png", full_page=True)

    page.fill("#test-url", "ftp://casino.example.com/")  # refused by the API: its message shows
    page.click("#policy-test button[type=submit]")
    playwright.expect(page.locator("#policy-summary")).to_contain_text("request.url")


def _enroll_device(gateway: GatewayProcess, account: str) -> tuple[str, str]:
    """Through the API as an agent would: a device CA upload, a posture rule on it, a device
    enrolled with a token, a failing result and a trust store report. (device id, rule id)"""
    device_ca = make_ca("Dashboard e2e device CA")
    with gateway.api() as api:
        upload = api.post(
            f"/accounts/{account}/mtls_certificates",
            json={"name": "device CA", "certificates": device_ca.cert_pem(), "ca": True},
        )
        assert upload.status_code == 200, upload.text
        rule = api.post(
            f"/accounts/{account}/devices/posture",
            json={
                "name": "corp certificate",
                "type": "client_certificate",
                "input": {"certificate_id": upload.json()["result"]["id"], "cn": "${hostname}.corp"},
                "expiration": "10m",
            },
        )
        assert rule.status_code == 200, rule.text
        rule_id = rule.json()["result"]["id"]
        token = api.post(f"/accounts/{account}/devices/enrollment_tokens", json={"email": "ana@example.com"})
        assert token.status_code == 200, token.text
        in_use = api.get(f"/accounts/{account}/gateway/configuration").json()["result"]
        cert_id = in_use["settings"]["certificate"]["id"]
        fingerprint = api.get(f"/accounts/{account}/gateway/certificates/{cert_id}").json()["result"][
            "fingerprint"
        ]
    payload = token.json()["result"]["token"].removeprefix("gwe1.")
    secret = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["s"]
    with gateway.api(token=None) as agent:
        enrolled = agent.post(
            "/agent/enroll",
            json={
                "secret": secret,
                "name": "laptop-7",
                "os": "linux",
                "os_version": "6.1.0",
                "serial_number": "SN-0042",
                "hostname": "laptop-7",
                "email": "ana@example.com",
            },
        )
        assert enrolled.status_code == 200, enrolled.text
        device = enrolled.json()["result"]
        auth = httpx.BasicAuth(device["device_id"], device["device_secret"])
        results = agent.post(
            "/agent/results",
            auth=auth,
            json={
                "results": [
                    {"rule_id": rule_id, "success": False, "reason": "no certificate in /etc/pki/client.pem"}
                ]
            },
        )
        assert results.status_code == 200, results.text
        stores = agent.post(
            "/agent/trust_stores",
            auth=auth,
            json={"stores": [{"store": "system", "installed": [fingerprint]}]},
        )
        assert stores.status_code == 200, stores.text
    return device["device_id"], rule_id


def test_devices_show_posture_and_installed_cas(
    gateway: GatewayProcess, page: playwright.Page, tmp_path: Path
) -> None:
    assert gateway.token
    with gateway.api() as api:
        account = api.get("/accounts").json()["result"][0]["id"]
    device_id, rule_id = _enroll_device(gateway, account)

    page.goto(gateway.admin_url + "/")
    page.fill("#token", gateway.token)
    page.click("#sign-in button[type=submit]")
    playwright.expect(page.locator("#certificate-table")).to_contain_text("1 of 1 installed")

    # Turning on a CA the reporting device lacks: the dialog says so, and so does the API after.
    page.click("#generate")
    new_row = page.locator('#certificate-table tr[data-status="inactive"]')
    playwright.expect(new_row).to_have_count(1)
    new_row.locator('button[data-action="Activate"]').click()
    available = page.locator('#certificate-table tr[data-status="available"]:not(:has-text("in use"))')
    playwright.expect(available).to_have_count(1)
    available.locator('button[data-action="Turn on"]').click()
    playwright.expect(page.locator("#confirm-warning")).to_contain_text(
        "1 of 1 reporting devices have not installed this certificate yet"
    )
    page.click("#confirm-yes")
    playwright.expect(page.locator("#notice")).to_contain_text("Warning: 1 of 1 reporting devices")

    page.click('#tabs button[data-tab="devices"]')
    row = page.locator(f'#device-table tr[data-device="{device_id}"]')
    playwright.expect(row).to_contain_text("laptop-7")
    playwright.expect(row).to_contain_text("ana@example.com")
    posture = row.locator(f'li[data-rule="{rule_id}"]')
    playwright.expect(posture).to_contain_text("failed")
    playwright.expect(posture).to_contain_text("corp certificate")
    playwright.expect(posture).to_contain_text("no certificate in /etc/pki/client.pem")
    playwright.expect(posture).to_contain_text("expires")
    playwright.expect(row.locator("ul.stores")).to_contain_text("system: Gateway Inspection CA")
    page.screenshot(path=_shots(tmp_path) / "dashboard-devices.png")

    page.click('#tabs button[data-tab="logs"]')
    page.select_option("#posture-device", device_id)
    playwright.expect(page.locator("#posture-table")).to_contain_text("no certificate in /etc/pki/client.pem")
    page.select_option("#posture-outcome", "passed")
    playwright.expect(page.locator("#posture-table")).to_contain_text("No posture reports yet")


def test_the_rotation_panel_shows_the_step_the_coverage_and_who_lacks_the_new_ca(
    gateway: GatewayProcess, page: playwright.Page, tmp_path: Path
) -> None:
    from .test_rotation import enroll

    assert gateway.token
    ann = enroll(gateway, tmp_path, "ann")
    synced = ann.agent.run("sync-ca", "--root", str(ann.root), "--json")  # reports once, never again
    assert synced.returncode == 0, synced.stderr.decode()

    page.goto(gateway.admin_url + "/")
    page.fill("#token", gateway.token)
    page.click("#sign-in button[type=submit]")
    panel = page.locator("#rotation")
    playwright.expect(panel).to_have_attribute("data-state", "none")
    playwright.expect(page.locator("#rotation-summary")).to_contain_text("No rotation yet")

    page.fill("#rotation-deadline", "10m")
    page.fill("#rotation-grace", "1s")
    page.click("#rotate")
    playwright.expect(page.locator("#notice")).to_contain_text("Rotation started")
    playwright.expect(panel).to_have_attribute("data-step", "install")
    playwright.expect(page.locator("#rotation-coverage-text")).to_contain_text(
        "0 of 1 reporting devices have the new CA (need 100%)"
    )
    playwright.expect(page.locator("#rotation-missing")).to_contain_text(
        f"Lacks the new CA: ann ({ann.agent.device_id[:8]})"
    )
    playwright.expect(page.locator("#rotate")).to_be_disabled()
    page.screenshot(path=_shots(tmp_path) / "dashboard-rotation.png")

    panel.locator('button[data-action="Pause"]').click()
    playwright.expect(panel).to_have_attribute("data-state", "paused")
    panel.locator('button[data-action="Resume"]').click()
    playwright.expect(panel).to_have_attribute("data-state", "running")
    panel.locator('button[data-action="Cancel"]').click()
    playwright.expect(panel).to_have_attribute("data-state", "cancelled")
    playwright.expect(page.locator("#rotation-summary")).to_contain_text("was deactivated")
    playwright.expect(page.locator("#rotate")).to_be_enabled()
    with gateway.api() as api:
        account = api.get("/accounts").json()["result"][0]["id"]
        current = api.get(f"/accounts/{account}/gateway/certificates/rotations/current").json()["result"]
    assert current["state"] == "cancelled"
    playwright.expect(_row(page, current["new_certificate_id"])).not_to_have_attribute(
        "data-status", "available"
    )
