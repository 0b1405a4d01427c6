"""Every operation of the route table refuses a request without credentials or with wrong
ones (401), except the documented public paths; the agent's paths take device credentials.
A token scoped to one account gets 403 on every account-scoped operation of another."""

from __future__ import annotations

import re

import httpx
import pytest

from proxy.api.middleware import PUBLIC_API_PATHS
from proxy.api.routes import ROUTES
from tests.e2e import tools
from tests.e2e.gateway_process import GatewayProcess, child_env, gateway_command

pytestmark = [pytest.mark.e2e, pytest.mark.reliability]

# Served to anyone: readiness, the CA and CRLs, the PAC file, the OpenAPI document, /metrics
# (scraped without a token, on the loopback admin listener).
PUBLIC = ("/healthz", "/metrics", "/pki/", "/proxy.pac", *PUBLIC_API_PATHS)
SAMPLE_ID = "0b7e4c1d-2a3f-4b5c-8d6e-7f8091a2b3c4"
WRONG = {
    "none": {},
    "wrong token": {"Authorization": "Bearer not-a-token"},
    "wrong scheme": {"Authorization": "Basic YWRtaW46YWRtaW4="},
    "empty bearer": {"Authorization": "Bearer"},
    "device credentials": {"Authorization": "Device abc:def"},
}


# Enrollment's credential is the one-time enrollment secret in the body: without one the body
# is incomplete (400), with a wrong one 401.
ENROLL = "/client/v4/agent/enroll"


def _refused(template: str, status: int) -> bool:
    return status == 401 or (template == ENROLL and status == 400)


def _concrete(path: str, account_id: str) -> str:
    path = path.replace("{account_id}", account_id)
    return re.sub(r"\{[^}]+\}", SAMPLE_ID, path)


def _protected() -> list[tuple[str, str]]:
    return [(m, p) for m, p, _ in ROUTES if not p.startswith(PUBLIC)]


def test_every_protected_operation_refuses_wrong_credentials(module_gateway: GatewayProcess) -> None:
    gw = module_gateway
    with httpx.Client(base_url=gw.admin_url, timeout=10) as client:
        accounts = client.get("/client/v4/accounts", headers={"Authorization": f"Bearer {gw.token}"})
        account_id = accounts.json()["result"][0]["id"]
        accepted = []
        operations = _protected()
        assert len(operations) > 40
        for method, template in operations:
            path = _concrete(template, account_id)
            for label, headers in WRONG.items():
                reply = client.request(
                    method, path, headers={**headers, "Content-Type": "application/json"}, content=b"{}"
                )
                if not _refused(template, reply.status_code) or reply.json()["success"] is not False:
                    accepted.append(f"{method} {template} ({label}): {reply.status_code}")
    assert accepted == []


def test_public_paths_answer_without_credentials(module_gateway: GatewayProcess) -> None:
    with httpx.Client(base_url=module_gateway.admin_url, timeout=10) as client:
        for method, template, _ in ROUTES:
            if template.startswith(PUBLIC) and "{" not in template:
                assert client.request(method, template).status_code in (200, 404), template


def _scoped_token(gw: GatewayProcess, account_id: str) -> str:
    """A token for ``account_id`` only, made with `gateway token create --account`."""
    result = tools.run(
        [gateway_command(), "token", "create", "--data-dir", str(gw.data_dir), "--account", account_id],
        env=child_env(),
        check=True,
    )
    return result.stdout.decode().strip()


def test_a_token_of_one_account_gets_403_on_every_route_of_another(module_gateway: GatewayProcess) -> None:
    """Every account-scoped operation, with account A's token on account B's path: 403 in the
    envelope, never 200, 404 or 500 (whatever the object id, whatever the body)."""
    gw = module_gateway
    with gw.api() as admin:
        first = admin.get("/accounts").json()["result"][0]["id"]
        made = admin.post("/accounts", json={"name": "cross-account walk"})
        assert made.status_code == 200, made.text
    other = made.json()["result"]["id"]
    token = _scoped_token(gw, other)
    operations = [(m, p) for m, p in _protected() if "{account_id}" in p]
    assert len(operations) > 40
    leaked = []
    with httpx.Client(base_url=gw.admin_url, timeout=10) as client:
        own = client.get(f"/client/v4/accounts/{other}", headers={"Authorization": f"Bearer {token}"})
        assert own.status_code == 200
        listed = client.get("/client/v4/accounts", headers={"Authorization": f"Bearer {token}"})
        assert [a["id"] for a in listed.json()["result"]] == [other]
        for method, template in operations:
            reply = client.request(
                method,
                _concrete(template, first),
                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
                content=b"{}",
            )
            body = reply.json()
            if (
                reply.status_code != 403
                or body["success"] is not False
                or other not in body["errors"][0]["message"]
            ):
                leaked.append(f"{method} {template}: {reply.status_code}")
    assert leaked == []
