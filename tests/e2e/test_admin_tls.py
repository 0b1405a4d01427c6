"""The admin API over TLS (SPEC §7 "Exposure", §5 "Agent transport") with the real `gateway run
--admin-listen 0.0.0.0:PORT --admin-tls auto`, curl, the admin CLI and the real `gateway agent`.

The gateway listens on every interface but the tests only ever connect to 127.0.0.1: the agent
is told `--server https://127.0.0.1:PORT` (the token names the machine's host name), and the pin
in the token still decides whom it talks to."""

from __future__ import annotations

import base64
import json
import re
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from . import tools
from .device_lab import Agent
from .gateway_process import GatewayProcess, child_env
from .origin import Origin

pytestmark = pytest.mark.e2e

HOSTNAME = socket.gethostname()


@pytest.fixture(scope="module")
def tls_gateway(
    tmp_path_factory: pytest.TempPathFactory, origin: Origin, hosts_file: Path
) -> Iterator[GatewayProcess]:
    base = tmp_path_factory.mktemp("admin-tls-gateway")
    gw = GatewayProcess(
        data_dir=base / "data", log_dir=base / "logs", upstream_ca=origin.ca_path, hosts=hosts_file,
        admin_host="0.0.0.0", admin_tls=True,
    )  # fmt: skip
    with gw.serving():
        yield gw


def fingerprint(gw: GatewayProcess) -> str:
    cert = x509.load_pem_x509_certificate(gw.admin_cert.read_bytes())
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def curl(*args: str) -> subprocess.CompletedProcess[bytes]:
    return tools.run([tools.require("curl"), "-sS", "--max-time", "10", *args], env=child_env())


def admin_cli(gw: GatewayProcess, *args: str, cacert: bool = True) -> subprocess.CompletedProcess[bytes]:
    """`gateway <args> --server https://127.0.0.1:PORT [--cacert DATA/admin-tls.crt]`."""
    assert gw.token
    trust = ["--cacert", str(gw.admin_cert)] if cacert else []
    return tools.run(
        [tools.venv_program("gateway"), *args, "--server", gw.admin_url, *trust],
        env=child_env({"GATEWAY_ADMIN_TOKEN": gw.token}),
    )


def token_fields(token: str) -> dict[str, str]:
    prefix, _, payload = token.partition(".")
    assert prefix == "gwe1", token[:10]
    fields = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert isinstance(fields, dict)
    return fields


def make_token(token_fields_: dict[str, str]) -> str:
    raw = json.dumps(token_fields_, separators=(",", ":")).encode()
    return "gwe1." + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def new_enrollment_token(gw: GatewayProcess) -> str:
    made = admin_cli(gw, "device", "token", "--email", "ann@example.com")
    assert made.returncode == 0, made.stderr.decode()
    return made.stdout.decode().strip()


def test_curl_trusting_the_certificate_file_reaches_the_api_over_https(tls_gateway: GatewayProcess) -> None:
    gw = tls_gateway
    assert oct(gw.admin_cert.stat().st_mode & 0o777) == "0o600"
    answer = curl(
        "--cacert", str(gw.admin_cert), f"https://127.0.0.1:{gw.admin_port}/client/v4/accounts",
        "-H", f"Authorization: Bearer {gw.token}",
    )  # fmt: skip
    assert answer.returncode == 0, answer.stderr.decode()
    body = json.loads(answer.stdout)
    assert body["success"] is True and len(body["result"]) == 1


def test_plain_http_and_a_client_that_does_not_trust_it_are_refused(tls_gateway: GatewayProcess) -> None:
    gw = tls_gateway
    plain = curl("-o", "/dev/null", "-w", "%{http_code}", f"http://127.0.0.1:{gw.admin_port}/healthz")
    assert plain.returncode != 0 and plain.stdout.decode() in ("", "000"), (plain.stdout, plain.stderr)
    untrusted = curl(f"https://127.0.0.1:{gw.admin_port}/healthz")
    assert untrusted.returncode == 60, (
        untrusted.stderr.decode()
    )  # curl: peer certificate cannot be authenticated


