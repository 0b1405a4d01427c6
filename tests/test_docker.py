"""docker/: what can be checked without a Docker engine.

- ``docker/compose.yaml`` uses only keys the Compose specification defines (checked against the
  lists below, written from the specification; its JSON schema is not shipped here), and the lab
  publishes nothing beyond the host's loopback;
- the Dockerfile runs as a user that is not root, has a HEALTHCHECK on /healthz, copies what
  exists, and ``.dockerignore`` keeps the virtualenv, git and data out of the build context;
- the image's entrypoint runs directly on this machine: ``--check``, and the lab itself (the
  origin role, then the gateway role trusting it with the demo policies) on loopback ports with
  temporary directories: an allowed page, a page blocked by its rule, then SIGTERM and exit 0.
"""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support.server import free_port
from tests.support.wait import wait_until

REPO = Path(__file__).resolve().parent.parent
DOCKER = REPO / "docker"
ENTRYPOINT = DOCKER / "entrypoint.sh"


def _compose() -> dict[str, Any]:
    loaded = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def _instructions() -> list[tuple[str, str]]:
    """The Dockerfile's instructions (continuation lines joined, comments dropped)."""
    text = (DOCKER / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


# The Compose specification's top-level elements and the service attributes this lab may use
# (https://github.com/compose-spec/compose-spec/blob/main/spec.md).
TOP_LEVEL = {"version", "name", "include", "services", "networks", "volumes", "configs", "secrets"}
SERVICE_KEYS = {
    "build", "cap_add", "cap_drop", "command", "configs", "container_name", "depends_on",
    "entrypoint", "env_file", "environment", "expose", "extra_hosts", "healthcheck", "hostname",
    "image", "init", "labels", "networks", "ports", "profiles", "read_only", "restart", "secrets",
    "security_opt", "stop_grace_period", "stop_signal", "sysctls", "tmpfs", "user", "volumes",
    "working_dir",
}  # fmt: skip
HEALTHCHECK_KEYS = {"test", "interval", "timeout", "retries", "start_period", "start_interval", "disable"}


def _compose_problems(compose: dict[str, Any]) -> list[str]:
    problems = [f"unknown top-level key {k!r}" for k in compose if k not in TOP_LEVEL]
    services = compose.get("services")
    if not isinstance(services, dict) or not services:
        return [*problems, "services: a mapping of at least one service"]
    for name, service in services.items():
        if not isinstance(service, dict):
            problems.append(f"services.{name}: not a mapping")
            continue
        problems += [f"services.{name}: unknown key {k!r}" for k in service if k not in SERVICE_KEYS]
        if "image" not in service and "build" not in service:
            problems.append(f"services.{name}: needs image or build")
        check = service.get("healthcheck", {})
        problems += [
            f"services.{name}.healthcheck: unknown key {k!r}" for k in check if k not in HEALTHCHECK_KEYS
        ]
        for needed in service.get("depends_on", {}):
            if needed not in services:
                problems.append(f"services.{name}.depends_on: no service {needed!r}")
    return problems


def test_compose_file_uses_only_keys_of_the_compose_specification() -> None:
    assert _compose_problems(_compose()) == []
    # The check is not lax: a misspelt key is refused.
    broken = _compose()
    broken["services"]["gateway"]["port"] = ["8080:8080"]
    assert _compose_problems(broken) == ["services.gateway: unknown key 'port'"]


def test_compose_lab_is_the_demo_lab_on_the_hosts_loopback() -> None:
    services = _compose()["services"]
    assert set(services) == {"gateway", "origin", "client"}
    for name, service in services.items():
        assert service["build"] == {"context": "..", "dockerfile": "docker/Dockerfile"}, name
        assert service["command"] == [name], name
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
    assert services["gateway"]["ports"] == ["127.0.0.1:8080:8080", "127.0.0.1:8081:8081"]
    assert "GATEWAY_ADMIN_TOKEN" in services["gateway"]["environment"]
    from proxy.demo.origins import SITE_NAMES  # the sites `gateway demo` serves

    aliases = services["origin"]["networks"]["lab"]["aliases"]
    assert sorted(aliases) == sorted(SITE_NAMES)


def test_dockerfile_is_sane() -> None:
    instructions = _instructions()
    kinds = [kind for kind, _ in instructions]
    assert kinds[0] == "FROM"
    users = [value for kind, value in instructions if kind == "USER"]
    assert users and users[-1] not in ("root", "0"), users
    assert kinds.index("USER") < kinds.index("ENTRYPOINT")
    (healthcheck,) = [value for kind, value in instructions if kind == "HEALTHCHECK"]
    assert "/healthz" in healthcheck and "--interval" in healthcheck
    (entrypoint,) = [value for kind, value in instructions if kind == "ENTRYPOINT"]
    assert json.loads(entrypoint) == ["/app/docker/entrypoint.sh"]
    for kind, value in instructions:
        if kind == "COPY":
            sources = [part for part in value.split() if not part.startswith("--")][:-1]
            for source in sources:
                assert (REPO / source).exists(), f"COPY {source}: no such file in the build context"
    assert os.access(ENTRYPOINT, os.X_OK)


def test_dockerignore_keeps_the_context_small() -> None:
    ignored = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines() if line.strip()}
    for entry in (".git", ".venv", "var/", "bench/results"):
        assert entry in ignored, entry
    for kind, value in _instructions():  # nothing the image copies is ignored
        if kind == "COPY":
            for source in [p for p in value.split() if not p.startswith("--")][:-1]:
                assert source not in ignored and source.split("/")[0] not in ignored, source


