"""``gateway device token|list|delete`` against the real admin API over loopback HTTP (the posture
log, and its deprecated ``gateway posture logs``, are tests/proxy/cli/test_logs.py's)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from aiohttp import web

from proxy.api import create_app
from proxy.cli.main import main
from tests.support.devices import Lab, make_lab, token_secret
from tests.support.server import Gateway


@dataclass
class Server:
    url: str
    lab: Lab

    async def run(self, *argv: str, token: str | None = None) -> int:
        args = [*argv, "--server", self.url, f"--token={token or self.lab.gateway.token}"]
        return await asyncio.to_thread(main, args)


@pytest.fixture
async def server(gateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Server]:
    for name in ("GATEWAY_SERVER", "GATEWAY_ADMIN_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    lab = make_lab(gateway)
    runner = web.AppRunner(create_app(lab.api()), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    try:
        yield Server(f"http://{host}:{port}", lab)
    finally:
        await runner.cleanup()
        lab.service.close()


async def test_device_token_prints_the_token_alone(
    server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await server.run("device", "token", "--email", "bob@example.com", "--ttl", "30m") == 0
    out, err = capsys.readouterr()
    token = out.strip()
    assert token.startswith("gwe1.") and "\n" not in token
    assert "single use, expires 2026-03-01T12:30:00Z, user bob@example.com" in err
    from proxy.services.device_enrollment import DeviceDetails

    enrolled = server.lab.service.enroll(
        token_secret(token), DeviceDetails.from_api({"name": "n", "os": "linux"}), "127.0.0.1"
    )
    assert enrolled.device.email == "bob@example.com"


async def test_device_token_refusals_are_one_line(server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    assert await server.run("device", "token", "--ttl", "forever") == 1
    assert "expires_in: must be a duration" in capsys.readouterr().err
    assert await server.run("device", "token", token="wrong") == 1
    assert "the admin token was refused" in capsys.readouterr().err


async def test_device_list_and_delete(server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    assert await server.run("device", "list") == 0
    assert "no enrolled devices" in capsys.readouterr().out
    device, _ = server.lab.enroll()
    server.lab.enroll(hostname="desk-2", os="mac")
    assert await server.run("device", "list") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["ID", "NAME", "OS", "SERIAL", "USER", "IP", "LAST", "SEEN"]
    assert any(device.id in line and "laptop-7" in line and "ana@example.com" in line for line in lines)
    assert await server.run("device", "list", "--json") == 0
    assert {d["name"] for d in json.loads(capsys.readouterr().out)} == {"laptop-7", "desk-2"}
    assert await server.run("device", "delete", "laptop-7") == 0
    assert f"deleted device {device.id}" in capsys.readouterr().out
    assert await server.run("device", "delete", "nothing") == 1
    assert "no device with id, id prefix or name 'nothing'" in capsys.readouterr().err
