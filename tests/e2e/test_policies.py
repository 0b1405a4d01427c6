"""Gateway rules and Access enforced on real traffic: `gateway run --policies FILE` against the nginx
origin, driven by curl, a keep-alive stdlib client and the official SDK; the request log and
/metrics; the API's dry run against `gateway policy explain`; the policy CLI on real files.

One gateway (the `policy_lab` fixture) serves every test here and the browser test; a test that
changes it through the API puts it back."""

from __future__ import annotations

import datetime as dt
import glob
import hashlib
import re
import urllib.parse
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.support.wait import wait_until

from . import curl, sdk, tools
from .conftest import GatewayFactory
from .gateway_process import GatewayProcess, child_env
from .origin import Origin, body_for
from .pki import describe, issued_by, load_pem
from .policy_lab import (
    ACCESS_APP_NAME,
    ACCESS_POLICY_ID,
    ACCESS_POLICY_NAME,
    APP,
    BLOCK_REASON,
    BLOCK_RULE,
    BLOCKED,
    ERROR_RULE,
    OFF_RULE,
    PASS_RULE,
    PASSTHROUGH,
    REDIRECT_RULE,
    REDIRECTED,
    UNMATCHED,
    UNTRUSTED_DEFAULT,
    UNTRUSTED_ERROR,
    UNTRUSTED_PASS,
    KeepAlive,
    PolicyLab,
    decision_counts,
    metric_counts,
    redirect_target,
    settled_log_lines,
    wait_log_lines,
)
from .tunnel import client_context

pytestmark = pytest.mark.e2e

CaFile = Callable[[GatewayProcess], Path]
CURL_CERT_UNTRUSTED = 60  # CURLE_PEER_FAILED_VERIFICATION


