"""The agent's endpoints (our addition, docs/architecture.md "Device posture"): enrollment with a
one-time secret, then device credentials (``Authorization: Basic base64(device_id:secret)``) for
the device's rules, nonces and results. No admin token: the middleware leaves ``/agent/`` paths
to this module. Every refusal is a 4xx with the reason; the server verifies every pass itself.
"""

from __future__ import annotations

import base64
import binascii
import logging
from typing import Any, Final

from aiohttp import web

from proxy.api.bodies import read_object, reject_unknown, required_str
from proxy.api.envelope import ok, timestamp
from proxy.api.errors import AUTHENTICATION, ApiError, invalid_field
from proxy.api.state import deps_of, devices_of
from proxy.json_types import type_name
from proxy.services.device_addresses import parse_registered
from proxy.services.device_enrollment import DeviceDetails
from proxy.services.devices import Unauthenticated
from proxy.services.posture_verify import Report
from proxy.store import Device

logger = logging.getLogger(__name__)

MAX_RESULTS: Final = 256
NONCE_HEADER: Final = "Gateway-Nonce"
NONCE_EXPIRES_HEADER: Final = "Gateway-Nonce-Expires-In"
REALM: Final = 'Basic realm="Gateway device"'
ENROLL_FIELDS: Final = frozenset(
    {"secret", "name", "os", "os_version", "serial_number", "hostname", "email", "addresses"}
)
RESULT_FIELDS: Final = frozenset({"rule_id", "success", "reason", "nonce", "certificate", "signature"})


def _offer_nonce(request: web.Request, device: Device, response: web.Response) -> web.Response:
    """The answers with the rules and with the stored results carry a fresh nonce for the next
    report (``Gateway-Nonce``, base64, valid ``Gateway-Nonce-Expires-In`` seconds), as ACME's
    ``Replay-Nonce`` does: an agent that reports soon after needs no ``POST /agent/nonce``."""
    service = devices_of(request)
    issued = service.offer_nonce(device)
    response.headers[NONCE_HEADER] = base64.b64encode(issued.nonce).decode("ascii")
    response.headers[NONCE_EXPIRES_HEADER] = str(int(service.nonce_lifetime.total_seconds()))
    return response


def _unauthenticated(message: str) -> ApiError:
    return ApiError(401, AUTHENTICATION, message, headers={"WWW-Authenticate": REALM})


def _ip(request: web.Request) -> str:
    return request.remote or ""


async def enroll(request: web.Request) -> web.Response:
    service = devices_of(request)
    body = await read_object(request)
    reject_unknown(body, ENROLL_FIELDS)
    secret = required_str(body, "secret")
    details = DeviceDetails.from_api(body)
    addresses = parse_registered(body["addresses"]) if body.get("addresses") is not None else []
    try:
        enrolled = service.enroll(secret, details, _ip(request), addresses)
    except Unauthenticated as e:
        raise _unauthenticated(str(e)) from None
    return ok(
        {
            "device_id": enrolled.device.id,
            "device_secret": enrolled.secret,
            "account_id": enrolled.device.account_id,
        }
    )


def _credentials(request: web.Request) -> tuple[str, str]:
    header = request.headers.get("Authorization", "")
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic" or not encoded.strip():
        raise _unauthenticated(
            "device credentials required: send 'Authorization: Basic base64(device_id:secret)'"
        )
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise _unauthenticated("Authorization: Basic credentials are not base64 of UTF-8") from None
    device_id, colon, secret = decoded.partition(":")
    if not colon or not device_id or not secret:
        raise _unauthenticated("Authorization: Basic credentials must be device_id:secret")
    return device_id, secret


async def _device(request: web.Request) -> Device:
    device_id, secret = _credentials(request)
    try:
        return await devices_of(request).login(device_id, secret, _ip(request))
    except Unauthenticated as e:
        raise _unauthenticated(str(e)) from None


async def posture_rules(request: web.Request) -> web.Response:
    """The device's rules (``match`` lists its platform, or none), each with the PEM of the
    certificates that sign its device certificates."""
    device = await _device(request)
    rules = devices_of(request).agent_rules(device)
    answer = ok([{"rule": rule.to_api(), "signing_certificates": pem} for rule, pem in rules])
    return _offer_nonce(request, device, answer)


