"""mitmproxy's connection handler, with a connection's hooks run without a Task each.

A proxied HTTPS request raises about twenty hooks on its connection (``client_connected``,
``next_layer``, ``tls_clienthello``, ``tls_start_client``, ``request``, ``response``, ...). For each,
stock ``ConnectionHandler.server_event`` starts a Task (``hook_task``: a coroutine, a task name,
``handle_hook`` with the timeout watchdog disarmed, ``handle_lifecycle`` building an ``update``
event for every flow event). Under mitmproxy's eager task factory that Task runs the handlers at
once, inside the event that raised the hook, and then feeding the layer ``HookCompleted`` waits
for the connection's event lock, which that event holds: a Future, a wake-up, and the Task's
second step once the event is done.

``HookHandler`` takes the hooks out of its top layer's commands and calls their handlers at the
same moment, through ``IndexedAddonManager.call_now``; when every handler has returned it feeds
``HookCompleted`` from a ``call_soon`` callback once the event is done. The lock is free then, so
``server_event`` runs to its end at the first step of its coroutine, driven there without a Task.
Nothing a handler may do changes: a handler that returns an awaitable (an ``async def`` hook), an
intercepted flow (``flow.intercept()``) or an addon error each finish as stock does (the first
two in a Task, with the watchdog disarmed); the addons see the hooks in the order stock shows
them; and an addon manager other than ``IndexedAddonManager`` gets stock mitmproxy's path.

``install()`` makes mitmproxy's mode servers create ``HookHandler`` for every connection of this
process (``ServerInstance.handle_stream`` names ``ProxyConnectionHandler`` from its module).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from mitmproxy import flow
from mitmproxy.proxy import commands, events, layer, mode_servers

from proxy.addon_dispatch import IndexedAddonManager, args_of

logger = logging.getLogger(__name__)

__all__ = ["HookHandler", "install"]


class _HookFilter:
    """The connection's top layer as ``server_event`` sees it: every command but the hooks,
    which go to ``take``. Anything else is the layer's own (``handler.layer.context`` and so on)."""

    __slots__ = ("_take", "layer")

    def __init__(self, top: layer.Layer, take: Callable[[commands.StartHook], None]) -> None:
        self.layer = top
        self._take = take

    def handle_event(self, event: events.Event) -> layer.CommandGenerator[None]:
        for command in self.layer.handle_event(event):
            if isinstance(command, commands.StartHook):
                self._take(command)
            else:
                yield command

    def __getattr__(self, name: str) -> Any:
        return getattr(self.layer, name)


class HookHandler(mode_servers.ProxyConnectionHandler):
    """``ProxyConnectionHandler`` whose hooks run without a Task when their handlers return."""

    _top: _HookFilter

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._waiting: set[asyncio.Task[None]] = set()  # Tasks of unfinished hooks, kept referenced
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]

    @property
    def layer(self) -> layer.Layer:
        return self._top  # type: ignore[return-value]

    @layer.setter
    def layer(self, top: layer.Layer) -> None:
        self._top = _HookFilter(top, self._take_hook)

    def _take_hook(self, hook: commands.StartHook) -> None:
        """A hook the layers raised, inside ``server_event``: its handlers run now, as they do
        in stock's eager Task; ``HookCompleted`` follows once this event is done."""
        addons = self.master.addons
        if not isinstance(addons, IndexedAddonManager):
            self._spawn(self.hook_task(hook))
            return
        rest = addons.call_now(hook)
        if rest is not None or _intercepted(hook):
            self._spawn(self._finish_hook(hook, rest))
        elif hook.blocking:
            asyncio.get_running_loop().call_soon(self._complete, hook)

    async def _finish_hook(self, hook: commands.StartHook, rest: Coroutine[Any, Any, None] | None) -> None:
        await self._wait_for(hook, rest)
        if hook.blocking:
            await self.server_event(events.HookCompleted(hook))

    def _complete(self, hook: commands.StartHook) -> None:
        """Feed the layer ``HookCompleted``: here and now when the connection's event lock is
        free (``server_event`` then runs to its end without waiting), else in a Task."""
        work = self.server_event(events.HookCompleted(hook))
        if not _free(self._server_event_lock):
            self._spawn(work)
            return
        try:
            work.send(None)
        except StopIteration:
            return
        work.close()
        raise RuntimeError("server_event waited on a free lock: HookCompleted was not delivered")

    async def handle_hook(self, hook: commands.StartHook) -> None:
        """The hooks mitmproxy awaits itself (client and server connect and disconnect)."""
        addons = self.master.addons
        if not isinstance(addons, IndexedAddonManager):
            await super().handle_hook(hook)
            return
        rest = addons.call_now(hook)
        if rest is not None or _intercepted(hook):
            await self._wait_for(hook, rest)

    async def _wait_for(self, hook: commands.StartHook, rest: Coroutine[Any, Any, None] | None) -> None:
        """What is left of a hook: its handlers' awaitables, then an intercepted flow's resume."""
        with self.timeout_watchdog.disarm():
            if rest is not None:
                await rest
            (data,) = args_of(hook)
            if isinstance(data, flow.Flow):
                await data.wait_for_resume()

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` as a Task (at once, to its first wait, under mitmproxy's eager task
        factory), kept referenced until it is done (the loop holds Tasks weakly)."""
        task = asyncio.get_running_loop().create_task(work)
        if not task.done():
            self._waiting.add(task)
            task.add_done_callback(self._waiting.discard)


def _free(lock: asyncio.Lock) -> bool:
    """Whether ``lock.acquire()`` returns without waiting: not held, and nobody queued for it
    (a released lock is handed to the first waiter). Unknown (another asyncio) counts as not free."""
    return not lock.locked() and not getattr(lock, "_waiters", True)


def _intercepted(hook: commands.StartHook) -> bool:
    (data,) = args_of(hook)
    return isinstance(data, flow.Flow) and data.intercepted


def install() -> None:
    """From now on, every proxied connection of this process is handled by ``HookHandler``."""
    if mode_servers.ProxyConnectionHandler is not HookHandler:
        mode_servers.ProxyConnectionHandler = HookHandler  # type: ignore[misc]
        logger.debug("mitmproxy connections handled by HookHandler: no Task per hook")
