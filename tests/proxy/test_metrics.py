"""The counters' exposition (``proxy/metrics.py``): one process's, and with workers the totals
(this process's own plus every worker's and every ended run's) beside a per-worker breakdown."""

from __future__ import annotations

import json

import pytest
from prometheus_client.parser import text_string_to_metric_families

from proxy.metrics import Metrics, WorkerCounters, samples_from_json, samples_to_json


def _values(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text.decode())
        for sample in family.samples
        if sample.name.endswith("_total")
    }


def test_a_process_alone_shows_its_own_counters() -> None:
    metrics = Metrics()
    metrics.decisions.labels("allow", "request").inc(3)
    values = _values(metrics.exposition())
    assert values[("gateway_decisions_total", (("action", "allow"), ("stage", "request")))] == 3
    assert not any(name.startswith("gateway_worker_") for name, _ in values)


def test_with_workers_totals_add_every_worker_and_ended_runs() -> None:
    admin, one, two = Metrics(), Metrics(), Metrics()
    admin.posture_results.labels("passed").inc(2)  # the admin plane counts the agents' reports
    one.decisions.labels("allow", "request").inc(3)
    two.decisions.labels("allow", "request").inc(4)
    two.internal_errors.inc()
    over_the_pipe = samples_from_json(json.loads(json.dumps(samples_to_json(one.samples()))))
    retired = {("gateway_decisions", (("action", "allow"), ("stage", "request"))): 10.0}
    values = _values(admin.exposition(WorkerCounters({"1": over_the_pipe, "2": two.samples()}, retired)))
    allow = (("action", "allow"), ("stage", "request"))
    assert values[("gateway_decisions_total", allow)] == 17  # 3 + 4 + 10 of a run that ended
    assert values[("gateway_worker_decisions_total", (*allow, ("worker", "1")))] == 3
    assert values[("gateway_worker_decisions_total", (*allow, ("worker", "2")))] == 4
    assert values[("gateway_internal_errors_total", ())] == 1
    assert values[("gateway_posture_results_total", (("outcome", "passed"),))] == 2


@pytest.mark.parametrize("data", [{}, [["x", {}]], [["x", [], 1]], [[1, {}, 1]], [["x", {}, "1"]]], ids=repr)
def test_counters_from_a_worker_that_are_not_understood_are_refused(data: object) -> None:
    with pytest.raises(ValueError, match="counters"):
        samples_from_json(data)
