"""mitmproxy's addon manager, offering each event only to the addons that handle it.

Stock ``AddonManager.trigger_event`` walks the whole chain for every event: per addon a
``safecall`` context manager, a coroutine, a generator over the addon and its children, a
``getattr`` and a fresh ``event.args()``, whether or not the addon has that hook. A proxied
connection raises about twenty events and every flow event a second one (``update``), so with
the gateway's thirteen addons most of that work finds nothing to call (docs/performance.md,
"Cheaper handshakes").

``IndexedAddonManager`` keeps, per event name, the handlers the chain has for it, in chain order,
grouped by top-level addon, and rebuilds that index whenever the chain changes (``register``,
``remove``, ``clear``). What a handler sees is unchanged: the same arguments, sync or async
handlers, an error in one top-level addon logged as mitmproxy logs it and the next addon still
called, ``AddonHalt`` ending the event. An event's arguments are read by one ``attrgetter`` per
hook class, made once, instead of stock ``Hook.args()`` walking ``dataclasses.fields`` at each
event.

``call_now`` is ``handle_lifecycle`` without a coroutine when it can do without: it calls the
handlers in order until one returns an awaitable and hands back a coroutine that awaits it and
calls the rest (None when all have returned), so ``proxy/connection_hooks.py`` completes most hooks
with no Task. ``trigger_event`` and ``handle_lifecycle`` are built on it, so both paths call the
same handlers in the same order; an ``update`` event follows a flow's event only when an addon
handles ``update`` (stock builds one for every flow event).
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import operator
import types
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

from mitmproxy import exceptions, flow, hooks
from mitmproxy.addonmanager import AddonManager, cut_traceback, traverse

logger = logging.getLogger("mitmproxy.addonmanager")  # where stock mitmproxy logs addon errors

__all__ = ["IndexedAddonManager"]

_Handlers = tuple[tuple[Callable[..., Any], ...], ...]
"""Per top-level addon (in chain order), its own and its children's handlers for one event."""


class IndexedAddonManager(AddonManager):
    """``AddonManager`` whose ``trigger_event`` calls only the handlers an event has."""

    def __init__(self, master: Any) -> None:
        super().__init__(master)  # type: ignore[no-untyped-call]
        self._index: dict[str, _Handlers] = {}

    # The chain changes only inside these (synchronously, with no event in between), so
    # forgetting the index once each has run is enough.
    def register(self, addon: Any) -> Any:
        try:
            return super().register(addon)  # type: ignore[no-untyped-call]
        finally:
            self._index.clear()

    def remove(self, addon: Any) -> None:
        try:
            super().remove(addon)  # type: ignore[no-untyped-call]
        finally:
            self._index.clear()

    def clear(self) -> None:
        try:
            super().clear()  # type: ignore[no-untyped-call]
        finally:
            self._index.clear()

    def handlers(self, event: hooks.Hook) -> _Handlers:
        """The handlers of ``event`` along the chain (indexed on first use)."""
        return self.handlers_named(event.name)

    def handlers_named(self, name: str) -> _Handlers:
        found = self._index.get(name)
        if found is None:
            found = self._index[name] = self._handlers_of(name)
        return found

    async def trigger_event(self, event: hooks.Hook) -> None:
        rest = self._call(event)
        if rest is not None:
            await rest

    async def handle_lifecycle(self, event: hooks.Hook) -> None:
        rest = self.call_now(event)
        if rest is not None:
            await rest

    def call_now(self, event: hooks.Hook) -> Coroutine[Any, Any, None] | None:
        """What ``handle_lifecycle`` does (the event's handlers, then for a flow's event the
        ``update`` handlers), run now as far as it can without waiting: None when every handler
        has returned, else a coroutine to await that finishes the rest, starting with the first
        awaitable a handler returned. Stock builds an ``UpdateHook`` for every flow event; this
        builds one only when an addon handles ``update``."""
        rest = self._call(event)
        if not self.handlers_named("update"):
            return rest
        args = args_of(event)
        if not args or not isinstance(args[0], flow.Flow):
            return rest
        update = hooks.UpdateHook([args[0]])
        if rest is None:
            return self._call(update)
        return self._then(rest, update)

    async def _then(self, rest: Coroutine[Any, Any, None], update: hooks.Hook) -> None:
        await rest
        await self.trigger_event(update)

    def _call(self, event: hooks.Hook) -> Coroutine[Any, Any, None] | None:
        groups = self.handlers(event)
        if not groups:
            return None
        return self._run(groups, args_of(event), 0, 0)

    def _run(
        self, groups: _Handlers, args: Sequence[Any], group: int, position: int
    ) -> Coroutine[Any, Any, None] | None:
        """Call the handlers from ``groups[group][position]`` on; stop at the first that returns
        an awaitable and hand back a coroutine that awaits it and goes on from there."""
        for index in range(group, len(groups)):
            handlers = groups[index]
            try:
                for at in range(position if index == group else 0, len(handlers)):
                    result = handlers[at](*args)
                    if result is not None and inspect.isawaitable(result):
                        return self._finish(groups, args, index, at, result)
            except exceptions.AddonHalt:
                return None
            except exceptions.OptionsError:
                raise
            except Exception as e:  # noqa: BLE001 - an addon's error is logged, as stock does
                _log_addon_error(e, "_run")
        return None

    async def _finish(
        self, groups: _Handlers, args: Sequence[Any], group: int, position: int, pending: Awaitable[Any]
    ) -> None:
        try:
            await pending
        except exceptions.AddonHalt:
            return
        except exceptions.OptionsError:
            raise
        except Exception as e:  # noqa: BLE001 - an addon's error is logged, as stock does
            _log_addon_error(e, "_finish")
            group, position = group + 1, 0  # the rest of this addon's handlers are skipped
        else:
            position += 1
        rest = self._run(groups, args, group, position)
        if rest is not None:
            await rest

    def _handlers_of(self, name: str) -> _Handlers:
        groups: list[tuple[Callable[..., Any], ...]] = []
        for top in self.chain:
            group: list[Callable[..., Any]] = []
            for addon in traverse([top]):
                func = getattr(addon, name, None)
                if not func or isinstance(func, types.ModuleType):
                    continue  # no hook, or a module imported under a hook's name (as stock)
                if not callable(func):
                    raise exceptions.AddonManagerError(f"Addon handler {name} ({addon}) not callable")
                group.append(func)
            if group:
                groups.append(tuple(group))
        return tuple(groups)


def _log_addon_error(error: Exception, where: str) -> None:
    """As stock logs an addon's error: its traceback from the handler on."""
    tb = cut_traceback(error.__traceback__, where)
    logger.error(f"Addon error: {error}", exc_info=(type(error), error, tb))


_ArgsGetter = Callable[[hooks.Hook], Sequence[Any]]
_ARGS: dict[type[hooks.Hook], _ArgsGetter] = {}


def args_of(event: hooks.Hook) -> Sequence[Any]:
    """What ``event.args()`` returns (its fields' values, in order), read by a getter made once
    per hook class."""
    getter = _ARGS.get(type(event))
    if getter is None:
        getter = _ARGS[type(event)] = _args_getter(type(event))
    return getter(event)


def _args_getter(hook: type[hooks.Hook]) -> _ArgsGetter:
    if hook.args is not hooks.Hook.args:  # a hook that says its arguments itself
        return lambda event: event.args()
    names = [field.name for field in dataclasses.fields(hook)]  # type: ignore[arg-type]
    if not names:
        return lambda event: ()
    if len(names) == 1:
        one = operator.attrgetter(names[0])
        return lambda event: (one(event),)
    return operator.attrgetter(*names)
