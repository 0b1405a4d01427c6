"""Counters of one gateway process, in Prometheus' exposition format at ``GET /metrics``.

With ``gateway run --workers N`` the proxy's counters live in the workers: each sends its
``samples()`` over its control channel when the admin plane asks (``proxy/workers.py``), and the
admin plane's ``/metrics`` is ``exposition(own, WorkerCounters(...))``: every family carries the
gateway's totals (the admin process's own counts plus every worker's, as ``--workers 1`` reports
them), and a ``gateway_worker_*`` family per counter breaks them down with a ``worker`` label.

A worker's counters start at 0 with each run: its ``gateway_worker_*`` series reset when it is
restarted (a counter reset, which Prometheus' ``rate()`` expects). The totals do not go back:
the last figures a dead run reported stay in them (``WorkerCounters.retired``); what it counted
after the last scrape is lost with it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

logger = logging.getLogger(__name__)

type SampleKey = tuple[str, tuple[tuple[str, str], ...]]  # family name, (label, value) pairs
type Samples = Mapping[SampleKey, float]

WORKER_PREFIX = "gateway_worker_"


@dataclass(frozen=True)
class WorkerCounters:
    """What the workers counted: each live worker's latest figures, by worker ("1", "2"), and
    the sum of the last figures of runs that ended (restarted workers)."""

    by_worker: Mapping[str, Samples] = field(default_factory=dict)
    retired: Samples = field(default_factory=dict)


def add(total: dict[SampleKey, float], samples: Samples) -> dict[SampleKey, float]:
    for key, value in samples.items():
        total[key] = total.get(key, 0.0) + value
    return total


def samples_to_json(samples: Samples) -> list[list[object]]:
    """The control channel's form: ``[[family, {label: value}, count], ...]``."""
    return [[name, dict(labels), value] for (name, labels), value in samples.items()]


def samples_from_json(data: object) -> dict[SampleKey, float]:
    """``samples_to_json``'s inverse; ValueError on anything else."""
    if not isinstance(data, list):
        raise ValueError("counters: not a list")
    result: dict[SampleKey, float] = {}
    for item in data:
        if not (isinstance(item, list) and len(item) == 3):
            raise ValueError("counters: an item is not [name, labels, value]")
        name, labels, value = item
        if not (isinstance(name, str) and isinstance(labels, dict) and isinstance(value, int | float)):
            raise ValueError("counters: an item is not [name, labels, value]")
        key = (name, tuple((str(k), str(v)) for k, v in labels.items()))
        result[key] = result.get(key, 0.0) + float(value)
    return result


class Metrics:
    """One registry per process (not prometheus_client's global one, so tests stay isolated)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.decisions = Counter(
            "gateway_decisions",
            "Requests decided, by action and stage in the request log's words (action allow, block, "
            "redirect, error; stage request, access, upstream, internal), and connections passed "
            "through at the ClientHello (action off, stage connection).",
            ["action", "stage"],
            registry=self.registry,
        )
        self.handshakes = Counter(
            "gateway_client_handshakes",
            "TLS connections from clients, by outcome (intercepted, passed_through, failed).",
            ["outcome"],
            registry=self.registry,
        )
        self.upstream_errors = Counter(
            "gateway_upstream_errors",
            "Requests whose upstream could not be reached or verified, by handling.",
            ["handling"],
            registry=self.registry,
        )
        self.internal_errors = Counter(
            "gateway_internal_errors",
            "Hook failures answered fail-closed (an error page instead of the origin).",
            registry=self.registry,
        )
        self.requests = Counter(
            "gateway_requests",
            "Requests seen, by proxy mode (regular, transparent, wireguard, ...) and whether a device "
            "was identified (identified, unidentified).",
            ["mode", "device"],
            registry=self.registry,
        )
        self.posture_results = Counter(
            "gateway_posture_results",
            "Posture results agents reported and the server stored, by outcome (passed, failed), "
            "and reports refused before any result was stored (refused).",
            ["outcome"],
            registry=self.registry,
        )

    def samples(self) -> dict[SampleKey, float]:
        """Every counter's current value, by family and labels (not the ``_created`` stamps)."""
        return _samples_of(self.registry.collect())

    def exposition(self, workers: WorkerCounters | None = None) -> bytes:
        """``GET /metrics``: this process's counters, or with ``workers`` the gateway's totals
        and a ``gateway_worker_*`` family per counter (module docstring)."""
        if workers is None:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        registry.register(_Combined(self, workers))
        return generate_latest(registry)


class _Combined(Collector):
    def __init__(self, own: Metrics, workers: WorkerCounters) -> None:
        self._own = own
        self._workers = workers

    def collect(self) -> Iterator[Metric]:
        families = list(self._own.registry.collect())  # collected once for totals and names
        totals = add(_samples_of(families), self._workers.retired)
        for samples in self._workers.by_worker.values():
            add(totals, samples)
        for family in families:
            yield _family(family.name, family.documentation, family.name, totals)
        for family in families:
            per_worker = {
                (family.name, (("worker", worker), *labels)): value
                for worker, samples in self._workers.by_worker.items()
                for (name, labels), value in samples.items()
                if name == family.name
            }
            yield _family(
                WORKER_PREFIX + family.name.removeprefix("gateway_"),
                "Per worker, reset when that worker restarts: " + family.documentation,
                family.name,
                per_worker,
            )


def _samples_of(families: Iterable[Metric]) -> dict[SampleKey, float]:
    """Each counter's value by family and labels (not the ``_created`` stamps)."""
    result: dict[SampleKey, float] = {}
    for family in families:
        for sample in family.samples:
            if sample.name == family.name + "_total":
                result[(family.name, tuple(sample.labels.items()))] = sample.value
    return result


def _family(name: str, documentation: str, of: str, samples: Samples) -> CounterMetricFamily:
    """A counter family ``name`` with the samples of family ``of``."""
    mine = sorted((labels, value) for (family, labels), value in samples.items() if family == of)
    result = CounterMetricFamily(
        name, documentation, labels=[label for label, _ in mine[0][0]] if mine else None
    )
    for pairs, value in mine:
        result.add_metric([v for _, v in pairs], value)
    return result
