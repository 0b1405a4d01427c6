"""Device posture end to end (issue 4) on loopback with the real `gateway run`, the real
`gateway agent` and admin CLI commands, curl through the proxy, nginx as the origin, and NSS
`certutil` / `pk12util` for a real NSS database.

One gateway (the `lab` fixture) serves the module. Setup: a device signing CA made with
`cryptography` and uploaded with the SDK (`mtls_certificates.create`, no key), two
`client_certificate_v2` rules made with the SDK (one reads PEM files, one the agent user's NSS
database `$HOME/.pki/nssdb`: docs/agent.md offers no other way to point the agent at a
non-default database, and the API refuses a directory in `trust_stores`), two Gateway rules
(block `origin.test` unless the PEM rule passed; block `failed.origin.test` when it failed), and
the agent enrolled with a token from `gateway device token`.

Each test reports again before it needs a fresh pass and puts back what it changes, except the
`--require-device` test, which restarts the gateway with the flag and runs last. The PEM rule's
results expire after PEM_EXPIRATION seconds (for the expiry test), the NSS rule's after
NSS_EXPIRATION."""

from __future__ import annotations

import base64
import datetime as dt
import http.client
import json
import re
import secrets
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from tests.support.pki import Issued, issue_leaf, make_ca
from tests.support.wait import poll, wait_until

from . import curl, sdk, tools
from .conftest import GatewayFactory
from .device_lab import (
    Agent,
    admin_cli,
    delete_from_nssdb,
    import_into_nssdb,
    make_nssdb,
    mode,
    nss_nicknames,
    passing_claim,
    table_rows,
)
from .gateway_process import GatewayProcess, child_env
from .origin import HEADERS_PATH, Origin, body_for, echoed_proxy_authorization
from .policy_lab import KeepAlive
from .tunnel import client_context

pytestmark = pytest.mark.e2e

HOSTNAME = socket.gethostname()
CN = f"{HOSTNAME}.corp"
EMAIL = "ann@example.com"
PEM_RULE = "e2e PEM device certificate"
NSS_RULE = "e2e NSS device certificate"
PEM_EXPIRATION = 6  # seconds: the expiry test waits this long
NSS_EXPIRATION = "2m"
NSS_NICKNAME = "e2e corp device"
BLOCK_REASON = "origin.test needs a managed device (e2e)."
GATEWAY_RULE = "e2e block origin.test without the PEM device certificate"
FAILED_HOST = "failed.origin.test"
FAILED_RULE = "e2e block failed.origin.test when the PEM check failed"
REPORT_COLUMNS = ("STORED", "PASS EXPIRES", "REASON")
CHECK_COLUMNS = ("OUTCOME", "CERTIFICATE OR REASON")
SHORT_CERT_SECONDS = 8  # a certificate that expires long before the NSS rule's results do
DECISION_DELAY = 1.0  # a stored result reaches the proxy's decisions within this (issue 4)


@dataclass
class PostureLab:
    gw: GatewayProcess
    origin: Origin
    base: Path
    gateway_ca: Path
    signing_ca: Issued
    pem_client: Issued
    nss_client: Issued
    pem_cert: Path
    pem_key: Path
    nssdb: Path
    agent: Agent
    account: str
    upload_id: str
    pem_rule_id: str
    nss_rule_id: str
    gateway_rule_id: str
    failed_rule_id: str
    serial: str
    enroll_stdout: str
    enroll_stderr: str
    token: str
    notes: list[str] = field(default_factory=list)

    # -- the agent ---------------------------------------------------------------------------
    def report(self) -> dict[str, tuple[str, ...]]:
        """`gateway agent report`: what the server stored, by rule name (exit 3 when one failed)."""
        ran = self.agent.run("report")
        out, err = ran.stdout.decode(), ran.stderr.decode()
        assert ran.returncode in (0, 3), (ran.returncode, out, err)
        rows = table_rows(out, REPORT_COLUMNS)
        assert set(rows) == {PEM_RULE, NSS_RULE}, out
        failed = any(row[0] == "fail" for row in rows.values())
        assert ran.returncode == (3 if failed else 0), (ran.returncode, out, err)
        return rows

    def report_passing(self) -> dict[str, tuple[str, ...]]:
        rows = self.report()
        for name in (PEM_RULE, NSS_RULE):
            assert rows[name][0] == "pass (verified)", rows
        return rows

    # -- through the proxy -------------------------------------------------------------------
    def get(
        self, url: str, *, as_device: bool = True, proxy_user: str | None = None,
        args: tuple[str, ...] = (),
    ) -> curl.CurlResult:  # fmt: skip
        user = proxy_user or (self.agent.proxy_user if as_device else None)
        extra = ("--proxy-user", user) if user else ()
        return curl.via_proxy(self.gw.proxy_port, url, cacert=self.gateway_ca, args=(*extra, *args))

    def keep_alive(self, host: str = "origin.test", agent: Agent | None = None) -> KeepAlive:
        """One CONNECT tunnel, identified as `agent`'s device (the lab's by default)."""
        who = agent or self.agent
        return KeepAlive(
            self.gw.proxy_port, host, self.origin.port, client_context(self.gateway_ca),
            proxy_headers={"Proxy-Authorization": who.basic_auth()},
        )  # fmt: skip

    # -- what the gateway records ------------------------------------------------------------
    def request_log(self) -> list[dict[str, Any]]:
        path = self.gw.data_dir / "requests.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def logged(self, path: str, *, count: int = 1, timeout: float = 5) -> list[dict[str, Any]]:
        """The `count` request-log lines for `path` (written in batches: bounded poll)."""
        found = poll(
            lambda: [line for line in self.request_log() if line.get("path") == path],
            lambda lines: len(lines) >= count,
            timeout,
        )
        assert len(found) == count, (path, found)
        return found

    def posture_logs(self, **query: str) -> list[dict[str, Any]]:
        with self.gw.api() as api:
            got = api.get(f"/accounts/{self.account}/devices/posture/logs", params=query)
        assert got.status_code == 200, got.text
        result = got.json()["result"]
        assert isinstance(result, list), result
        return result

    def identity(self) -> dict[str, Any]:
        user = user_id_of(self)
        with self.gw.api() as api:
            got = api.get(f"/accounts/{self.account}/access/users/{user}/last_seen_identity")
        assert got.status_code == 200, got.text
        result = got.json()["result"]
        assert isinstance(result, dict), result
        return result


def user_id_of(lab: PostureLab) -> str:
    with lab.gw.api() as api:
        got = api.get(f"/accounts/{lab.account}/devices/{lab.agent.device_id}")
    assert got.status_code == 200, got.text
    return str(got.json()["result"]["user"]["id"])


def block_rule_blocked(result: curl.CurlResult, lab: PostureLab) -> bool:
    lines = result.body.splitlines()
    return (
        result.status == 403
        and bool(lines)
        and lines[0] == "Blocked by policy"
        and f"rule: {GATEWAY_RULE} ({lab.gateway_rule_id})" in lines
        and BLOCK_REASON in lines
    )


