"""``gateway node`` in-process (``proxy/node.py``): it joins a store an admin plane made, serves,
answers /healthz; when the store cannot be read it keeps serving with what it loaded and says
"degraded" (200), then catches up; a stop leaves nothing behind in the store."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from proxy import runtime
from proxy.config import Config, ConfigError, HostPort
from proxy.node import NodeOptions, start_node
from proxy.store import Store
from proxy.store.database import StoreError


class StoreUnavailable(StoreError):
    """Stands for the PostgreSQL store's "database unreachable"."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _health(port: int) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/healthz") as response,
    ):
        assert response.status == 200
        result: dict[str, Any] = await response.json()
        return result


def _accepts(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


async def test_a_node_serves_degraded_while_the_store_is_away(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin = Config(
        data_dir=tmp_path / "data",
        proxy_listen=HostPort("127.0.0.1", _free_port()),
        admin_listen=HostPort("127.0.0.1", _free_port()),
    )
    gateway = await runtime.start(admin, {})  # the admin plane makes the store, account, CA
    in_use = gateway.node.in_use_id
    await gateway.stop()

    health_port, proxy_port = _free_port(), _free_port()
    config = Config(data_dir=admin.data_dir, proxy_listen=HostPort("127.0.0.1", proxy_port))
    options = NodeOptions(config, admin.database_path, health_listen=HostPort("127.0.0.1", health_port))
    node = await start_node(options, {})
    try:
        first = await _health(health_port)
        assert {k: first[k] for k in ("status", "database", "node", "in_use")} == {
            "status": "ok", "database": "ok", "node": node.node_id, "in_use": in_use,
        }  # fmt: skip

        def unreachable(self: Store) -> int:
            raise StoreUnavailable("connection to 127.0.0.1:5432 refused")

        monkeypatch.setattr(Store, "data_version", unreachable)

        async def degraded() -> bool:
            return (await _health(health_port))["status"] == "degraded"

        assert await _until(degraded, 5)
        report = await _health(health_port)
        assert report["database"].startswith("unreachable since ")
        assert "connection to 127.0.0.1:5432 refused" in report["database"]
        assert report["in_use"] == in_use  # still signing with what it loaded
        assert _accepts(proxy_port)

        monkeypatch.undo()

        async def recovered() -> bool:
            return (await _health(health_port))["status"] == "ok"

        assert await _until(recovered, 5)
    finally:
        await node.teardown.aclose()
    store = Store.open(admin.database_path)
    try:
        assert [n.id for n in store.nodes.list()] == []
    finally:
        store.close()


async def _until(check: Any, timeout: float) -> bool:
    """``await check()`` until it is true or ``timeout`` seconds pass (the last result)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not (result := await check()) and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
    return bool(result)


async def test_a_node_needs_a_store_and_its_master_key(tmp_path: Path) -> None:
    config = Config(data_dir=tmp_path / "nothing", proxy_listen=HostPort("127.0.0.1", _free_port()))
    with pytest.raises(ConfigError, match="no gateway store at .*start the admin plane"):
        await start_node(NodeOptions(config, config.database_path), {})
    assert not config.data_dir.exists()
    Store.open(tmp_path / "gateway.db").close()
    bare = Config(data_dir=tmp_path, proxy_listen=HostPort("127.0.0.1", _free_port()))
    with pytest.raises(ConfigError, match="no master key"):
        await start_node(NodeOptions(bare, tmp_path / "gateway.db"), {})