def _env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.lower().endswith("_proxy") and not k.startswith("GATEWAY_")
    }
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHON"] = sys.executable
    env["PYTHONPATH"] = str(REPO)
    env.update(extra)
    return env


def test_entrypoint_check_names_the_gateway_command(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(ENTRYPOINT), "--check"],
        env=_env(GATEWAY_DATA_DIR=str(tmp_path / "data"), GATEWAY_LAB_DIR=str(tmp_path / "lab")),
        capture_output=True,
        timeout=60,
        check=False,
    )
    err = result.stderr.decode()
    assert result.returncode == 0, err
    assert f"gateway run --data-dir {tmp_path / 'data'} --proxy-listen 0.0.0.0:8080" in err
    assert "--admin-listen 0.0.0.0:8081 --admin-tls auto" in err and err.rstrip().endswith("ok")


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [str(ENTRYPOINT), *args], env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def _stop(process: subprocess.Popen[bytes], log: Path) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(5)
        raise AssertionError(f"did not stop on SIGTERM:\n{log.read_text()[-3000:]}") from None


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """The origin role on a loopback port; yields the lab directory and the port."""
    directory = tmp_path / "lab"
    directory.mkdir()
    port = free_port()
    log = tmp_path / "origin.log"
    origin = _start(
        ["origin"], _env(GATEWAY_LAB_DIR=str(directory), GATEWAY_ORIGIN_LISTEN=f"127.0.0.1:{port}"), log
    )
    try:
        wait_until(lambda: (directory / "origin-ca.pem").exists() or origin.poll() is not None, 60)
        assert origin.poll() is None, log.read_text()
        yield directory, port
    finally:
        assert _stop(origin, log) == 0, log.read_text()[-3000:]


@pytest.mark.e2e
def test_entrypoint_runs_the_lab_and_stops_on_sigterm(tmp_path: Path, lab: tuple[Path, int]) -> None:
    directory, origin_port = lab
    assert (directory / "demo.yaml").exists()
    from proxy.demo.origins import SITE_NAMES

    hosts = tmp_path / "hosts"
    hosts.write_text("".join(f"127.0.0.1 {name}\n" for name in SITE_NAMES))
    proxy_port, admin_port = free_port(), free_port()
    data = tmp_path / "data"
    env = _env(
        GATEWAY_DATA_DIR=str(data),
        GATEWAY_LAB_DIR=str(directory),
        GATEWAY_PROXY_LISTEN=f"127.0.0.1:{proxy_port}",
        GATEWAY_ADMIN_LISTEN=f"127.0.0.1:{admin_port}",
        GATEWAY_WAIT_FOR_ORIGIN="1",
        GATEWAY_ADMIN_TOKEN="docker-lab-token-" + "x" * 24,
    )
    log = tmp_path / "gateway.log"
    gateway = _start(["gateway", "--hosts", str(hosts)], env, log)
    try:
        admin = f"https://127.0.0.1:{admin_port}"
        wait_until(lambda: (directory / "admin-tls.crt").exists() or gateway.poll() is not None, 60)
        assert gateway.poll() is None, log.read_text()[-3000:]
        trust_admin = ssl.create_default_context(cafile=str(directory / "admin-tls.crt"))
        with httpx.Client(verify=trust_admin, trust_env=False, timeout=10) as client:

            def healthy() -> bool:
                try:
                    return client.get(f"{admin}/healthz").status_code == 200
                except httpx.TransportError:
                    return False

            wait_until(healthy, 60)
            ca = client.get(f"{admin}/pki/ca.pem").text
        trust_gateway = ssl.create_default_context(cadata=ca)
        proxy = f"http://127.0.0.1:{proxy_port}"
        with httpx.Client(proxy=proxy, verify=trust_gateway, trust_env=False, timeout=10) as client:
            allowed = client.get(f"https://www.demo.test:{origin_port}/")
            assert allowed.status_code == 200 and "www.demo.test: Allowed" in allowed.text, allowed.text[:300]
            blocked = client.get(f"https://blocked.demo.test:{origin_port}/")
            assert blocked.status_code == 403 and "rule: Block blocked.demo.test" in blocked.text, (
                blocked.text
            )
    finally:
        status = _stop(gateway, log)
    assert status == 0, log.read_text()[-3000:]