async def _body(request: web.Request, device: Device) -> dict[str, Any]:
    """The JSON body; a refused one (malformed, too large) goes to the device's posture log."""
    try:
        return await read_object(request)
    except ApiError as e:
        await devices_of(request).log_refused(device, f"request refused: {e.message}")
        raise
    except web.HTTPRequestEntityTooLarge:
        await devices_of(request).log_refused(device, "request refused: body larger than 1 MiB")
        raise


async def addresses(request: web.Request) -> web.Response:
    """``PUT {"addresses": [IP, ...]}``: the device's addresses now, with each report (transparent
    mode identifies the device by them) → the addresses kept (loopback and link-local dropped)."""
    device = await _device(request)
    body = await _body(request, device)
    reject_unknown(body, {"addresses"})
    networks = parse_registered(body.get("addresses"))
    await devices_of(request).register_addresses(device, networks)
    return ok({"addresses": [n.removesuffix("/32").removesuffix("/128") for n in networks]})


async def nonce(request: web.Request) -> web.Response:
    device = await _device(request)
    await _body(request, device)
    issued = await devices_of(request).issue_nonce(device, _ip(request))
    return ok(
        {
            "nonce": base64.b64encode(issued.nonce).decode("ascii"),
            "expires_at": timestamp(issued.expires_at),
        }
    )


async def results(request: web.Request) -> web.Response:
    """``{"results": [{rule_id, success, reason, nonce, certificate, signature}]}`` → what the
    server stored for each: ``[{rule_id, success, verified, reason, expires_at}]``."""
    device = await _device(request)
    body = await _body(request, device)
    try:
        reject_unknown(body, {"results"})
        reports = parse_reports(body.get("results"))
    except ApiError as e:
        _count_posture(request, "refused")
        await devices_of(request).log_refused(device, f"report refused: {e.message}")
        raise
    try:
        stored = await devices_of(request).submit(device, reports, _ip(request))
    except Unauthenticated as e:
        _count_posture(request, "refused")
        raise _unauthenticated(str(e)) from None
    for s in stored:
        _count_posture(request, "passed" if s.success else "failed")
    answer = ok(
        [
            {
                "rule_id": s.rule_id,
                "success": s.success,
                "verified": s.verified,
                "reason": s.reason,
                "expires_at": timestamp(s.expires_at),
            }
            for s in stored
        ]
    )
    return _offer_nonce(request, device, answer)


def parse_reports(value: Any) -> list[Report]:
    if not isinstance(value, list):
        raise invalid_field("results", f"must be an array of results, got {type_name(value)}")
    if not value:
        raise invalid_field("results", "must hold at least one result")
    if len(value) > MAX_RESULTS:
        raise invalid_field("results", f"at most {MAX_RESULTS} results per request, got {len(value)}")
    return [_report(item, f"results[{index}]") for index, item in enumerate(value)]


def _report(item: Any, where: str) -> Report:
    if not isinstance(item, dict):
        raise invalid_field(where, f"must be an object, got {type_name(item)}")
    for key in item:
        if key not in RESULT_FIELDS:
            raise invalid_field(
                f"{where}.{key}", f"unknown field (accepted: {', '.join(sorted(RESULT_FIELDS))})"
            )
    rule_id = item.get("rule_id")
    if not isinstance(rule_id, str) or not rule_id.strip():
        raise invalid_field(f"{where}.rule_id", "required: the posture rule's id")
    success = item.get("success")
    if not isinstance(success, bool):
        raise invalid_field(f"{where}.success", f"must be true or false, got {type_name(success)}")
    texts = {}
    for key in ("reason", "nonce", "certificate", "signature"):
        text = item.get(key)
        if text is not None and not isinstance(text, str):
            raise invalid_field(f"{where}.{key}", f"must be a string, got {type_name(text)}")
        texts[key] = text
    return Report(
        rule_id=rule_id.strip(),
        success=success,
        reason=texts["reason"] or "",
        nonce=texts["nonce"],
        certificate=texts["certificate"],
        signature=texts["signature"],
    )


def _count_posture(request: web.Request, outcome: str) -> None:
    metrics = deps_of(request).metrics
    if metrics is not None:
        metrics.posture_results.labels(outcome).inc()
