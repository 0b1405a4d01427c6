"""The agent tests' fixtures: a device CA, and the in-process gateway (``tests.support``, registered
by ``tests/conftest.py``) served to the agent over HTTP and HTTPS, on a clock that starts at the
real time because the agent checks certificates against the real time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from tests.support.clock import FakeClock
from tests.support.pki import Issued, make_ca
from tests.support.server import AgentServer, Gateway, agent_server


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock.at_wall_time()


@pytest.fixture
def ca() -> Issued:
    """A device-signing CA (P-256, valid for 30 days around now)."""
    return make_ca("Device CA", not_after=timedelta(days=30))


@pytest.fixture(params=["http", "https"])
async def server(
    request: pytest.FixtureRequest, gateway: Gateway, tmp_path: Path
) -> AsyncIterator[AgentServer]:
    """The gateway with its agent API, over HTTP and over HTTPS (a certificate the token pins)."""
    async with agent_server(gateway, request.param, tmp_path) as server:
        yield server