def test_the_banner_shows_the_https_url_and_the_certificate_fingerprint(tls_gateway: GatewayProcess) -> None:
    gw = tls_gateway
    banner = gw.stdout()
    assert f"admin API    https://{HOSTNAME}:{gw.admin_port}/client/v4" in banner, banner
    assert f"admin TLS    SHA-256 {fingerprint(gw)}" in banner, banner
    assert f"--cacert {gw.admin_cert}" in banner, banner
    assert "PRIVATE KEY" not in banner and "PRIVATE KEY" not in gw.stderr_tail(200)
    assert (
        gw.admin_cert.with_name("admin-tls.key")
        .read_bytes()
        .startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    )


def test_the_admin_cli_needs_cacert_for_the_self_signed_certificate(tls_gateway: GatewayProcess) -> None:
    listed = admin_cli(tls_gateway, "ca", "list")
    assert listed.returncode == 0, listed.stderr.decode()
    assert "gateway_managed" in listed.stdout.decode()
    refused = admin_cli(tls_gateway, "ca", "list", cacert=False)
    err = refused.stderr.decode()
    assert refused.returncode == 1 and err.count("\n") == 1, err
    assert "its TLS certificate is not trusted" in err and "--cacert DATA_DIR/admin-tls.crt" in err, err


def test_the_enrollment_token_carries_the_fingerprint_and_the_agent_pins_it(
    tls_gateway: GatewayProcess, tmp_path: Path
) -> None:
    gw = tls_gateway
    token = new_enrollment_token(gw)
    fields = token_fields(token)
    assert fields["f"] == fingerprint(gw)
    assert fields["u"] == f"https://{HOSTNAME}:{gw.admin_port}"

    agent = Agent(state=tmp_path / "agent" / "state.json", home=tmp_path / "home")
    agent.home.mkdir()
    enrolled = agent.run("enroll", "--token", token, "--server", gw.admin_url)
    assert enrolled.returncode == 0, enrolled.stderr.decode()
    assert fingerprint(gw) in json.dumps(agent.saved())
    reported = agent.run("report")
    assert reported.returncode == 0, (reported.stdout.decode(), reported.stderr.decode())
    with gw.api() as api:
        account = api.get("/accounts").json()["result"][0]["id"]
        device = api.get(f"/accounts/{account}/devices/{agent.device_id}").json()["result"]
    assert device["user"]["email"] == "ann@example.com"


def test_a_token_with_another_fingerprint_is_refused_before_anything_is_sent(
    tls_gateway: GatewayProcess, tmp_path: Path
) -> None:
    gw = tls_gateway
    token = new_enrollment_token(gw)
    forged = token_fields(token)
    wrong = "AB:" * 31 + "CD"
    forged["f"] = wrong
    agent = Agent(state=tmp_path / "agent" / "state.json", home=tmp_path / "home")
    agent.home.mkdir()
    refused = agent.run("enroll", "--token", make_token(forged), "--server", gw.admin_url)
    err = refused.stderr.decode()
    assert refused.returncode == 1, err
    assert re.search(
        rf"presented a certificate with SHA-256 fingerprint {fingerprint(gw)}, not the pinned {wrong}: refusing",
        err,
    ), err
    assert not agent.state.exists()
    # Nothing reached the server: the one-time secret is still unused.
    enrolled = agent.run("enroll", "--token", token, "--server", gw.admin_url)
    assert enrolled.returncode == 0, enrolled.stderr.decode()


def test_a_restart_keeps_the_certificate_so_enrolled_agents_go_on(
    tls_gateway: GatewayProcess, tmp_path: Path
) -> None:
    gw = tls_gateway
    agent = Agent(state=tmp_path / "agent" / "state.json", home=tmp_path / "home")
    agent.home.mkdir()
    assert agent.run("enroll", "--token", new_enrollment_token(gw), "--server", gw.admin_url).returncode == 0
    before = fingerprint(gw)
    gw.restart()
    assert fingerprint(gw) == before
    assert f"admin TLS    SHA-256 {before}" in gw.stdout()
    reported = agent.run("report")
    assert reported.returncode == 0, reported.stderr.decode()
