"""proxy/cli/client.py over https: ``--cacert`` / ``GATEWAY_ADMIN_CACERT`` against the real admin
app served with ``--admin-tls auto``'s certificate on a loopback port."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from certs.sealing import KeySealer
from proxy.admin_tls import AdminTls, load_admin_tls
from proxy.api import create_app
from proxy.cli.client import CACERT_ENV, AdminClient
from proxy.cli.errors import CliError
from proxy.cli.main import main
from proxy.config import Config, HostPort
from tests.support.server import Gateway


@pytest.fixture
async def https_admin(
    tmp_path: Path, sealer: KeySealer, gateway: Gateway
) -> AsyncIterator[tuple[str, AdminTls]]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    config = Config(data_dir=tmp_path, admin_listen=HostPort("127.0.0.1", port), admin_tls_auto=True)
    tls = load_admin_tls(config, sealer)
    assert tls is not None
    runner = web.AppRunner(create_app(gateway.api()), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=tls.context).start()
    yield f"https://127.0.0.1:{port}", tls
    await runner.cleanup()


async def test_cacert_trusts_the_gateways_own_certificate(
    https_admin: tuple[str, AdminTls], gateway: Gateway
) -> None:
    server, tls = https_admin
    client = AdminClient(server, gateway.token, cacert=tls.certificate_file)
    accounts = (await asyncio.to_thread(client.get, "/accounts")).result
    assert [a["id"] for a in accounts] == [gateway.account_id]
    by_name = AdminClient(
        server.replace("127.0.0.1", "localhost"), gateway.token, cacert=tls.certificate_file
    )
    assert (await asyncio.to_thread(by_name.get, "/accounts")).result


async def test_without_cacert_the_error_is_one_line_naming_the_file_to_trust(
    https_admin: tuple[str, AdminTls], gateway: Gateway
) -> None:
    server, _ = https_admin
    with pytest.raises(CliError) as refused:
        await asyncio.to_thread(AdminClient(server, gateway.token).get, "/accounts")
    assert str(refused.value) == (
        f"cannot reach the admin API at {server}: its TLS certificate is not trusted by the system's roots "
        "(self-signed certificate): pass --cacert DATA_DIR/admin-tls.crt (or set GATEWAY_ADMIN_CACERT) "
        "for a gateway's own certificate"
    )
    assert gateway.token not in str(refused.value)


async def test_host_names_are_still_verified(
    https_admin: tuple[str, AdminTls], gateway: Gateway, tmp_path: Path
) -> None:
    server, _tls = https_admin
    other = tmp_path / "other.crt"
    other.write_bytes(b"")
    with pytest.raises(CliError, match=r"^--cacert .*other.crt: no PEM certificate in the file$"):
        AdminClient(server, gateway.token, cacert=other)
    with pytest.raises(CliError, match=r"^--cacert .*missing.crt: no such file$"):
        AdminClient(server, gateway.token, cacert=tmp_path / "missing.crt")
    from certs.server_cert import ServerCertificate

    other.write_bytes(ServerCertificate.generate(["127.0.0.1"]).certificate_pem())
    with pytest.raises(
        CliError, match=r"not trusted by --cacert .*other.crt .*: check --server and --cacert$"
    ):
        await asyncio.to_thread(AdminClient(server, gateway.token, cacert=other).get, "/accounts")


async def test_plain_http_to_the_tls_port_suggests_https(
    https_admin: tuple[str, AdminTls], gateway: Gateway
) -> None:
    server, _ = https_admin
    plain = server.replace("https:", "http:")
    with pytest.raises(CliError, match=r"does it serve https\? then use an https:// --server"):
        await asyncio.to_thread(AdminClient(plain, gateway.token).get, "/accounts")


@pytest.mark.parametrize(
    "command", [["ca", "list"], ["device", "list"], ["logs", "posture"], ["policy", "export"]]
)
async def test_every_admin_command_takes_cacert_or_its_variable(
    https_admin: tuple[str, AdminTls],
    gateway: Gateway,
    command: list[str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The test app serves certificates only: the other groups reach it and get its 404."""
    server, tls = https_admin
    base = [*command, "--server", server, "--token", gateway.token]

    async def answered(argv: list[str]) -> bool:
        code = await asyncio.to_thread(main, argv)
        err = capsys.readouterr().err
        return code == 0 or "(HTTP 404)" in err

    assert await answered([*base, "--cacert", str(tls.certificate_file)])
    monkeypatch.setenv(CACERT_ENV, str(tls.certificate_file))
    assert await answered(base)
    monkeypatch.delenv(CACERT_ENV)
    assert await asyncio.to_thread(main, base) == 1
    assert "pass --cacert DATA_DIR/admin-tls.crt" in capsys.readouterr().err