def wait_status(lab: PostureLab, url: str, status: int, *, within: float = DECISION_DELAY) -> curl.CurlResult:
    """Request `url` as the device until it answers `status` (bounded); the last answer."""
    got = poll(lambda: lab.get(url), lambda answer: answer.status == status, within)
    assert got.status == status, (url, got.status, got.body[:300])
    return got


def failed_rule_blocked(result: curl.CurlResult, lab: PostureLab) -> bool:
    return result.status == 403 and f"rule: {FAILED_RULE} ({lab.failed_rule_id})" in result.body.splitlines()


def wait_decision(
    lab: PostureLab, url: str, *, blocked: bool, within: float
) -> tuple[float, curl.CurlResult]:
    """Request `url` as the device until the Gateway rule's answer is `blocked` (bounded by
    `within` seconds); the seconds it took and the last answer."""
    started = time.monotonic()
    got = poll(lambda: lab.get(url), lambda answer: block_rule_blocked(answer, lab) is blocked, within)
    return time.monotonic() - started, got


def parse_time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, origin: Origin, hosts_file: Path) -> Iterator[PostureLab]:
    base = tmp_path_factory.mktemp("posture")
    gw = GatewayProcess(
        data_dir=base / "data", log_dir=base / "logs", upstream_ca=origin.ca_path, hosts=hosts_file
    )
    with gw.serving():
        yield _setup(gw, origin, base)


def _setup(gw: GatewayProcess, origin: Origin, base: Path) -> PostureLab:
    gateway_ca = base / "gateway-ca.pem"
    gateway_ca.write_text(gw.ca_pem())

    # A signing CA and two device certificates for "${hostname}.corp" (clientAuth): one in PEM
    # files (certificate and key apart, both listed), one with its key in a real NSS database.
    signing_ca = make_ca("e2e Device Signing CA", key_identifiers=True)
    pem_client = issue_leaf(signing_ca, CN, authority_key_identifier=True)
    nss_client = issue_leaf(signing_ca, CN, authority_key_identifier=True)
    device_dir = base / "device"
    device_dir.mkdir(mode=0o700)
    pem_cert, pem_key = pem_client.write(device_dir, "client")
    home = base / "home"
    nssdb = make_nssdb(home / ".pki" / "nssdb")
    import_into_nssdb(nssdb, nss_client, NSS_NICKNAME)

    with sdk.client(gw) as c:
        account = sdk.account_id(c)
        upload = c.mtls_certificates.create(
            account_id=account, ca=True, certificates=signing_ca.cert_pem(), name="e2e device CA"
        )
        assert upload is not None and upload.id

        def rule(name: str, expiration: str, locations: dict[str, list[str]]) -> str:
            made = c.zero_trust.devices.posture.create(
                account_id=account,
                name=name,
                type="client_certificate_v2",
                schedule="1m",
                expiration=expiration,
                match=[{"platform": "linux"}],
                input={  # type: ignore[arg-type]  # locations is a plain dict here
                    "certificate_id": upload.id,
                    "cn": "${hostname}.corp",
                    "extended_key_usage": ["clientAuth"],
                    "check_private_key": True,
                    "operating_system": "linux",
                    "locations": locations,
                },
            )
            assert made is not None and made.id, made
            return made.id

        pem_rule_id = rule(PEM_RULE, f"{PEM_EXPIRATION}s", {"paths": [str(pem_cert), str(pem_key)]})
        nss_rule_id = rule(NSS_RULE, NSS_EXPIRATION, {"trust_stores": ["user"]})

        gateway_rule = c.zero_trust.gateway.rules.create(
            account_id=account,
            name=GATEWAY_RULE,
            action="block",
            precedence=100,
            filters=["http"],
            traffic='http.request.host == "origin.test"',
            device_posture=f'not(any(device_posture.checks.passed[*] in {{"{pem_rule_id}"}}))',
            rule_settings={"block_page_enabled": True, "block_reason": BLOCK_REASON},
        )
        assert gateway_rule is not None and gateway_rule.id
        # device_posture.checks.failed: a failed (or expired) PEM result blocks this host.
        failed_rule = c.zero_trust.gateway.rules.create(
            account_id=account,
            name=FAILED_RULE,
            action="block",
            precedence=120,
            filters=["http"],
            traffic=f'http.request.host == "{FAILED_HOST}"',
            device_posture=f'any(device_posture.checks.failed[*] in {{"{pem_rule_id}"}})',
        )
        assert failed_rule is not None and failed_rule.id

    # An enrollment token from the CLI, then the agent enrolls with it.
    made = admin_cli(gw, "device", "token", "--email", EMAIL, "--ttl", "10m")
    assert made.returncode == 0, made.stderr.decode()
    token = made.stdout.decode().strip()
    assert token.startswith("gwe1.") and "\n" not in token, made.stdout.decode()
    serial = f"E2E-{secrets.token_hex(4).upper()}"
    agent = Agent(state=base / "agent" / "state.json", home=home)
    enrolled = agent.run("enroll", "--token", token, "--serial-number", serial)
    assert enrolled.returncode == 0, enrolled.stderr.decode()
    return PostureLab(
        gw=gw, origin=origin, base=base, gateway_ca=gateway_ca, signing_ca=signing_ca,
        pem_client=pem_client, nss_client=nss_client, pem_cert=pem_cert, pem_key=pem_key,
        nssdb=nssdb, agent=agent, account=account, upload_id=upload.id,
        pem_rule_id=pem_rule_id, nss_rule_id=nss_rule_id, gateway_rule_id=gateway_rule.id,
        failed_rule_id=failed_rule.id,
        serial=serial, enroll_stdout=enrolled.stdout.decode(),
        enroll_stderr=enrolled.stderr.decode(), token=token,
    )  # fmt: skip


# --- 1. setup through the SDK ---------------------------------------------------------------------


def test_signing_ca_and_posture_rules_made_with_the_sdk(lab: PostureLab) -> None:
    with sdk.client(lab.gw) as c:
        uploads = {m.id: m for m in c.mtls_certificates.list(account_id=lab.account)}
        assert lab.upload_id in uploads, list(uploads)
        upload = uploads[lab.upload_id]
        assert upload.ca is True and upload.name == "e2e device CA", upload
        rules = {r.id: r for r in c.zero_trust.devices.posture.list(account_id=lab.account)}
        assert {lab.pem_rule_id, lab.nss_rule_id} <= set(rules), list(rules)
        pem, nss = rules[lab.pem_rule_id], rules[lab.nss_rule_id]
    for rule, name, expiration in ((pem, PEM_RULE, f"{PEM_EXPIRATION}s"), (nss, NSS_RULE, NSS_EXPIRATION)):
        got = rule.model_dump(mode="json", exclude_none=True)
        assert (got["name"], got["type"], got["schedule"], got["expiration"]) == (
            name, "client_certificate_v2", "1m", expiration,
        ), got  # fmt: skip
        assert got["match"] == [{"platform": "linux"}], got
        assert got["input"]["certificate_id"] == lab.upload_id, got
        assert got["input"]["cn"] == "${hostname}.corp", got
        assert got["input"]["extended_key_usage"] == ["clientAuth"], got
        assert got["input"]["check_private_key"] is True, got
    assert pem.model_dump(mode="json")["input"]["locations"]["paths"] == [
        str(lab.pem_cert), str(lab.pem_key),
    ]  # fmt: skip
    assert nss.model_dump(mode="json")["input"]["locations"]["trust_stores"] == ["user"]
    # The database is a real NSS one holding the certificate with its key (trust flags u,u,u).
    listed = nss_nicknames(lab.nssdb)
    assert re.search(rf"^{re.escape(NSS_NICKNAME)}\s+u,u,u\s*$", listed, re.MULTILINE), listed


