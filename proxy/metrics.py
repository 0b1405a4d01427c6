"""Counters of one gateway process, in Prometheus' exposition format at ``GET /metrics``."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter


class Metrics:
    """One registry per process (not prometheus_client's global one, so tests stay isolated)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.decisions = Counter(
            "gateway_decisions",
            "Requests decided, by action and stage (connection, http, access).",
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
