"""``gateway run``'s start-up stack: a step that fails undoes exactly the steps before it, the last
first, and a stop undoes every step in that same order (``proxy/runtime.py``)."""

from __future__ import annotations

import asyncio
import functools
import socket
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from mitmproxy import http
from mitmproxy.master import Master
from mitmproxy.proxy import context, mode_servers
from mitmproxy.proxy.layers import tls

from proxy import context_fork, data_plane, message_checks, runtime, tls_writes
from proxy.addon_dispatch import IndexedAddonManager
from proxy.config import Config, ConfigError, HostPort
from proxy.connection_hooks import HookHandler
from proxy.jsonlines import JsonLinesFile
from proxy.node_sync import CaNode
from proxy.services.devices import DeviceService
from proxy.store import Store

# What undoing each step calls, as the spies below name it; stopping the proxy first.
EVERY_STEP_UNDONE = ["proxy", "admin API", "request log", "devices", "node", "store"]


@pytest.fixture
def undone(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The teardown calls of the start-up steps, in the order they ran."""
    calls: list[str] = []

    def spy(cls: type, method: str, label: str) -> None:
        original: Callable[..., Any] = getattr(cls, method)
        wrapper: Callable[..., Any]
        if asyncio.iscoroutinefunction(original):

            async def wrapper(self: object, *args: object) -> object:
                calls.append(label)
                return await original(self, *args)

        else:

            def wrapper(self: object, *args: object) -> object:
                calls.append(label)
                return original(self, *args)

        monkeypatch.setattr(cls, method, functools.wraps(original)(wrapper))

    spy(Master, "shutdown", "proxy")
    spy(web.AppRunner, "cleanup", "admin API")
    spy(JsonLinesFile, "close", "request log")
    spy(DeviceService, "aclose", "devices")
    spy(CaNode, "stop", "node")
    spy(Store, "close", "store")
    return calls


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port something else listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config(tmp_path: Path, *, proxy_port: int = 0, admin_port: int = 0, **kwargs: Any) -> Config:
    return Config(
        data_dir=tmp_path / "data",
        proxy_listen=HostPort("127.0.0.1", proxy_port or _free_port()),
        admin_listen=HostPort("127.0.0.1", admin_port or _free_port()),
        **kwargs,
    )


def _left_behind(config: Config) -> list[str]:
    """What the store still says of the stopped process: its live node, an open connection."""
    leftovers = []
    if Path(f"{config.database_path}-wal").exists():
        leftovers.append("a connection to the store (its WAL file is still there)")
    store = Store.open(config.database_path)
    try:
        leftovers += [f"node {node.name}" for node in store.nodes.list()]
    finally:
        store.close()
    return leftovers


def _can_listen(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


async def test_a_stop_undoes_every_step_last_first(tmp_path: Path, undone: list[str]) -> None:
    config = _config(tmp_path)
    gateway = await runtime.start(config, {})
    assert not _can_listen(config.proxy_listen.port) and not _can_listen(config.admin_listen.port)
    assert [node.id for node in gateway.store.nodes.list()] == [gateway.node.node_id]
    assert undone == []
    await gateway.stop()
    assert undone == EVERY_STEP_UNDONE
    assert _can_listen(config.proxy_listen.port) and _can_listen(config.admin_listen.port)
    assert _left_behind(config) == []


async def test_a_started_gateway_runs_mitmproxys_per_connection_work_the_cheaper_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mode_servers, "ProxyConnectionHandler", HookHandler.__bases__[0])  # stock
    monkeypatch.setattr(http.MessageData, "__post_init__", message_checks.STOCK_CHECK)
    monkeypatch.setattr(context.Context, "fork", context_fork.STOCK_FORK)
    monkeypatch.setattr(tls.TLSLayer, "send_data", tls_writes.STOCK_SEND_DATA)
    gateway = await runtime.start(_config(tmp_path), {})
    try:
        assert mode_servers.ProxyConnectionHandler is HookHandler
        assert http.MessageData.__post_init__ is message_checks.check_fields  # type: ignore[attr-defined]
        assert context.Context.fork is context_fork.fork
        assert tls.TLSLayer.send_data is tls_writes.send_data
        assert isinstance(gateway.master.addons, IndexedAddonManager)
        assert gateway.master.addons.get("onboarding") is None  # mitm.it would serve mitmproxy's CA
    finally:
        await gateway.stop()


async def test_a_taken_admin_port_undoes_the_steps_before_it(
    tmp_path: Path, undone: list[str], taken_port: int
) -> None:
    config = _config(tmp_path, admin_port=taken_port)
    with pytest.raises(ConfigError, match=rf"--admin-listen 127.0.0.1:{taken_port}: cannot listen"):
        await runtime.start(config, {})
    assert undone == EVERY_STEP_UNDONE[1:]
    assert _left_behind(config) == []


async def test_a_taken_proxy_port_undoes_every_step_before_it(
    tmp_path: Path, undone: list[str], taken_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(data_plane, "LISTEN_TIMEOUT", timedelta(seconds=1))
    config = _config(tmp_path, proxy_port=taken_port)
    with pytest.raises(
        ConfigError, match=rf"--proxy-listen 127.0.0.1:{taken_port}: the proxy could not listen"
    ):
        await runtime.start(config, {})
    assert undone == EVERY_STEP_UNDONE
    assert _can_listen(config.admin_listen.port)
    assert _left_behind(config) == []


async def test_policy_files_that_do_not_load_undo_the_store_alone(tmp_path: Path, undone: list[str]) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("gateway_rules: [{name: x, action: nope}]\n")
    config = _config(tmp_path, policy_paths=(broken,))
    with pytest.raises(ConfigError, match=r"^--policies: "):
        await runtime.start(config, {})
    assert undone == ["store"]
    assert _left_behind(config) == []
