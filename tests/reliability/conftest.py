"""The reliability suite (issue 14): what a new user's abuse found, kept as proof.

Every test here starts a real `gateway run` (tests/e2e's fixtures) on loopback ports and is
bounded in requests and seconds: schemathesis against the served OpenAPI document
(test_schema.py), a walk of the route table without or with wrong credentials (test_auth.py),
kill -9 in the middle of write bursts (test_crash.py), and the proxy's latency while the admin
API is abused (test_admin_abuse.py). Hot swaps under load are tests/e2e/test_hot_swap.py's.
All are marked `e2e` and `reliability` (`-m "not reliability"` leaves them out)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import _new_gateway, _no_proxy_settings, hosts_file, origin
from tests.e2e.gateway_process import GatewayProcess
from tests.e2e.origin import Origin

__all__ = ["_no_proxy_settings", "hosts_file", "origin"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "reliability: the reliability suite (tests/reliability, issue 14)")


@pytest.fixture(scope="module")
def module_gateway(
    tmp_path_factory: pytest.TempPathFactory, origin: Origin, hosts_file: Path
) -> Iterator[GatewayProcess]:
    """One `gateway run` for the tests of a module (they may change anything in it)."""
    gw = _new_gateway(tmp_path_factory.mktemp("reliability-gateway"), origin, hosts_file)
    with gw.serving():
        yield gw
