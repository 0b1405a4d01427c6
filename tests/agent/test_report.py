"""Report and enroll against a stand-in for the server's agent endpoints (real HTTP and HTTPS on
loopback): the proof the agent signs is one certs.proof.verify_proof accepts."""

from __future__ import annotations

import base64
import ssl
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from agent.checks import Device, check_rules, parse_rules
from agent.enroll import Enrollment, enroll
from agent.errors import AgentError
from agent.locations import Locator
from agent.report import report
from agent.state import load_state
from agent.token import parse_token
from agent.transport import Credentials, Transport
from certs.proof import proof_message, verify_proof
from tests.agent.agent_standin import StandIn, serving
from tests.agent.agentlab import make_token, rule_api, wire_rule
from tests.support.pki import Issued, fingerprint, issue_leaf, self_signed_server


def _enroll(standin: StandIn, url: str, tmp_path: Path, pin: str = "") -> Transport:
    token = parse_token(make_token(url, secret=standin.enroll_secret, pin=pin))
    state = enroll(
        Enrollment(token, token.server, "laptop", "ann@example.com", "SN-1", "laptop"),
        tmp_path / "state.json",
    )
    return Transport(
        state.server,
        fingerprint=state.fingerprint,
        credentials=Credentials(state.device_id, state.device_secret),
    )


def test_report_sends_a_proof_that_verify_proof_accepts(tmp_path: Path, ca: Issued) -> None:
    client = issue_leaf(ca, "laptop.corp", key_type="rsa-2048")
    (tmp_path / "c.pem").write_text(client.cert_pem() + client.key_pem())
    standin = StandIn(rules=[
        wire_rule(rule_api("pass-rule", paths=(str(tmp_path / "c.pem"),)), ca),
        wire_rule(rule_api("fail-rule", cn="other.corp", paths=(str(tmp_path / "c.pem"),)), ca),
    ])  # fmt: skip
    with serving(standin.app) as server:
        transport = _enroll(standin, server.url, tmp_path)
        (device_id,) = standin.devices
        rules = parse_rules(transport.get("/agent/posture_rules"))
        checks = check_rules(rules, Device("laptop", "SN-1"), locator=Locator(system_nssdb=tmp_path / "none"))
        stored = report(checks, transport, device_id=device_id)
    assert [(s.rule_id, s.success, s.verified) for s in stored] == [
        ("pass-rule", True, True),
        ("fail-rule", False, False),
    ]
    assert stored[1].reason == "CN 'laptop.corp' does not match 'other.corp'"
    sent = standin.stored[0]["sent"]
    assert set(sent) == {"rule_id", "success", "reason", "certificate", "nonce", "signature"}
    message = proof_message(nonce=base64.b64decode(sent["nonce"]), device_id=device_id, rule_id="pass-rule")
    verify_proof(
        x509.load_pem_x509_certificate(sent["certificate"].encode()),
        message,
        base64.b64decode(sent["signature"]),
    )
    assert standin.stored[1]["sent"] == {"rule_id": "fail-rule", "success": False, "reason": stored[1].reason}
    assert standin.nonces == {}  # one nonce per passing result, used
    assert standin.requests.count(("POST", "/client/v4/agent/nonce")) == 1


def _two_passing_rules(tmp_path: Path, ca: Issued, **options: Any) -> StandIn:
    client = issue_leaf(ca, "laptop.corp")
    (tmp_path / "c.pem").write_text(client.cert_pem() + client.key_pem())
    rules = [wire_rule(rule_api(name, paths=(str(tmp_path / "c.pem"),)), ca) for name in ("rule-a", "rule-b")]
    return StandIn(rules=rules, **options)


def _report_twice(standin: StandIn, tmp_path: Path) -> list[list[tuple[bool, bool]]]:
    rounds = []
    with serving(standin.app) as server:
        transport = _enroll(standin, server.url, tmp_path)
        (device_id,) = standin.devices
        checks = check_rules(parse_rules(transport.get("/agent/posture_rules")), Device("laptop", "SN-1"),
                             locator=Locator(system_nssdb=tmp_path / "none"))  # fmt: skip
        for _ in range(2):
            stored = report(checks, transport, device_id=device_id)
            rounds.append([(s.success, s.verified) for s in stored])
    return rounds


