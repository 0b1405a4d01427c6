"""Device posture rules (Cloudflare's ``devices/posture``) and, our addition, the posture log."""

from __future__ import annotations

import functools
import json
import logging
import math
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from policies.posture import PostureRule, parse_duration
from proxy.api.bodies import read_object
from proxy.api.envelope import Paging, messages, ok, ok_all, timestamp
from proxy.api.errors import invalid_field
from proxy.api.state import account_of, devices_of
from proxy.store import Device, LogQuery, PostureLogEntry

logger = logging.getLogger(__name__)

LOG_PAGE = 100
MAX_LOG_PAGE = 1000
MAX_ID_CHARS = 128
_dumps = functools.partial(json.dumps, ensure_ascii=False, allow_nan=False)


def rule_object(rule: PostureRule) -> dict[str, Any]:
    """Cloudflare's rule: ``{id, name, description, type, schedule, expiration, input, match,
    enabled}``."""
    return rule.to_api()


async def list_rules(request: web.Request) -> web.Response:
    rules = devices_of(request).rules(account_of(request))
    return ok_all([rule_object(r) for r in rules])


async def create_rule(request: web.Request) -> web.Response:
    body = await read_object(request)
    return ok(rule_object(devices_of(request).create_rule(account_of(request), body)))


async def get_rule(request: web.Request) -> web.Response:
    rule = devices_of(request).rule(account_of(request), request.match_info["rule_id"])
    return ok(rule_object(rule))


async def put_rule(request: web.Request) -> web.Response:
    body = await read_object(request)
    service, rule_id = devices_of(request), request.match_info["rule_id"]
    return ok(rule_object(service.replace_rule(account_of(request), rule_id, body)))


async def delete_rule(request: web.Request) -> web.Response:
    await read_object(request)
    deleted = devices_of(request).delete_rule(account_of(request), request.match_info["rule_id"])
    return ok({"id": deleted.id})


# --- the posture log (our addition) ---------------------------------------------------------------


def log_object(entry: PostureLogEntry, device: Device | None) -> dict[str, Any]:
    return {
        "id": entry.seq,
        "timestamp": timestamp(entry.at),
        "device_id": entry.device_id,
        "device_name": device.name if device else "",
        "email": device.email if device else "",
        "rule_id": entry.rule_id,
        "rule_name": entry.rule_name,
        "outcome": entry.outcome.value,
        "success": entry.outcome.value == "passed",
        "verified": entry.verified,
        "reason": entry.reason,
        "certificate_fingerprint": entry.certificate_fingerprint,
        "certificate_cn": entry.certificate_cn,
        "expires_at": timestamp(entry.expires_at) if entry.expires_at else None,
    }


async def list_logs(request: web.Request) -> web.Response:
    """Newest first; ``device_id``, ``rule_id`` and ``since`` (RFC 3339, or a duration such as
    ``10m`` meaning that long ago) filter; ``page``/``per_page`` (default 100, at most 1000)."""
    service, account = devices_of(request), account_of(request)
    paging = Paging.from_query(request, default=LOG_PAGE, maximum=MAX_LOG_PAGE)
    query = LogQuery(
        account,
        device_id=_id(request, "device_id"),
        rule_id=_id(request, "rule_id"),
        since=_since(request.query.get("since"), service.now()),
    )
    entries, total = service.logs(query, offset=paging.offset, limit=paging.per_page)
    devices = {d.id: d for d in service.devices(account)} if entries else {}
    body = {
        "success": True,
        "errors": [],
        "messages": messages(()),
        "result": [log_object(e, devices.get(e.device_id)) for e in entries],
        "result_info": {
            "page": paging.page,
            "per_page": paging.per_page,
            "count": len(entries),
            "total_count": total,
            "total_pages": max(1, math.ceil(total / paging.per_page)),
        },
    }
    return web.json_response(body, dumps=_dumps)


def _id(request: web.Request, name: str) -> str | None:
    value = request.query.get(name, "").strip()
    if len(value) > MAX_ID_CHARS:
        raise invalid_field(name, f"at most {MAX_ID_CHARS} characters")
    return value or None


def _since(raw: str | None, now: datetime) -> datetime | None:
    if raw is None or not raw.strip():
        return None
    text = raw.strip()
    try:
        return now - parse_duration(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise invalid_field(
            "since", f'must be an RFC 3339 time or a duration such as "10m", got {raw!r}'
        ) from None
    if moment.tzinfo is None:
        raise invalid_field("since", f"needs a time zone (Z for UTC), got {raw!r}")
    return moment.astimezone(UTC)
