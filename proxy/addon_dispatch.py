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
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import operator
import types
from collections.abc import Callable, Sequence
from typing import Any

from mitmproxy import exceptions, hooks
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
        found = self._index.get(event.name)
        if found is None:
            found = self._index[event.name] = self._handlers_of(event.name)
        return found

    async def trigger_event(self, event: hooks.Hook) -> None:
        groups = self.handlers(event)
        if not groups:
            return
        args = args_of(event)
        for group in groups:
            try:
                for func in group:
                    result = func(*args)
                    if result is not None and inspect.isawaitable(result):
                        await result
            except exceptions.AddonHalt:
                return
            except exceptions.OptionsError:
                raise
            except Exception as e:
                tb = cut_traceback(e.__traceback__, "trigger_event")
                logger.error(f"Addon error: {e}", exc_info=(type(e), e, tb))

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
