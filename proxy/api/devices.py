"""Devices (Cloudflare's deprecated ``devices`` list and get, which the SDK still drives), the
user's ``last_seen_identity`` with ``devicePosture``, and, our additions, enrollment tokens and
device deletion."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from aiohttp import web

from proxy.api import agent_trust
from proxy.api.bodies import optional_str, read_object, reject_unknown
from proxy.api.envelope import ok, ok_all, timestamp
from proxy.api.state import account_of, devices_of
from proxy.services.device_enrollment import user_id
from proxy.services.device_identity import is_current_pass
from proxy.services.devices import IssuedToken, SeenIdentity
from proxy.store import Device
from proxy.store.device_addresses import DeviceAddress

logger = logging.getLogger(__name__)


def device_object(device: Device) -> dict[str, Any]:
    """The deprecated ``Device`` shape (``devices.list``) and the required fields of the newer
    one (``devices.get`` reads ``created_at``, ``updated_at``, ``active_registrations``, ``tags``)."""
    user = {"id": user_id(device.email), "email": device.email, "name": ""}
    return {
        "id": device.id,
        "name": device.name,
        "device_type": device.os,
        "ip": device.ip,
        "last_seen": timestamp(device.last_seen),
        "os_version": device.os_version,
        "serial_number": device.serial_number,
        "hostname": device.hostname,
        "user": user,
        "created": timestamp(device.created_at),
        "updated": timestamp(device.updated_at),
        "deleted": False,
        "revoked_at": None,
        "created_at": timestamp(device.created_at),
        "updated_at": timestamp(device.updated_at),
        "last_seen_at": timestamp(device.last_seen),
        "last_seen_user": user,
        "active_registrations": 1,
        "tags": {},
    }


async def list_devices(request: web.Request) -> web.Response:
    devices = devices_of(request).devices(account_of(request))
    return ok_all([device_object(d) for d in devices])


async def get_device(request: web.Request) -> web.Response:
    device = devices_of(request).device(account_of(request), request.match_info["device_id"])
    trust_stores = agent_trust.device_trust_stores(request, device)  # our field (issue 5)
    return ok({**device_object(device), "trust_stores": trust_stores})


async def delete_device(request: web.Request) -> web.Response:
    """Our addition: the device's secret stops working at once; its results go with it."""
    await read_object(request)
    service = devices_of(request)
    deleted = service.delete_device(account_of(request), request.match_info["device_id"])
    return ok({"id": deleted.id})


def address_object(entry: DeviceAddress) -> dict[str, Any]:
    return {
        "network": entry.network,
        "source": entry.source.value,  # "agent": registered by the device's agent; "admin": bound
        "first_seen": timestamp(entry.first_seen),
        "last_seen": timestamp(entry.last_seen),
    }


async def list_addresses(request: web.Request) -> web.Response:
    """Our addition: the device's registered addresses and bound networks (transparent mode)."""
    service, account = devices_of(request), account_of(request)
    device = service.device(account, request.match_info["device_id"])
    return ok_all([address_object(a) for a in service.addresses.addresses(device.id)])


async def bind_address(request: web.Request) -> web.Response:
    """Our addition: ``PUT {"network": "10.0.0.5" | "10.0.0.0/24"}`` binds it to the device."""
    body = await read_object(request)
    reject_unknown(body, {"network"})
    service = devices_of(request)
    entry = service.addresses.bind(account_of(request), request.match_info["device_id"], body.get("network"))
    return ok(address_object(entry))


async def unbind_address(request: web.Request) -> web.Response:
    """Our addition: ``DELETE ...?network=10.0.0.0/24`` (or the same as a JSON body) unbinds it."""
    network: object = request.query.get("network")
    if network is None:
        body = await read_object(request)
        reject_unknown(body, {"network"})
        network = body.get("network")
    service = devices_of(request)
    removed = service.addresses.unbind(account_of(request), request.match_info["device_id"], network)
    return ok({"network": removed})


def token_object(issued: IssuedToken) -> dict[str, Any]:
    return {
        "id": issued.id,
        "token": issued.token,
        "email": issued.email,
        "created_at": timestamp(issued.created_at),
        "expires_at": timestamp(issued.expires_at),
    }


async def create_enrollment_token(request: web.Request) -> web.Response:
    """Our addition: ``{"email"?, "expires_in"?: "1h"}`` → a single-use token, shown once."""
    body = await read_object(request)
    reject_unknown(body, {"email", "expires_in"})
    issued = devices_of(request).create_enrollment_token(
        account_of(request),
        email=optional_str(body, "email", default="") or "",
        expires_in=optional_str(body, "expires_in"),
    )
    return ok(token_object(issued))


def identity_object(seen: SeenIdentity, account_id: str, now: datetime) -> dict[str, Any]:
    """Cloudflare's Access identity, with ``devicePosture`` (camelCase, as Cloudflare spells it)
    keyed by rule id; ``verified`` and ``expires_at`` are our additions."""
    device = seen.device
    posture: dict[str, Any] = {}
    common_name = ""
    for rule, result in seen.results:
        current = is_current_pass(result, now)
        if current and result.certificate_cn and not common_name:
            common_name = result.certificate_cn
        error = ""
        if not current:
            error = (
                result.reason if not result.success else (f"result expired at {timestamp(result.expires_at)}")
            )
        posture[rule.id] = {
            "id": rule.id,
            "rule_name": rule.name,
            "type": rule.type.value,
            "success": current,
            "timestamp": timestamp(result.at),
            "description": rule.description,
            "error": error,
            "verified": result.verified,
            "expires_at": timestamp(result.expires_at),
            "data": {"reason": result.reason},
        }
    return {
        "email": device.email,
        "user_uuid": user_id(device.email),
        "account_id": account_id,
        "device_id": device.id,
        "ip": device.ip,
        "is_gateway": True,
        "is_warp": False,
        "common_name": common_name,
        "device_sessions": {device.id: {"last_authenticated": device.last_seen.timestamp()}},
        "devicePosture": posture,
    }


async def last_seen_identity(request: web.Request) -> web.Response:
    service, account = devices_of(request), account_of(request)
    seen = service.last_seen_identity(account, request.match_info["user_id"])
    return ok(identity_object(seen, account, service.now()))
