"""The admin thread's limits: a full queue and an overrun budget are Overloaded (the API's 503
with Retry-After), and a call given up on before its commit point writes nothing."""

from __future__ import annotations

import asyncio
import threading

import pytest

from proxy.services.offload import Abandoned, Offload, Overloaded, Ticket
from tests.support.wait import wait_until_async

pytestmark = pytest.mark.reliability


async def test_a_full_queue_is_refused_at_once() -> None:
    offload = Offload(workers=1, queue=1, budget=5)
    release = threading.Event()
    try:
        first = asyncio.ensure_future(offload.run(lambda t: release.wait(5)))
        second = asyncio.ensure_future(offload.run(lambda t: 2))
        assert await wait_until_async(lambda: offload.pending == 2, 5), offload.pending
        with pytest.raises(Overloaded, match="busy") as e:
            await offload.run(lambda t: 3)
        assert e.value.retry_after >= 1
        release.set()
        assert (await first, await second) == (True, 2)
    finally:
        release.set()
        offload.close()


async def test_over_budget_the_call_is_abandoned_before_it_writes() -> None:
    offload = Offload(budget=0.1)
    wrote = threading.Event()
    outcome: list[str] = []

    def slow_write(ticket: Ticket) -> None:
        threading.Event().wait(0.3)
        try:
            ticket.claim()
        except Abandoned:
            outcome.append("abandoned")
            return
        wrote.set()

    try:
        with pytest.raises(Overloaded, match="budget"):
            await offload.run(slow_write)
        # The abandoned call goes on in the thread until it finds it may not claim.
        assert await wait_until_async(lambda: offload.pending == 0, 5), offload.pending
        assert outcome == ["abandoned"] and not wrote.is_set()
    finally:
        offload.close()


async def test_a_call_that_claimed_is_waited_for_past_the_budget() -> None:
    offload = Offload(budget=0.1)

    def committing(ticket: Ticket) -> str:
        ticket.claim()
        threading.Event().wait(0.3)
        return "written"

    try:
        assert await offload.run(committing) == "written"
    finally:
        offload.close()
