"""Our addition: GET gateway/nodes, the proxy nodes and which of the account's CAs each loaded."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from proxy.api import objects
from proxy.api.envelope import ok_all, timestamp
from proxy.api.state import account_of, deps_of

logger = logging.getLogger(__name__)


async def list_nodes(request: web.Request) -> web.Response:
    deps = deps_of(request)
    live = set(deps.certificates.live_nodes())
    loaded: dict[str, list[dict[str, Any]]] = {}
    for row in deps.store.nodes.loaded(account_of(request)):
        loaded.setdefault(row.node_id, []).append(
            {
                "id": row.certificate_id,
                "fingerprint": row.fingerprint,
                "loaded_at": timestamp(row.loaded_at),
            }
        )
    current = deps.node.id if deps.node else None
    result = [
        objects.node(n, live=n.id in live, current=n.id == current, loaded=loaded.get(n.id, []))
        for n in deps.store.nodes.list()
    ]
    return ok_all(result)
