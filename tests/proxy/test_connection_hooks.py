"""proxy.connection_hooks: a real mitmproxy proxy on loopback, with stock mitmproxy's connection
handler and with ``HookHandler``, between an aiohttp client and an aiohttp origin. The addons see
the same hooks in the same order, the answers are the same, and what a handler may do (await,
intercept the flow, fail) still works, with fewer Tasks per request."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from mitmproxy import http, options
from mitmproxy.addons import default_addons
from mitmproxy.addons.tlsconfig import TlsConfig
from mitmproxy.master import Master
from mitmproxy.proxy import mode_servers

from proxy import connection_hooks
from proxy.addon_dispatch import IndexedAddonManager
from tests.support.mitm import listening
from tests.support.server import free_port

STOCK = connection_hooks.HookHandler.__bases__[0]  # mitmproxy's ProxyConnectionHandler
HOOKS = (
    "client_connected",
    "next_layer",
    "requestheaders",
    "request",
    "server_connect",
    "server_connected",
    "responseheaders",
    "response",
    "server_disconnected",
    "client_disconnected",
)


class Recorder:
    """Records the name of every hook of ``HOOKS`` it is offered."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        for name in HOOKS:
            setattr(self, name, self._record(name))

    def _record(self, name: str) -> Callable[[Any], None]:
        def hook(data: Any) -> None:
            self.seen.append(name)

        return hook


@asynccontextmanager
async def _origin() -> AsyncIterator[str]:
    async def echo(request: web.Request) -> web.Response:
        return web.json_response({"path": request.path, "tag": request.headers.get("x-tag", "")})

    app = web.Application()
    app.router.add_get("/{tail:.*}", echo)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@asynccontextmanager
async def _proxy(*addons: Any) -> AsyncIterator[str]:
    """mitmproxy's master with its default addons (but TLS), ``addons`` and the indexed manager, listening
    on loopback, under mitmproxy's eager task factory as ``Master.run`` sets it."""
    port = free_port()
    master = Master(options.Options(), with_termlog=False)
    manager = master.addons = IndexedAddonManager(master)
    plain = [a for a in default_addons() if not isinstance(a, TlsConfig)]  # plain HTTP: no CA needed
    manager.add(*plain, *addons)  # type: ignore[no-untyped-call]
    async with listening(master, port, connection_strategy="lazy"):
        yield f"http://127.0.0.1:{port}"


async def _get(proxy: str, url: str) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, proxy=proxy, headers={"Connection": "close"}) as response,
    ):
        return response.status, await response.json()


async def _settled(recorder: Recorder, count: int) -> None:
    for _ in range(200):  # the disconnect hooks run after the answer
        if len(recorder.seen) >= count:
            return
        await asyncio.sleep(0.01)


async def _hooks_of_one_request(handler: type[mode_servers.ProxyConnectionHandler]) -> list[str]:
    recorder = Recorder()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(mode_servers, "ProxyConnectionHandler", handler)
        async with _origin() as origin, _proxy(recorder) as proxy:
            status, body = await _get(proxy, f"{origin}/one")
            await _settled(recorder, len(HOOKS))
    assert (status, body) == (200, {"path": "/one", "tag": ""})
    return recorder.seen


async def test_addons_see_the_hooks_stock_mitmproxy_raises_in_the_same_order() -> None:
    stock = await _hooks_of_one_request(STOCK)
    inline = await _hooks_of_one_request(connection_hooks.HookHandler)
    assert inline == stock
    assert set(HOOKS) <= set(inline)


class Holding:
    """An async handler, a flow held by interception, and an addon that fails."""

    def __init__(self, hold: float) -> None:
        self.hold = hold

    async def requestheaders(self, flow: http.HTTPFlow) -> None:
        await asyncio.sleep(0.01)
        flow.request.headers["x-tag"] = "async"

    def request(self, flow: http.HTTPFlow) -> None:
        flow.intercept()
        asyncio.get_running_loop().call_later(self.hold, flow.resume)

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        raise RuntimeError("this addon fails on purpose")

    def response(self, flow: http.HTTPFlow) -> None:
        flow.response.headers["x-seen"] = "yes"  # type: ignore[union-attr]


async def test_an_awaiting_handler_an_intercepted_flow_and_a_failing_addon_work_as_stock(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mode_servers, "ProxyConnectionHandler", STOCK)  # undone after the test
    connection_hooks.install()
    assert mode_servers.ProxyConnectionHandler is connection_hooks.HookHandler
    caplog.set_level(logging.ERROR, logger="mitmproxy.addonmanager")
    async with _origin() as origin, _proxy(Holding(hold=0.3)) as proxy:
        started = time.monotonic()
        status, body = await _get(proxy, f"{origin}/held")
        elapsed = time.monotonic() - started
    assert (status, body) == (200, {"path": "/held", "tag": "async"})  # the async handler's header
    assert elapsed >= 0.3  # the intercepted flow waited for its resume
    assert "Addon error: this addon fails on purpose" in caplog.text


class TaskCounter:
    """Counts the Tasks created on the loop (wrapping mitmproxy's eager factory)."""

    def __init__(self) -> None:
        self.created = 0

    def factory(self, loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
        self.created += 1
        return asyncio.eager_task_factory(loop, coro, **kwargs)


async def _tasks_per_request(handler: type[mode_servers.ProxyConnectionHandler]) -> int:
    counter = TaskCounter()
    recorder = Recorder()
    loop = asyncio.get_running_loop()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(mode_servers, "ProxyConnectionHandler", handler)
        async with _origin() as origin, _proxy(recorder) as proxy:
            await _get(proxy, f"{origin}/warm")
            await _settled(recorder, len(HOOKS))
            before = len(recorder.seen)
            loop.set_task_factory(counter.factory)
            try:
                await _get(proxy, f"{origin}/counted")
                await _settled(recorder, before + len(HOOKS))
            finally:
                loop.set_task_factory(asyncio.eager_task_factory)
    return counter.created


async def test_hooks_whose_handlers_return_take_no_task_each() -> None:
    stock = await _tasks_per_request(STOCK)
    inline = await _tasks_per_request(connection_hooks.HookHandler)
    # stock: one Task per hook the layers raise (next_layer, requestheaders, request,
    # responseheaders, response at least); ours: one per hook completed on a free lock
    assert inline < stock, (inline, stock)