def test_nss_database_in_another_directory_is_not_a_trust_store(lab: PostureLab) -> None:
    """docs/agent.md offers two NSS databases, `system` and `user`: a directory of one's own is
    refused by the API (400 naming the field), never stored half-way."""
    with lab.gw.api() as api:
        refused = api.post(
            f"/accounts/{lab.account}/devices/posture",
            json={"name": "e2e elsewhere", "type": "client_certificate_v2",
                  "input": {"certificate_id": lab.upload_id, "cn": "x", "operating_system": "linux",
                            "check_private_key": False,
                            "locations": {"trust_stores": [f"sql:{lab.nssdb}"]}}},
        )  # fmt: skip
        assert refused.status_code == 400, refused.text
        assert "trust_stores" in refused.text, refused.text
        names = [r["name"] for r in api.get(f"/accounts/{lab.account}/devices/posture").json()["result"]]
    assert "e2e elsewhere" not in names


# --- 2. enroll, check, report -------------------------------------------------------------------


@pytest.mark.serial  # the PEM rule's 6 s pass, or a bound after it: runs alone (tests/support/parallel.py)
def test_enroll_check_and_report_store_verified_passes(lab: PostureLab) -> None:
    agent = lab.agent
    saved = agent.saved()
    device_id, secret = saved["device_id"], saved["device_secret"]
    assert lab.enroll_stdout.startswith(
        f"enrolled as device {device_id} ({HOSTNAME}) with {lab.gw.admin_url}"
    ), lab.enroll_stdout
    assert mode(agent.state) == 0o600, oct(mode(agent.state))
    assert mode(agent.state.parent) == 0o700, oct(mode(agent.state.parent))
    assert (saved["server"], saved["account_id"]) == (lab.gw.admin_url, lab.account), saved
    assert (saved["serial_number"], saved["hostname"]) == (lab.serial, HOSTNAME), saved
    assert secret and secret not in lab.enroll_stdout + lab.enroll_stderr

    # A state file others may read is refused (the secret is in it).
    agent.state.chmod(0o644)
    try:
        loose = agent.run("check")
        assert loose.returncode == 1, loose.stdout.decode()
        assert "chmod 600" in loose.stderr.decode(), loose.stderr.decode()
        assert secret not in loose.stdout.decode() + loose.stderr.decode()
    finally:
        agent.state.chmod(0o600)

    # The token was single use.
    again = Agent(lab.base / "other-agent" / "state.json", agent.home).run("enroll", "--token", lab.token)
    assert again.returncode == 1, again.stdout.decode()
    assert again.stderr.decode().startswith("gateway: error: ") and "already used" in again.stderr.decode()

    # The device secret is stored hashed: it is nowhere in the store's files.
    for db_file in lab.gw.data_dir.glob("gateway.db*"):
        assert secret.encode() not in db_file.read_bytes(), db_file

    checked = agent.run("check")
    out = checked.stdout.decode()
    assert checked.returncode == 0, (out, checked.stderr.decode())
    rows = table_rows(out, CHECK_COLUMNS)
    assert rows[PEM_RULE] == ("pass", f"{lab.pem_cert} (CN {CN})"), out
    assert rows[NSS_RULE] == ("pass", f"nss:{lab.nssdb}/{NSS_NICKNAME} (CN {CN})"), out

    before = dt.datetime.now(dt.UTC).replace(microsecond=0)
    stored = lab.report_passing()
    for name, expiry in (
        (PEM_RULE, dt.timedelta(seconds=PEM_EXPIRATION)),
        (NSS_RULE, dt.timedelta(minutes=2)),
    ):
        until = parse_time(stored[name][1])
        assert before + expiry <= until <= dt.datetime.now(dt.UTC) + expiry, (name, stored[name])
        assert stored[name][2].startswith("verified: issued by CN=e2e Device Signing CA"), stored
        assert stored[name][2].endswith(f"CN '{CN}'; proof of possession checked"), stored

    # Posture logs (API): verified passes for both rules, with the certificates' CN.
    newest: dict[str, dict[str, Any]] = {}
    for entry in lab.posture_logs(device_id=device_id):  # newest first
        newest.setdefault(entry["rule_id"], entry)
    for rule_id, name in ((lab.pem_rule_id, PEM_RULE), (lab.nss_rule_id, NSS_RULE)):
        entry = newest[rule_id]
        assert (entry["rule_name"], entry["outcome"], entry["success"], entry["verified"]) == (
            name, "passed", True, True,
        ), entry  # fmt: skip
        assert (entry["certificate_cn"], entry["email"]) == (CN, EMAIL), entry
    assert lab.posture_logs(device_id=device_id, since="1m"), "since=1m lost the fresh entries"
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert lab.posture_logs(device_id=device_id, since=later) == []
    assert {e["rule_id"] for e in lab.posture_logs(rule_id=lab.nss_rule_id)} == {lab.nss_rule_id}
    with lab.gw.api() as api:
        bad_since = api.get(f"/accounts/{lab.account}/devices/posture/logs", params={"since": "yesterday"})
    assert bad_since.status_code == 400 and "since" in bad_since.text, bad_since.text
    # ... and the CLI.
    cli = admin_cli(lab.gw, "logs", "posture", "--device", device_id, "--json", "--limit", "2")
    assert cli.returncode == 0, cli.stderr.decode()
    listed = [json.loads(line) for line in cli.stdout.splitlines()]
    assert {(e["rule_id"], e["verified"]) for e in listed} == {
        (lab.pem_rule_id, True), (lab.nss_rule_id, True),
    }, listed  # fmt: skip

    # last_seen_identity (SDK): devicePosture success for both rule ids.
    with sdk.client(lab.gw) as c:
        identity = c.zero_trust.access.users.last_seen_identity.get(user_id_of(lab), account_id=lab.account)
        assert identity is not None and identity.device_posture is not None, identity
        assert (identity.email, identity.device_id) == (EMAIL, device_id), identity
        for rule_id in (lab.pem_rule_id, lab.nss_rule_id):
            posture = identity.device_posture[rule_id]
            assert posture.success is True and posture.type == "client_certificate_v2", posture
        assert identity.common_name == CN, identity

        # GET devices lists the device with its serial number and host name (the SDK marks the
        # method deprecated, as Cloudflare does; it is the one that reads this endpoint).
        with pytest.warns(DeprecationWarning):
            devices = {d.id: d for d in c.zero_trust.devices.list(account_id=lab.account)}
    assert device_id in devices, list(devices)
    listed_device = devices[device_id].model_dump(mode="json")
    assert listed_device["serial_number"] == lab.serial, listed_device
    assert listed_device.get("hostname") == HOSTNAME, listed_device
    assert listed_device["name"] == HOSTNAME and listed_device["device_type"] == "linux", listed_device
    assert listed_device["user"]["email"] == EMAIL, listed_device


