"""proxy.event_loop: uvloop by default, asyncio's loop on request, a clear error otherwise."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
import uvloop

from proxy import event_loop
from proxy.config import ConfigError

REPO = Path(__file__).resolve().parents[2]


async def _loop_type() -> type:
    return type(asyncio.get_running_loop())


def test_uvloop_is_the_default() -> None:
    assert event_loop.loop_name({}) == "uvloop"
    assert event_loop.run(_loop_type(), {}) is uvloop.Loop


def test_asyncio_on_request() -> None:
    assert event_loop.loop_name({event_loop.ENV: "asyncio"}) == "asyncio"
    loop_type = event_loop.run(_loop_type(), {event_loop.ENV: " AsyncIO "})
    assert not issubclass(loop_type, uvloop.Loop)
    assert issubclass(loop_type, asyncio.BaseEventLoop)


def test_an_unknown_loop_is_refused_with_the_choices() -> None:
    coro = _loop_type()
    with pytest.raises(ConfigError, match=r"GATEWAY_EVENT_LOOP='tokio': expected one of uvloop, asyncio"):
        event_loop.run(coro, {event_loop.ENV: "tokio"})
    assert coro.cr_frame is None  # closed, so no "never awaited" warning


def test_gateway_run_refuses_an_unknown_loop_in_one_line(tmp_path: Path) -> None:
    env = dict(os.environ, GATEWAY_EVENT_LOOP="tokio", PYTHONPATH=str(REPO))
    done = subprocess.run(
        [sys.executable, "-m", "proxy.cli.main", "run", "--data-dir", str(tmp_path), "--workers", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "GATEWAY_EVENT_LOOP='tokio'" in done.stderr
    assert "Traceback" not in done.stderr
