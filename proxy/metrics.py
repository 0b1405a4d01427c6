"""Counters of one gateway process, in Prometheus' exposition format at ``GET /metrics``."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter


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
