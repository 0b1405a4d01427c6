"""Subscribers: every callback is called in order; a failing one is logged, not swallowed, and
does not stop the others."""

from __future__ import annotations

import logging
import re

import pytest

from proxy.services.subscribers import Subscribers


def test_notify_calls_every_callback_in_order() -> None:
    heard: list[str] = []
    subscribers = Subscribers("test change")
    subscribers.add(lambda: heard.append("first"))
    subscribers.add(lambda: heard.append("second"))
    subscribers.notify()
    subscribers.notify()
    assert heard == ["first", "second", "first", "second"]


def test_notify_without_callbacks_does_nothing() -> None:
    Subscribers("test change").notify()


def test_a_failing_callback_is_logged_and_the_others_still_hear(caplog: pytest.LogCaptureFixture) -> None:
    heard: list[str] = []

    def broken() -> None:
        raise RuntimeError("boom")

    subscribers = Subscribers("test change")
    subscribers.add(broken)
    subscribers.add(lambda: heard.append("told"))
    with caplog.at_level(logging.ERROR, logger="proxy.services.subscribers"):
        subscribers.notify()
    assert heard == ["told"]
    [record] = caplog.records
    assert re.fullmatch(r"test change subscriber <function .*\.broken at 0x\w+> failed", record.getMessage())
    assert record.exc_info is not None and isinstance(record.exc_info[1], RuntimeError)


def test_a_callback_added_while_notifying_hears_the_next_change() -> None:
    heard: list[str] = []
    subscribers = Subscribers("test change")

    def adds_another() -> None:
        heard.append("adder")
        subscribers.add(lambda: heard.append("late"))

    subscribers.add(adds_another)
    subscribers.notify()
    assert heard == ["adder"]
    subscribers.notify()
    assert heard == ["adder", "adder", "late"]
