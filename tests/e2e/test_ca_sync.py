"""The agent keeps a device's trust stores in step with the gateway's root CAs, ahead of every
swap (issue 5, docs/agent.md "Trust stores"): the real `gateway run`, the real `gateway agent
sync-ca --root DIR` and `gateway ca use` as processes, a real NSS database (certutil) that
headless Chromium reads as its own, and the Debian system store folder under DIR.

One story: sync installs the in-use CA; a second CA made available is missing on the device
(gateway_devices) until the next sync installs it in both stores; Chromium loads through the
proxy before and right after the swap to it (no 10100 warning since the device has it); the
first CA deactivated is removed from both stores by the next sync while a root added by hand
stays; `gateway ca use` refuses a CA the device lacks unless --force."""

from __future__ import annotations

import hashlib
import json
import secrets
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.support.pki import make_ca

from . import chromium, curl, sdk, tools
from .device_lab import Agent, admin_cli, make_nssdb
from .gateway_process import GatewayProcess, child_env
from .origin import Origin, body_for
from .pki import describe, issued_by, load_pem

pytestmark = pytest.mark.e2e

HAND_ADDED = "Hand added"


def fp16(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()[:16].upper()


def nss_trust(db: Path) -> dict[str, str]:
    """`certutil -L`: nickname -> its trust attributes ("C,,")."""
    listed = tools.run(
        [tools.require("certutil"), "-L", "-d", f"sql:{db}"], env=child_env(), check=True
    ).stdout.decode(errors="replace")
    rows = {}
    for line in listed.splitlines():
        name, _, trust = line.rstrip().rpartition(" ")
        if name.strip() and "," in trust:
            rows[name.strip()] = trust
    return rows


def nss_pem(db: Path, nickname: str) -> x509.Certificate:
    out = tools.run(
        [tools.require("certutil"), "-L", "-d", f"sql:{db}", "-n", nickname, "-a"],
        env=child_env(),
        check=True,
    ).stdout
    return load_pem(out)


def gateway_entries(db: Path) -> dict[str, str]:
    return {name: trust for name, trust in nss_trust(db).items() if name.startswith("Gateway ")}


def system_files(root: Path) -> set[str]:
    folder = root / "usr/local/share/ca-certificates"
    return {p.name for p in folder.iterdir()} if folder.is_dir() else set()


def bundle_fps(root: Path) -> set[str]:
    bundle = root / "etc/ssl/certs/ca-certificates.crt"
    if not bundle.exists():
        return set()
    text = bundle.read_text()
    return {fp16(c) for c in x509.load_pem_x509_certificates(text.encode())} if text else set()


def sync(agent: Agent, root: Path) -> dict[str, Any]:
    """`gateway agent sync-ca --root ROOT --json` (system store + the user's ~/.pki/nssdb under
    ROOT); exit 0 expected (a missing ROOT/etc/pki/nssdb is normal)."""
    done = agent.run("sync-ca", "--root", str(root), "--json")
    out, err = done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace")
    assert done.returncode == 0, f"sync-ca exit {done.returncode}\nstdout: {out}\nstderr: {err}"
    data = json.loads(out)
    assert isinstance(data, dict), data
    return data


def devices_of(c: Any, account: str, cert_id: str) -> dict[str, int]:
    got = c.zero_trust.gateway.certificates.get(cert_id, account_id=account)
    assert got is not None
    counts = (got.model_extra or {}).get("gateway_devices")
    assert isinstance(counts, dict), got
    return counts


def assert_stores(root: Path, db: Path, present: set[str], absent: set[str]) -> None:
    entries = gateway_entries(db)
    files = system_files(root)
    in_bundle = bundle_fps(root)
    for fp in present:
        assert entries.get(f"Gateway {fp}", "").startswith("C"), (fp, entries)
        assert f"gateway-{fp.lower()}.crt" in files, (fp, files)
        assert fp in in_bundle, (fp, "not in ROOT/etc/ssl/certs/ca-certificates.crt")
    for fp in absent:
        assert f"Gateway {fp}" not in entries, (fp, entries)
        assert f"gateway-{fp.lower()}.crt" not in files, (fp, files)
        assert fp not in in_bundle, (fp, "still in the bundle")


def chromium_loads(gw: GatewayProcess, origin: Origin, home: Path, host: str) -> None:
    page = chromium.load(origin.url(host), proxy_port=gw.proxy_port, home=home)
    assert body_for(host) in page.dom, (
        f"DOM: {page.dom[:300]!r}\nnet errors: {page.net_errors}\nstderr: {page.stderr[-1500:]}"
    )
    cert_errors = {e for e in page.net_errors if "CERT" in e}
    assert not cert_errors, (cert_errors, page.stderr[-1500:])


def chromium_refuses(gw: GatewayProcess, origin: Origin, home: Path, host: str) -> None:
    page = chromium.load(origin.url(host), proxy_port=gw.proxy_port, home=home)
    assert body_for(host) not in page.dom, page.dom[:300]
    assert "ERR_CERT_AUTHORITY_INVALID" in page.net_errors, (page.net_errors, page.stderr[-1500:])


def test_agent_syncs_cas_into_nss_and_system_store_across_a_hot_swap(
    gateway: GatewayProcess, origin: Origin, tmp_path: Path
) -> None:
    gw = gateway
    root = tmp_path / "root"
    agent_home = tmp_path / "agent-home"
    agent_home.mkdir()
    # ~/.pki/nssdb under --root is ROOT/$HOME/.pki/nssdb; Chromium gets HOME=ROOT/$HOME.
    browser_home = root / agent_home.relative_to("/")
    db = make_nssdb(browser_home / ".pki" / "nssdb")
    # What Debian's ca-certificates package provides: the local anchors folder (empty).
    (root / "usr/local/share/ca-certificates").mkdir(parents=True)
    first = load_pem(gw.ca_pem())
    first_fp = fp16(first)

    # --- enroll the device ---------------------------------------------------------------------
    made = admin_cli(gw, "device", "token", "--email", "ann@example.com", "--ttl", "10m")
    assert made.returncode == 0, made.stderr.decode()
    token = made.stdout.decode().strip()
    agent = Agent(state=tmp_path / "agent" / "state.json", home=agent_home)
    serial = f"E2E-{secrets.token_hex(4)}"
    enrolled = agent.run("enroll", "--token", token, "--serial-number", serial)
    assert enrolled.returncode == 0, enrolled.stderr.decode()

    with sdk.client(gw) as c:
        account = sdk.account_id(c)
        first_id = next(i for i, cert in sdk.certificates(c, account).items() if cert.in_use)

        # --- 1. the first sync installs the in-use CA in both stores ---------------------------
        chromium_refuses(gw, origin, browser_home, "before-sync.origin.test")  # the DB is empty
        sync(agent, root)
        assert_stores(root, db, {first_fp}, set())
        assert nss_pem(db, f"Gateway {first_fp}") == first
        assert devices_of(c, account, first_id) == {"installed": 1, "missing": 0, "reporting": 1}

        # --- 2. a root added by hand to the same NSS DB ----------------------------------------
        hand = make_ca("Hand added e2e root", key_identifiers=True)
        hand_pem = tmp_path / "hand-added.pem"
        hand_pem.write_text(hand.cert_pem())
        tools.run(
            [tools.require("certutil"), "-A", "-d", f"sql:{db}", "-n", HAND_ADDED,
             "-t", "C,,", "-i", str(hand_pem)],
            env=child_env(), check=True,
        )  # fmt: skip
        assert nss_trust(db).get(HAND_ADDED, "").startswith("C")

        # --- 3. a second CA, available: missing on the device until the next sync ---------------
        second = sdk.generate_available(c, account)
        second_ca = load_pem(second.certificate)
        second_fp = fp16(second_ca)
        assert devices_of(c, account, second.id) == {"installed": 0, "missing": 1, "reporting": 1}
        sync(agent, root)
        assert_stores(root, db, {first_fp, second_fp}, set())
        assert nss_pem(db, f"Gateway {second_fp}") == second_ca
        assert devices_of(c, account, second.id) == {"installed": 1, "missing": 0, "reporting": 1}
        listed: Any = c.get(f"/accounts/{account}/gateway/certificates/{second.id}/devices", cast_to=object)
        rows = listed["result"] if isinstance(listed, dict) else listed
        assert [(r["installed"], r["reporting"]) for r in rows] == [(True, True)], rows
        assert set(rows[0]["stores"]) == {"system", f"nss:{db}"}, rows

        # --- 4. Chromium on that NSS DB, before and right after the swap ----------------------
        chromium_loads(gw, origin, browser_home, "origin.test")
        raw = c.zero_trust.gateway.configurations.with_raw_response.edit(
            account_id=account, settings={"certificate": {"id": second.id}}
        )
        assert raw.http_response.status_code == 200
        body = json.loads(raw.http_response.read())
        assert not [m for m in body.get("messages") or [] if m.get("code") == 10100], body
        assert body["result"]["settings"]["certificate"]["id"] == second.id, body
        chromium_loads(gw, origin, browser_home, "after-swap.origin.test")
        only_second = tmp_path / "second-ca.pem"
        only_second.write_text(second.certificate)
        for host in ("origin.test", "after-swap.origin.test"):
            got = curl.via_proxy(gw.proxy_port, origin.url(host), cacert=only_second)
            assert got.returncode == 0 and got.status == 200, (host, got.stderr)
            assert got.certs and issued_by(got.certs[0], second_ca), (
                host,
                describe(got.certs[0]) if got.certs else None,
            )

        # --- 5. the first CA deactivated: the next sync removes it, not the hand-added root ----
        c.zero_trust.gateway.certificates.deactivate(first_id, account_id=account)
        sdk.wait_binding_status(c, account, first_id, "inactive")
        sync(agent, root)
        assert_stores(root, db, {second_fp}, {first_fp})
        assert nss_trust(db).get(HAND_ADDED, "").startswith("C"), nss_trust(db)
        assert nss_pem(db, HAND_ADDED) == hand.certificate
        records = agent.saved()["trust_installed"]
        assert {r["fingerprint"].replace(":", "")[:16] for r in records} == {second_fp}, records
        chromium_loads(gw, origin, browser_home, "after-removal.origin.test")

        # --- 6. `gateway ca use` on a CA the device lacks: refused unless --force -------------
        third = sdk.generate_available(c, account)
        refused = admin_cli(gw, "ca", "use", third.id)
        assert refused.returncode == 1, (refused.stdout, refused.stderr)
        said = (refused.stdout + refused.stderr).decode()
        assert "1 of 1" in said and "--force" in said, said
        assert len(said.strip().splitlines()) == 1, said
        assert not sdk.certificates(c, account)[third.id].in_use
        forced = admin_cli(gw, "ca", "use", third.id, "--force")
        assert forced.returncode == 0, (forced.stdout, forced.stderr)
        assert "1 of 1" in (forced.stdout + forced.stderr).decode(), forced
        assert sdk.certificates(c, account)[third.id].in_use
        # ... and the warning was true: the device breaks until its agent syncs, then works.
        chromium_refuses(gw, origin, browser_home, "forced.origin.test")
        sync(agent, root)
        assert_stores(root, db, {second_fp, fp16(load_pem(third.certificate))}, {first_fp})
        assert devices_of(c, account, third.id) == {"installed": 1, "missing": 0, "reporting": 1}
        chromium_loads(gw, origin, browser_home, "forced.origin.test")
