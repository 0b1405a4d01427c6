"""``gateway ca ...`` against a small in-memory admin API double served over real loopback HTTP.

The double speaks the Cloudflare v4 envelope for the paths the CLI uses; the real admin API is
exercised by ``test_ca_real.py``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import socket
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from proxy.cli import ca
from proxy.cli.main import main
from tests.support.pki import make_ca

TOKEN = "s3cret-admin-token-0123456789"
ACCOUNT = "6f0c2d1e9a8b47c5b3d2e1f0a9b8c7d6"


def cli(*argv: str) -> int:
    """What the ``gateway`` command does with ``argv``."""
    return main(list(argv))


# --- the API double ----------------------------------------------------------------------------------


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class FakeApi:
    certs: dict[str, dict[str, Any]] = field(default_factory=dict)
    ders: dict[str, bytes] = field(default_factory=dict)
    in_use: str | None = None
    pending_reads: dict[str, int] = field(default_factory=dict)
    requests: list[tuple[str, str, str | None, bytes]] = field(default_factory=list)
    # issue 5: gateway_devices on GET of one certificate ({installed, missing, reporting}), by id;
    # new_devices is what every certificate made from now on gets
    devices: dict[str, dict[str, int]] = field(default_factory=dict)
    new_devices: dict[str, int] | None = None

    def add(
        self, cert: x509.Certificate, *, kind: str = "gateway_managed", status: str = "inactive"
    ) -> dict[str, Any]:
        cert_id = str(uuid.uuid4())
        der = cert.public_bytes(serialization.Encoding.DER)
        now = rfc3339(datetime.now(UTC))
        self.ders[cert_id] = der
        self.certs[cert_id] = {
            "id": cert_id,
            "type": kind,
            "binding_status": status,
            "in_use": False,
            "certificate": cert.public_bytes(serialization.Encoding.PEM).decode(),
            "fingerprint": ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest()),
            "issuer_org": "Lab",
            "issuer_raw": cert.issuer.rfc4514_string(),
            "created_at": now,
            "updated_at": now,
            "uploaded_on": now,
            "expires_on": rfc3339(cert.not_valid_after_utc),
        }
        if self.new_devices is not None:
            self.devices[cert_id] = dict(self.new_devices)
        return self.certs[cert_id]

    def lacking(self, cert_id: str) -> list[dict[str, Any]]:
        """The real API's warning (code 10100) when turning on a certificate devices lack."""
        counts = self.devices.get(cert_id)
        if not counts or not counts["missing"]:
            return []
        message = (f"{counts['missing']} of {counts['reporting']} reporting devices have not installed certificate "
                   f"{cert_id} yet: turning it on breaks TLS for them until their agent syncs")  # fmt: skip
        return [{"code": 10100, "message": message}]

    def view(self, cert_id: str) -> dict[str, Any]:
        cert = self.certs[cert_id]
        if cert["binding_status"] == "pending_deployment":  # deploys after a few reads, like a slow node
            self.pending_reads[cert_id] = self.pending_reads.get(cert_id, 0) - 1
            if self.pending_reads[cert_id] < 0:
                cert["binding_status"] = "available"
        return dict(cert, in_use=cert_id == self.in_use)

    def expiry_messages(self, ids: Sequence[str]) -> list[dict[str, Any]]:
        messages = []
        for cert_id in ids:
            left = datetime.fromisoformat(self.certs[cert_id]["expires_on"]) - datetime.now(UTC)
            if left < timedelta(days=30):
                messages.append(
                    {"code": 1001, "message": f"certificate {cert_id} expires in {left.days} days"}
                )
        return messages