def _headers(path: Path) -> dict[str, str]:
    """The last response's headers from a `curl -D FILE` dump (lower-case names)."""
    blocks = path.read_text(errors="replace").strip().split("\r\n\r\n")
    headers = {}
    for line in blocks[-1].splitlines()[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return headers


def _page_time(body: str) -> dt.datetime:
    found = re.search(r"^time: (\S+)$", body, re.MULTILINE)
    assert found, body
    return dt.datetime.strptime(found.group(1), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)


def _origin_saw(origin: Origin, marker: str) -> bool:
    """Whether nginx logged a request whose path holds `marker` (it logs as each one ends)."""
    log = origin.directory / "access.log"
    return log.exists() and marker in log.read_text(errors="replace")


def _origin_log_caught_up(lab: PolicyLab, origin: Origin, ca: Path) -> None:
    """An allowed request with a fresh marker, waited for in nginx's log (bounded): a request
    that reached the origin before it would be logged by now, so absent markers mean something."""
    marker = f"e2e-allowed-{uuid.uuid4().hex}"
    allowed = curl.via_proxy(lab.gateway.proxy_port, lab.url(UNMATCHED, f"/{marker}"), cacert=ca)
    assert allowed.returncode == 0, allowed.stderr
    assert allowed.status == 200 and body_for(UNMATCHED) in allowed.body, allowed.body[:300]
    assert wait_until(lambda: _origin_saw(origin, marker), 5), "nginx never logged the allowed request"


def _cert_der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


# --- 1. rules and Access from the --policies file, on real traffic -------------------------------


def test_file_block_rule_answers_text_block_page(
    policy_lab: PolicyLab, origin: Origin, ca_file: CaFile, tmp_path: Path
) -> None:
    gw = policy_lab.gateway
    ca = ca_file(gw)
    marker = f"e2e-block-{uuid.uuid4().hex}"
    header_file = tmp_path / "headers"
    before = dt.datetime.now(dt.UTC).replace(microsecond=0)
    blocked = curl.via_proxy(
        gw.proxy_port, policy_lab.url(BLOCKED, f"/{marker}?q=1"), cacert=ca,
        args=("-D", str(header_file)),
    )  # fmt: skip
    after = dt.datetime.now(dt.UTC)
    assert blocked.returncode == 0, blocked.stderr
    assert blocked.status == 403, blocked.body[:500]
    # Inspected (the block page needs the request): the leaf is the gateway's.
    assert blocked.certs and issued_by(blocked.certs[0], load_pem(ca.read_text()))
    headers = _headers(header_file)
    assert headers["content-type"].startswith("text/plain"), headers
    assert headers.get("x-gateway-rule") == BLOCK_RULE.id, headers
    lines = blocked.body.splitlines()
    assert lines[0] == "Blocked by policy", blocked.body
    assert BLOCK_REASON in lines, blocked.body
    assert f"host: {BLOCKED}" in lines, blocked.body
    assert f"rule: {BLOCK_RULE.name} ({BLOCK_RULE.id})" in lines, blocked.body
    assert before <= _page_time(blocked.body) <= after, blocked.body
    assert body_for(BLOCKED) not in blocked.body

    # Plain HTTP through the proxy is decided the same way.
    plain_http = curl.via_proxy(
        gw.proxy_port, f"http://{BLOCKED}:{policy_lab.origin_port}/{marker}-http", cacert=ca
    )
    assert plain_http.status == 403, plain_http.body[:500]
    assert f"rule: {BLOCK_RULE.name} ({BLOCK_RULE.id})" in plain_http.body.splitlines()

    # A host no rule names is allowed: the origin answers and logs it. Neither blocked request
    # reached the origin.
    _origin_log_caught_up(policy_lab, origin, ca)
    assert not _origin_saw(origin, marker)


def test_file_block_rule_answers_html_to_browsers(
    policy_lab: PolicyLab, ca_file: CaFile, tmp_path: Path
) -> None:
    gw = policy_lab.gateway
    header_file = tmp_path / "headers"
    page = curl.via_proxy(
        gw.proxy_port, policy_lab.url(BLOCKED), cacert=ca_file(gw),
        args=("-D", str(header_file), "-H", "Accept: text/html,application/xhtml+xml,*/*;q=0.8"),
    )  # fmt: skip
    assert page.status == 403, page.body[:500]
    assert _headers(header_file)["content-type"].startswith("text/html")
    assert page.body.lstrip().lower().startswith("<!doctype html>"), page.body[:200]
    for text in (BLOCK_RULE.name, BLOCK_RULE.id, BLOCK_REASON, BLOCKED):
        assert text in page.body, (text, page.body)


def test_file_redirect_rule_answers_307_and_client_follows(
    policy_lab: PolicyLab, ca_file: CaFile, tmp_path: Path
) -> None:
    gw = policy_lab.gateway
    ca = ca_file(gw)
    header_file = tmp_path / "headers"
    moved = curl.via_proxy(
        gw.proxy_port, policy_lab.url(REDIRECTED, "/a/b?q=1&r=2"), cacert=ca,
        args=("-D", str(header_file)),
    )  # fmt: skip
    assert moved.returncode == 0, moved.stderr
    assert moved.status == 307, moved.body[:500]
    expected = redirect_target(policy_lab.origin_port) + "/a/b?q=1&r=2"
    assert _headers(header_file)["location"] == expected

    # curl follows it through the proxy to the target, which the origin serves.
    followed = curl.via_proxy(
        gw.proxy_port, policy_lab.url(REDIRECTED, "/a/b?q=1&r=2"), cacert=ca, args=("-L",)
    )
    assert followed.returncode == 0, followed.stderr
    assert followed.status == 200
    assert body_for("www.example.com") in followed.body


def test_access_application_denies_request_without_identity(
    policy_lab: PolicyLab, origin: Origin, ca_file: CaFile
) -> None:
    """The application's only policy allows @example.com users; live traffic carries no identity
    yet, so nothing allows the request and Access denies it (deny by default)."""
    gw = policy_lab.gateway
    marker = f"e2e-access-{uuid.uuid4().hex}"
    denied = curl.via_proxy(gw.proxy_port, policy_lab.url(APP, f"/{marker}"), cacert=ca_file(gw))
    assert denied.returncode == 0, denied.stderr
    assert denied.status == 403, denied.body[:500]
    lines = denied.body.splitlines()
    assert lines[0] == "Access denied", denied.body
    assert ACCESS_APP_NAME in denied.body and "no policy matched" in denied.body, denied.body
    assert f"host: {APP}" in lines, denied.body
    assert body_for(APP) not in denied.body
    _origin_log_caught_up(policy_lab, origin, ca_file(gw))
    assert not _origin_saw(origin, marker), "the denied request reached the origin"


def test_do_not_inspect_rule_passes_the_origin_certificate_through(
    policy_lab: PolicyLab, origin: Origin, ca_file: CaFile
) -> None:
    gw = policy_lab.gateway
    served = origin.site_certs["*.origin.test"].certificate
    # Trusting only the origin's CA, curl verifies what it is shown: the origin's own leaf.
    through = curl.via_proxy(gw.proxy_port, policy_lab.url(PASSTHROUGH), cacert=origin.ca_path)
    assert through.returncode == 0, through.stderr
    assert through.status == 200
    assert body_for(PASSTHROUGH) in through.body
    assert through.certs, "curl saw no certificate"
    leaf = through.certs[0]
    assert _cert_der(leaf) == _cert_der(served), describe(leaf)
    assert issued_by(leaf, origin.ca.certificate), describe(leaf)

    # Trusting only the gateway's CA, the same request fails verification: no gateway leaf.
    refused = curl.via_proxy(gw.proxy_port, policy_lab.url(PASSTHROUGH), cacert=ca_file(gw))
    assert refused.returncode == CURL_CERT_UNTRUSTED, (refused.returncode, refused.stderr)

    # A sibling name under the same origin certificate is inspected (the rule is about one SNI).
    inspected = curl.via_proxy(gw.proxy_port, policy_lab.url(UNMATCHED), cacert=ca_file(gw))
    assert inspected.status == 200
    assert issued_by(inspected.certs[0], load_pem(gw.ca_pem())), describe(inspected.certs[0])


def test_untrusted_upstream_handled_as_the_rule_says(policy_lab: PolicyLab, ca_file: CaFile) -> None:
    gw = policy_lab.gateway
    ca = ca_file(gw)

    # No rule: the block page (SPEC §4), naming the verification failure.
    default = curl.via_proxy(gw.proxy_port, policy_lab.url(UNTRUSTED_DEFAULT), cacert=ca)
    assert default.returncode == 0, default.stderr
    assert default.status == 403, default.body[:500]
    assert default.body.splitlines()[0] == "Blocked: untrusted origin certificate", default.body
    assert f"The certificate of {UNTRUSTED_DEFAULT} is not trusted" in default.body
    assert body_for(UNTRUSTED_DEFAULT) not in default.body

    # untrusted_cert: error → Cloudflare's 526 page, naming the rule.
    error = curl.via_proxy(gw.proxy_port, policy_lab.url(UNTRUSTED_ERROR), cacert=ca)
    assert error.returncode == 0, error.stderr
    assert error.status == 526, error.body[:500]
    assert error.body.splitlines()[0] == "Invalid origin certificate", error.body
    assert f"rule: {ERROR_RULE.name} ({ERROR_RULE.id})" in error.body.splitlines(), error.body
    assert body_for(UNTRUSTED_ERROR) not in error.body

    # untrusted_cert: pass_through → the origin's content, still inspected (the client gets
    # the gateway's leaf and the rule's decision applies).
    passed = curl.via_proxy(gw.proxy_port, policy_lab.url(UNTRUSTED_PASS), cacert=ca)
    assert passed.returncode == 0, passed.stderr
    assert passed.status == 200, passed.body[:500]
    assert body_for(UNTRUSTED_PASS) in passed.body
    assert issued_by(passed.certs[0], load_pem(ca.read_text())), describe(passed.certs[0])

    # The pass-through of one name does not leak to the next connection to another name.
    again = curl.via_proxy(gw.proxy_port, policy_lab.url(UNTRUSTED_DEFAULT), cacert=ca)
    assert again.status == 403, again.body[:500]


def test_file_rules_are_listed_and_read_only_through_the_api(policy_lab: PolicyLab, ca_file: CaFile) -> None:
    gw = policy_lab.gateway
    account = policy_lab.account()
    path = f"/accounts/{account}/gateway/rules"
    with gw.api() as api:
        listed = api.get(path)
        assert listed.status_code == 200, listed.text
        by_id = {r["id"]: r for r in listed.json()["result"]}
        for rule in (OFF_RULE, BLOCK_RULE, REDIRECT_RULE, PASS_RULE, ERROR_RULE):
            assert rule.id in by_id, (rule, sorted(by_id))
            assert by_id[rule.id]["name"] == rule.name
            assert by_id[rule.id]["precedence"] == rule.precedence
            assert by_id[rule.id]["read_only"] is True, by_id[rule.id]
        block = by_id[BLOCK_RULE.id]
        assert block["action"] == "block"
        assert block["traffic"] == f'http.request.host == "{BLOCKED}"'
        assert block["rule_settings"]["block_reason"] == BLOCK_REASON

        changed = {k: block[k] for k in ("name", "action", "filters", "precedence", "traffic")}
        changed["traffic"] = 'http.request.host == "nothing.origin.test"'
        put = api.put(f"{path}/{BLOCK_RULE.id}", json=changed)
        assert put.status_code == 400, put.text
        error = put.json()["errors"][0]
        assert error["code"] == 1004, error
        message = error["message"]
        assert str(policy_lab.policy_file) in message and BLOCK_RULE.id in message, message

        deleted = api.delete(f"{path}/{BLOCK_RULE.id}")
        assert deleted.status_code == 400, deleted.text
        error = deleted.json()["errors"][0]
        assert error["code"] == 1004 and str(policy_lab.policy_file) in error["message"], error

        unchanged = api.get(f"{path}/{BLOCK_RULE.id}")
        assert unchanged.status_code == 200, unchanged.text
        assert unchanged.json()["result"]["traffic"] == block["traffic"]

    # Nothing was half-saved: the rule still blocks.
    still = curl.via_proxy(gw.proxy_port, policy_lab.url(BLOCKED), cacert=ca_file(gw))
    assert still.status == 403 and BLOCK_RULE.id in still.body, still.body[:500]


# --- 2. API changes take effect on the next request, without a restart ---------------------------


def test_sdk_rule_takes_effect_on_the_next_request(
    policy_lab: PolicyLab, origin: Origin, ca_file: CaFile
) -> None:
    gw = policy_lab.gateway
    pid, starts = gw.proc.pid if gw.proc else None, gw.starts
    ca = ca_file(gw)
    reason = "API rule: origin.test is closed for the e2e test."
    # A connection opened before the change: the next request on it must see the change too.
    keep = KeepAlive(gw.proxy_port, "origin.test", origin.port, client_context(ca))
    try:
        status, body = keep.get("/")
        assert status == 200 and body_for("origin.test") in body
        sock = keep.socket_id
        with sdk.client(gw) as c:
            account = sdk.account_id(c)
            rule = c.zero_trust.gateway.rules.create(
                account_id=account,
                name="e2e API block origin.test",
                action="block",
                precedence=50,
                filters=["http"],
                traffic='http.request.host == "origin.test"',
                rule_settings={"block_page_enabled": True, "block_reason": reason},
            )
            assert rule is not None and rule.id
            try:
                blocked = curl.via_proxy(gw.proxy_port, origin.url("origin.test"), cacert=ca)
                assert blocked.status == 403, blocked.body[:500]
                assert reason in blocked.body.splitlines()
                assert f"rule: e2e API block origin.test ({rule.id})" in blocked.body.splitlines()

                status, body = keep.get("/")
                assert keep.socket_id == sock, "the client reconnected"
                assert status == 403 and rule.id in body, (status, body[:500])
            finally:
                c.zero_trust.gateway.rules.delete(rule.id, account_id=account)
            remaining = [r.id for r in c.zero_trust.gateway.rules.list(account_id=account)]
            assert rule.id not in remaining

        allowed = curl.via_proxy(gw.proxy_port, origin.url("origin.test"), cacert=ca)
        assert allowed.status == 200 and body_for("origin.test") in allowed.body
        status, body = keep.get("/")
        assert keep.socket_id == sock
        assert status == 200 and body_for("origin.test") in body
    finally:
        keep.close()
    assert gw.running and gw.proc is not None and gw.proc.pid == pid and gw.starts == starts


def test_tls_decrypt_off_passes_every_connection_through(
    policy_lab: PolicyLab, origin: Origin, ca_file: CaFile
) -> None:
    gw = policy_lab.gateway
    gateway_ca = ca_file(gw)
    with sdk.client(gw) as c:
        account = sdk.account_id(c)
        c.zero_trust.gateway.configurations.edit(
            account_id=account, settings={"tls_decrypt": {"enabled": False}}
        )
        try:
            got = c.zero_trust.gateway.configurations.get(account_id=account)
            assert got is not None and got.settings is not None
            assert got.settings.tls_decrypt is not None and got.settings.tls_decrypt.enabled is False

            plain = curl.via_proxy(gw.proxy_port, origin.url("origin.test"), cacert=origin.ca_path)
            assert plain.returncode == 0, plain.stderr
            assert plain.status == 200 and body_for("origin.test") in plain.body
            served = origin.site_certs["origin.test"].certificate
            assert _cert_der(plain.certs[0]) == _cert_der(served), describe(plain.certs[0])

            # Not inspected, so HTTP rules cannot apply: the blocked host answers from the origin.
            blocked = curl.via_proxy(gw.proxy_port, policy_lab.url(BLOCKED), cacert=origin.ca_path)
            assert blocked.status == 200 and body_for(BLOCKED) in blocked.body, blocked.body[:300]

            refused = curl.via_proxy(gw.proxy_port, origin.url("origin.test"), cacert=gateway_ca)
            assert refused.returncode == CURL_CERT_UNTRUSTED, (refused.returncode, refused.stderr)
        finally:
            c.zero_trust.gateway.configurations.edit(
                account_id=account, settings={"tls_decrypt": {"enabled": True}}
            )

    inspected = curl.via_proxy(gw.proxy_port, origin.url("origin.test"), cacert=gateway_ca)
    assert inspected.returncode == 0, inspected.stderr
    assert inspected.status == 200
    assert issued_by(inspected.certs[0], load_pem(gateway_ca.read_text()))
    blocked = curl.via_proxy(gw.proxy_port, policy_lab.url(BLOCKED), cacert=gateway_ca)
    assert blocked.status == 403 and BLOCK_RULE.id in blocked.body, blocked.body[:300]


def test_sdk_do_not_inspect_rule_runs_before_block_rules(
    policy_lab: PolicyLab, origin: Origin, ca_file: CaFile
) -> None:
    """An `off` rule decides at the ClientHello, before every HTTP rule whatever the precedence:
    one created for the blocked host (behind the file's block rule in precedence) makes the
    next connection pass through to the origin; deleting it brings the block page back."""
    gw = policy_lab.gateway
    with sdk.client(gw) as c:
        account = sdk.account_id(c)
        rule = c.zero_trust.gateway.rules.create(
            account_id=account,
            name="e2e API do not inspect blocked host",
            action="off",
            precedence=900,
            filters=["http"],
            traffic=f'net.sni.host == "{BLOCKED}"',
        )
        assert rule is not None and rule.id
        try:
            through = curl.via_proxy(gw.proxy_port, policy_lab.url(BLOCKED), cacert=origin.ca_path)
            assert through.returncode == 0, through.stderr
            assert through.status == 200 and body_for(BLOCKED) in through.body, through.body[:300]
            served = origin.site_certs["*.origin.test"].certificate
            assert _cert_der(through.certs[0]) == _cert_der(served), describe(through.certs[0])
        finally:
            c.zero_trust.gateway.rules.delete(rule.id, account_id=account)
    blocked = curl.via_proxy(gw.proxy_port, policy_lab.url(BLOCKED), cacert=ca_file(gw))
    assert blocked.status == 403 and BLOCK_RULE.id in blocked.body, blocked.body[:300]


def test_sdk_access_changes_take_effect_on_the_next_request(policy_lab: PolicyLab, ca_file: CaFile) -> None:
    """Access objects made through the SDK decide live traffic at once: a bypass policy for the
    client's address lets the application's host through; narrowed to another network (PUT) it
    no longer does (deny by default); with the application deleted the host is unprotected."""
    gw = policy_lab.gateway
    ca = ca_file(gw)
    host = "bypass.origin.test"

    def get() -> curl.CurlResult:
        return curl.via_proxy(gw.proxy_port, policy_lab.url(host), cacert=ca)

    with sdk.client(gw) as c:
        account = sdk.account_id(c)
        access = c.zero_trust.access
        policy = access.policies.create(
            account_id=account,
            name="e2e bypass from loopback",
            decision="bypass",
            include=[{"ip": {"ip": "127.0.0.1/32"}}],
        )
        assert policy is not None and policy.id
        app_id: str | None = None
        try:
            app = access.applications.create(
                account_id=account,
                type="self_hosted",
                name="e2e bypass app",
                domain=host,
                policies=[policy.id],
            )
            assert app is not None and app.id
            app_id = app.id
            allowed = get()
            assert allowed.status == 200 and body_for(host) in allowed.body, allowed.body[:300]

            access.policies.update(
                policy.id,
                account_id=account,
                name="e2e bypass from loopback",
                decision="bypass",
                include=[{"ip": {"ip": "10.0.0.0/8"}}],
            )
            denied = get()
            assert denied.status == 403, denied.body[:300]
            assert denied.body.splitlines()[0] == "Access denied", denied.body
            assert "e2e bypass app" in denied.body, denied.body

            access.applications.delete(app_id, account_id=account)
            app_id = None
            open_again = get()
            assert open_again.status == 200 and body_for(host) in open_again.body
        finally:
            if app_id is not None:
                access.applications.delete(app_id, account_id=account)
            access.policies.delete(policy.id, account_id=account)


def test_redirect_include_context_passes_context_as_query(
    policy_lab: PolicyLab, ca_file: CaFile, tmp_path: Path
) -> None:
    """rule_settings.redirect.include_context (Cloudflare: "pass the context information as
    query parameters") is accepted, stored and returned: the Location must then carry the
    context, at least the rule that redirected and the site that was asked for."""
    gw = policy_lab.gateway
    host = "context.origin.test"
    target = "https://www.example.com/landing"
    with sdk.client(gw) as c:
        account = sdk.account_id(c)
        rule = c.zero_trust.gateway.rules.create(
            account_id=account,
            name="e2e redirect with context",
            action="redirect",
            precedence=60,
            filters=["http"],
            traffic=f'http.request.host == "{host}"',
            rule_settings={"redirect": {"target_uri": target, "include_context": True}},
        )
        assert rule is not None and rule.id
        try:
            stored = c.zero_trust.gateway.rules.get(rule.id, account_id=account)
            assert stored is not None and stored.rule_settings is not None
            assert stored.rule_settings.redirect is not None
            assert stored.rule_settings.redirect.include_context is True
            header_file = tmp_path / "headers"
            moved = curl.via_proxy(
                gw.proxy_port, policy_lab.url(host, "/page?a=1"), cacert=ca_file(gw),
                args=("-D", str(header_file)),
            )  # fmt: skip
        finally:
            c.zero_trust.gateway.rules.delete(rule.id, account_id=account)
    assert moved.status == 307, moved.body[:300]
    location = _headers(header_file)["location"]
    parts = urllib.parse.urlsplit(location)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == target, location
    values = [v for _, v in urllib.parse.parse_qsl(parts.query)]
    assert rule.id in values, f"include_context: true, yet no context in Location {location!r}"
    assert any(host in v for v in values), location


def test_redirect_preserving_path_keeps_the_target_query(
    policy_lab: PolicyLab, ca_file: CaFile, tmp_path: Path
) -> None:
    """preserve_path_and_query appends the request's path and query to target_uri: a query the
    administrator put in target_uri (a tracking or landing parameter) must survive it."""
    gw = policy_lab.gateway
    host = "campaign.origin.test"
    with sdk.client(gw) as c:
        account = sdk.account_id(c)
        rule = c.zero_trust.gateway.rules.create(
            account_id=account,
            name="e2e redirect keeping the target query",
            action="redirect",
            precedence=61,
            filters=["http"],
            traffic=f'http.request.host == "{host}"',
            rule_settings={
                "redirect": {
                    "target_uri": "https://www.example.com/moved?src=gateway",
                    "preserve_path_and_query": True,
                }
            },
        )
        assert rule is not None and rule.id
        try:
            header_file = tmp_path / "headers"
            moved = curl.via_proxy(
                gw.proxy_port, policy_lab.url(host, "/a?b=1"), cacert=ca_file(gw),
                args=("-D", str(header_file)),
            )  # fmt: skip
        finally:
            c.zero_trust.gateway.rules.delete(rule.id, account_id=account)
    assert moved.status == 307, moved.body[:300]
    location = _headers(header_file)["location"]
    parts = urllib.parse.urlsplit(location)
    assert (parts.scheme, parts.netloc, parts.path) == ("https", "www.example.com", "/moved/a")
    query = urllib.parse.parse_qs(parts.query)
    assert query.get("b") == ["1"], location
    assert query.get("src") == ["gateway"], f"target_uri's own query was dropped: {location!r}"


def test_block_page_escapes_rule_text_and_settings(policy_lab: PolicyLab, ca_file: CaFile) -> None:
    """Rule names, reasons and block_page settings are text, never markup: an administrator's
    (or an attacker with API access's) HTML must not run in every blocked user's browser."""
    gw = policy_lab.gateway
    host = "markup.origin.test"
    name = '<img src=x onerror="alert(1)">'
    reason = "<script>alert(2)</script>"
    with sdk.client(gw) as c:
        account = sdk.account_id(c)
        rule = c.zero_trust.gateway.rules.create(
            account_id=account,
            name=name,
            action="block",
            precedence=62,
            filters=["http"],
            traffic=f'http.request.host == "{host}"',
            rule_settings={"block_reason": reason},
        )
        assert rule is not None and rule.id
        c.zero_trust.gateway.configurations.edit(
            account_id=account,
            settings={
                "block_page": {
                    "header_text": "<b>bold</b>",
                    "footer_text": "</footer><script>alert(3)</script>",
                    "background_color": "red}</style><script>alert(4)</script>",
                }
            },
        )
        try:
            page = curl.via_proxy(
                gw.proxy_port, policy_lab.url(host), cacert=ca_file(gw),
                args=("-H", "Accept: text/html"),
            )  # fmt: skip
        finally:
            c.zero_trust.gateway.configurations.edit(account_id=account, settings={"block_page": None})
            c.zero_trust.gateway.rules.delete(rule.id, account_id=account)
    assert page.status == 403, page.body[:300]
    html = page.body
    assert "<script" not in html.lower() and "<img" not in html.lower() and "<b>" not in html, html
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in html, html
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in html, html
    assert "&lt;b&gt;bold&lt;/b&gt;" in html, html
    assert html.count("</style>") == 1, html


# --- 4. the request log and the metrics -----------------------------------------------------------


def test_request_log_and_metrics_count_each_decision(
    policy_lab: PolicyLab, origin: Origin, ca_file: CaFile
) -> None:
    gw = policy_lab.gateway
    ca = ca_file(gw)
    fingerprint = policy_lab.in_use_fingerprint()
    der = load_pem(gw.ca_pem()).public_bytes(serialization.Encoding.DER)
    assert fingerprint.upper() == ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())

    tag = uuid.uuid4().hex[:12]
    # (host, path, action, stage, rule id, status)
    cases = [
        (UNMATCHED, f"/log-{tag}/allowed", "allow", "request", None, 200),
        (BLOCKED, f"/log-{tag}/blocked", "block", "request", BLOCK_RULE.id, 403),
        (REDIRECTED, f"/log-{tag}/redirected", "redirect", "request", REDIRECT_RULE.id, 307),
        (APP, f"/log-{tag}/app", "block", "access", None, 403),
    ]
    lines_before = len(settled_log_lines(policy_lab))
    counts_before = decision_counts(gw)
    started = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    bodies = {}
    for host, path, _, _, _, status in cases:
        result = curl.via_proxy(gw.proxy_port, policy_lab.url(host, path + "?secret=1"), cacert=ca)
        assert result.status == status, (host, result.status, result.body[:300])
        bodies[path] = result.body
    # A connection passed through at the ClientHello: no HTTP request is seen, none logged.
    through = curl.via_proxy(
        gw.proxy_port, policy_lab.url(PASSTHROUGH, f"/log-{tag}/through"), cacert=origin.ca_path
    )
    assert through.status == 200, through.stderr

    lines = wait_log_lines(policy_lab, lines_before + len(cases))
    new = lines[lines_before:]
    assert len(new) == len(cases), f"expected {len(cases)} new log lines, got:\n{new}"
    ended = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
    nodes = {line["node"] for line in new}
    assert len(nodes) == 1 and all(nodes), nodes
    by_path = {line["path"]: line for line in new}
    assert set(by_path) == {path for _, path, *_ in cases}, new
    for host, path, action, stage, rule_id, status in cases:
        line = by_path[path]
        assert line["host"] == host, line
        assert (line["method"], line["scheme"], line["src_ip"]) == ("GET", "https", "127.0.0.1")
        assert (line["action"], line["stage"], line["rule_id"], line["status"]) == (
            action, stage, rule_id, status,
        ), line  # fmt: skip
        assert line["bytes"] == len(bodies[path].encode()), (line, len(bodies[path].encode()))
        assert line["ca_fingerprint"] == fingerprint, line
        assert line["device"] is None and line["user"] is None, line
        when = dt.datetime.fromisoformat(line["time"])
        assert started <= when <= ended, line
        assert "secret" not in str(line["path"]), line  # the query string is not logged

    delta = decision_counts(gw)
    delta.subtract(counts_before)
    changed = {k: v for k, v in delta.items() if v}
    # One count per logged request, with the log's action and stage (the Access denial is
    # "block"/"access" in both); the passed-through connection was decided at the ClientHello.
    assert changed == {
        ("allow", "request"): 1,
        ("block", "request"): 1,
        ("redirect", "request"): 1,
        ("block", "access"): 1,
        ("off", "connection"): 1,
    }, changed


