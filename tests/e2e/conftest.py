"""Fixtures for tests/e2e: real processes on loopback sockets.

- `origin`: nginx (HTTP/1.1 + HTTP/2) serving per-host certificates chosen by SNI from the
  origin CA, plus `untrusted.test` whose certificate comes from a CA the gateway does not trust.
- `gateway`: a fresh `gateway run` on its own data dir and ports (stopped with SIGTERM, exit 0
  asserted); `gateway_factory` makes more (unstarted); `shared_gateway` is one process shared by
  the tests that only read (they must not change its certificates or configuration);
  `policy_lab` is one process with `--policies` (policy_lab.py), shared by the policy tests.

Needs chromium, certutil, curl, openssl and nginx: scripts/install-test-deps installs them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from . import tools
from .gateway_process import GatewayProcess
from .origin import Origin
from .policy_lab import PolicyLab, policy_yaml

GatewayFactory = Callable[..., GatewayProcess]

_PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


@pytest.fixture(scope="session", autouse=True)
def _no_proxy_settings() -> Iterator[None]:
    """Clients in this process (httpx, the SDK) talk to loopback directly unless told otherwise."""
    with pytest.MonkeyPatch.context() as mp:
        for name in _PROXY_VARS:
            mp.delenv(name, raising=False)
            mp.delenv(name.upper(), raising=False)
        yield


@pytest.fixture(scope="session")
def origin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Origin]:
    server = Origin(tmp_path_factory.mktemp("origin"), tools.free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def hosts_file(origin: Origin, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return origin.write_hosts_file(tmp_path_factory.mktemp("hosts") / "hosts")


def _new_gateway(base: Path, origin: Origin, hosts_file: Path, **kwargs: object) -> GatewayProcess:
    return GatewayProcess(
        data_dir=base / "data",
        log_dir=base / "logs",
        upstream_ca=origin.ca_path,
        hosts=hosts_file,
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.fixture
def gateway_factory(tmp_path: Path, origin: Origin, hosts_file: Path) -> Iterator[GatewayFactory]:
    """Make unstarted gateways, each on its own dir under the test's tmp_path; any still running
    at the end are killed (tests stop the ones whose exit code they check)."""
    made: list[GatewayProcess] = []

    def make(**kwargs: object) -> GatewayProcess:
        gw = _new_gateway(tmp_path / f"gw{len(made)}", origin, hosts_file, **kwargs)
        made.append(gw)
        return gw

    yield make
    for gw in made:
        gw.kill()


@pytest.fixture
def gateway(gateway_factory: GatewayFactory) -> Iterator[GatewayProcess]:
    """A running gateway for one test; stopped with SIGTERM afterwards, exit 0 asserted."""
    gw = gateway_factory()
    gw.start()
    yield gw
    if gw.running:
        gw.stop()


PUBLIC_HOST = "gateway.example.com"


@pytest.fixture(scope="session")
def shared_gateway(
    tmp_path_factory: pytest.TempPathFactory, origin: Origin, hosts_file: Path
) -> Iterator[GatewayProcess]:
    """Its leaves link the CA and CRL under a public name (`--public-url`), as a real deployment
    would: a loopback URL is an internal name to the CA/B Forum lint. Tests fetch those URLs from
    127.0.0.1 with that Host, as a client resolving PUBLIC_HOST to the gateway would."""
    gw = _new_gateway(tmp_path_factory.mktemp("shared-gateway"), origin, hosts_file)
    gw.extra_args += ["--public-url", f"http://{PUBLIC_HOST}:{gw.admin_port}"]
    with gw.serving():
        yield gw


@pytest.fixture
def ca_file(tmp_path: Path) -> Callable[[GatewayProcess], Path]:
    """Write the gateway's in-use CA (from /pki/ca.pem) to a file in the test's tmp dir."""

    def fetch(gw: GatewayProcess) -> Path:
        path = tmp_path / f"gateway-ca-{gw.admin_port}.pem"
        path.write_text(gw.ca_pem())
        return path

    return fetch


@pytest.fixture(scope="session")
def policy_lab(
    tmp_path_factory: pytest.TempPathFactory, origin: Origin, hosts_file: Path
) -> Iterator[PolicyLab]:
    """One gateway run with `--policies` (the lab file of policy_lab.py), shared by the policy
    tests: each one puts back what it changes through the API (rules, configuration)."""
    base = tmp_path_factory.mktemp("policy-gateway")
    policy_file = base / "lab-policies.yaml"
    policy_file.write_text(policy_yaml(origin.port))
    gw = _new_gateway(base, origin, hosts_file)
    gw.extra_args += ["--policies", str(policy_file)]
    with gw.serving():
        yield PolicyLab(gw, policy_file, origin.port)
