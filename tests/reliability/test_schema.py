"""schemathesis against the OpenAPI document the gateway serves, on a real `gateway run` with
real ids and credentials: no server error and no answer outside the document (status, content
type, body schema), over a bounded number of generated requests per operation."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.e2e.gateway_process import GatewayProcess

pytestmark = [pytest.mark.e2e, pytest.mark.reliability]

EXAMPLES = 8  # per operation: ~60 operations, a minute or so in all
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def real(module_gateway: GatewayProcess) -> Iterator[dict[str, str]]:
    """Ids of objects that exist, by path parameter name (the rest is generated)."""
    gw = module_gateway
    auth = {"Authorization": f"Bearer {gw.token}"}
    with httpx.Client(base_url=gw.admin_url, headers=auth, timeout=30) as client:
        account = client.get("/client/v4/accounts").json()["result"][0]["id"]
        base = f"/client/v4/accounts/{account}"

        def made(path: str, body: dict[str, Any]) -> str:
            reply = client.post(f"{base}/{path}", json=body)
            assert reply.status_code == 200, reply.text
            return str(reply.json()["result"]["id"])

        rule = made(
            "gateway/rules", {"name": "r", "action": "block", "traffic": 'http.request.host == "a.test"'}
        )
        policy = made("access/policies", {"name": "p", "decision": "allow", "include": [{"everyone": {}}]})
        app = made(
            "access/apps", {"type": "self_hosted", "name": "a", "domain": "a.test", "policies": [policy]}
        )
        certificate = client.get(f"{base}/gateway/certificates").json()["result"][0]["id"]
        yield {
            "account_id": account,
            "rule_id": rule,
            "policy_id": policy,
            "app_id": app,
            "certificate_id": certificate,
        }


@pytest.fixture(scope="module")
def api_schema(module_gateway: GatewayProcess, real: dict[str, str]) -> Any:
    return schemathesis.openapi.from_url(f"{module_gateway.admin_url}/client/v4/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_the_api_keeps_to_its_document(
    case: Any, module_gateway: GatewayProcess, real: dict[str, str]
) -> None:
    for name in case.path_parameters or {}:
        if name in real:
            case.path_parameters[name] = real[name]
    case.call_and_validate(
        base_url=module_gateway.admin_url,
        headers={"Authorization": f"Bearer {module_gateway.token}"},
        checks=CHECKS,
        timeout=30,
    )
