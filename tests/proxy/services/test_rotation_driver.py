"""The rotation driver's task (proxy/services/rotation_driver.py): a round at start, a round per
interval on the timer (``periodic``), a round soon after a wake-up (not periodic), and however
many wake-ups come, at most one round per ``min_gap``; a failing round does not stop it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from typing import Any, cast

import pytest

from proxy.services.rotation_driver import RotationDriver
from proxy.services.rotations import RotationService
from tests.support.wait import wait_until_async


class FakeService:
    def __init__(self, *, fail: bool = False) -> None:
        self.rounds: list[bool] = []  # periodic, per advance
        self.autos = 0
        self.fail = fail
        self.wake: Callable[[], None] = lambda: None

    def subscribe(self, callback: Callable[[], None]) -> None:
        self.wake = callback

    def advance(self, *, periodic: bool = False) -> int:
        self.rounds.append(periodic)
        if self.fail:
            raise RuntimeError("store unavailable")
        return 0

    async def auto_start(self) -> list[Any]:
        self.autos += 1
        return []


def driver(service: FakeService, **timing: timedelta) -> RotationDriver:
    return RotationDriver(cast(RotationService, service), **timing)


@pytest.mark.serial  # a tight time bound: runs alone (tests/support/parallel.py)
async def test_wake_ups_are_coalesced_to_one_round_per_min_gap() -> None:
    service = FakeService()
    loop = asyncio.get_running_loop()
    async with driver(service, interval=timedelta(hours=1), min_gap=timedelta(milliseconds=200)).running():
        assert await wait_until_async(lambda: service.rounds == [False], 5)
        began = loop.time()
        while loop.time() - began < 1.0:  # 100 trust reports in a second
            service.wake()
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.25)
    woken = service.rounds[1:]
    assert 3 <= len(woken) <= 7, service.rounds  # about 1 s / 200 ms, not 100
    assert not any(woken)  # a woken round counts again (not periodic)
    assert service.autos == 1


async def test_the_timer_alone_makes_periodic_rounds_and_a_failure_does_not_stop_it() -> None:
    service = FakeService(fail=True)
    async with driver(
        service, interval=timedelta(milliseconds=50), auto_interval=timedelta(milliseconds=100)
    ).running():
        assert await wait_until_async(lambda: len(service.rounds) >= 5, 5)
    assert service.rounds[0] is False and all(service.rounds[1:]), service.rounds
    assert service.autos >= 2
