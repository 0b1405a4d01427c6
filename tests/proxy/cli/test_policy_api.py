"""``gateway policy export`` and ``gateway policy import`` against the real admin API over
loopback HTTP (the store, the policy service and the app are the real ones)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web

from policies.yaml_io import load
from proxy.api import create_app
from proxy.cli.main import main
from proxy.services.policies import PolicyService
from proxy.services.policy_kinds import GATEWAY_RULES
from tests.support.policies import FILE, deps_with_policies
from tests.support.server import Gateway

POLICIES = """\
gateway_rules:
  - id: 11111111-0000-4000-8000-000000000001
    name: Block casino
    precedence: 100
    action: block
    traffic: http.request.host == "casino.example"
    rule_settings: {block_page_enabled: true, block_reason: No gambling}
  - name: Allow everything else on example.org
    precedence: 200
    action: allow
    traffic: any(http.request.domains[*] == "example.org")
access_policies:
  - id: 22222222-0000-4000-8000-000000000001
    name: Staff
    decision: allow
    include: [{email_domain: {domain: example.com}}]
access_applications:
  - id: 33333333-0000-4000-8000-000000000001
    name: Intranet
    domain: intranet.example
    policies: [22222222-0000-4000-8000-000000000001]
tests:
  - name: casino is blocked
    request: {url: "https://casino.example/"}
    expect: {action: block, rule: Block casino}
"""


@dataclass
class Server:
    url: str
    gateway: Gateway
    service: PolicyService

    async def run(self, *argv: str, token: str | None = None) -> int:
        args = ["policy", *argv, "--server", self.url, f"--token={token or self.gateway.token}"]
        return await asyncio.to_thread(main, args)


@pytest.fixture
async def server(gateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Server]:
    for name in ("GATEWAY_SERVER", "GATEWAY_ADMIN_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    deps, service = deps_with_policies(gateway)
    runner = web.AppRunner(create_app(deps), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    try:
        yield Server(f"http://{host}:{port}", gateway, service)
    finally:
        await runner.cleanup()


async def test_import_then_export_round_trips(
    server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "corp.yaml"
    source.write_text(POLICIES)
    assert await server.run("import", str(source)) == 0
    out, err = capsys.readouterr()
    assert out == ("imported: 2 gateway rules, 1 Access policies, 1 Access applications\n") and err == ""
    a = server.gateway.account_id
    assert [m.item.name for m in server.service.list(GATEWAY_RULES, a)] == [
        "Block gambling (file)", "Block casino", "Allow everything else on example.org",
    ]  # fmt: skip

    exported = tmp_path / "exported.yaml"
    assert await server.run("export", "-o", str(exported)) == 0
    assert capsys.readouterr().err.startswith(f"wrote {exported} (")
    reloaded = load(exported.read_text())
    assert [r.name for r in reloaded.gateway_rules] == [
        "Block gambling (file)", "Block casino", "Allow everything else on example.org",
    ]  # fmt: skip
    assert reloaded.gateway_rules[1] == dataclasses.replace(
        load(POLICIES).gateway_rules[0],
        created_at=server.gateway.clock.now,
        updated_at=server.gateway.clock.now,
    )

    # the export imports back as it is: the store does not change, the file's objects stay put
    before = server.gateway.store.dump()
    assert await server.run("import", str(exported)) == 0
    out = capsys.readouterr().out
    assert out == (
        "imported: 2 gateway rules, 1 Access policies, 1 Access applications "
        "(3 objects left to the gateway's policy files)\n"
    )
    assert server.gateway.store.dump() == before

    # export to stdout is the same text
    assert await server.run("export") == 0
    assert capsys.readouterr().out == exported.read_text()


async def test_a_broken_file_is_refused_before_anything_is_sent(
    server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "broken.yaml"
    source.write_text(
        "gateway_rules:\n  - {name: A, precedence: 1, action: block, traffic: 'http.request.hots == \"a\"'}\n"
    )
    before = server.gateway.store.dump()
    assert await server.run("import", str(source)) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines()[0] == (
        f"{source}:2:55: gateway_rules[0] 'A': traffic: unknown field 'http.request.hots' "
        "(did you mean http.request.host?)"
    )
    assert err.splitlines()[-1] == "gateway: error: 1 problem in the policy files"
    assert server.gateway.store.dump() == before


async def test_the_server_refusal_is_one_line(
    server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "clash.yaml"
    source.write_text("gateway_rules:\n  - {name: Clash, precedence: 10, action: block}\n")
    before = server.gateway.store.dump()
    assert await server.run("import", str(source)) == 1
    out, err = capsys.readouterr()
    assert out == "" and err == (
        "gateway: error: gateway rules 'Block gambling (file)' and 'Clash' both have precedence "
        "10; give each enabled rule its own (HTTP 400)\n"
    )
    assert server.gateway.store.dump() == before
    assert FILE in (await asyncio.to_thread(server.service.export, server.gateway.account_id))


async def test_a_wrong_token_is_refused(server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    assert await server.run("export", token="not-the-admin-token-at-all") == 1
    assert capsys.readouterr().err == (
        "gateway: error: the admin token was refused (set --token or GATEWAY_ADMIN_TOKEN)\n"
    )
