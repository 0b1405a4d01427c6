"""``gateway agent sync-ca`` against the real server: ``create_app`` with a real DeviceService and
CertificateService on the test store, on loopback (HTTP, and HTTPS pinned from the token), the
agent under a temporary --root with a real NSS database and the Debian system store (the real
update-ca-certificates pointed at the root).

The swap of issue 5: the first root is installed; a second is generated and activated; the
server warns that the reporting device lacks it when it is turned on; a sync installs it (and the
server counts the device); the first is deactivated, and the next sync removes it from both
stores while a root added by hand to the same NSS database stays."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Any

import pytest

from proxy.api.routes import ROUTES
from proxy.cli.main import main
from tests.agent.agentlab import import_into_nssdb, make_nssdb, need_nss
from tests.agent.test_trust import ANCHORS, BUNDLE, UPDATE, nss_listing
from tests.agent.test_trust_cli import table
from tests.support.pki import Issued, fingerprint, make_ca
from tests.support.server import AgentServer as Server

pytestmark = pytest.mark.skipif(
    not any(path.endswith("/agent/root_certificates") for _, path, _ in ROUTES),
    reason="the server has no GET /agent/root_certificates yet",
)
HOME = "/home/ann"


async def agent(*argv: str) -> int:
    return await asyncio.to_thread(main, ["agent", *argv])


def system_bundle(root: Path) -> set[str]:
    from agent.trust_store import der_fingerprints

    return set(der_fingerprints((root / BUNDLE).read_bytes()))


@pytest.mark.skipif(UPDATE is None, reason="needs Debian's update-ca-certificates")
async def test_a_new_root_is_installed_before_it_is_turned_on_and_the_old_one_removed_after(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    need_nss()
    monkeypatch.setenv("HOME", HOME)
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    account = server.gateway.account_id
    certificates = f"/accounts/{account}/gateway/certificates"
    root = tmp_path / "root"
    (root / ANCHORS).mkdir(parents=True)
    hand = make_ca("Corp Root (by hand)")
    nssdb = await asyncio.to_thread(nssdb_with_a_root_by_hand, root / "home/ann/.pki/nssdb", hand)

    issued = await server.admin(
        "POST", f"/accounts/{account}/devices/enrollment_tokens", {"email": "ann@example.com"}
    )
    state = tmp_path / "state.json"
    assert await agent("enroll", "--token", issued["token"], "--state", str(state)) == 0
    device_id = capsys.readouterr().out.split()[3]
    sync = ("sync-ca", "--state", str(state), "--root", str(root))

    # the first root (in use) is installed in both stores
    first_id = server.gateway.initial_ca_id
    first = await server.admin("GET", f"{certificates}/{first_id}")
    first_fp = fingerprint_of_record(first)
    assert await agent(*sync) == 0
    out = capsys.readouterr().out
    assert table(out, "CERTIFICATE")[first_id]["CHECK"] == "ok"
    assert set(nss_listing(nssdb)) == {"corp root", f"Gateway {first_fp.replace(':', '')[:16]}"}
    assert first_fp in system_bundle(root)
    first = await server.admin("GET", f"{certificates}/{first_id}")
    assert first["gateway_devices"] == {"installed": 1, "missing": 0, "reporting": 1}

    # a second root: generated and activated, not installed yet -> turning it on warns
    second = await server.admin("POST", certificates, {})
    second_id = second["id"]
    await server.admin("POST", f"{certificates}/{second_id}/activate", {})
    second = await server.admin("GET", f"{certificates}/{second_id}")
    second_fp = fingerprint_of_record(second)
    assert second["gateway_devices"] == {"installed": 0, "missing": 1, "reporting": 1}

    # the agent syncs: the second root is in both stores, the server counts the device
    assert await agent(*sync) == 0
    out = capsys.readouterr().out
    assert table(out, "STORE")["system"]["CHANGES"] == f"+{second_fp.replace(':', '')[:16]}"
    assert second_fp in system_bundle(root) and first_fp in system_bundle(root)
    assert len(nss_listing(nssdb)) == 3
    second = await server.admin("GET", f"{certificates}/{second_id}")
    assert second["gateway_devices"] == {"installed": 1, "missing": 0, "reporting": 1}
    listed = await server.admin("GET", f"{certificates}/{second_id}/devices")
    assert [(d["device_id"], d["installed"]) for d in listed] == [(device_id, True)]
    assert sorted(listed[0]["stores"]) == sorted(["system", f"nss:{nssdb}"])
    turned_on = await server.call("PATCH", f"/accounts/{account}/gateway/configuration",
                                  {"settings": {"certificate": {"id": second_id}}})  # fmt: skip
    assert not [m for m in turned_on["messages"] if m.get("code") == 10100]  # every reporting device has it

    # the first root goes back to inactive: the next sync removes it from both stores only
    await server.admin("POST", f"{certificates}/{first_id}/deactivate", {})
    assert await agent(*sync) == 0
    capsys.readouterr()
    assert set(nss_listing(nssdb)) == {"corp root", f"Gateway {second_fp.replace(':', '')[:16]}"}
    assert first_fp not in system_bundle(root) and second_fp in system_bundle(root)
    assert fingerprint(hand.certificate) not in system_bundle(root)  # never in that store: not ours to add
    device = await server.admin("GET", f"/accounts/{account}/devices/{device_id}")
    stores = {s["store"]: s for s in device["trust_stores"]}
    assert stores["system"]["installed"] == [second_fp] and stores["system"]["error"] == ""
    assert stores[f"nss:{nssdb}"]["installed"] == [second_fp]


async def test_turning_on_a_root_a_device_lacks_warns(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    need_nss()
    monkeypatch.setenv("HOME", HOME)
    account = server.gateway.account_id
    certificates = f"/accounts/{account}/gateway/certificates"
    root = tmp_path / "root"
    make_nssdb(root / "home/ann/.pki/nssdb")
    issued = await server.admin(
        "POST", f"/accounts/{account}/devices/enrollment_tokens", {"email": "bob@example.com"}
    )
    state = tmp_path / "state.json"
    assert await agent("enroll", "--token", issued["token"], "--state", str(state)) == 0
    capsys.readouterr()
    assert await agent("sync-ca", "--state", str(state), "--root", str(root), "--no-system") == 0
    second = await server.admin("POST", certificates, {})
    await server.admin("POST", f"{certificates}/{second['id']}/activate", {})
    turned_on = await server.call("PATCH", f"/accounts/{account}/gateway/configuration",
                                  {"settings": {"certificate": {"id": second["id"]}}})  # fmt: skip
    warnings = [m["message"] for m in turned_on["messages"] if m.get("code") == 10100]
    assert len(warnings) == 1
    assert warnings[0].startswith(
        f"1 of 1 reporting devices have not installed certificate {second['id']} yet"
    )


def nssdb_with_a_root_by_hand(directory: Path, hand: Issued) -> Path:
    nssdb = make_nssdb(directory)
    import_into_nssdb(nssdb, hand, "corp root", with_key=False)
    subprocess.run(["certutil", "-M", "-n", "corp root", "-t", "C,,", "-d", f"sql:{nssdb}"], check=True)
    return nssdb


def fingerprint_of_record(record: dict[str, Any]) -> str:
    from cryptography import x509

    return fingerprint(x509.load_pem_x509_certificate(record["certificate"].encode()))