# --- 3. a Gateway rule decides with the device's posture ------------------------------------------


def test_gateway_rule_allows_only_the_passing_device(lab: PostureLab) -> None:
    lab.report_passing()
    tag = uuid.uuid4().hex[:12]
    allowed = lab.get(lab.origin.url("origin.test", f"/device-{tag}"))
    assert allowed.returncode == 0, allowed.stderr
    assert allowed.status == 200 and body_for("origin.test") in allowed.body, allowed.body[:400]

    anonymous = lab.get(lab.origin.url("origin.test", f"/anonymous-{tag}"), as_device=False)
    assert block_rule_blocked(anonymous, lab), (anonymous.status, anonymous.body[:400])
    assert body_for("origin.test") not in anonymous.body

    # A wrong secret identifies nobody: the same block page (no 407 without --require-device).
    wrong = lab.get(lab.origin.url("origin.test", f"/wrong-{tag}"), proxy_user=f"{lab.agent.device_id}:wrong")
    assert block_rule_blocked(wrong, lab), (wrong.status, wrong.body[:400])

    # Credentials that are not Basic, or not base64, identify nobody either (never a 5xx).
    for header in ("Bearer abc", "Basic !!!not-base64!!!", "Basic " + "A" * 4000):
        odd = lab.get(
            lab.origin.url("origin.test", f"/odd-{tag}"), as_device=False,
            args=("--proxy-header", f"Proxy-Authorization: {header}"),
        )  # fmt: skip
        assert block_rule_blocked(odd, lab), (header[:20], odd.status, odd.body[:300])

    # The origin's echo works (a header sent to it directly comes back), so an empty echo
    # through the proxy means the proxy stripped it.
    with httpx.Client(trust_env=False, timeout=5) as direct:
        control = direct.get(
            f"http://127.0.0.1:{lab.origin.http_port}{HEADERS_PATH}",
            headers={"Host": "origin.test", "Proxy-Authorization": "Basic e2e-control"},
        )
    assert echoed_proxy_authorization(control.text) == "Basic e2e-control", control.text

    # The origin never sees the proxy credentials: HTTPS (sent on the CONNECT) and plain HTTP
    # (sent on every request, which the proxy forwards itself).
    echo = lab.get(lab.origin.url("origin.test", HEADERS_PATH))
    assert echo.status == 200, echo.body[:400]
    assert echoed_proxy_authorization(echo.body) == "", echo.body
    plain = lab.get(lab.origin.http_url("origin.test", HEADERS_PATH + f"?{tag}"))
    assert plain.status == 200, (plain.status, plain.body[:400])
    assert echoed_proxy_authorization(plain.body) == "", plain.body
    plain_wrong = lab.get(
        lab.origin.http_url("www.example.com", HEADERS_PATH + f"?{tag}"),
        proxy_user=f"{lab.agent.device_id}:wrong",
    )
    assert plain_wrong.status == 200, (plain_wrong.status, plain_wrong.body[:400])
    assert echoed_proxy_authorization(plain_wrong.body) == "", plain_wrong.body
    # ... nor one a client puts inside the tunnel, addressed to no proxy.
    inner = lab.get(
        lab.origin.url("origin.test", HEADERS_PATH),
        args=("-H", f"Proxy-Authorization: {lab.agent.basic_auth()}"),
    )
    assert inner.status == 200 and echoed_proxy_authorization(inner.body) == "", inner.body
    access_log = (lab.origin.directory / "access.log").read_text(errors="replace")
    mine = [line for line in access_log.splitlines() if tag in line]
    assert mine, "nginx logged none of this test's requests"
    assert lab.agent.device_secret not in access_log
    assert all('proxy_authorization="-"' in line for line in mine), mine

    # identity.email decides too: a rule for the device's user blocks it, not an anonymous client.
    with sdk.client(lab.gw) as c:
        email_rule = c.zero_trust.gateway.rules.create(
            account_id=lab.account, name="e2e block ann on email.origin.test", action="block",
            precedence=110, filters=["http"], traffic='http.request.host == "email.origin.test"',
            identity=f'identity.email == "{EMAIL}"',
        )  # fmt: skip
        assert email_rule is not None and email_rule.id
        try:
            mine_blocked = lab.get(lab.origin.url("email.origin.test", f"/{tag}"))
            assert mine_blocked.status == 403 and email_rule.id in mine_blocked.body, mine_blocked.body[:300]
            theirs = lab.get(lab.origin.url("email.origin.test", f"/{tag}"), as_device=False)
            assert theirs.status == 200 and body_for("email.origin.test") in theirs.body, theirs.body[:300]
        finally:
            c.zero_trust.gateway.rules.delete(email_rule.id, account_id=lab.account)

    # The request log names the device and its user; the anonymous request carries neither.
    (line,) = lab.logged(f"/device-{tag}")
    assert (line["device"], line["user"], line["action"], line["status"]) == (
        lab.agent.device_id, EMAIL, "allow", 200,
    ), line  # fmt: skip
    (line,) = lab.logged(f"/anonymous-{tag}")
    assert (line["device"], line["user"], line["action"], line["rule_id"]) == (
        None, None, "block", lab.gateway_rule_id,
    ), line  # fmt: skip
    # The device secret is in no log of the gateway's.
    for log in (lab.gw.data_dir / "requests.jsonl", lab.gw.stderr_path(), lab.gw.stdout_path()):
        assert lab.agent.device_secret not in log.read_text(errors="replace"), log


# --- 4. the certificate is removed ------------------------------------------------------------