def test_metrics_count_client_handshakes_by_outcome(
    policy_lab: PolicyLab, origin: Origin, ca_file: CaFile
) -> None:
    """gateway_client_handshakes_total says it counts "TLS connections from clients, by outcome
    (intercepted, passed_through, failed)": each outcome must move when it happens."""
    gw = policy_lab.gateway
    before = metric_counts(gw, "gateway_client_handshakes", "outcome")
    inspected = curl.via_proxy(gw.proxy_port, policy_lab.url(UNMATCHED), cacert=ca_file(gw))
    assert inspected.status == 200
    through = curl.via_proxy(gw.proxy_port, policy_lab.url(PASSTHROUGH), cacert=origin.ca_path)
    assert through.status == 200
    # A client that does not trust the gateway's CA aborts the intercepted handshake.
    refused = curl.via_proxy(gw.proxy_port, policy_lab.url(UNMATCHED), cacert=origin.ca_path)
    assert refused.returncode == CURL_CERT_UNTRUSTED, refused.stderr
    after = metric_counts(gw, "gateway_client_handshakes", "outcome")
    after.subtract(before)
    changed = {k: v for k, v in after.items() if v}
    assert changed == {("intercepted",): 1, ("passed_through",): 1, ("failed",): 1}, changed


# --- 5. the dry run: API and CLI agree ----------------------------------------------------------


