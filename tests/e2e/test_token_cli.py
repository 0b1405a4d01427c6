"""`gateway token create|list|revoke` beside a running `gateway run`: a token made from the data
directory (no old token needed) authenticates to the admin API at once, and a revoked one stops."""

from __future__ import annotations

import pytest

from . import tools
from .conftest import GatewayFactory
from .gateway_process import GatewayProcess, child_env, gateway_command

pytestmark = pytest.mark.e2e


def _gateway(*args: str) -> tuple[str, str]:
    result = tools.run([gateway_command(), *args], env=child_env(), check=True)
    return result.stdout.decode(), result.stderr.decode()


def _curl_accounts(gw: GatewayProcess, token: str) -> int:
    """The status of GET /client/v4/accounts with ``token``, asked by curl."""
    result = tools.run(
        [
            tools.require("curl"), "-sS", "-o", "/dev/null", "-w", "%{http_code}",
            "-H", f"Authorization: Bearer {token}",
            f"{gw.api_base}/accounts",
        ],
        env=child_env(),
        check=True,
    )  # fmt: skip
    return int(result.stdout)


def test_a_token_made_from_the_data_dir_works_on_the_running_gateway(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory(token=None)  # first start prints a token: this test never reads it
    with gw.serving():
        out, err = _gateway("token", "create", "--data-dir", str(gw.data_dir), "--name", "e2e")
        token = out.strip()
        assert out == token + "\n" and "shown once" in err
        assert _curl_accounts(gw, token) == 200
        assert _curl_accounts(gw, token + "x") == 401

        listed, _ = _gateway("token", "list", "--data-dir", str(gw.data_dir))
        assert token not in listed
        (row,) = [line for line in listed.splitlines() if "  e2e  " in line]
        token_id = row.split()[0]

        _gateway("token", "revoke", token_id[:8], "--data-dir", str(gw.data_dir))
        assert _curl_accounts(gw, token) == 401
    assert token not in gw.stdout() + gw.stderr_path().read_text(), "the token reached the gateway's output"