@pytest.mark.serial  # a tight time bound: runs alone (tests/support/parallel.py)
def test_removed_certificate_blocks_after_the_next_report(lab: PostureLab) -> None:
    lab.report_passing()
    url = lab.origin.url("origin.test", "/removed")
    assert lab.get(url).status == 200
    assert lab.get(lab.origin.url(FAILED_HOST, "/removed")).status == 200
    # A connection opened (and identified) before the change must see it on its next request.
    keep = lab.keep_alive()
    kept = lab.pem_cert.read_bytes()
    try:
        status, body = keep.get("/removed-keep-alive")
        assert status == 200 and body_for("origin.test") in body, (status, body[:300])
        sock = keep.socket_id
        lab.pem_cert.unlink()
        rows = lab.report()
        reported = time.monotonic()
        assert rows[PEM_RULE] == ("fail", "", f"no certificate found ({lab.pem_cert}: no such file)"), rows
        assert rows[NSS_RULE][0] == "pass (verified)", rows
        took, got = wait_decision(lab, url, blocked=True, within=DECISION_DELAY)
        assert block_rule_blocked(got, lab), (got.status, got.body[:400])
        assert time.monotonic() - reported <= DECISION_DELAY + 0.5, (took, "s to the block page")
        status, body = keep.get("/removed-keep-alive")
        assert keep.socket_id == sock, "the client reconnected"
        assert status == 403 and lab.gateway_rule_id in body, (status, body[:400])
        failed = lab.get(lab.origin.url(FAILED_HOST, "/removed"))
        assert failed_rule_blocked(failed, lab), (failed.status, failed.body[:400])

        cli = admin_cli(lab.gw, "logs", "posture", "--device", lab.agent.device_id,
                        "--rule", PEM_RULE, "--json", "--limit", "1")  # fmt: skip
        assert cli.returncode == 0, cli.stderr.decode()
        (entry,) = [json.loads(line) for line in cli.stdout.splitlines()]
        assert (entry["outcome"], entry["success"], entry["verified"]) == ("failed", False, False), entry
        assert entry["reason"] == f"no certificate found ({lab.pem_cert}: no such file)", entry
        posture = lab.identity()["devicePosture"]
        assert posture[lab.pem_rule_id]["success"] is False, posture
        assert posture[lab.nss_rule_id]["success"] is True, posture
    finally:
        keep.close()
        lab.pem_cert.write_bytes(kept)


# --- 5. an expired pass -----------------------------------------------------------------------


@pytest.mark.serial  # the PEM rule's 6 s pass, or a bound after it: runs alone (tests/support/parallel.py)
def test_an_expired_pass_counts_as_failed(lab: PostureLab) -> None:
    url = lab.origin.url("origin.test", "/expiry")
    rows = lab.report_passing()
    until = parse_time(rows[PEM_RULE][1])
    first = lab.get(url)
    assert first.status == 200 and body_for("origin.test") in first.body, first.body[:400]
    assert lab.get(lab.origin.url(FAILED_HOST, "/expiry")).status == 200
    # No report from here on: allowed until the pass expires, blocked right after.
    remaining = (until - dt.datetime.now(dt.UTC)).total_seconds()
    assert 0 < remaining <= PEM_EXPIRATION, (until, remaining)
    while (until - dt.datetime.now(dt.UTC)).total_seconds() > 0.5:
        got = lab.get(url)
        assert got.status == 200, (until, got.status, got.body[:300])
        time.sleep(0.5)  # real time on purpose: samples the answer over the pass's remaining validity
    deadline = (until - dt.datetime.now(dt.UTC)).total_seconds() + DECISION_DELAY + 1
    _, got = wait_decision(lab, url, blocked=True, within=deadline)
    late = (dt.datetime.now(dt.UTC) - until).total_seconds()
    assert block_rule_blocked(got, lab), (until, got.status, got.body[:400])
    assert late <= DECISION_DELAY + 1, f"blocked {late:.1f} s after the pass expired at {until}"

    failed = lab.get(lab.origin.url(FAILED_HOST, "/expiry"))
    assert failed_rule_blocked(failed, lab), (
        "expired, yet not in checks.failed",
        failed.status,
        failed.body[:300],
    )
    posture = lab.identity()["devicePosture"][lab.pem_rule_id]
    assert posture["success"] is False, posture
    assert posture["error"].startswith("result expired at"), posture

    # Reporting again allows the device again.
    lab.report_passing()
    _, again = wait_decision(lab, url, blocked=False, within=DECISION_DELAY)
    assert again.status == 200, (again.status, again.body[:300])


# --- 6. Access decides with device posture and email ----------------------------------------------


@pytest.mark.serial  # the PEM rule's 6 s pass, or a bound after it: runs alone (tests/support/parallel.py)
def test_access_application_requires_the_nss_posture(lab: PostureLab) -> None:
    host = "app.origin.test"
    url = lab.origin.url(host, "/")
    with sdk.client(lab.gw) as c:
        access = c.zero_trust.access
        policy = access.policies.create(
            account_id=lab.account,
            name="e2e managed devices of example.com",
            decision="allow",
            include=[{"email_domain": {"domain": EMAIL.split("@")[1]}}],
            require=[{"device_posture": {"integration_uid": lab.nss_rule_id}}],
        )
        assert policy is not None and policy.id
        app_id = None
        try:
            app = access.applications.create(
                account_id=lab.account, type="self_hosted", name="e2e device app", domain=host,
                policies=[policy.id],
            )  # fmt: skip
            assert app is not None and app.id
            app_id = app.id
            lab.report_passing()
            allowed = lab.get(url)
            assert allowed.status == 200 and body_for(host) in allowed.body, allowed.body[:400]
            denied = lab.get(url, as_device=False)
            assert denied.status == 403, denied.body[:400]
            assert denied.body.splitlines()[0] == "Access denied", denied.body
            assert "denies this request: no device identified." in denied.body, denied.body
            assert body_for(host) not in denied.body
            _service_auth_by_certificate(lab, access)

            # The NSS certificate goes: the device is denied after its next report.
            delete_from_nssdb(lab.nssdb, NSS_NICKNAME)
            try:
                rows = lab.report()
                assert rows[NSS_RULE][0] == "fail", rows
                gone = wait_status(lab, url, 403)
                assert gone.body.startswith("Access denied"), gone.body[:400]
                assert f"posture check {NSS_RULE!r} failed: " in gone.body, gone.body[:400]

                # A certificate is back, one that expires in a few seconds (long before the
                # rule's 2m): allowed after the next report, until the certificate expires.
                short = issue_leaf(
                    lab.signing_ca, CN, authority_key_identifier=True, valid_from=dt.timedelta(hours=-1),
                    valid_for=dt.timedelta(hours=1, seconds=SHORT_CERT_SECONDS),
                )  # fmt: skip
                import_into_nssdb(lab.nssdb, short, NSS_NICKNAME)
                rows = lab.report_passing()
                not_after = short.certificate.not_valid_after_utc
                assert parse_time(rows[NSS_RULE][1]) == not_after, (rows[NSS_RULE], not_after)
                back = wait_status(lab, url, 200)
                left = (not_after - dt.datetime.now(dt.UTC)).total_seconds()
                assert back.status == 200 and body_for(host) in back.body, (
                    f"{left:.1f} s before the certificate expires", back.body[:300],
                )  # fmt: skip
                time.sleep(max(0.0, left))  # real time on purpose: until the certificate's notAfter
                lapsed = wait_status(lab, url, 403, within=DECISION_DELAY + 1)
                assert lapsed.body.startswith("Access denied"), lapsed.body[:300]
                assert f"posture check {NSS_RULE!r} expired: " in lapsed.body, lapsed.body[:300]
            finally:
                delete_from_nssdb(lab.nssdb, NSS_NICKNAME, missing_ok=True)
                import_into_nssdb(lab.nssdb, lab.nss_client, NSS_NICKNAME)
        finally:
            if app_id is not None:
                access.applications.delete(app_id, account_id=lab.account)
            access.policies.delete(policy.id, account_id=lab.account)


