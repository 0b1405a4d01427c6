"""A "macOS" device against the real server (``create_app`` with a real DeviceService on the test
store, over HTTP and HTTPS pinned from the token): the agent's own commands (``gateway agent
enroll / check / report / sync-ca``) with the platform forced to mac and ``security`` answered
with recorded output (``tests.agent.platform_tools.FakeSecurity``) from real certificates.

The server records a System-keychain certificate whose key the agent can export as a verified
pass, and one whose key macOS will not export as failed and not verified, with the agent's
reason; it gets no Linux rule; ``sync-ca --dry-run`` prints the ``security`` commands and changes
nothing; ``sync-ca`` installs the gateway's root into the System keychain and the server counts
the device; not as root, the store says so and nothing is reported installed. Not run on a real
Mac (docs/agent.md)."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import pytest

from agent import host
from agent.macos_security import SECURITY, SYSTEM_KEYCHAIN
from proxy.cli.main import main
from tests.agent.platform_tools import FakePowerShell, FakeSecurity, KeychainItem, StoreItem, sha1_of
from tests.agent.test_end_to_end import _rows
from tests.support.pki import fingerprint, issue_leaf, make_ca
from tests.support.server import AgentServer as Server

HOST = socket.gethostname()
KEYCHAIN = f"keychain:{SYSTEM_KEYCHAIN}"


async def agent(*argv: str) -> int:
    return await asyncio.to_thread(main, ["agent", *argv])


def rule(name: str, certificate_id: str, platform: str, trust_stores: list[str]) -> dict[str, Any]:
    return {
        "name": name, "type": "client_certificate_v2", "schedule": "5m", "expiration": "10m",
        "match": [{"platform": platform}],
        "input": {"certificate_id": certificate_id, "check_private_key": True, "operating_system": platform,
                  "cn": "${hostname}.corp", "extended_key_usage": ["clientAuth"],
                  "locations": {"trust_stores": trust_stores}},
    }  # fmt: skip


async def test_recorded_macos_device_reports_pass_and_unverified_and_syncs_the_keychain(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "Users" / "ann"
    login = str(home / "Library/Keychains/login.keychain-db")
    account = server.gateway.account_id
    ca = make_ca("Corp Device CA")
    upload = await server.admin("POST", f"/accounts/{account}/mtls_certificates",
                                {"name": "devices", "certificates": ca.cert_pem(), "ca": True})  # fmt: skip
    user_ca = make_ca("Corp User CA")
    user_upload = await server.admin("POST", f"/accounts/{account}/mtls_certificates",
                                     {"name": "users", "certificates": user_ca.cert_pem(), "ca": True})  # fmt: skip
    system_cert = issue_leaf(ca, f"{HOST}.corp", key_type="rsa-2048")
    login_cert = issue_leaf(user_ca, f"{HOST}.corp")
    security = FakeSecurity(
        {SYSTEM_KEYCHAIN: [KeychainItem(system_cert)], login: [KeychainItem(login_cert)]},
        unexportable={login},
    )
    monkeypatch.setattr(host, "current_host", lambda: host.Host("mac", security, home=home))
    posture = f"/accounts/{account}/devices/posture"
    keychain_rule = await server.admin("POST", posture, rule("keychain cert", upload["id"], "mac", []))
    login_rule = await server.admin("POST", posture, rule("login cert", user_upload["id"], "mac", ["user"]))
    await server.admin("POST", posture, rule("linux cert", upload["id"], "linux", ["user"]))
    issued = await server.admin(
        "POST", f"/accounts/{account}/devices/enrollment_tokens", {"email": "ann@example.com"}
    )

    state = tmp_path / "state.json"
    assert await agent("enroll", "--token", issued["token"], "--state", str(state)) == 0
    device_id = capsys.readouterr().out.split()[3]
    device = await server.admin("GET", f"/accounts/{account}/devices/{device_id}")
    assert (device["device_type"], device["serial_number"]) == ("mac", "C02TEST0MAC1")  # from ioreg

    # check: both mac rules pass locally; the login keychain's key cannot be used, and it says so
    assert await agent("check", "--state", str(state)) == 0
    out = capsys.readouterr().out
    assert f"keychain cert  pass     {KEYCHAIN} {sha1_of(system_cert.certificate)} (CN {HOST}.corp)" in out
    assert (
        f"login cert     pass     keychain:{login} {sha1_of(login_cert.certificate)} (CN {HOST}.corp); cannot prove it: "
        in out
    )
    assert "linux cert" not in out  # the server gives a mac device no Linux rule

    # report: the server verifies the proof of the System keychain's key, and stores the other as
    # failed and not verified, with the agent's reason -- never a pass
    assert await agent("report", "--state", str(state)) == 3
    stored = _rows(capsys.readouterr().out)
    assert stored["keychain cert"][0] == "pass (verified)"
    assert stored["keychain cert"][2].endswith(f"CN '{HOST}.corp'; proof of possession checked")
    assert stored["login cert"][0] == "fail"
    assert stored["login cert"][2].startswith("no proof of possession: a passing result needs the nonce")
    assert "not exportable" in stored["login cert"][2]
    logs = await server.admin("GET", f"/accounts/{account}/devices/posture/logs?device_id={device_id}")
    assert {(e["rule_name"], e["success"], e["verified"]) for e in logs} == {
        ("keychain cert", True, True),
        ("login cert", False, False),
    }
    identity = server.devices.identity(device_id)
    assert identity.posture_passed == (keychain_rule["id"],)
    assert login_rule["id"] in identity.posture_failed

    # sync-ca --dry-run: the commands, for review; nothing changed, nothing reported
    root_fp = fingerprint(server_root(await server.admin("GET", f"/accounts/{account}/gateway/certificates")))
    security.calls.clear()
    assert await agent("sync-ca", "--state", str(state), "--dry-run") == 0
    out = capsys.readouterr().out
    assert out.startswith("dry run: no store was changed, nothing recorded, nothing reported to the server\n")
    assert f"  would run: {SECURITY} add-trusted-cert -d -r trustRoot -k {SYSTEM_KEYCHAIN} " in out
    assert not any(c.argv[1] == "add-trusted-cert" for c in security.calls)
    assert (await server.admin("GET", f"/accounts/{account}/devices/{device_id}"))["trust_stores"] == []

    # not root: the store says what to do, nothing counts as installed
    security.root = False
    assert await agent("sync-ca", "--state", str(state)) == 3
    captured = capsys.readouterr()
    assert "run `sudo gateway agent sync-ca`, or leave it out with --no-system" in captured.out
    stores = {
        s["store"]: s
        for s in (await server.admin("GET", f"/accounts/{account}/devices/{device_id}"))["trust_stores"]
    }
    assert stores["system"]["installed"] == [] and "authorization was denied" in stores["system"]["error"]
    record = await server.admin(
        "GET", f"/accounts/{account}/gateway/certificates/{server.gateway.initial_ca_id}"
    )
    assert record["gateway_devices"] == {"installed": 0, "missing": 1, "reporting": 1}

    # as root: installed as a trusted root, recorded, and the server counts the device
    security.root = True
    assert await agent("sync-ca", "--state", str(state)) == 0
    capsys.readouterr()
    # the server calls the System keychain the device's "system" store, and counts the device
    stores = {
        s["store"]: s
        for s in (await server.admin("GET", f"/accounts/{account}/devices/{device_id}"))["trust_stores"]
    }
    assert stores == {"system": stores["system"]}
    assert stores["system"]["installed"] == [root_fp] and stores["system"]["error"] == ""
    assert root_fp in {fingerprint(c) for c in security.trusted[SYSTEM_KEYCHAIN]}
    record = await server.admin(
        "GET", f"/accounts/{account}/gateway/certificates/{server.gateway.initial_ca_id}"
    )
    assert record["gateway_devices"] == {"installed": 1, "missing": 0, "reporting": 1}

    # run: one round of reports and a CA sync, on the forced platform
    assert await agent("run", "--state", str(state), "--once") == 0
    out = capsys.readouterr().out
    assert "keychain cert: pass (verified)" in out and "login cert: fail: no proof of possession" in out


def server_root(listing: list[dict[str, Any]]) -> Any:
    from cryptography import x509

    (in_use,) = [c for c in listing if c.get("in_use")]
    return x509.load_pem_x509_certificate(in_use["certificate"].encode())


async def test_recorded_windows_device_proves_in_place_and_syncs_the_machine_root_store(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    account = server.gateway.account_id
    machine_ca, user_ca = make_ca("Corp Machine CA"), make_ca("Corp User CA")
    ids = []
    for name, ca in (("machines", machine_ca), ("users", user_ca)):
        upload = await server.admin("POST", f"/accounts/{account}/mtls_certificates",
                                    {"name": name, "certificates": ca.cert_pem(), "ca": True})  # fmt: skip
        ids.append(upload["id"])
    machine_cert = issue_leaf(machine_ca, f"{HOST}.corp", key_type="ec-p384")  # P1363 -> DER on the way
    user_cert = issue_leaf(user_ca, f"{HOST}.corp", key_type="rsa-2048")
    shell = FakePowerShell({"LocalMachine\\My": [StoreItem(machine_cert)],
                            "CurrentUser\\My": [StoreItem(user_cert, usable=False)]}, elevated=False)  # fmt: skip
    monkeypatch.setattr(host, "current_host", lambda: host.Host("windows", shell, home=tmp_path))
    posture = f"/accounts/{account}/devices/posture"
    await server.admin("POST", posture, rule("machine cert", ids[0], "windows", []))
    await server.admin("POST", posture, rule("user cert", ids[1], "windows", ["user"]))
    issued = await server.admin(
        "POST", f"/accounts/{account}/devices/enrollment_tokens", {"email": "bo@example.com"}
    )
    state = tmp_path / "state.json"
    assert await agent("enroll", "--token", issued["token"], "--state", str(state)) == 0
    device_id = capsys.readouterr().out.split()[3]
    device = await server.admin("GET", f"/accounts/{account}/devices/{device_id}")
    assert (device["device_type"], device["serial_number"]) == ("windows", "5CDTEST0WIN1")  # from Win32_BIOS

    assert await agent("report", "--state", str(state)) == 3
    stored = _rows(capsys.readouterr().out)
    assert stored["machine cert"][0] == "pass (verified)"  # the server verified the in-place signature
    assert stored["user cert"][0] == "fail"
    assert "Windows does not let the agent use it" in stored["user cert"][2]
    assert "Keyset does not exist" in stored["user cert"][2]
    logs = await server.admin("GET", f"/accounts/{account}/devices/posture/logs?device_id={device_id}")
    assert {(e["rule_name"], e["success"], e["verified"]) for e in logs} == {
        ("machine cert", True, True),
        ("user cert", False, False),
    }

    # not elevated, with the user's Root store too: the machine store says what to do, the
    # user's store takes the root, and the server is told so (by that store's own name)
    root_fp = fingerprint(server_root(await server.admin("GET", f"/accounts/{account}/gateway/certificates")))
    assert await agent("sync-ca", "--state", str(state), "--user") == 3
    out = capsys.readouterr().out
    assert "leave the machine store out with --no-system" in out
    assert "windows:CurrentUser\\Root" in out
    stores = (await server.admin("GET", f"/accounts/{account}/devices/{device_id}"))["trust_stores"]
    assert [(s["store"], s["installed"]) for s in stores] == [
        ("system", []),
        ("windows:CurrentUser\\Root", [root_fp]),
    ]
    assert "Access is denied" in stores[0]["error"]
    shell.elevated = True
    assert await agent("sync-ca", "--state", str(state)) == 0
    capsys.readouterr()
    stores = (await server.admin("GET", f"/accounts/{account}/devices/{device_id}"))["trust_stores"]
    assert [(s["store"], s["installed"], s["error"]) for s in stores] == [("system", [root_fp], "")]
