"""CA installation by the agent (issue 5; docs/architecture.md "CA installation by the agent"):
the agent's two endpoints (device credentials, as ``proxy.api.agent``), and what the admin views
show of the reports: ``gateway_devices`` on a certificate, the devices of a certificate,
``trust_stores`` on a device, and the warning when a certificate reporting devices lack is
turned on."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from proxy.api.agent import _body, _device, _unauthenticated
from proxy.api.envelope import JSON, messages, ok, ok_all, timestamp
from proxy.api.state import account_of, deps_of, devices_of
from proxy.services.device_trust import TRUST_WARNING, DeviceTrustService, parse_report
from proxy.services.devices import Unauthenticated
from proxy.services.errors import InvalidInput
from proxy.store import CertificateRecord, Device

logger = logging.getLogger(__name__)


def trust_of(request: web.Request) -> DeviceTrustService:
    """The trust service over this app's store (stateless: made per request)."""
    deps = deps_of(request)
    writer = deps.devices.writer if deps.devices is not None else None
    return DeviceTrustService(deps.store, deps.certificates, deps.clock, writer=writer)


# --- the agent ------------------------------------------------------------------------------


async def root_certificates(request: web.Request) -> web.Response:
    """``[{"id", "fingerprint", "certificate", "binding_status", "in_use"}]``: the root CAs the
    device should trust (available and pending_deployment)."""
    device = await _device(request)
    records = trust_of(request).root_certificates(device)
    return ok(
        [
            {
                "id": r.id,
                "fingerprint": r.fingerprint,
                "certificate": r.certificate_pem,
                "binding_status": r.binding_status.value if r.binding_status else "inactive",
                "in_use": r.in_use,
            }
            for r in records
        ]
    )


async def trust_stores(request: web.Request) -> web.Response:
    """``{"stores": [{"store", "installed", "error"}]}`` (a full report) → ``{"stores": N,
    "installed": M}``. A refused report is a 400 naming the field, and goes to the device's
    posture log."""
    device = await _device(request)
    body = await _body(request, device)
    try:
        stores = parse_report(body)
    except InvalidInput as e:
        await devices_of(request).log_refused(device, f"trust store report refused: {e}")
        raise
    try:
        stored = await trust_of(request).report(device, stores)
    except Unauthenticated as e:  # deleted while the request was on its way
        raise _unauthenticated(str(e)) from None
    rotations = deps_of(request).rotations
    if rotations is not None:
        rotations.reported()  # a rotation waiting for this device may move now
    return ok({"stores": stored.stores, "installed": stored.installed})


# --- admin views ----------------------------------------------------------------------------


def gateway_devices(request: web.Request, record: CertificateRecord) -> dict[str, int]:
    """``{"installed", "missing", "reporting"}`` of one certificate (our field)."""
    coverage = trust_of(request).coverage(record)
    return {
        "installed": coverage.installed,
        "missing": coverage.missing,
        "reporting": coverage.reporting,
    }


async def certificate_devices(request: web.Request) -> web.Response:
    """Our addition: every device of the account and whether its latest trust report lists the
    certificate (``reporting``: that report is recent enough to be counted)."""
    rows = trust_of(request).devices_for(account_of(request), request.match_info["certificate_id"])
    return ok_all(
        [
            {
                "device_id": row.device.id,
                "name": row.device.name,
                "installed": row.installed,
                "stores": list(row.stores),
                "reported_at": timestamp(row.reported_at) if row.reported_at else None,
                "reporting": row.reporting,
            }
            for row in rows
        ]
    )


def device_trust_stores(request: web.Request, device: Device) -> list[dict[str, Any]]:
    """``trust_stores`` of a device: its latest report, store by store (``[]`` when none)."""
    report = trust_of(request).device_report(device)
    if report is None:
        return []
    return [
        {
            "store": s.store,
            "installed": list(s.installed),
            "error": s.error,
            "reported_at": timestamp(report.reported_at),
        }
        for s in report.stores
    ]


def turning_on(request: web.Request, settings: object) -> str | None:
    """The certificate id ``settings`` turns on, when it is not the one in use already."""
    wanted = settings.get("certificate") if isinstance(settings, dict) else None
    cert_id = wanted.get("id") if isinstance(wanted, dict) else None
    if not isinstance(cert_id, str):
        return None
    current = deps_of(request).certificates.configuration(account_of(request)).settings
    in_use = current.get("certificate")
    return None if isinstance(in_use, dict) and in_use.get("id") == cert_id else cert_id


def ok_warned(request: web.Request, result: Any, certificate_id: str | None) -> web.Response:
    """``ok(result)``, with the warning (code 10100) when reporting devices lack the certificate
    just turned on."""
    if certificate_id is None:
        return ok(result)
    warning = trust_of(request).turn_on_warning(account_of(request), certificate_id)
    if warning is None:
        return ok(result)
    return _ok_with(result, messages([warning], code=TRUST_WARNING))


def _ok_with(result: Any, notes: Sequence[dict[str, Any]]) -> web.Response:
    body = {"success": True, "errors": [], "messages": list(notes), "result": result}
    return web.Response(text=json.dumps(body, ensure_ascii=False, allow_nan=False), content_type=JSON)