class ApiRefusal(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def envelope(result: Any, messages: list[dict[str, Any]] | None = None) -> web.Response:
    return web.json_response({"success": True, "errors": [], "messages": messages or [], "result": result})


def make_app(api: FakeApi) -> web.Application:
    @web.middleware
    async def errors(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        body = await request.read()
        api.requests.append((request.method, request.path_qs, request.headers.get("Authorization"), body))
        try:
            if request.headers.get("Authorization") != f"Bearer {TOKEN}":
                raise ApiRefusal(401, "authentication required")
            if request.match_info.get("account", ACCOUNT) != ACCOUNT:
                raise ApiRefusal(404, "account not found")
            return await handler(request)
        except ApiRefusal as e:
            return web.json_response(
                {
                    "success": False,
                    "errors": [{"code": 7000 + e.status, "message": str(e)}],
                    "messages": [],
                    "result": None,
                },
                status=e.status,
            )

    def cert_id(request: web.Request) -> str:
        if request.match_info["id"] not in api.certs:
            raise ApiRefusal(404, "certificate not found")
        return request.match_info["id"]

    async def accounts(request: web.Request) -> web.Response:
        return envelope([{"id": ACCOUNT, "name": "Lab"}])

    async def list_certs(request: web.Request) -> web.Response:
        return envelope([api.view(i) for i in api.certs], api.expiry_messages(list(api.certs)))

    async def create_cert(request: web.Request) -> web.Response:
        body = await request.json()
        days = body.get("validity_period_days", 1825)
        if not 1 <= days <= 10950:
            raise ApiRefusal(400, "validity_period_days must be between 1 and 10950")
        cert = make_ca(not_after=timedelta(days=days), key_type=body.get("key_type", "ec-p256")).certificate
        return envelope(api.add(cert))

    async def get_cert(request: web.Request) -> web.Response:
        i = cert_id(request)
        extra = {"gateway_devices": api.devices[i]} if i in api.devices else {}
        return envelope({**api.view(i), **extra})

    async def activate(request: web.Request) -> web.Response:
        i = cert_id(request)
        if api.certs[i]["binding_status"] == "inactive":
            api.certs[i]["binding_status"] = "pending_deployment"
            api.pending_reads[i] = 1
        return envelope(dict(api.certs[i], in_use=i == api.in_use))

    async def deactivate(request: web.Request) -> web.Response:
        i = cert_id(request)
        if i == api.in_use:
            raise ApiRefusal(400, "the certificate in use cannot be deactivated: turn another one on first")
        api.certs[i]["binding_status"] = "inactive"
        return envelope(api.view(i))

    async def delete_cert(request: web.Request) -> web.Response:
        i = cert_id(request)
        if api.certs[i]["binding_status"] != "inactive":
            raise ApiRefusal(
                400, f"only inactive certificates can be deleted; {i} is {api.certs[i]['binding_status']}"
            )
        api.ders.pop(i)
        return envelope(api.certs.pop(i))

    async def download(request: web.Request) -> web.Response:
        i = cert_id(request)
        if request.query.get("format") == "der":
            return web.Response(body=api.ders[i], content_type="application/pkix-cert")
        return web.Response(text=api.certs[i]["certificate"], content_type="application/x-pem-file")

    async def get_config(request: web.Request) -> web.Response:
        return envelope({"settings": {"certificate": {"id": api.in_use}}})

    async def patch_config(request: web.Request) -> web.Response:
        wanted = (await request.json())["settings"]["certificate"]["id"]
        if wanted not in api.certs or api.certs[wanted]["binding_status"] != "available":
            raise ApiRefusal(400, f"settings.certificate.id: certificate {wanted} is not available")
        api.in_use = wanted
        return envelope({"settings": {"certificate": {"id": wanted}}}, api.lacking(wanted))

    async def upload(request: web.Request) -> web.Response:
        body = await request.json()
        try:
            cert = x509.load_pem_x509_certificate(body["certificates"].encode())
            serialization.load_pem_private_key(body["private_key"].encode(), None)
        except ValueError:
            raise ApiRefusal(400, "certificates: not a PEM certificate") from None
        record = api.add(cert, kind="custom")
        return envelope(
            {"id": record["id"], "name": body["name"], "ca": True, "expires_on": record["expires_on"]}
        )

    app = web.Application(middlewares=[errors])
    base = "/client/v4/accounts/{account}"
    app.router.add_get("/client/v4/accounts", accounts)
    app.router.add_get(f"{base}/gateway/certificates", list_certs)
    app.router.add_post(f"{base}/gateway/certificates", create_cert)
    app.router.add_get(f"{base}/gateway/certificates/{{id}}", get_cert)
    app.router.add_delete(f"{base}/gateway/certificates/{{id}}", delete_cert)
    app.router.add_post(f"{base}/gateway/certificates/{{id}}/activate", activate)
    app.router.add_post(f"{base}/gateway/certificates/{{id}}/deactivate", deactivate)
    app.router.add_get(f"{base}/gateway/certificates/{{id}}/download", download)
    app.router.add_get(f"{base}/gateway/configuration", get_config)
    app.router.add_patch(f"{base}/gateway/configuration", patch_config)
    app.router.add_post(f"{base}/mtls_certificates", upload)
    return app


@dataclass
class Server:
    api: FakeApi
    url: str

    async def run(self, *argv: str, token: str | None = TOKEN) -> int:
        options = ["--server", self.url] + (["--token", token] if token is not None else [])
        return await asyncio.to_thread(cli, "ca", *options, *argv)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("GATEWAY_SERVER", "GATEWAY_ADMIN_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    # The admin API is reached directly even when a proxy (often this gateway) is configured.
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    api = FakeApi()
    runner = web.AppRunner(make_app(api))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield Server(api, f"http://{host}:{port}")
    finally:
        await runner.cleanup()


def ids(output: str) -> list[str]:
    return re.findall(r"[0-9a-f]{8}-[0-9a-f-]{27}", output)


# --- lifecycle -----------------------------------------------------------------------------------------


async def test_generate_activate_use_lists_the_certificate_in_use(
    server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await server.run("generate", "--days", "400", "--use") == 0
    out = capsys.readouterr().out
    (new,) = set(ids(out))
    assert f"generated {new}" in out
    assert f"activated {new}: pending_deployment" in out
    assert f"in use now: {new}" in out
    assert "no certificate was in use before" in out
    assert server.api.in_use == new

    assert await server.run("list") == 0
    out, err = capsys.readouterr()
    header, row = out.splitlines()
    assert header.split() == ["ID", "TYPE", "STATUS", "IN", "USE", "EXPIRES", "FINGERPRINT"]
    assert row.split()[:4] == [new, "gateway_managed", "available", "yes"]
    fingerprint = server.api.certs[new]["fingerprint"]
    assert f"{fingerprint[:11]}...{fingerprint[-11:]}" in row
    assert err == ""


async def test_use_reports_the_previous_certificate_back_to_available(
    server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    old = server.api.add(make_ca(not_after=timedelta(days=100)).certificate, status="available")["id"]
    new = server.api.add(make_ca(not_after=timedelta(days=100)).certificate, status="available")["id"]
    server.api.in_use = old
    assert await server.run("use", new[:6]) == 0
    out = capsys.readouterr().out
    assert out.splitlines() == [f"in use now: {new}", f"back to available: {old}"]
    assert server.api.in_use == new
    patch = [body for method, path, _, body in server.api.requests if method == "PATCH"]
    assert patch == [f'{{"settings": {{"certificate": {{"id": "{new}"}}}}}}'.encode()]


async def test_use_of_the_certificate_in_use_changes_nothing(
    server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    cert = server.api.add(make_ca(not_after=timedelta(days=100)).certificate, status="available")["id"]
    server.api.in_use = cert
    assert await server.run("use", cert) == 0
    assert capsys.readouterr().out == f"{cert} is already in use\n"
    assert not [r for r in server.api.requests if r[0] == "PATCH"]


async def test_activate_and_deactivate_post_empty_json(
    server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    cert = server.api.add(make_ca(not_after=timedelta(days=100)).certificate)["id"]
    assert await server.run("activate", cert[:8]) == 0
    assert await server.run("deactivate", cert[:8]) == 0
    out = capsys.readouterr().out
    assert f"activated {cert}: pending_deployment (available once every running node has loaded it)" in out
    assert f"deactivated {cert}: inactive" in out
    posts = [(path, body) for method, path, _, body in server.api.requests if method == "POST"]
    assert posts == [
        (f"/client/v4/accounts/{ACCOUNT}/gateway/certificates/{cert}/activate", b"{}"),
        (f"/client/v4/accounts/{ACCOUNT}/gateway/certificates/{cert}/deactivate", b"{}"),
    ]


async def test_generate_sends_days_and_key_type_and_prints_json(
    server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await server.run("generate", "--days", "30", "--key-type", "ec-p384", "--json") == 0
    out, err = capsys.readouterr()
    cert = json.loads(out)
    assert cert["binding_status"] == "inactive" and cert["id"] in server.api.certs
    assert f"generated {cert['id']}" in err
    (body,) = [body for method, _, _, body in server.api.requests if method == "POST"]
    assert body == b'{"validity_period_days": 30, "key_type": "ec-p384"}'
    public_key = x509.load_pem_x509_certificate(cert["certificate"].encode()).public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey) and public_key.curve.name == "secp384r1"


async def test_delete_removes_an_inactive_certificate(
    server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    cert = server.api.add(make_ca(not_after=timedelta(days=100)).certificate)["id"]
    assert await server.run("delete", cert[:5]) == 0
    assert capsys.readouterr().out == f"deleted {cert}\n"
    assert server.api.certs == {}


async def test_upload_then_activate_a_custom_ca(
    server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    issued = make_ca(not_after=timedelta(days=365), key_type="rsa-2048")
    cert, key = issued.certificate, issued.key
    (tmp_path / "corp.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "corp.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    argv = [
        "upload",
        "--name",
        "corp-root",
        "--cert",
        str(tmp_path / "corp.pem"),
        "--key",
        str(tmp_path / "corp.key"),
    ]
    assert await server.run(*argv, "--activate") == 0
    out = capsys.readouterr().out
    (uploaded,) = set(ids(out))
    assert f"uploaded {uploaded} (corp-root, expires " in out
    assert f"activated {uploaded}: pending_deployment" in out
    assert server.api.certs[uploaded]["type"] == "custom"
    (_method, _path, _, body) = next(r for r in server.api.requests if r[1].endswith("/mtls_certificates"))
    sent = json.loads(body)
    assert sent["name"] == "corp-root" and sent["ca"] is True and "PRIVATE KEY" in sent["private_key"]


async def test_upload_of_a_missing_file_is_one_line(
    server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.pem"
    assert await server.run("upload", "--name", "x", "--cert", str(missing), "--key", str(missing)) == 1
    assert capsys.readouterr().err == f"gateway: error: cannot read {missing}: No such file or directory\n"


# --- list: expiry flags and API warnings ---------------------------------------------------------------


async def test_list_flags_expiry_and_prints_api_warnings_on_stderr(
    server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    soon = server.api.add(make_ca(not_after=timedelta(days=10)).certificate)["id"]
    gone = server.api.add(
        make_ca(now=datetime.now(UTC) - timedelta(days=5), not_after=timedelta(days=1)).certificate
    )["id"]
    fine = server.api.add(make_ca(not_after=timedelta(days=1825)).certificate)["id"]
    assert await server.run("list") == 0
    out, err = capsys.readouterr()
    rows = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert re.search(r"\d{4}-\d\d-\d\d \(expires in 9 days\)", rows[soon])
    assert re.search(r"\d{4}-\d\d-\d\d EXPIRED", rows[gone])
    assert "expires" not in rows[fine] and "EXPIRED" not in rows[fine]
    assert err.splitlines() == [
        f"warning: certificate {soon} expires in 9 days",
        f"warning: certificate {gone} expires in -5 days",
    ]


async def test_resolving_an_id_does_not_repeat_the_listing_warnings(
    server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    soon = server.api.add(make_ca(not_after=timedelta(days=10)).certificate)["id"]
    assert await server.run("activate", soon[:8]) == 0
    assert capsys.readouterr().err == ""


async def test_use_warns_about_the_state_after_the_switch(
    server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    soon = server.api.add(make_ca(not_after=timedelta(days=10)).certificate, status="available")["id"]
    assert await server.run("use", soon[:8], "--json") == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["in_use"] is True
    assert err.splitlines() == [
        f"in use now: {soon}",
        "no certificate was in use before",
        f"warning: certificate {soon} expires in 9 days",
    ]


# --- use: devices that have not installed the certificate (issue 5) ----------------------------------


def lacking_line(missing: int, reporting: int, cert_id: str) -> str:
    return (f"{missing} of {reporting} reporting devices have not installed certificate {cert_id} yet: "
            "turning it on breaks TLS for them until their agent syncs")  # fmt: skip


async def test_use_refuses_without_force_while_devices_lack_the_certificate(
    server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    old = server.api.add(make_ca(not_after=timedelta(days=100)).certificate, status="available")["id"]
    new = server.api.add(make_ca(not_after=timedelta(days=100)).certificate, status="available")["id"]
    server.api.in_use = old
    server.api.devices[new] = {"installed": 1, "missing": 2, "reporting": 3}
    assert await server.run("use", new[:6]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (f"gateway: error: {lacking_line(2, 3, new)}; wait until their agents have synced, "
                   "or pass --force to turn it on now\n")  # fmt: skip
    assert server.api.in_use == old
    assert not [r for r in server.api.requests if r[0] == "PATCH"]
    gets = [path for method, path, _, _ in server.api.requests if method == "GET"]
    assert f"/client/v4/accounts/{ACCOUNT}/gateway/certificates/{new}" in gets  # it asked the API

    # --json changes nothing: still refused, one line
    assert await server.run("use", new[:6], "--json") == 1
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and lacking_line(2, 3, new) in err


async def test_use_with_force_turns_it_on_and_prints_the_api_warning(
    server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    old = server.api.add(make_ca(not_after=timedelta(days=100)).certificate, status="available")["id"]
    new = server.api.add(make_ca(not_after=timedelta(days=100)).certificate, status="available")["id"]
    server.api.in_use = old
    server.api.devices[new] = {"installed": 0, "missing": 1, "reporting": 1}
    assert await server.run("use", new[:6], "--force") == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == [f"in use now: {new}", f"back to available: {old}"]
    assert err == f"warning: {lacking_line(1, 1, new)}\n"
    assert server.api.in_use == new


async def test_use_goes_ahead_when_every_reporting_device_has_it(
    server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    new = server.api.add(make_ca(not_after=timedelta(days=100)).certificate, status="available")["id"]
    server.api.devices[new] = {"installed": 4, "missing": 0, "reporting": 4}
    assert await server.run("use", new) == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[0] == f"in use now: {new}" and err == ""
    assert server.api.in_use == new


async def test_generate_use_asks_for_force_too(server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    server.api.new_devices = {"installed": 0, "missing": 3, "reporting": 3}
    assert await server.run("generate", "--use") == 1
    out, err = capsys.readouterr()
    (new,) = set(ids(out))
    assert err == (f"gateway: error: {lacking_line(3, 3, new)}; wait until their agents have synced, "
                   "or pass --force to turn it on now\n")  # fmt: skip
    assert server.api.in_use is None
    assert await server.run("generate", "--use", "--force") == 0
    out, err = capsys.readouterr()
    (newer,) = set(ids(out))
    assert server.api.in_use == newer and err == f"warning: {lacking_line(3, 3, newer)}\n"


def test_table_columns_and_flags_with_a_fixed_clock() -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    fingerprint = ":".join(["AB"] * 32)
    table = ca.format_table(
        [
            {
                "id": "a",
                "type": "custom",
                "binding_status": "available",
                "in_use": True,
                "expires_on": "2030-01-02T00:00:00Z",
                "fingerprint": fingerprint,
            },
            {
                "id": "b",
                "type": "gateway_managed",
                "binding_status": "inactive",
                "in_use": False,
                "expires_on": "2029-12-31T23:59:59Z",
                "fingerprint": "12:34",
            },
            {
                "id": "c",
                "type": "gateway_managed",
                "binding_status": "inactive",
                "in_use": False,
                "expires_on": "2030-01-31T00:00:00Z",
                "fingerprint": "",
            },
            {
                "id": "d",
                "type": "gateway_managed",
                "binding_status": "inactive",
                "in_use": False,
                "expires_on": "2030-02-01T00:00:00Z",
                "fingerprint": "",
            },
        ],
        now=now,
    )
    assert table.splitlines() == [
        "ID  TYPE             STATUS     IN USE  EXPIRES                          FINGERPRINT",
        "a   custom           available  yes     2030-01-02 (expires in 1 day)    AB:AB:AB:AB...AB:AB:AB:AB",
        "b   gateway_managed  inactive           2029-12-31 EXPIRED               12:34",
        "c   gateway_managed  inactive           2030-01-31 (expires in 30 days)",
        "d   gateway_managed  inactive           2030-02-01",
    ]
    last_hours = ca.format_table([{"id": "e", "expires_on": "2030-01-01T23:00:00Z"}], now=now)
    assert last_hours.splitlines()[1] == "e                         2030-01-01 (expires in less than a day)"


async def test_list_without_certificates_says_how_to_make_one(
    server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await server.run("list") == 0
    assert capsys.readouterr().out == "no gateway certificates (make one with `gateway ca generate`)\n"


async def test_list_json_is_the_api_result(server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    cert = server.api.add(make_ca(not_after=timedelta(days=100)).certificate)
    assert await server.run("list", "--json") == 0
    assert json.loads(capsys.readouterr().out) == [cert]


# --- download ------------------------------------------------------------------------------------------


async def test_download_in_use_pem_to_stdout(server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    cert = server.api.add(make_ca(not_after=timedelta(days=100)).certificate, status="available")["id"]
    server.api.in_use = cert
    assert await server.run("download", "in-use") == 0
    out = capsys.readouterr().out
    loaded = x509.load_pem_x509_certificate(out.encode())
    assert loaded.public_bytes(serialization.Encoding.DER) == server.api.ders[cert]


async def test_download_der_to_a_file(
    server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cert = server.api.add(make_ca(not_after=timedelta(days=100)).certificate)["id"]
    target = tmp_path / "ca.crt"
    assert await server.run("download", cert[:4], "--format", "der", "-o", str(target)) == 0
    assert (
        x509.load_der_x509_certificate(target.read_bytes()).public_bytes(serialization.Encoding.DER)
        == server.api.ders[cert]
    )
    out = capsys.readouterr().out
    assert out == f"wrote {target}: certificate {cert} (DER, {len(server.api.ders[cert])} bytes)\n"


async def test_download_der_to_a_pipe(server: Server, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    cert = server.api.add(make_ca(not_after=timedelta(days=100)).certificate)["id"]
    assert await server.run("download", cert, "--format", "der") == 0
    assert capsysbinary.readouterr().out == server.api.ders[cert]


async def test_download_der_refuses_a_terminal(
    server: Server, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cert = server.api.add(make_ca(not_after=timedelta(days=100)).certificate)["id"]
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    assert await server.run("download", cert, "--format", "der") == 1
    assert (
        capsys.readouterr().err
        == "gateway: error: DER is binary: pass -o FILE or redirect stdout to a file\n"
    )


async def test_download_in_use_without_one(server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    server.api.add(make_ca(not_after=timedelta(days=100)).certificate)
    assert await server.run("download", "in-use") == 1
    assert (
        capsys.readouterr().err
        == "gateway: error: no certificate is in use (turn one on with `gateway ca use ID`)\n"
    )


# --- errors: one line, no token, no traceback ----------------------------------------------------------


async def test_api_refusal_is_the_first_error_message_and_status(
    server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await server.run("generate", "--days", "20000") == 1
    assert capsys.readouterr() == (
        "",
        "gateway: error: validity_period_days must be between 1 and 10950 (HTTP 400)\n",
    )


async def test_deleting_an_available_certificate_is_refused(
    server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    cert = server.api.add(make_ca(not_after=timedelta(days=100)).certificate, status="available")["id"]
    assert await server.run("delete", cert) == 1
    assert capsys.readouterr().err == (
        f"gateway: error: only inactive certificates can be deleted; {cert} is available (HTTP 400)\n"
    )


async def test_wrong_token_is_refused_without_echoing_it(
    server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await server.run("list", token="wrong-token-abcdef") == 1
    out, err = capsys.readouterr()
    assert (out, err) == (
        "",
        "gateway: error: the admin token was refused (set --token or GATEWAY_ADMIN_TOKEN)\n",
    )


async def test_missing_token_is_one_clear_line(server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    assert await server.run("list", token=None) == 1
    assert (
        capsys.readouterr().err == "gateway: error: no admin token: pass --token or set GATEWAY_ADMIN_TOKEN\n"
    )
    assert server.api.requests == []


async def test_a_token_with_control_characters_is_not_echoed(
    server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await server.run("list", token="abc\r\nX-Evil: 1") == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "abc" not in err and "Evil" not in err
    assert server.api.requests == []


async def test_environment_supplies_server_and_token(
    server: Server, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GATEWAY_SERVER", server.url)
    monkeypatch.setenv("GATEWAY_ADMIN_TOKEN", TOKEN)
    assert await asyncio.to_thread(cli, "ca", "list") == 0
    assert server.api.requests[0][2] == f"Bearer {TOKEN}"
    assert TOKEN not in "".join(capsys.readouterr())


async def test_group_options_apply_to_the_subcommand_and_subcommand_options_win(
    server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await asyncio.to_thread(cli, "ca", "--server", server.url, "--token", TOKEN, "list") == 0
    assert (
        await asyncio.to_thread(
            cli, "ca", "--server", "http://127.0.0.1:1", "list", "--server", server.url, "--token", TOKEN
        )
        == 0
    )
    assert len([r for r in server.api.requests if r[1].endswith("/gateway/certificates")]) == 2


async def test_unknown_account_is_the_api_message(server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    assert await server.run("list", "--account", "f" * 32) == 1
    assert capsys.readouterr().err == "gateway: error: account not found (HTTP 404)\n"


async def test_given_account_skips_the_accounts_lookup(
    server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await server.run("list", "--account", ACCOUNT) == 0
    assert [path for _, path, _, _ in server.api.requests] == [
        f"/client/v4/accounts/{ACCOUNT}/gateway/certificates"
    ]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_server_says_to_start_gateway_run(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    assert cli("ca", "list", "--server", url, "--token", TOKEN) == 1
    out, err = capsys.readouterr()
    assert (out, err) == (
        "",
        f"gateway: error: cannot reach the admin API at {url}: is `gateway run` running?\n",
    )


def test_invalid_server_url_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli("ca", "list", "--server", "127.0.0.1:8081", "--token", TOKEN) == 1
    err = capsys.readouterr().err
    assert (
        err
        == "gateway: error: invalid server URL '127.0.0.1:8081': expected http://HOST:PORT or https://HOST:PORT\n"
    )


async def test_a_server_that_is_not_the_admin_api(capsys: pytest.CaptureFixture[str]) -> None:
    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hello", status=502)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", hello)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    try:
        assert (
            await asyncio.to_thread(cli, "ca", "list", "--server", f"http://{host}:{port}", "--token", TOKEN)
            == 1
        )
    finally:
        await runner.cleanup()
    assert capsys.readouterr().err == (
        "gateway: error: the admin API answered HTTP 502 without an error message (text/plain)\n"
    )


@pytest.mark.parametrize(
    ("prefix", "message"),
    [
        ("zzz", "no certificate id starts with 'zzz' (see `gateway ca list`)"),
        ("", "empty certificate id"),
    ],
)
async def test_unknown_prefix(
    server: Server, capsys: pytest.CaptureFixture[str], prefix: str, message: str
) -> None:
    server.api.add(make_ca(not_after=timedelta(days=100)).certificate)
    assert await server.run("activate", prefix) == 1
    assert capsys.readouterr().err == f"gateway: error: {message}\n"


async def test_ambiguous_prefix_names_the_candidates(
    server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    first = server.api.add(make_ca(not_after=timedelta(days=100)).certificate)
    second = server.api.add(make_ca(not_after=timedelta(days=100)).certificate)
    for cert, cert_id in (
        (first, "abc10000-0000-4000-8000-000000000001"),
        (second, "abc20000-0000-4000-8000-000000000002"),
    ):
        server.api.certs[cert_id] = dict(server.api.certs.pop(cert["id"]), id=cert_id)
        server.api.ders[cert_id] = server.api.ders.pop(cert["id"])
    assert await server.run("delete", "ABC") == 1
    assert capsys.readouterr().err == (
        "gateway: error: certificate id prefix 'ABC' is ambiguous: it matches "
        "abc10000-0000-4000-8000-000000000001, abc20000-0000-4000-8000-000000000002\n"
    )
    assert await server.run("delete", "abc1") == 0


async def test_no_output_ever_holds_the_token(
    server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await server.run("generate", "--use", "--json")
    await server.run("list")
    await server.run("download", "in-use", "-o", str(tmp_path / "ca.pem"))
    await server.run("delete", "in-use")
    await server.run("use", "nothing")
    out, err = capsys.readouterr()
    assert TOKEN not in out + err
    assert "Traceback" not in err


# --- help ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command", ["", "list", "generate", "upload", "activate", "deactivate", "use", "download", "delete"]
)
def test_help_on_every_command(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli("ca", *([command] if command else []), "--help")
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert "--server URL" in out and "--token TOKEN" in out and "--account ID" in out and "--json" in out
    assert "example" in out
    assert "GATEWAY_ADMIN_TOKEN" in out


def test_group_help_lists_every_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli("ca", "--help")
    assert exited.value.code == 0
    out = capsys.readouterr().out
    for command in ("list", "generate", "upload", "activate", "deactivate", "use", "download", "delete"):
        assert re.search(rf"^    {command} +\S", out, re.MULTILINE), command


def test_help_never_shows_the_token_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GATEWAY_ADMIN_TOKEN", TOKEN)
    with pytest.raises(SystemExit) as exited:
        cli("ca", "list", "--help")
    assert exited.value.code == 0
    assert TOKEN not in capsys.readouterr().out


async def test_a_closed_stdout_pipe_is_no_traceback(server: Server) -> None:
    """``gateway ca list | head -0``: the reader is gone before the table is written."""
    server.api.add(make_ca(not_after=timedelta(days=10)).certificate)
    reader, writer = os.pipe()
    os.close(reader)
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "proxy.cli.main",
            "ca",
            "list",
            "--server",
            server.url,
            "--token",
            TOKEN,
            stdout=writer,
            stderr=asyncio.subprocess.PIPE,
        )
    finally:
        os.close(writer)
    _, err = await process.communicate()
    assert process.returncode == 0
    assert err.decode().splitlines() == [
        f"warning: certificate {next(iter(server.api.certs))} expires in 9 days"
    ]
