"""One JSON line per request (SPEC §4): time, node, mode, device, user, method, host, path,
action, rule id and name, status, bytes, CA fingerprint; the reason of a block (an Access denial
says what failed), the Access policy that let it through, and the posture checks the Access
application consulted with the device's state on each. Written when the response (or the
error) is known."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from mitmproxy import http

from addons.enforcement import ALLOWED, DECISION, IDENTITY, DecisionRecord
from addons.request_names import pretty_host
from policies.facts import ANONYMOUS, Identity, PostureState

logger = logging.getLogger(__name__)


class RequestLog:
    def __init__(
        self,
        sink: Callable[[str], None],
        *,
        node_id: str = "",
        ca_fingerprint: Callable[[str], str | None] = lambda client_id: None,
    ) -> None:
        self._sink = sink
        self._node_id = node_id
        self._ca_fingerprint = ca_fingerprint

    def response(self, flow: http.HTTPFlow) -> None:
        self._write(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._write(flow)

    def _write(self, flow: http.HTTPFlow) -> None:
        try:
            self._sink(json.dumps(self.record(flow), separators=(",", ":")))
        except Exception:  # logging must never break traffic; say so once per failure
            logger.exception("could not write the request log line for flow %s", flow.id)

    def record(self, flow: http.HTTPFlow) -> dict[str, object]:
        decision: DecisionRecord = flow.metadata.get(DECISION, ALLOWED)
        response = flow.response
        identity = flow.metadata.get(IDENTITY)
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(flow.request.timestamp_start, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "node": self._node_id,
            "mode": flow.client_conn.proxy_mode.type_name,  # regular, transparent, wireguard
            "device": getattr(identity, "device_id", "") or None,
            "user": getattr(identity, "email", "") or None,
            "src_ip": flow.client_conn.peername[0] if flow.client_conn.peername else None,
            "method": flow.request.method,
            "scheme": flow.request.scheme,
            "host": pretty_host(flow.request),
            "path": flow.request.path.partition("?")[0],
            "action": decision.action,
            "stage": decision.stage,
            "rule_id": decision.rule_id or None,
            "rule": decision.rule_name or None,
            "status": response.status_code if response is not None else None,
            "bytes": len(response.raw_content or b"") if response is not None else 0,
            "ca_fingerprint": self._ca_fingerprint(flow.client_conn.id)
            if flow.request.scheme == "https"
            else None,
        }
        if decision.reason:
            line["reason"] = decision.reason
        if decision.access_policy:
            line["access_policy"] = decision.access_policy
        if decision.posture:
            line["posture"] = [_posture(identity, rule_id) for rule_id in decision.posture]
        if flow.error is not None:
            line["error"] = flow.error.msg
        return line


def _posture(identity: Identity | None, rule_id: str) -> dict[str, str]:
    note = (identity or ANONYMOUS).posture_note(rule_id)
    entry = {"id": rule_id, "name": note.rule_name, "state": note.state.value}
    if note.reason and note.state is not PostureState.PASSED:
        entry["reason"] = note.reason
    return entry
