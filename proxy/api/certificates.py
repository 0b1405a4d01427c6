"""Gateway certificates: list, generate, get, delete, activate, deactivate, download."""

from __future__ import annotations

import logging

from aiohttp import web

from certs.authority import DEFAULT_VALIDITY_DAYS, MAX_VALIDITY_DAYS, KeyType
from proxy.api import agent_trust, objects
from proxy.api.bodies import choice, optional_int, read_object, reject_unknown
from proxy.api.envelope import ok, ok_all
from proxy.api.errors import invalid_field
from proxy.api.state import account_of, deps_of

logger = logging.getLogger(__name__)


_DOWNLOADS = {
    "pem": ("application/x-pem-file", "pem"),
    "der": ("application/pkix-cert", "crt"),
}


async def list_certificates(request: web.Request) -> web.Response:
    service = deps_of(request).certificates
    records = service.list(account_of(request))
    return ok_all(
        [objects.gateway_certificate(r) for r in records],
        notes=service.expiry_messages(records),
    )


async def create_certificate(request: web.Request) -> web.Response:
    body = await read_object(request)
    reject_unknown(body, {"validity_period_days", "key_type"})
    days = optional_int(
        body, "validity_period_days", default=DEFAULT_VALIDITY_DAYS, low=1, high=MAX_VALIDITY_DAYS
    )
    key_type = KeyType(choice(body, "key_type", [k.value for k in KeyType], default="ec-p256"))
    record = await deps_of(request).certificates.generate_async(account_of(request), days, key_type)
    return ok(objects.gateway_certificate(record))


async def get_certificate(request: web.Request) -> web.Response:
    service = deps_of(request).certificates
    record = service.get(account_of(request), request.match_info["certificate_id"])
    body = objects.gateway_certificate(record)
    body["gateway_devices"] = agent_trust.gateway_devices(request, record)  # our field (issue 5)
    return ok(body, notes=service.expiry_messages([record]))


async def delete_certificate(request: web.Request) -> web.Response:
    await read_object(request)
    service = deps_of(request).certificates
    record = service.delete(account_of(request), request.match_info["certificate_id"])
    return ok(objects.gateway_certificate(record))


async def activate_certificate(request: web.Request) -> web.Response:
    await read_object(request)
    service = deps_of(request).certificates
    record = service.activate(account_of(request), request.match_info["certificate_id"])
    return ok(objects.gateway_certificate(record))


async def deactivate_certificate(request: web.Request) -> web.Response:
    await read_object(request)
    service = deps_of(request).certificates
    record = service.deactivate(account_of(request), request.match_info["certificate_id"])
    return ok(objects.gateway_certificate(record))


async def download_certificate(request: web.Request) -> web.Response:
    """Our addition: the CA certificate as a file, PEM (default) or DER. Never a key."""
    fmt = request.query.get("format", "pem")
    if fmt not in _DOWNLOADS:
        raise invalid_field("format", f"must be pem or der, got {fmt!r}")
    service = deps_of(request).certificates
    record = service.get(account_of(request), request.match_info["certificate_id"])
    content_type, extension = _DOWNLOADS[fmt]
    body = record.certificate_pem.encode("ascii") if fmt == "pem" else objects.certificate_der(record)
    disposition = f'attachment; filename="gateway-ca-{record.id}.{extension}"'
    return web.Response(body=body, content_type=content_type, headers={"Content-Disposition": disposition})