def _service_auth_by_certificate(lab: PostureLab, access: Any) -> None:
    """A non_identity policy on the verified certificate (`certificate`, `common_name`): the
    device whose pass the server verified gets in; an anonymous client does not."""
    host = "svc.origin.test"
    policy = access.policies.create(
        account_id=lab.account, name="e2e verified device certificate", decision="non_identity",
        include=[{"certificate": {}}], require=[{"common_name": {"common_name": CN.upper()}}],
    )  # fmt: skip
    assert policy is not None and policy.id
    app_id = None
    try:
        app = access.applications.create(
            account_id=lab.account, type="self_hosted", name="e2e service app", domain=host,
            policies=[policy.id],
        )  # fmt: skip
        assert app is not None and app.id
        app_id = app.id
        device = lab.get(lab.origin.url(host))
        assert device.status == 200 and body_for(host) in device.body, device.body[:300]
        anonymous = lab.get(lab.origin.url(host), as_device=False)
        assert anonymous.status == 403 and anonymous.body.startswith("Access denied"), anonymous.body[:300]
    finally:
        if app_id is not None:
            access.applications.delete(app_id, account_id=lab.account)
        access.policies.delete(policy.id, account_id=lab.account)


# --- 7. bad input against the real process ------------------------------------------------------


@pytest.mark.serial  # the PEM rule's 6 s pass, or a bound after it: runs alone (tests/support/parallel.py)
def test_bad_agent_input_is_refused_never_500_never_a_pass(lab: PostureLab) -> None:
    with lab.gw.api() as api:  # a rule this (linux) device is not under
        made = api.post(
            f"/accounts/{lab.account}/devices/posture",
            json={"name": "e2e windows only", "type": "client_certificate_v2", "match": [{"platform": "windows"}],
                  "input": {"certificate_id": lab.upload_id, "cn": "x", "operating_system": "windows",
                            "check_private_key": False, "locations": {"trust_stores": ["system"]}}},
        )  # fmt: skip
        assert made.status_code == 200, made.text
        windows_rule = made.json()["result"]["id"]
    try:
        _bad_agent_input(lab, windows_rule)
    finally:
        with lab.gw.api() as api:
            assert api.delete(f"/accounts/{lab.account}/devices/posture/{windows_rule}").status_code == 200


def _bad_agent_input(lab: PostureLab, windows_rule: str) -> None:
    agent, device_id = lab.agent, lab.agent.device_id
    other_ca = make_ca("e2e Other CA", key_identifiers=True)
    blocked_url = lab.origin.url("origin.test", "/after-bad-input")
    cases: dict[str, Any] = {}
    # The agent fetches only the rules for its platform (report_passing checks the names).
    lab.report_passing()

    with httpx.Client(base_url=f"{lab.gw.api_base}/agent", trust_env=False, timeout=15) as http:
        auth = {"Authorization": agent.basic_auth()}

        def nonce() -> str:
            got = http.post("/nonce", headers=auth, json={})
            assert got.status_code == 200, got.text
            return str(got.json()["result"]["nonce"])

        def post(results: Any) -> httpx.Response:
            return http.post("/results", headers=auth, json={"results": results})

        # Claims the server must store as failed, each with its own fresh nonce.
        expired = issue_leaf(
            lab.signing_ca, CN, authority_key_identifier=True, valid_from=dt.timedelta(days=-10),
            valid_for=dt.timedelta(days=1),
        )  # fmt: skip
        claims = {
            "another CA": passing_claim(issue_leaf(other_ca, CN, authority_key_identifier=True), nonce(), device_id, lab.pem_rule_id),
            "wrong CN": passing_claim(issue_leaf(lab.signing_ca, "other.corp", authority_key_identifier=True), nonce(), device_id, lab.pem_rule_id),
            "no EKU": passing_claim(issue_leaf(lab.signing_ca, CN, ekus=(), authority_key_identifier=True), nonce(), device_id, lab.pem_rule_id),
            "expired": passing_claim(expired, nonce(), device_id, lab.pem_rule_id),
            "key mismatch": passing_claim(lab.pem_client, nonce(), device_id, lab.pem_rule_id,
                                          key=ec.generate_private_key(ec.SECP256R1())),
            "proof for another rule": passing_claim(lab.pem_client, nonce(), device_id, lab.nss_rule_id)
            | {"rule_id": lab.pem_rule_id},
            "no proof": {"rule_id": lab.pem_rule_id, "success": True, "certificate": lab.pem_client.cert_pem()},
            "unknown nonce": passing_claim(lab.pem_client, base64.b64encode(secrets.token_bytes(32)).decode(),
                                           device_id, lab.pem_rule_id),
        }  # fmt: skip
        for name, claim in claims.items():
            got = post([claim])
            cases[name] = got.status_code
            assert got.status_code == 200, (name, got.status_code, got.text)
            (stored,) = got.json()["result"]
            assert (stored["success"], stored["verified"]) == (False, False), (name, stored)
            assert stored["reason"], (name, stored)
        expected_reasons = {
            "another CA": "e2e Other CA", "wrong CN": "other.corp", "no EKU": "clientAuth",
            "expired": "expired", "unknown nonce": "nonce",
        }  # fmt: skip
        logged = lab.posture_logs(device_id=device_id, rule_id=lab.pem_rule_id, per_page="50")
        reasons = [e["reason"] for e in logged[: len(claims)]]
        assert not any(e["success"] for e in logged[: len(claims)]), logged[: len(claims)]
        for name, text in expected_reasons.items():
            assert any(text in r for r in reasons), (name, text, reasons)

        # A replayed nonce: the first use passes (a real proof: the device is allowed), the
        # replay is stored as failed and the device is blocked at once, long before the first
        # pass would have expired.
        fresh = passing_claim(lab.pem_client, nonce(), device_id, lab.pem_rule_id)
        first = post([fresh])
        first_at = time.monotonic()
        assert first.status_code == 200, first.text
        assert first.json()["result"][0]["verified"] is True, first.text
        _, page = wait_decision(lab, blocked_url, blocked=False, within=DECISION_DELAY)
        assert page.status == 200, (page.status, page.body[:300])
        replay = post([fresh])
        cases["replayed nonce"] = replay.status_code
        assert replay.status_code == 200, replay.text
        stored = replay.json()["result"][0]
        assert (stored["success"], stored["verified"]) == (False, False), stored
        assert "already used" in stored["reason"], stored
        _, page = wait_decision(lab, blocked_url, blocked=True, within=DECISION_DELAY)
        assert block_rule_blocked(page, lab), (page.status, page.body[:400])
        assert time.monotonic() - first_at < PEM_EXPIRATION - 1, "too slow to tell from expiry"

        # Wrong secret, unknown device, no credentials: 401 with the reason, on every endpoint.
        for name, headers in (
            ("wrong secret", {"Authorization": agent.basic_auth(secret="not-the-secret")}),
            ("unknown device", {"Authorization": "Basic " + base64.b64encode(f"{uuid.uuid4()}:x".encode()).decode()}),
            ("no credentials", {}),
        ):  # fmt: skip
            for method, path in (("GET", "/posture_rules"), ("POST", "/nonce"), ("POST", "/results")):
                got = http.request(method, path, headers=headers, json={"results": [fresh]})
                cases[f"{name} {path}"] = got.status_code
                assert got.status_code == 401, (name, path, got.status_code, got.text)
                assert got.json()["success"] is False and got.json()["errors"][0]["message"], got.text

        # Enrollment: an unknown secret is 401, a malformed or huge body 400/413.
        for name, body, status in (
            ("enroll with an unknown secret", json.dumps({"secret": "not-a-token-secret", "name": "x", "os": "linux"}).encode(), 401),
            ("enroll malformed JSON", b'{"secret": ', 400),
            ("enroll unknown field", json.dumps({"secret": "x", "admin": True}).encode(), 400),
            ("enroll huge body", b'{"secret": "' + b"a" * (2 * 1024 * 1024) + b'"}', 413),
        ):  # fmt: skip
            got = http.post("/enroll", content=body, headers={"Content-Type": "application/json"})
            cases[name] = got.status_code
            assert got.status_code == status, (name, got.status_code, got.text[:300])

        # Malformed or unacceptable bodies: 400 (413 for a huge one), each with the reason.
        bodies: dict[str, tuple[bytes, int]] = {
            "malformed JSON": (b'{"results": [', 400),
            "not an object": (b"[]", 400),
            "results not a list": (b'{"results": {}}', 400),
            "success not a bool": (json.dumps({"results": [{"rule_id": lab.pem_rule_id, "success": "yes"}]}).encode(), 400),
            "unknown rule": (json.dumps({"results": [{"rule_id": str(uuid.uuid4()), "success": True}]}).encode(), 400),
            "unknown field": (json.dumps({"results": [{"rule_id": lab.pem_rule_id, "success": True, "x": 1}]}).encode(), 400),
            "rule for another platform": (json.dumps({"results": [{"rule_id": windows_rule, "success": False, "reason": "x"}]}).encode(), 400),
            "too many results": (json.dumps({"results": [{"rule_id": lab.pem_rule_id, "success": False}] * 300}).encode(), 400),
            "not UTF-8": (b'{"results": "\xff\xfe"}', 400),
            "huge body": (b'{"results": ["' + b"a" * (2 * 1024 * 1024) + b'"]}', 413),
        }  # fmt: skip
        for name, (body, status) in bodies.items():
            got = http.post("/results", headers={**auth, "Content-Type": "application/json"}, content=body)
            cases[name] = got.status_code
            assert got.status_code == status, (name, got.status_code, got.text[:300])
            if status == 400:
                assert got.json()["errors"][0]["message"], (name, got.text)

    assert all(status < 500 for status in cases.values()), cases
    assert lab.gw.running, lab.gw.stderr_tail()
    # None of it passed: still blocked.
    _, page = wait_decision(lab, blocked_url, blocked=True, within=DECISION_DELAY)
    assert block_rule_blocked(page, lab), (page.status, page.body[:400])
    refused = [e for e in lab.posture_logs(device_id=device_id, per_page="100") if e["outcome"] == "refused"]
    assert any("malformed" in e["reason"].lower() or "json" in e["reason"].lower() for e in refused), refused
    # The real agent puts it right.
    lab.report_passing()
    _, ok = wait_decision(
        lab, lab.origin.url("origin.test", "/restored"), blocked=False, within=DECISION_DELAY
    )
    assert ok.status == 200, ok.body[:300]


