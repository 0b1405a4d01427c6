"""The admin's child process for YAML and large JSON (proxy/services/parse_worker.py): answers as
the function would here, falls back to the calling thread when the child is gone or an answer
does not travel, stops a child that overruns; and the policies frozen at start-up hold no
cycles (proxy/gc_settings.py relies on it)."""

from __future__ import annotations

import gc
import os
import signal
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from policies.yaml_io import dump, load
from proxy.api.errors import ApiError, invalid_field
from proxy.services.offload import Offload, Overloaded
from proxy.services.parse_worker import ParseWorker, WorkerTimeout
from proxy.services.policy_state import EngineBuilder, InvalidPolicy, file_state
from proxy.services.policy_transfer import parse

pytestmark = pytest.mark.reliability

REPO = Path(__file__).resolve().parents[2]


def policy_text(count: int) -> str:
    sys.path.insert(0, str(REPO / "bench"))
    try:
        import rulegen
    finally:
        sys.path.remove(str(REPO / "bench"))
    return str(yaml.safe_dump(rulegen.make(count), sort_keys=False, allow_unicode=True))


@pytest.fixture
def worker() -> Iterator[ParseWorker]:
    worker = ParseWorker()
    yield worker
    worker.close()


def test_the_child_answers_as_the_function_would(worker: ParseWorker) -> None:
    text = policy_text(50)
    assert worker.call(os.getpid, timeout=30) != os.getpid()
    parsed = worker.call(parse, text, timeout=30)
    assert parsed == parse(text)
    assert worker.call(dump, parsed, timeout=30) == dump(parsed)
    with pytest.raises(InvalidPolicy) as raised:
        worker.call(parse, "gateway_rules: [{name: x, action: nope}]", timeout=30)
    with pytest.raises(InvalidPolicy) as here:
        parse("gateway_rules: [{name: x, action: nope}]")
    assert str(raised.value) == str(here.value)
    assert (worker.calls, worker.fallbacks) == (4, 0)


def test_what_does_not_travel_is_computed_here(worker: ParseWorker) -> None:
    made = worker.call(invalid_field, "f", "bad", timeout=30)  # an ApiError does not unpickle
    assert isinstance(made, ApiError) and made.status == 400
    assert worker.fallbacks == 1
    assert worker.call(lambda: 7, timeout=30) == 7  # a lambda does not pickle
    assert worker.fallbacks == 2


def test_a_dead_child_falls_back_then_is_replaced(worker: ParseWorker) -> None:
    first = worker.call(os.getpid, timeout=30)
    os.kill(first, signal.SIGKILL)  # our own child, by its id
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(first, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)  # real time on purpose: the kill takes effect
    assert worker.call(os.getpid, timeout=30) == os.getpid()  # this call: in the thread
    assert worker.fallbacks == 1 and not worker.broken
    second = worker.call(os.getpid, timeout=30)
    assert second not in (first, os.getpid())


def test_a_call_over_its_time_is_stopped(worker: ParseWorker) -> None:
    started = time.monotonic()
    with pytest.raises(WorkerTimeout):
        worker.call(time.sleep, 30, timeout=0.5)
    assert time.monotonic() - started < 10
    assert worker.call(os.getpid, timeout=30) != os.getpid()  # a new child


def test_policies_and_engines_hold_no_cycles() -> None:
    """gc_settings freezes the policies' state and engines of start-up; replaced later, they
    are freed by reference counting only if nothing in them is cyclic."""
    policy_set = load(policy_text(300))
    gc.collect()  # the YAML loader's own garbage
    gc.disable()
    try:
        state = file_state(policy_set, datetime(2026, 1, 1, tzinfo=UTC))
        builder = EngineBuilder()
        engines = builder.build("account", state)
        del policy_set, state, builder, engines
        assert gc.collect() == 0
    finally:
        gc.enable()


async def test_the_offload_runs_it_in_its_child_and_answers_503_past_the_budget() -> None:
    offload = Offload(budget=0.5)
    try:
        assert await offload.run_in_child(os.getpid, budget=30) != os.getpid()  # started
        with pytest.raises(Overloaded) as e:
            await offload.run_in_child(time.sleep, 30)
        assert e.value.retry_after >= 1
        assert (
            await offload.run_in_child(os.getpid, budget=30) != os.getpid()
        )  # a new child, once the old one stopped
    finally:
        offload.close()