def test_policy_test_endpoint_and_cli_explain_agree(policy_lab: PolicyLab) -> None:
    gw = policy_lab.gateway
    account = policy_lab.account()
    url = policy_lab.url(BLOCKED, "/report?q=1")
    with gw.api() as api:
        answer = api.post(
            f"/accounts/{account}/gateway/policy_test",
            json={"request": {"method": "GET", "url": url},
                  "expect": {"action": "block", "rule": BLOCK_RULE.name}},
        )  # fmt: skip
        assert answer.status_code == 200, answer.text
        result = answer.json()["result"]
        assert result["action"] == "block"
        assert result["stage"] == "request"
        assert result["rule"] == {
            "id": BLOCK_RULE.id,
            "name": BLOCK_RULE.name,
            "precedence": BLOCK_RULE.precedence,
        }
        assert result["access"] is None
        assert result["passed"] is True and result["problems"] == []

        # Identity, which live traffic does not carry yet, reaches Access through the dry run.
        allowed = api.post(
            f"/accounts/{account}/gateway/policy_test",
            json={"request": {"url": policy_lab.url(APP)}, "identity": {"email": "ana@example.com"}},
        ).json()["result"]
        assert allowed["action"] == "allow", allowed
        assert allowed["access"]["allowed"] is True, allowed
        assert allowed["access"]["policy"] == {
            "id": ACCESS_POLICY_ID,
            "name": ACCESS_POLICY_NAME,
            "decision": "allow",
        }
        anonymous = api.post(
            f"/accounts/{account}/gateway/policy_test", json={"request": {"url": policy_lab.url(APP)}}
        ).json()["result"]
        assert anonymous["access"]["allowed"] is False and anonymous["access"]["policy"] is None

    explain = tools.run(
        [tools.venv_program("gateway"), "policy", "explain", str(policy_lab.policy_file), "--url", url],
        env=child_env(),
    )
    out = explain.stdout.decode()
    assert explain.returncode == 0, explain.stderr.decode()
    assert f"'{BLOCK_RULE.name}' (block): MATCH" in out, out
    result_line = out.strip().splitlines()[-1]
    assert result_line == (
        f"result: block by rule '{BLOCK_RULE.name}' (precedence {BLOCK_RULE.precedence}, id {BLOCK_RULE.id})"
    ), out
    # Same rules, same request: the CLI prints the trace the API returns.
    assert result_line == f"result: {result['summary']}"
    assert out.strip() == result["trace"].strip()

    with_identity = tools.run(
        [tools.venv_program("gateway"), "policy", "explain", str(policy_lab.policy_file),
         "--url", policy_lab.url(APP), "--email", "ana@example.com"],
        env=child_env(),
    )  # fmt: skip
    assert with_identity.returncode == 0, with_identity.stderr.decode()
    assert with_identity.stdout.decode().strip() == allowed["trace"].strip()