def test_one_nonce_proves_every_rule_of_a_report(tmp_path: Path, ca: Issued) -> None:
    standin = _two_passing_rules(tmp_path, ca)
    assert _report_twice(standin, tmp_path) == [[(True, True)] * 2] * 2
    assert standin.requests.count(("POST", "/client/v4/agent/nonce")) == 2  # one per report
    first, second = (entry["sent"]["nonce"] for entry in standin.stored[:2])
    assert first == second


def test_the_nonce_the_server_offers_saves_a_request(tmp_path: Path, ca: Issued) -> None:
    standin = _two_passing_rules(tmp_path, ca, offer_nonces=True)
    assert _report_twice(standin, tmp_path) == [[(True, True)] * 2] * 2
    assert ("POST", "/client/v4/agent/nonce") not in standin.requests
    assert len({entry["sent"]["nonce"] for entry in standin.stored}) == 2  # each report its own


def test_an_offered_nonce_about_to_expire_is_not_used(tmp_path: Path, ca: Issued) -> None:
    standin = _two_passing_rules(tmp_path, ca, offer_nonces=True, offer_seconds=5)  # under the margin
    assert _report_twice(standin, tmp_path) == [[(True, True)] * 2] * 2
    assert standin.requests.count(("POST", "/client/v4/agent/nonce")) == 2


def test_a_pass_without_a_usable_key_is_sent_without_proof(tmp_path: Path, ca: Issued) -> None:
    client = issue_leaf(ca, "laptop.corp")
    (tmp_path / "c.pem").write_text(client.cert_pem())
    standin = StandIn(
        rules=[wire_rule(rule_api("r", check_private_key=False, paths=(str(tmp_path / "c.pem"),)), ca)]
    )
    with serving(standin.app) as server:
        transport = _enroll(standin, server.url, tmp_path)
        (device_id,) = standin.devices
        checks = check_rules(parse_rules(transport.get("/agent/posture_rules")), Device("laptop", "SN-1"),
                             locator=Locator(system_nssdb=tmp_path / "none"))  # fmt: skip
        (stored,) = report(checks, transport, device_id=device_id)
    assert (stored.success, stored.verified, stored.reason) == (False, False, "no proof of possession")
    sent = standin.stored[0]["sent"]
    assert "signature" not in sent and "nonce" not in sent
    assert sent["reason"].startswith("no proof of possession: no private key for this certificate")


def test_enroll_over_https_pins_the_server_and_saves_0600_state(tmp_path: Path) -> None:
    issued = self_signed_server()
    (tmp_path / "s.pem").write_text(issued.cert_pem())
    (tmp_path / "s.key").write_text(issued.key_pem())
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "s.pem", tmp_path / "s.key")
    standin = StandIn()
    with serving(standin.app, ssl_context=context) as server:
        pin = fingerprint(issued.certificate)
        wrong = make_token(server.url, secret=standin.enroll_secret, pin=":".join(["11"] * 32))
        with pytest.raises(AgentError, match="not the pinned"):
            token = parse_token(wrong)
            enroll(Enrollment(token, token.server, "laptop"), tmp_path / "state.json")
        assert standin.requests == [] and not (tmp_path / "state.json").exists()
        transport = _enroll(standin, server.url, tmp_path, pin=pin)
        assert transport.get("/agent/posture_rules") == []
    path = tmp_path / "state.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    state = load_state(path)
    assert (state.server, state.fingerprint, state.serial_number, state.hostname) == (
        server.url,
        pin,
        "SN-1",
        "laptop",
    )
    (details,) = standin.devices.values()
    assert {k: details[k] for k in ("name", "os", "serial_number", "hostname", "email")} == {
        "name": "laptop", "os": "linux", "serial_number": "SN-1", "hostname": "laptop", "email": "ann@example.com",
    }  # fmt: skip


def test_a_used_token_is_refused_with_the_servers_reason(tmp_path: Path) -> None:
    standin = StandIn()
    with serving(standin.app) as server:
        token = parse_token(make_token(server.url, secret=standin.enroll_secret))
        enroll(Enrollment(token, token.server, "laptop"), tmp_path / "a.json")
        with pytest.raises(AgentError, match=r"unknown or used enrollment token \(HTTP 401\)"):
            enroll(Enrollment(token, token.server, "laptop"), tmp_path / "b.json")
    assert not (tmp_path / "b.json").exists()
