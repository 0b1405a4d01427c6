"""CA rotations (issue 12; our addition, docs/rotation.md), under the account's gateway
certificates:

    GET  .../gateway/certificates/rotations                    every rotation, newest first
    POST .../gateway/certificates/rotations                    start one (409 while one is open)
    GET  .../gateway/certificates/rotations/current            the open one, else the latest
    GET  .../gateway/certificates/rotations/{rotation_id}
    POST .../gateway/certificates/rotations/{rotation_id}/pause|resume|continue|cancel
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from aiohttp import web

from proxy.api.bodies import read_object
from proxy.api.envelope import ok, ok_all, timestamp
from proxy.api.errors import invalid_field
from proxy.api.state import account_of, deps_of, rotations_of
from proxy.services.rotation_input import format_span, parse_request
from proxy.services.rotations import RotationView

logger = logging.getLogger(__name__)


def rotation_object(view: RotationView) -> dict[str, Any]:
    r = view.record
    coverage = view.coverage
    return {
        "id": r.id,
        "state": r.state,
        "step": r.step,
        "trigger": r.trigger,
        "new_certificate_id": r.new_certificate_id,
        "old_certificate_id": r.old_certificate_id,
        "coverage": {
            "required_percent": r.coverage,
            "installed": coverage.installed if coverage else 0,
            "reporting": coverage.reporting if coverage else 0,
            "met": coverage.met(r.coverage) if coverage else False,
            "missing": [{"device_id": m.device_id, "name": m.name} for m in view.missing],
        },
        "deadline": timestamp(r.deadline),
        "grace": format_span_seconds(r.grace_seconds),
        "on_deadline": r.on_deadline,
        "message": r.message,
        "created_at": timestamp(r.created_at),
        "updated_at": timestamp(r.updated_at),
        "switched_at": timestamp(r.switched_at) if r.switched_at else None,
        "finished_at": timestamp(r.finished_at) if r.finished_at else None,
        "steps": [
            {"at": timestamp(s.at), "step": s.step, "state": s.state, "message": s.message} for s in r.steps
        ],
    }


def format_span_seconds(seconds: int) -> str:
    return format_span(timedelta(seconds=seconds))


def _id(request: web.Request) -> str:
    return request.match_info["rotation_id"]


async def list_rotations(request: web.Request) -> web.Response:
    views = rotations_of(request).list(account_of(request))
    return ok_all([rotation_object(v) for v in views])


async def start_rotation(request: web.Request) -> web.Response:
    body = await read_object(request)
    service = rotations_of(request)
    parsed = parse_request(body, deps_of(request).clock())
    view = await service.start(account_of(request), parsed)
    return ok(rotation_object(view))


async def current_rotation(request: web.Request) -> web.Response:
    return ok(rotation_object(rotations_of(request).current(account_of(request))))


async def get_rotation(request: web.Request) -> web.Response:
    return ok(rotation_object(rotations_of(request).get(account_of(request), _id(request))))


async def pause_rotation(request: web.Request) -> web.Response:
    _no_fields(await read_object(request), set())
    return ok(rotation_object(rotations_of(request).pause(account_of(request), _id(request))))


async def resume_rotation(request: web.Request) -> web.Response:
    body = await read_object(request)
    _no_fields(body, {"deadline"})
    view = rotations_of(request).resume(account_of(request), _id(request), body.get("deadline"))
    return ok(rotation_object(view))


async def continue_rotation(request: web.Request) -> web.Response:
    _no_fields(await read_object(request), set())
    return ok(rotation_object(rotations_of(request).proceed(account_of(request), _id(request))))


async def cancel_rotation(request: web.Request) -> web.Response:
    _no_fields(await read_object(request), set())
    return ok(rotation_object(rotations_of(request).cancel(account_of(request), _id(request))))


def _no_fields(body: dict[str, Any], accepted: set[str]) -> None:
    for key in body:
        if key not in accepted:
            allowed = ", ".join(sorted(accepted)) or "none"
            raise invalid_field(key, f"unknown field (accepted: {allowed})")


ACTIONS = {
    "pause": pause_rotation,
    "resume": resume_rotation,
    "continue": continue_rotation,
    "cancel": cancel_rotation,
}
