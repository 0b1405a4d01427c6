"""``gateway ca ...`` against the real admin API (``create_app``) over loopback HTTP.

The store, the certificate service and first start are the real ones; one simulated node loads
certificates a moment after every change, so activation really passes through
``pending_deployment`` and ``--use`` has to wait for ``available``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from certs.authority import CertificateAuthority, KeyType
from certs.clock import utcnow
from certs.sealing import KeySealer
from proxy.api.app import ApiDeps, create_app
from proxy.bootstrap import first_start
from proxy.services.certificates import CertificateService
from proxy.services.device_enrollment import DeviceDetails
from proxy.services.device_trust import DeviceTrustService, parse_report
from proxy.services.devices import DeviceService
from proxy.store import Store
from tests.support.wait import wait_until_async

from .test_ca import cli

TOKEN = "real-api-admin-token-0123456789"
NODE = "node-under-test"
NODE_DELAY = 0.3  # seconds between a change and the node having loaded it


@dataclass
class Gateway:
    url: str
    account: str
    service: CertificateService
    store: Store | None = None

    async def run(self, *argv: str) -> int:
        return await asyncio.to_thread(cli, "ca", "--server", self.url, "--token", TOKEN, *argv)

    def status(self, cert_id: str) -> tuple[str | None, bool]:
        record = self.service.get(self.account, cert_id)
        return (record.binding_status.value if record.binding_status else None), record.in_use


@pytest.fixture
async def gateway(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Gateway]:
    monkeypatch.delenv("GATEWAY_SERVER", raising=False)
    monkeypatch.delenv("GATEWAY_ADMIN_TOKEN", raising=False)
    store = Store.open(tmp_path / "gateway.sqlite3")
    service = CertificateService(store, KeySealer(KeySealer.generate_master_key()), utcnow)
    account = first_start(store, service, admin_token_env=TOKEN, clock=utcnow).account_id

    loop = asyncio.get_running_loop()
    pending: list[asyncio.TimerHandle] = []

    def load() -> None:
        service.node_loaded(NODE, account, {ca.id: ca.fingerprint for ca in service.loadable(account)})

    service.register_node(NODE, "simulated node")
    load()
    service.subscribe(lambda: pending.append(loop.call_later(NODE_DELAY, load)))

    runner = web.AppRunner(
        create_app(
            ApiDeps(store=store, certificates=service, clock=utcnow, public_base_url="http://127.0.0.1")
        )
    )
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    try:
        yield Gateway(f"http://{host}:{port}", account, service, store)
    finally:
        for handle in pending:
            handle.cancel()
        await runner.cleanup()
        store.close()


def only_id(text: str) -> str:
    (found,) = set(re.findall(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", text))
    return str(found)


async def test_full_lifecycle(gateway: Gateway, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # first start made one CA and turned it on
    assert await gateway.run("list", "--json") == 0
    (first,) = json.loads(capsys.readouterr().out)
    assert first["in_use"] and first["binding_status"] == "available"

    # generate: inactive
    assert await gateway.run("generate", "--days", "400", "--key-type", "ec-p384") == 0
    new = only_id(capsys.readouterr().out)
    assert gateway.status(new) == ("inactive", False)

    # activate by prefix: pending until the node loaded it, then available
    assert await gateway.run("activate", new[:8]) == 0
    assert capsys.readouterr().out == (
        f"activated {new}: pending_deployment (available once every running node has loaded it)\n"
    )
    assert await wait_until_async(lambda: gateway.status(new) == ("available", False), NODE_DELAY * 10)
    assert gateway.status(new) == ("available", False)

    # use: the new one in use, the first one back to available
    assert await gateway.run("use", new[:8]) == 0
    assert capsys.readouterr().out == f"in use now: {new}\nback to available: {first['id']}\n"
    assert gateway.status(new) == ("available", True)
    assert gateway.status(first["id"]) == ("available", False)

    # list: both rows, the new one marked in use
    assert await gateway.run("list") == 0
    out, err = capsys.readouterr()
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:]}
    assert out.splitlines()[0].split() == ["ID", "TYPE", "STATUS", "IN", "USE", "EXPIRES", "FINGERPRINT"]
    assert rows[new][:4] == [new, "gateway_managed", "available", "yes"]
    assert rows[first["id"]][:3] == [first["id"], "gateway_managed", "available"]
    assert rows[first["id"]][3] != "yes"
    assert err == ""

    # download: PEM on stdout and DER to a file are the certificate in use
    assert await gateway.run("download", "in-use") == 0
    pem = x509.load_pem_x509_certificate(capsys.readouterr().out.encode())
    public_key = pem.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey) and public_key.curve.name == "secp384r1"
    assert await gateway.run("download", new[:8], "--format", "der", "-o", str(tmp_path / "ca.crt")) == 0
    capsys.readouterr()
    assert x509.load_der_x509_certificate((tmp_path / "ca.crt").read_bytes()) == pem
    assert (
        pem.public_bytes(serialization.Encoding.PEM).decode()
        == gateway.service.get(gateway.account, new).certificate_pem
    )

    # the certificate in use cannot be deactivated: the API's own message, one line
    assert await gateway.run("deactivate", new[:8]) == 1
    out, err = capsys.readouterr()
    assert (
        out == ""
        and err.startswith("gateway: error: ")
        and err.endswith("(HTTP 400)\n")
        and err.count("\n") == 1
    )

    # deactivate the first one, then delete it once the node dropped it
    assert await gateway.run("deactivate", first["id"][:8]) == 0
    assert capsys.readouterr().out.startswith(f"deactivated {first['id']}: ")
    assert await wait_until_async(lambda: gateway.status(first["id"]) == ("inactive", False), NODE_DELAY * 10)
    assert gateway.status(first["id"]) == ("inactive", False)
    assert await gateway.run("delete", first["id"][:8]) == 0
    assert capsys.readouterr().out == f"deleted {first['id']}\n"
    assert [r.id for r in gateway.service.list(gateway.account)] == [new]


async def test_generate_use_waits_for_deployment(
    gateway: Gateway, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await gateway.run("generate", "--use") == 0
    out = capsys.readouterr().out
    new = only_id(out.splitlines()[0])
    assert out.splitlines()[1:3] == [
        f"activated {new}: pending_deployment (available once every running node has loaded it)",
        f"in use now: {new}",
    ]
    assert gateway.status(new) == ("available", True)


async def test_upload_activate_and_use_a_custom_ca(
    gateway: Gateway, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    own = CertificateAuthority.generate(
        common_name="Corp Root", organization="Corp", key_type=KeyType.EC_P256
    )
    (tmp_path / "corp.pem").write_text(own.certificate_pem())
    (tmp_path / "corp.key").write_bytes(own.private_key_pem())
    argv = ["--name", "corp-root", "--cert", str(tmp_path / "corp.pem"), "--key", str(tmp_path / "corp.key")]
    assert await gateway.run("upload", *argv, "--use") == 0
    out = capsys.readouterr().out
    uploaded = only_id(out.splitlines()[0])
    assert out.splitlines()[0].startswith(f"uploaded {uploaded} (corp-root, expires ")
    assert gateway.status(uploaded) == ("available", True)

    assert await gateway.run("list", "--json") == 0
    listing = {c["id"]: c for c in json.loads(capsys.readouterr().out)}
    assert listing[uploaded]["type"] == "custom"
    assert listing[uploaded]["fingerprint"] == own.fingerprint


async def test_api_refusals_are_one_line(gateway: Gateway, capsys: pytest.CaptureFixture[str]) -> None:
    assert await gateway.run("generate", "--days", "0") == 1
    out, err = capsys.readouterr()
    assert out == "" and re.fullmatch(r"gateway: error: validity_period_days: .+ \(HTTP 400\)\n", err)

    assert await asyncio.to_thread(cli, "ca", "list", "--server", gateway.url, "--token", "x" * 32) == 1
    assert capsys.readouterr().err == (
        "gateway: error: the admin token was refused (set --token or GATEWAY_ADMIN_TOKEN)\n"
    )

    assert await gateway.run("list", "--account", "0" * 32) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("gateway: error: ") and err.count("\n") == 1 and TOKEN not in err


async def test_list_flags_a_certificate_near_expiry_with_the_api_warning(
    gateway: Gateway, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await gateway.run("generate", "--days", "10") == 0
    soon = only_id(capsys.readouterr().out)
    assert await gateway.run("list") == 0
    out, err = capsys.readouterr()
    (row,) = [line for line in out.splitlines() if line.startswith(soon)]
    assert re.search(r" \d{4}-\d\d-\d\d \(expires in 9 days\) ", row)
    assert re.fullmatch(rf"warning: certificate {soon} expires in 9 days on \S+\n", err)


async def test_use_asks_for_force_while_a_reporting_device_lacks_the_certificate(
    gateway: Gateway, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 5 through the real API: a device's agent reported its trust stores without the new
    certificate; `gateway ca use` refuses (one line, exit 1) until --force, which turns it on and
    prints the API's warning."""
    assert gateway.store is not None
    first = gateway.service.in_use(gateway.account)
    assert first is not None
    devices = DeviceService(gateway.store, utcnow, public_base_url="http://127.0.0.1")
    issued = devices.create_enrollment_token(gateway.account, email="ann@example.com")
    body = issued.token.removeprefix("gwe1.")
    secret = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))["s"]
    device = devices.enroll(
        secret, DeviceDetails.from_api({"name": "ann-laptop", "os": "linux"}), "127.0.0.1"
    ).device
    trust = DeviceTrustService(gateway.store, gateway.service, utcnow)
    await trust.report(
        device, parse_report({"stores": [{"store": "system", "installed": [first.fingerprint]}]})
    )

    assert await gateway.run("generate", "--activate") == 0
    new = only_id(capsys.readouterr().out)
    assert await wait_until_async(lambda: gateway.status(new) == ("available", False), NODE_DELAY * 10)
    assert gateway.status(new) == ("available", False)
    lacking = (f"1 of 1 reporting devices have not installed certificate {new} yet: "
               "turning it on breaks TLS for them until their agent syncs")  # fmt: skip

    assert await gateway.run("use", new[:8]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert (
        err
        == f"gateway: error: {lacking}; wait until their agents have synced, or pass --force to turn it on now\n"
    )
    assert gateway.status(new) == ("available", False)

    assert await gateway.run("use", new[:8], "--force") == 0
    out, err = capsys.readouterr()
    assert out == f"in use now: {new}\nback to available: {first.id}\n"
    assert err == f"warning: {lacking}\n"
    assert gateway.status(new) == ("available", True)

    # once the agent reports it installed, going back and forth needs no --force
    await trust.report(
        device,
        parse_report(
            {
                "stores": [
                    {
                        "store": "system",
                        "installed": [
                            first.fingerprint,
                            gateway.service.get(gateway.account, new).fingerprint,
                        ],
                    }
                ]
            }
        ),
    )
    assert await gateway.run("use", first.id[:8]) == 0
    assert await gateway.run("use", new[:8]) == 0
    assert capsys.readouterr().err == ""
    devices.close()