def test_do_not_inspect_rule_decides_with_posture_at_the_client_hello(lab: PostureLab) -> None:
    """An `off` rule is decided at the ClientHello with the identity of the CONNECT: a passing
    device's connection passes through (the origin's own certificate); an anonymous client's is
    inspected (the gateway's leaf)."""
    host = "dni.origin.test"
    both_cas = lab.base / "both-cas.pem"
    both_cas.write_text(lab.gateway_ca.read_text() + lab.origin.ca_path.read_text())
    served = lab.origin.site_certs["*.origin.test"].certificate
    with sdk.client(lab.gw) as c:
        rule = c.zero_trust.gateway.rules.create(
            account_id=lab.account, name="e2e do not inspect managed devices", action="off",
            precedence=130, filters=["http"], traffic=f'net.sni.host == "{host}"',
            device_posture=f'any(device_posture.checks.passed[*] in {{"{lab.nss_rule_id}"}})',
        )  # fmt: skip
        assert rule is not None and rule.id
        try:
            lab.report_passing()
            device = curl.via_proxy(
                lab.gw.proxy_port, lab.origin.url(host), cacert=both_cas,
                args=("--proxy-user", lab.agent.proxy_user),
            )  # fmt: skip
            anonymous = curl.via_proxy(lab.gw.proxy_port, lab.origin.url(host), cacert=both_cas)
        finally:
            c.zero_trust.gateway.rules.delete(rule.id, account_id=lab.account)
    assert device.status == 200 and body_for(host) in device.body, (device.stderr, device.body[:300])
    assert anonymous.status == 200 and body_for(host) in anonymous.body, anonymous.body[:300]
    assert device.certs and device.certs[0] == served, "the passing device's connection was inspected"
    assert anonymous.certs and anonymous.certs[0] != served, "the anonymous connection passed through"


def test_plain_http_proxy_credentials_count_per_request(lab: PostureLab) -> None:
    """Plain-HTTP proxy requests each carry their own Proxy-Authorization (RFC 9110 11.7.2: the
    credentials are for the request). On one keep-alive connection, a request with a wrong
    secret, or with none, must not borrow the identity of an earlier request: on a fresh
    connection the same requests get the block page."""
    lab.report_passing()
    url = lab.origin.http_url("origin.test", HEADERS_PATH)
    fresh = {
        "wrong secret": lab.get(url, proxy_user=f"{lab.agent.device_id}:wrong").status,
        "no credentials": lab.get(url, as_device=False).status,
    }
    assert fresh == {"wrong secret": 403, "no credentials": 403}, fresh
    conn = http.client.HTTPConnection("127.0.0.1", lab.gw.proxy_port, timeout=10)
    seen = {}
    try:
        for name, header in (
            ("valid", lab.agent.basic_auth()),
            ("wrong secret", lab.agent.basic_auth(secret="wrong")),
            ("no credentials", None),
        ):
            conn.request("GET", url, headers={"Proxy-Authorization": header} if header else {})
            response = conn.getresponse()
            response.read()
            seen[name] = response.status
    finally:
        conn.close()
    assert seen == {"valid": 200, "wrong secret": 403, "no credentials": 403}, (
        f"on one connection, after a valid request: {seen}"
    )


