"""Two accounts on one gateway, one enrolled device each (each with its own account's enrollment
token): each device's leaves come from its own account's CA (the issuer curl sees, trusting only
that CA), each account's rules apply to its devices only, traffic from no device gets the default
account, a token of one account gets 403 on the other's objects, and turning on a new CA in one
account changes its device's issuer at the next handshake and not the other's."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509

from tests.support.wait import wait_until

from . import curl, tools
from .device_lab import Agent, admin_cli
from .gateway_process import GatewayProcess, child_env, gateway_command
from .origin import Origin, body_for

pytestmark = pytest.mark.e2e

HOST = "origin.test"
BLOCKED_IN_HQ = "hq-blocked.origin.test"
BLOCKED_IN_BRANCH = "branch-blocked.origin.test"
PORT = [0]  # the origin's port, set by the tenants fixture


@dataclass
class Tenant:
    """One account: its id, its device's agent, and its in-use CA as a file curl trusts alone."""

    account: str
    agent: Agent | None
    ca_file: Path


def _ok(reply: httpx.Response) -> Any:
    assert reply.status_code == 200, reply.text
    return reply.json()["result"]


def _cli(gw: GatewayProcess, *args: str) -> str:
    done = admin_cli(gw, *args)
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode()


def _in_use_ca(gw: GatewayProcess, account: str, directory: Path) -> Path:
    with gw.api() as api:
        (ca,) = [c for c in _ok(api.get(f"/accounts/{account}/gateway/certificates")) if c["in_use"]]
    path = directory / f"ca-{account}-{ca['id']}.pem"
    path.write_text(ca["certificate"])
    return path


def _enrolled(gw: GatewayProcess, account: str, base: Path) -> Agent:
    token = _cli(gw, "device", "token", "--account", account, "--email", f"{account[:6]}@example.com").strip()
    agent = Agent(state=base / account / "state.json", home=base / account / "home")
    agent.home.mkdir(parents=True)
    enrolled = agent.run("enroll", "--token", token, "--serial-number", f"E2E-{secrets.token_hex(3)}")
    assert enrolled.returncode == 0, enrolled.stderr.decode()
    return agent


def _block(gw: GatewayProcess, account: str, host: str) -> None:
    rule = {
        "name": f"block {host}",
        "action": "block",
        "filters": ["http"],
        "traffic": f'http.request.host == "{host}"',
    }
    with gw.api() as api:
        _ok(api.post(f"/accounts/{account}/gateway/rules", json=rule))


def _get(gw: GatewayProcess, tenant: Tenant, host: str, *, as_device: bool = True) -> curl.CurlResult:
    user = (
        ("--proxy-user", f"{tenant.agent.device_id}:{tenant.agent.device_secret}")
        if as_device and tenant.agent
        else ()
    )
    return curl.via_proxy(gw.proxy_port, f"https://{host}:{PORT[0]}/", cacert=tenant.ca_file, args=user)


def _issuer(result: curl.CurlResult) -> x509.Name:
    assert result.returncode == 0 and result.certs, result.stderr
    return result.certs[0].issuer


def _subject(path: Path) -> x509.Name:
    return x509.load_pem_x509_certificate(path.read_bytes()).subject


@pytest.fixture
def tenants(gateway: GatewayProcess, tmp_path: Path, origin: Origin) -> tuple[Tenant, Tenant]:
    PORT[0] = origin.port
    with gateway.api() as api:
        hq = _ok(api.get("/accounts"))[0]["id"]
    branch = _cli(gateway, "account", "create", "Branch").strip()
    assert len(branch) == 32
    listed = _cli(gateway, "account", "list")
    assert branch in listed and "Branch" in listed and hq in listed
    made = [
        Tenant(a, _enrolled(gateway, a, tmp_path), _in_use_ca(gateway, a, tmp_path)) for a in (hq, branch)
    ]
    _block(gateway, hq, BLOCKED_IN_HQ)
    _block(gateway, branch, BLOCKED_IN_BRANCH)
    return made[0], made[1]


def test_each_device_gets_its_own_accounts_ca_and_rules(
    gateway: GatewayProcess, tenants: tuple[Tenant, Tenant]
) -> None:
    hq, branch = tenants
    assert _subject(hq.ca_file) != _subject(branch.ca_file)
    for tenant in (hq, branch):
        seen = _get(gateway, tenant, HOST)  # curl trusts this account's CA alone
        assert seen.status == 200 and body_for(HOST) in seen.body, seen.stderr
        assert _issuer(seen) == _subject(tenant.ca_file)
    # Each account's block rule applies to its own device only.
    assert _get(gateway, hq, BLOCKED_IN_HQ).status == 403
    assert _get(gateway, branch, BLOCKED_IN_HQ).status == 200
    assert _get(gateway, branch, BLOCKED_IN_BRANCH).status == 403
    assert _get(gateway, hq, BLOCKED_IN_BRANCH).status == 200
    # No device: the default account (the first): its CA, its rules.
    anonymous = _get(gateway, hq, HOST, as_device=False)
    assert _issuer(anonymous) == _subject(hq.ca_file)
    assert _get(gateway, hq, BLOCKED_IN_HQ, as_device=False).status == 403
    assert _get(gateway, hq, BLOCKED_IN_BRANCH, as_device=False).status == 200
    refused = _get(gateway, branch, HOST, as_device=False)  # a client trusting only Branch's CA
    assert refused.returncode != 0 and refused.status == 0


