"""proxy.addon_dispatch: the indexed addon manager calls what stock mitmproxy calls, in the same
order, with the same arguments, and skips the addons that have no handler."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Any

import pytest
from mitmproxy import exceptions, hooks
from mitmproxy.addonmanager import AddonManager
from mitmproxy.http import HTTPFlow
from mitmproxy.master import Master
from mitmproxy.proxy.layers.http import HttpRequestHook, HttpResponseHook
from mitmproxy.proxy.server_hooks import ClientConnectedHook
from mitmproxy.test import tflow

from proxy.addon_dispatch import IndexedAddonManager, args_of


class Recorder:
    """Records every call of the hooks it has, into a log shared with the other recorders."""

    def __init__(
        self, name: str, log: list[tuple[str, str, tuple[Any, ...]]], *, sub: list[Any] | None = None
    ):
        self.name = name
        self._log = log
        if sub is not None:
            self.addons = sub

    def request(self, flow: HTTPFlow) -> None:
        self._log.append((self.name, "request", (flow,)))

    async def response(self, flow: HTTPFlow) -> None:
        self._log.append((self.name, "response", (flow,)))

    def client_connected(self, client: Any) -> None:
        self._log.append((self.name, "client_connected", (client,)))


class OnlyResponses:
    def __init__(self, name: str, log: list[tuple[str, str, tuple[Any, ...]]]):
        self.name = name
        self._log = log

    def response(self, flow: HTTPFlow) -> None:
        self._log.append((self.name, "response", (flow,)))


def _chain(log: list[tuple[str, str, tuple[Any, ...]]]) -> list[Any]:
    return [
        Recorder("a", log),
        OnlyResponses("b", log),
        Recorder("c", log, sub=[Recorder("c1", log), OnlyResponses("c2", log)]),
        object(),  # an addon with no hooks at all
    ]


async def _replay(manager_type: type[AddonManager]) -> list[tuple[str, str, tuple[Any, ...]]]:
    log: list[tuple[str, str, tuple[Any, ...]]] = []
    master = Master(None)
    master.addons = manager_type(master)
    master.addons.add(*_chain(log))
    flow = tflow.tflow(resp=True)
    await master.addons.handle_lifecycle(ClientConnectedHook(flow.client_conn))
    await master.addons.handle_lifecycle(HttpRequestHook(flow))
    await master.addons.handle_lifecycle(HttpResponseHook(flow))
    return [(name, hook, tuple(id(a) for a in args)) for name, hook, args in log]


async def test_the_same_calls_as_stock_mitmproxy_in_the_same_order() -> None:
    stock = await _replay(AddonManager)
    indexed = await _replay(IndexedAddonManager)
    assert [(n, h) for n, h, _ in indexed] == [(n, h) for n, h, _ in stock]
    assert [(n, h) for n, h, _ in indexed] == [
        ("a", "client_connected"),
        ("c", "client_connected"),
        ("c1", "client_connected"),
        ("a", "request"),
        ("c", "request"),
        ("c1", "request"),
        ("a", "response"),
        ("b", "response"),
        ("c", "response"),
        ("c1", "response"),
        ("c2", "response"),
    ]


async def test_handlers_are_indexed_per_event_and_addons_without_one_are_skipped() -> None:
    log: list[tuple[str, str, tuple[Any, ...]]] = []
    master = Master(None)
    manager = master.addons = IndexedAddonManager(master)
    manager.add(*_chain(log))
    flow = tflow.tflow(resp=True)
    groups = manager.handlers(HttpRequestHook(flow))
    assert [[f.__self__.name for f in group] for group in groups] == [["a"], ["c", "c1"]]
    assert manager.handlers(hooks.UpdateHook([flow])) == ()


async def test_adding_an_addon_later_reindexes() -> None:
    log: list[tuple[str, str, tuple[Any, ...]]] = []
    master = Master(None)
    manager = master.addons = IndexedAddonManager(master)
    manager.add(Recorder("a", log))
    flow = tflow.tflow(resp=True)
    await manager.trigger_event(HttpResponseHook(flow))
    manager.add(OnlyResponses("late", log))
    await manager.trigger_event(HttpResponseHook(flow))
    manager.remove(manager.get("a"))
    await manager.trigger_event(HttpResponseHook(flow))
    assert [n for n, _, _ in log] == ["a", "a", "late", "late"]


class Failing:
    name = "failing"

    def request(self, flow: HTTPFlow) -> None:
        raise ValueError("boom in request")


class Halting:
    name = "halting"

    def request(self, flow: HTTPFlow) -> None:
        raise exceptions.AddonHalt()


async def test_an_addon_error_is_logged_and_the_next_addon_still_called(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log: list[tuple[str, str, tuple[Any, ...]]] = []
    master = Master(None)
    manager = master.addons = IndexedAddonManager(master)
    manager.add(Failing(), Recorder("after", log))
    with caplog.at_level(logging.ERROR):
        await manager.trigger_event(HttpRequestHook(tflow.tflow()))
    assert [n for n, _, _ in log] == ["after"]
    assert any("Addon error: boom in request" in r.getMessage() for r in caplog.records)


async def test_addon_halt_ends_the_event() -> None:
    log: list[tuple[str, str, tuple[Any, ...]]] = []
    master = Master(None)
    manager = master.addons = IndexedAddonManager(master)
    manager.add(Halting(), Recorder("after", log))
    await manager.trigger_event(HttpRequestHook(tflow.tflow()))
    assert log == []


class Awaiting:
    """Sync handlers around one that returns an awaitable, an awaited failure, and ``update``."""

    def __init__(self, name: str, log: list[str], *, fail: bool = False, sub: list[Any] | None = None):
        self.name = name
        self._log = log
        self._fail = fail
        if sub is not None:
            self.addons = sub

    def request(self, flow: HTTPFlow) -> Any:
        self._log.append(f"{self.name}:request")
        return self._later()

    async def _later(self) -> None:
        await asyncio.sleep(0)
        if self._fail:
            raise ValueError(f"boom awaited in {self.name}")
        self._log.append(f"{self.name}:request awaited")

    def update(self, flows: list[Any]) -> None:
        self._log.append(f"{self.name}:update")


class Plain:
    def __init__(self, name: str, log: list[str]):
        self.name = name
        self._log = log

    def request(self, flow: HTTPFlow) -> None:
        self._log.append(f"{self.name}:request")


async def _lifecycle_calls(manager_type: type[AddonManager], caplog: pytest.LogCaptureFixture) -> list[str]:
    log: list[str] = []
    master = Master(None)
    master.addons = manager_type(master)
    master.addons.add(
        Plain("first", log),
        Awaiting("a", log, sub=[Plain("a1", log)]),
        Awaiting("failing", log, fail=True, sub=[Plain("skipped", log)]),
        Plain("last", log),
    )
    with caplog.at_level(logging.ERROR):
        await master.addons.handle_lifecycle(HttpRequestHook(tflow.tflow()))
    return log


async def test_handlers_after_an_awaitable_run_once_it_is_done_and_update_follows_as_stock(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stock = await _lifecycle_calls(AddonManager, caplog)
    caplog.clear()
    indexed = await _lifecycle_calls(IndexedAddonManager, caplog)
    assert indexed == stock
    assert indexed == [
        "first:request",
        "a:request",
        "a:request awaited",
        "a1:request",
        "failing:request",  # its awaited part fails: its child is skipped, the next addon called
        "last:request",
        "a:update",
        "failing:update",
    ]
    assert "Addon error: boom awaited in failing" in caplog.text


async def test_call_now_runs_what_it_can_and_hands_back_the_rest() -> None:
    log: list[str] = []
    master = Master(None)
    manager = master.addons = IndexedAddonManager(master)
    manager.add(Plain("first", log), Awaiting("a", log), Plain("last", log))
    rest = manager.call_now(HttpRequestHook(tflow.tflow()))
    assert log == ["first:request", "a:request"]
    assert rest is not None
    await rest
    assert log == ["first:request", "a:request", "a:request awaited", "last:request", "a:update"]

    log.clear()
    manager.remove(manager.get("a"))
    assert manager.call_now(HttpRequestHook(tflow.tflow())) is None  # all returned: nothing left
    assert log == ["first:request", "last:request"]


@dataclasses.dataclass
class _NoArgs(hooks.Hook):
    name = "gateway_test_no_args"


@dataclasses.dataclass
class _OneArg(hooks.Hook):
    name = "gateway_test_one_arg"
    flow: Any


@dataclasses.dataclass
class _TwoArgs(hooks.Hook):
    name = "gateway_test_two_args"
    first: Any
    second: Any


@dataclasses.dataclass
class _OwnArgs(hooks.Hook):
    name = "gateway_test_own_args"
    first: Any

    def args(self) -> list[Any]:
        return ["said", self.first]


@pytest.mark.parametrize(
    "event", [_NoArgs(), _OneArg("f"), _TwoArgs(1, [2]), _OwnArgs("x")], ids=lambda e: type(e).__name__
)
def test_an_events_arguments_are_what_its_args_method_says(event: hooks.Hook) -> None:
    assert tuple(args_of(event)) == tuple(event.args())
    assert tuple(args_of(event)) == tuple(event.args())  # the cached getter, second time


def test_every_mitmproxy_hook_with_fields_is_read_as_stock_reads_it() -> None:
    for hook in hooks.all_hooks.values():
        names = [f.name for f in dataclasses.fields(hook)]
        event = hook.__new__(hook)
        for n, name in enumerate(names):
            object.__setattr__(event, name, f"value {n}")
        assert tuple(args_of(event)) == tuple(event.args()), hook.__name__