def test_a_deleted_device_is_anonymous_at_once(lab: PostureLab) -> None:
    """A second device enrolls (token from the API) and passes; a nonce issued to the first
    device does not prove anything for it; once deleted (`gateway device delete`), its
    credentials identify nobody on the next request, on a new connection or on one it opened
    before, and its agent is told to enroll again."""
    with lab.gw.api() as api:
        made = api.post(
            f"/accounts/{lab.account}/devices/enrollment_tokens",
            json={"email": "bob@example.com", "expires_in": "10m"},
        )
    assert made.status_code == 200, made.text
    second = Agent(state=lab.base / "second-agent" / "state.json", home=lab.agent.home)
    enrolled = second.run(
        "enroll", "--token", made.json()["result"]["token"], "--serial-number", "E2E-SECOND",
        "--email", "ceo@example.com",
    )  # fmt: skip
    assert enrolled.returncode == 0, enrolled.stderr.decode()
    assert second.device_id != lab.agent.device_id
    # The user is the one the admin's token names, not whoever the device claims to be.
    with lab.gw.api() as api:
        listed = api.get(f"/accounts/{lab.account}/devices/{second.device_id}").json()["result"]
    assert listed["user"]["email"] == "bob@example.com", listed["user"]

    with httpx.Client(base_url=f"{lab.gw.api_base}/agent", trust_env=False, timeout=15) as http:
        theirs = http.post("/nonce", headers={"Authorization": lab.agent.basic_auth()}, json={})
        assert theirs.status_code == 200, theirs.text
        claim = passing_claim(
            lab.pem_client, theirs.json()["result"]["nonce"], second.device_id, lab.pem_rule_id
        )
        got = http.post("/results", headers={"Authorization": second.basic_auth()}, json={"results": [claim]})
    assert got.status_code == 200, got.text
    stored = got.json()["result"][0]
    assert (stored["success"], stored["verified"]) == (False, False), stored
    assert "another device" in stored["reason"], stored

    ran = second.run("report")
    assert ran.returncode == 0, ran.stderr.decode()
    assert table_rows(ran.stdout.decode(), REPORT_COLUMNS)[PEM_RULE][0] == "pass (verified)", (
        ran.stdout.decode()
    )
    url = lab.origin.url("origin.test", "/second-device")
    allowed = lab.get(url, proxy_user=second.proxy_user)
    assert allowed.status == 200 and body_for("origin.test") in allowed.body, allowed.body[:300]
    keep = lab.keep_alive(agent=second)
    try:
        status, _ = keep.get("/second-device-keep-alive")
        assert status == 200
        sock = keep.socket_id
        deleted = admin_cli(lab.gw, "device", "delete", second.device_id)
        assert deleted.returncode == 0, deleted.stderr.decode()
        gone = lab.get(url, proxy_user=second.proxy_user)
        assert block_rule_blocked(gone, lab), (gone.status, gone.body[:300])
        status, body = keep.get("/second-device-keep-alive")
        assert keep.socket_id == sock, "the client reconnected"
        assert status == 403 and lab.gateway_rule_id in body, (status, body[:300])
    finally:
        keep.close()
    before, line = lab.logged("/second-device-keep-alive", count=2)
    assert (before["device"], before["user"]) == (second.device_id, "bob@example.com"), before
    assert (line["device"], line["user"]) == (None, None), line
    with lab.gw.api() as api:
        assert api.get(f"/accounts/{lab.account}/devices/{second.device_id}").status_code == 404
    again = second.run("report")
    assert again.returncode == 1 and "enroll again" in again.stderr.decode(), again.stderr.decode()


def test_sigterm_right_after_healthz_exits_0(gateway_factory: GatewayFactory) -> None:
    """Found restarting the lab under --require-device: `gateway run` answers /healthz before
    it has finished starting, and a SIGTERM then (a supervisor stopping a just-started gateway,
    a test tearing down) must still be a clean stop: exit 0, as docs/architecture.md says, not
    exit 1 with "the proxy could not listen (see log)" and nothing about it in the log."""
    gw = gateway_factory()
    gw.log_dir.mkdir(parents=True, exist_ok=True)
    assert gw.token
    stderr_path = gw.log_dir / "sigterm.stderr"
    with stderr_path.open("wb") as stderr:
        proc = subprocess.Popen(
            gw.argv(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr,
            env=child_env({"GATEWAY_ADMIN_TOKEN": gw.token}), start_new_session=True,
        )  # fmt: skip
    try:
        healthy = _healthz_at_once(gw.admin_port, proc)
        assert healthy, tools.tail(stderr_path)
        assert proc.poll() is None, tools.tail(stderr_path)
        code = tools.stop(proc, sig=signal.SIGTERM, timeout=20)
    finally:
        tools.kill_group(proc)
        proc.wait(10)
    assert code == 0, f"SIGTERM right after /healthz: exit {code}\n{tools.tail(stderr_path, 5)}"


def _healthz_at_once(port: int, proc: subprocess.Popen[bytes], timeout: float = 30) -> bool:
    """Poll GET /healthz every few milliseconds (raw HTTP/1.0: no client overhead); True at the
    first 200, False when the process exits or `timeout` passes."""

    def answer() -> str:
        if proc.poll() is not None:
            return "exited"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(b"GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
                if sock.recv(64).startswith((b"HTTP/1.1 200", b"HTTP/1.0 200")):
                    return "healthy"
        except OSError:
            pass
        return ""

    return wait_until(answer, timeout, interval=0.003) == "healthy"


def test_require_device_answers_407_to_unidentified_clients(lab: PostureLab) -> None:
    """Restarts the lab gateway with --require-device (the device and its secret survive it).
    It runs last in this module and leaves the flag on: the fixture stops the gateway next."""
    gw = lab.gw
    gw.extra_args.append("--require-device")
    gw.restart()
    # What was stored survives the restart: the device, its secret, its NSS pass (2m).
    posture = lab.identity()["devicePosture"]
    assert posture[lab.nss_rule_id]["success"] is True, posture
    lab.report_passing()
    https, plain = lab.origin.url("www.example.com", "/"), lab.origin.http_url("www.example.com", "/")

    anonymous = lab.get(https, as_device=False)
    assert anonymous.connect_status == 407, (anonymous.connect_status, anonymous.stderr)
    assert body_for("www.example.com") not in anonymous.body
    plain_anonymous = lab.get(plain, as_device=False, args=("-D", str(lab.base / "407.headers")))
    assert plain_anonymous.status == 407, plain_anonymous.body[:300]
    headers = (lab.base / "407.headers").read_text().lower()
    assert 'proxy-authenticate: basic realm="gateway device"' in headers, headers
    wrong = lab.get(https, proxy_user=f"{lab.agent.device_id}:wrong-secret")
    assert wrong.connect_status == 407, (wrong.connect_status, wrong.stderr)
    plain_wrong = lab.get(plain, proxy_user=f"{lab.agent.device_id}:wrong-secret")
    assert plain_wrong.status == 407, plain_wrong.body[:300]

    identified = lab.get(https)
    assert identified.returncode == 0, identified.stderr
    assert identified.status == 200 and body_for("www.example.com") in identified.body
    plain_identified = lab.get(lab.origin.http_url("www.example.com", HEADERS_PATH))
    assert plain_identified.status == 200, plain_identified.body[:300]
    assert echoed_proxy_authorization(plain_identified.body) == "", plain_identified.body
    # Posture still decides for the identified device.
    gated = lab.get(lab.origin.url("origin.test", "/required"))
    assert gated.status == 200 and body_for("origin.test") in gated.body, gated.body[:300]