def test_a_new_ca_in_one_account_changes_only_its_devices_issuer(
    gateway: GatewayProcess, tenants: tuple[Tenant, Tenant], tmp_path: Path
) -> None:
    hq, branch = tenants
    with gateway.api() as api:
        new = _ok(api.post(f"/accounts/{branch.account}/gateway/certificates", json={}))
        _ok(api.post(f"/accounts/{branch.account}/gateway/certificates/{new['id']}/activate"))

        def available() -> bool:
            cert = _ok(api.get(f"/accounts/{branch.account}/gateway/certificates/{new['id']}"))
            return bool(cert["binding_status"] == "available")

        wait_until(available, 15)
        before = _issuer(_get(gateway, branch, HOST))  # the connection before the swap
        _ok(api.patch(f"/accounts/{branch.account}/gateway/configuration",
                      json={"settings": {"certificate": {"id": new["id"]}}}))  # fmt: skip
    new_file = tmp_path / "branch-new.pem"
    new_file.write_text(new["certificate"])
    swapped = Tenant(branch.account, branch.agent, new_file)
    assert before == _subject(branch.ca_file)
    assert _issuer(_get(gateway, swapped, HOST)) == _subject(new_file)  # the next handshake
    assert _issuer(_get(gateway, hq, HOST)) == _subject(hq.ca_file)  # the other account: untouched
    assert _issuer(_get(gateway, hq, HOST, as_device=False)) == _subject(hq.ca_file)


def test_a_token_of_one_account_gets_403_on_the_others_objects(
    gateway: GatewayProcess, tenants: tuple[Tenant, Tenant]
) -> None:
    hq, branch = tenants
    made = tools.run(
        [gateway_command(), "token", "create", "--data-dir", str(gateway.data_dir), "--account", "Branch"],
        env=child_env(),
        check=True,
    )
    token = made.stdout.decode().strip()
    assert "for account " + branch.account in made.stderr.decode()
    with gateway.api(token=token) as api:
        assert [a["id"] for a in _ok(api.get("/accounts"))] == [branch.account]
        assert (
            _ok(api.get(f"/accounts/{branch.account}/gateway/rules"))[0]["name"]
            == f"block {BLOCKED_IN_BRANCH}"
        )
        for method, path in [
            ("GET", f"/accounts/{hq.account}"),
            ("GET", f"/accounts/{hq.account}/gateway/rules"),
            ("GET", f"/accounts/{hq.account}/devices"),
            ("POST", f"/accounts/{hq.account}/gateway/certificates"),
            ("DELETE", f"/accounts/{branch.account}"),  # its own account: an admin's job
            ("POST", "/accounts"),
        ]:
            reply = api.request(method, path, json={"name": "x"} if method == "POST" else None)
            assert reply.status_code == 403, (method, path, reply.text)
            body = reply.json()
            assert body["success"] is False and branch.account in body["errors"][0]["message"]


def test_an_account_with_a_device_is_not_deleted_until_the_device_is(
    gateway: GatewayProcess, tenants: tuple[Tenant, Tenant]
) -> None:
    hq, branch = tenants
    refused = admin_cli(gateway, "account", "delete", "Branch")
    assert refused.returncode != 0
    assert (
        "still has 1 device: delete them first" in refused.stderr.decode()
        and "(HTTP 409)" in refused.stderr.decode()
    )
    default = admin_cli(gateway, "account", "delete", hq.account)
    assert default.returncode != 0 and "default account" in default.stderr.decode()
    assert branch.agent is not None
    _cli(gateway, "device", "delete", "--account", branch.account, branch.agent.device_id)
    assert "deleted account" in _cli(gateway, "account", "delete", "Branch")
    listed = json.loads(_cli(gateway, "account", "list", "--json"))
    assert [a["id"] for a in listed] == [hq.account]
    assert _issuer(_get(gateway, hq, HOST)) == _subject(hq.ca_file)  # the rest goes on


def test_the_default_account_is_the_configured_one(
    gateway: GatewayProcess, tenants: tuple[Tenant, Tenant]
) -> None:
    hq, branch = tenants
    gateway.stop()
    gateway.extra_args += ["--default-account", "Branch"]
    gateway.start()
    anonymous = _get(gateway, branch, HOST, as_device=False)
    assert _issuer(anonymous) == _subject(branch.ca_file)
    assert _get(gateway, branch, BLOCKED_IN_BRANCH, as_device=False).status == 403
    assert _issuer(_get(gateway, hq, HOST)) == _subject(hq.ca_file)  # HQ's device: still HQ's CA
    refused = admin_cli(gateway, "account", "delete", "Branch")
    assert refused.returncode != 0 and "default account" in refused.stderr.decode()
