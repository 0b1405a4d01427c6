"""Deployment across nodes: when a pending certificate may move on (SPEC §2, §8).

``pending_deployment`` → ``available`` once every live node has loaded the certificate (with
its fingerprint); ``pending_deletion`` → ``inactive`` once no live node still has it loaded.
With no live node at all both happen at once: nobody is waiting for them.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Mapping
from datetime import timedelta

from certs.clock import Clock
from certs.lifecycle import BindingStatus
from proxy.store import CertificateRecord, NodeLoadedCa, Store

logger = logging.getLogger(__name__)

PENDING = frozenset({BindingStatus.PENDING_DEPLOYMENT, BindingStatus.PENDING_DELETION})


def loaded_by_node(loaded: Iterable[NodeLoadedCa]) -> dict[str, dict[str, str]]:
    """node id → certificate id → fingerprint."""
    result: dict[str, dict[str, str]] = {}
    for row in loaded:
        result.setdefault(row.node_id, {})[row.certificate_id] = row.fingerprint
    return result


def settled(
    records: Iterable[CertificateRecord],
    live_nodes: Collection[str],
    loaded: Mapping[str, Mapping[str, str]],
) -> dict[str, BindingStatus]:
    """The certificates whose pending status is over: id → their next status."""
    moves: dict[str, BindingStatus] = {}
    for record in records:
        if record.binding_status == BindingStatus.PENDING_DEPLOYMENT:
            missing = [n for n in live_nodes if loaded.get(n, {}).get(record.id) != record.fingerprint]
            if not missing:
                moves[record.id] = BindingStatus.AVAILABLE
        elif record.binding_status == BindingStatus.PENDING_DELETION:
            holding = [n for n in live_nodes if record.id in loaded.get(n, {})]
            if not holding:
                moves[record.id] = BindingStatus.INACTIVE
    for cert_id, status in moves.items():
        why = (
            "no live node"
            if not live_nodes
            else f"{len(live_nodes)} live node(s): {', '.join(n[:8] for n in sorted(live_nodes))}"
        )
        logger.info("certificate %s is now %s (%s)", cert_id, status.value, why)
    return moves


class Deployment:
    """Node heartbeats and loaded CAs, and the status moves they allow, over the store."""

    def __init__(self, store: Store, clock: Clock, live_node_window: timedelta) -> None:
        self._store = store
        self._clock = clock
        self._window = live_node_window

    @property
    def window(self) -> timedelta:
        return self._window

    def register(self, node_id: str, name: str) -> None:
        """A node (re)starts: it is live and has loaded nothing yet."""
        self._store.nodes.register(node_id, name, self._clock())

    def loaded(self, node_id: str, account_id: str, fingerprints_by_id: Mapping[str, str]) -> None:
        """Heartbeat plus what the node has loaded, then settle the account's certificates."""
        now = self._clock()
        with self._store.transaction():
            self._store.nodes.heartbeat(node_id, now)
            self._store.nodes.replace_loaded(node_id, account_id, fingerprints_by_id, now)
            self.settle(account_id)

    def heartbeat(self, node_id: str) -> None:
        """The node is alive; settle the accounts that have pending certificates (one query
        finds them), since a node that timed out may be what they waited for."""
        with self._store.transaction():
            self._store.nodes.heartbeat(node_id, self._clock())
            for account_id in sorted({r.account_id for r in self._store.certificates.with_status(PENDING)}):
                self.settle(account_id)

    def live_nodes(self) -> list[str]:
        since = self._clock() - self._window
        return [node.id for node in self._store.nodes.live(since)]

    def settle(self, account_id: str) -> None:
        """Store the moves ``settled`` allows for the account's pending certificates."""
        records = self._store.certificates.list(account_id)
        pending = [r for r in records if r.binding_status in PENDING]
        if not pending:
            return
        loaded = loaded_by_node(self._store.nodes.loaded(account_id))
        moves = settled(pending, self.live_nodes(), loaded)
        if moves:
            now = self._clock()
            with self._store.transaction():
                for cert_id, status in moves.items():
                    self._store.certificates.set_binding_status(cert_id, status, now)
