"""The agent against the real server: ``create_app`` with a real DeviceService on the test store,
served on loopback (plain HTTP, and HTTPS with the certificate pinned from the enrollment
token). enroll -> check -> report stores verified passes for a PEM certificate (two files) and
a certificate in a real NSS database; once the PEM file is removed the next report stores a
failure; a pass that is not renewed expires."""

from __future__ import annotations

import asyncio
import json
import os
import socket
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from proxy.cli.main import main
from tests.agent.agentlab import import_into_nssdb, make_nssdb
from tests.support.pki import issue_leaf, make_ca
from tests.support.server import AgentServer as Server

HOST = socket.gethostname()
SERIAL = "SN-E2E-7"


def _rows(table: str) -> dict[str, tuple[str, str, str]]:
    """``gateway agent report``'s table: (stored, pass expires, reason) by rule name (the rules'
    order is the server's)."""
    header, *lines = table.splitlines()
    starts = [header.index(title) for title in ("STORED", "PASS EXPIRES", "REASON")]
    return {
        line[: starts[0]].strip(): (
            line[starts[0] : starts[1]].strip(),
            line[starts[1] : starts[2]].strip(),
            line[starts[2] :],
        )
        for line in lines
    }


async def agent(*argv: str) -> int:
    """One ``gateway agent`` command, run in a thread as a separate process would (blocking I/O)."""
    return await asyncio.to_thread(main, ["agent", *argv])


async def test_enroll_check_report_then_fail_and_expire(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    ca = make_ca("Corp Device CA")
    account = server.gateway.account_id
    upload = await server.admin("POST", f"/accounts/{account}/mtls_certificates",
                                {"name": "devices", "certificates": ca.cert_pem(), "ca": True})  # fmt: skip

    # a PEM certificate in two files, and a certificate with its key in the user's NSS database
    pem_client = issue_leaf(ca, f"{HOST}.corp", key_type="rsa-2048")
    cert_file, key_file = tmp_path / "client.pem", tmp_path / "client.key"
    cert_file.write_text(pem_client.cert_pem())
    key_file.write_text(pem_client.key_pem())
    key_file.chmod(0o600)
    nssdb = make_nssdb(tmp_path / "home" / ".pki" / "nssdb")
    import_into_nssdb(nssdb, issue_leaf(ca, f"{SERIAL}.corp"), "corp device")

    def rule(name: str, cn: str, locations: dict[str, list[str]]) -> dict[str, Any]:
        return {
            "name": name, "type": "client_certificate_v2", "schedule": "5m", "expiration": "10m",
            "match": [{"platform": "linux"}],
            "input": {"certificate_id": upload["id"], "check_private_key": True, "operating_system": "linux",
                      "cn": cn, "extended_key_usage": ["clientAuth"], "locations": locations},
        }  # fmt: skip

    pem_rule = await server.admin("POST", f"/accounts/{account}/devices/posture",
                                  rule("pem cert", "${hostname}.corp", {"paths": [str(cert_file), str(key_file)]}))  # fmt: skip
    nss_rule = await server.admin("POST", f"/accounts/{account}/devices/posture",
                                  rule("nss cert", "${serial_number}.corp", {"trust_stores": ["user"]}))  # fmt: skip
    issued = await server.admin(
        "POST", f"/accounts/{account}/devices/enrollment_tokens", {"email": "ann@example.com"}
    )

    # enroll: the token names the server (and, over HTTPS, pins its certificate)
    state = tmp_path / "state.json"
    assert (
        await agent("enroll", "--token", issued["token"], "--state", str(state), "--serial-number", SERIAL)
        == 0
    )
    out = capsys.readouterr().out
    device_id = out.split()[3]
    assert out.startswith(f"enrolled as device {device_id} ({HOST}) with {server.url}")
    saved = json.loads(state.read_text())
    assert (saved["server"], saved["account_id"], saved["serial_number"]) == (server.url, account, SERIAL)
    assert (saved["fingerprint"] != "") is server.url.startswith("https")

    # check: both pass, nothing stored yet
    assert await agent("check", "--state", str(state)) == 0
    table = capsys.readouterr().out
    assert f"pem cert  pass     {cert_file} (CN {HOST}.corp)" in table
    assert f"nss cert  pass     nss:{nssdb}/corp device (CN {SERIAL}.corp)" in table
    assert server.devices.identity(device_id).posture_passed == ()

    # report: the server verifies both and stores passes
    assert await agent("report", "--state", str(state)) == 0
    stored = _rows(capsys.readouterr().out)
    reported_at = server.gateway.clock()
    assert stored["pem cert"][0] == stored["nss cert"][0] == "pass (verified)"
    assert datetime.fromisoformat(stored["pem cert"][1]) == reported_at + timedelta(
        minutes=10
    )  # the rule's expiration
    assert stored["pem cert"][2].startswith("verified: issued by CN=Corp Device CA, valid until ")
    assert stored["pem cert"][2].endswith(f"CN '{HOST}.corp'; proof of possession checked")
    identity = server.devices.identity(device_id)
    assert identity.email == "ann@example.com"
    assert identity.posture_passed == tuple(sorted([pem_rule["id"], nss_rule["id"]]))
    logs = await server.admin("GET", f"/accounts/{account}/devices/posture/logs?device_id={device_id}")
    assert {(e["rule_name"], e["success"], e["verified"]) for e in logs} == {
        ("pem cert", True, True),
        ("nss cert", True, True),
    }
    assert {e["certificate_cn"] for e in logs} == {f"{HOST}.corp", f"{SERIAL}.corp"}

    # the PEM certificate is removed: the next report stores a failure with the reason
    cert_file.unlink()
    assert await agent("report", "--state", str(state)) == 3  # as check: a rule failed
    stored = _rows(capsys.readouterr().out)
    assert stored["pem cert"] == ("fail", "", f"no certificate found ({cert_file}: no such file)")
    assert stored["nss cert"][0] == "pass (verified)"
    identity = server.devices.identity(device_id)
    assert (identity.posture_passed, identity.posture_failed) == ((nss_rule["id"],), (pem_rule["id"],))

    # without another report, the NSS pass expires after the rule's 10 minutes
    server.gateway.clock.advance(minutes=11)
    assert server.devices.identity(device_id).posture_passed == ()
    assert nss_rule["id"] in server.devices.identity(device_id).posture_failed


async def test_a_removed_device_is_told_to_enroll_again(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    account = server.gateway.account_id
    issued = await server.admin(
        "POST", f"/accounts/{account}/devices/enrollment_tokens", {"email": "bob@example.com"}
    )
    state = tmp_path / "state.json"
    assert await agent("enroll", "--token", issued["token"], "--state", str(state)) == 0
    device_id = capsys.readouterr().out.split()[3]
    assert await agent("check", "--state", str(state)) == 0
    assert capsys.readouterr().out == "no posture rules apply to this device\n"
    await server.admin("DELETE", f"/accounts/{account}/devices/{device_id}")
    assert await agent("report", "--state", str(state)) == 1
    err = capsys.readouterr().err
    assert err.startswith("gateway: error: ") and "(HTTP 401): was this device removed? enroll again" in err
    # the used token cannot enroll a second device
    assert await agent("enroll", "--token", issued["token"], "--state", str(tmp_path / "other.json")) == 1
    assert "was already used" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "other.json")