# --- 6. the policy CLI on real files -------------------------------------------------------------


def test_policy_test_runs_the_shipped_examples() -> None:
    files = sorted(glob.glob(str(tools.REPO / "policies" / "examples" / "*.yaml")))
    assert len(files) >= 2, files
    ran = tools.run([tools.venv_program("gateway"), "policy", "test", *files], env=child_env())
    out = ran.stdout.decode()
    assert ran.returncode == 0, out + ran.stderr.decode()
    summary = re.search(r"^(\d+) passed, 0 failed$", out, re.MULTILINE)
    assert summary and int(summary.group(1)) > 0, out
    assert "FAIL" not in out, out
    assert out.count("PASS ") == int(summary.group(1)), out


BROKEN = """\
gateway_rules:
  - name: Block gambling
    precedence: 10
    action: block
    traffic: http.request.hots == "casino.example"
  - name: Block social
    precedence: ten
    action: block
    traffic: http.request.host == "social.example"
"""


def test_policy_lint_points_at_file_line_col(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(BROKEN)
    ran = tools.run([tools.venv_program("gateway"), "policy", "lint", str(broken)], env=child_env())
    err = ran.stderr.decode()
    assert ran.returncode == 1, (ran.returncode, ran.stdout.decode(), err)
    # line 5, column 14: the 'h' of http.request.hots; line 7, column 17: 'ten'
    assert f"{broken}:5:14: " in err, err
    assert "unknown field 'http.request.hots'" in err and "http.request.host" in err, err
    assert f"{broken}:7:17: " in err, err
    assert "precedence" in err, err
    assert not ran.stdout.decode().startswith("ok"), ran.stdout.decode()

    fine = tmp_path / "fine.yaml"
    fine.write_text(BROKEN.replace("hots", "host").replace("ten", "20"))
    ok = tools.run([tools.venv_program("gateway"), "policy", "lint", str(fine)], env=child_env())
    assert ok.returncode == 0, ok.stderr.decode()
    assert ok.stdout.decode().startswith("ok: 2 gateway rules"), ok.stdout.decode()


def test_gateway_refuses_to_start_with_a_broken_policy_file(
    gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(BROKEN)
    gw = gateway_factory()
    gw.extra_args += ["--policies", str(broken)]
    gw.log_dir.mkdir(parents=True, exist_ok=True)
    ran = tools.run(gw.argv(), env=child_env({"GATEWAY_ADMIN_TOKEN": gw.token or ""}), timeout=30)
    err = ran.stderr.decode()
    assert ran.returncode not in (0, None), err
    assert f"{broken}:5:14" in err and f"{broken}:7:17" in err, err
    assert not tools.wait_for_port(gw.proxy_port, timeout=0.2), "the proxy listened anyway"
