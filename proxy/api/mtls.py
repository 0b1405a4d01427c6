"""mTLS certificates: upload a signing CA (with its key: usable as a custom gateway CA)."""

from __future__ import annotations

import logging

from aiohttp import web

from proxy.api import objects
from proxy.api.bodies import (
    optional_str,
    read_object,
    reject_unknown,
    required_str,
)
from proxy.api.envelope import ok, ok_all
from proxy.api.errors import invalid_field
from proxy.api.state import account_of, deps_of
from proxy.json_types import type_name

logger = logging.getLogger(__name__)

TYPES = ("custom", "gateway_managed", "access_managed")
MAX_NAME = 255


def _types(request: web.Request) -> set[str]:
    """``?type=a&type=b`` (as the SDK sends) or ``?type=a,b``; empty: every type."""
    wanted = {t.strip() for raw in request.query.getall("type", []) for t in raw.split(",")}
    wanted.discard("")
    for value in sorted(wanted):
        if value not in TYPES:
            raise invalid_field("type", f"must be among {', '.join(TYPES)}, got {value!r}")
    return wanted


async def list_mtls(request: web.Request) -> web.Response:
    wanted = _types(request)
    records = deps_of(request).certificates.list_mtls(account_of(request))
    if wanted and "custom" not in wanted:  # every upload here is of type custom
        records = []
    return ok_all([objects.mtls_certificate(r) for r in records])


async def create_mtls(request: web.Request) -> web.Response:
    body = await read_object(request)
    reject_unknown(body, {"name", "certificates", "private_key", "ca"})
    if "ca" not in body:
        raise invalid_field("ca", "required: true (only CA certificates can be uploaded here)")
    if not isinstance(body["ca"], bool):
        raise invalid_field("ca", f"must be true or false, got {type_name(body['ca'])}")
    if body["ca"] is not True:
        raise invalid_field("ca", "must be true: only CA certificates can be uploaded here")
    certificates = required_str(body, "certificates")
    private_key = optional_str(body, "private_key") or None
    name = optional_str(body, "name", default="") or ""
    if len(name) > MAX_NAME:
        raise invalid_field("name", f"at most {MAX_NAME} characters, got {len(name)}")
    record = deps_of(request).certificates.create_mtls(
        account_of(request), certificates=certificates, private_key=private_key, name=name
    )
    return ok(objects.mtls_certificate(record))


async def get_mtls(request: web.Request) -> web.Response:
    service = deps_of(request).certificates
    record = service.get_mtls(account_of(request), request.match_info["certificate_id"])
    return ok(objects.mtls_certificate(record))


async def delete_mtls(request: web.Request) -> web.Response:
    await read_object(request)
    service = deps_of(request).certificates
    record = service.delete_mtls(account_of(request), request.match_info["certificate_id"])
    return ok(objects.mtls_certificate(record))
