"""Deployment across nodes: when a pending certificate may move on (SPEC §2, §8).

``pending_deployment`` → ``available`` once every live node has loaded the certificate (with
its fingerprint); ``pending_deletion`` → ``inactive`` once no live node still has it loaded.
With no live node at all both happen at once: nobody is waiting for them.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Mapping

from certs.lifecycle import BindingStatus
from proxy.store import CertificateRecord, NodeLoadedCa

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
            missing = [
                n for n in live_nodes if loaded.get(n, {}).get(record.id) != record.fingerprint
            ]
            if not missing:
                moves[record.id] = BindingStatus.AVAILABLE
        elif record.binding_status == BindingStatus.PENDING_DELETION:
            holding = [n for n in live_nodes if record.id in loaded.get(n, {})]
            if not holding:
                moves[record.id] = BindingStatus.INACTIVE
    for cert_id, status in moves.items():
        why = "no live node" if not live_nodes else f"{len(live_nodes)} live node(s)"
        logger.info("certificate %s is now %s (%s)", cert_id, status.value, why)
    return moves
