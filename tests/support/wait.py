"""Waiting on a condition instead of sleeping a fixed time: poll until it holds, bounded."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

INTERVAL = 0.05


def wait_until[T](predicate: Callable[[], T], timeout: float, *, interval: float = INTERVAL) -> T:
    """Call ``predicate`` until it returns something true or ``timeout`` seconds pass; the last
    result either way (callers assert on it, so a failure shows what was seen)."""
    deadline = time.monotonic() + timeout
    while not (result := predicate()) and time.monotonic() < deadline:
        time.sleep(interval)
    return result


async def wait_until_async[T](predicate: Callable[[], T], timeout: float, *, interval: float = INTERVAL) -> T:
    """``wait_until`` inside an event loop: the loop keeps running while it waits."""
    deadline = time.monotonic() + timeout
    while not (result := predicate()) and time.monotonic() < deadline:
        await asyncio.sleep(interval)
    return result


def poll[T](
    fetch: Callable[[], T], until: Callable[[T], object], timeout: float, *, interval: float = INTERVAL
) -> T:
    """Fetch until ``until(value)`` holds or ``timeout`` seconds pass; the last value either way."""
    deadline = time.monotonic() + timeout
    while not until(value := fetch()) and time.monotonic() < deadline:
        time.sleep(interval)
    return value
