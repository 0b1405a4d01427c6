"""A device's WireGuard configuration (our addition, issue 16): for the admin
(``GET .../devices/{device_id}/wireguard``, admin token) and for the device itself
(``GET /agent/wireguard``, device credentials).

The answer holds the device's private key: it is made for that one request (``Cache-Control:
no-store``) and never logged. Query: ``format`` (``wg-quick``, the default, or ``wg`` for ``wg
setconf``), ``allowed_ips`` (comma-separated CIDRs to send through the tunnel; default
0.0.0.0/0) and ``dns`` (comma-separated resolvers; none by default).
"""

from __future__ import annotations

import logging
from typing import Any, Final

from aiohttp import web

from proxy.api.agent import _device
from proxy.api.bodies import reject_unknown
from proxy.api.envelope import ok
from proxy.api.state import account_of
from proxy.services.wireguard import WireGuardOff, WireGuardService
from proxy.services.wireguard_config import ClientConfig, ConfigOptions

logger = logging.getLogger(__name__)

WIREGUARD = web.AppKey("wireguard", WireGuardService)
QUERY: Final = frozenset({"format", "allowed_ips", "dns"})


def wireguard_of(request: web.Request) -> WireGuardService:
    service = request.app.get(WIREGUARD)
    if service is None:
        raise WireGuardOff()
    return service


async def device_config(request: web.Request) -> web.Response:
    """The admin asks for one device's configuration, private key included."""
    return _answer(request, account_of(request), request.match_info["device_id"])


async def agent_config(request: web.Request) -> web.Response:
    """The device asks for its own configuration."""
    device = await _device(request)
    return _answer(request, device.account_id, device.id)


def _answer(request: web.Request, account_id: str, device_id: str) -> web.Response:
    service = wireguard_of(request)
    query = dict(request.query)
    reject_unknown(query, QUERY)
    options = ConfigOptions.parse(
        format=query.get("format"), allowed_ips=query.get("allowed_ips"), dns=query.get("dns")
    )
    tunnel = service.tunnel(account_id, device_id)
    config = service.client_config(account_id, device_id, options)
    response = ok(_result(device_id, tunnel.port, tunnel.client_public_key, config, options))
    response.headers["Cache-Control"] = "no-store"
    return response


def _result(
    device_id: str, port: int, client_public_key: str, config: ClientConfig, options: ConfigOptions
) -> dict[str, Any]:
    return {
        "device_id": device_id,
        "address": config.address,
        "port": port,
        "endpoint": config.endpoint,
        "public_key": config.peer_public_key,
        "client_public_key": client_public_key,
        "allowed_ips": list(config.allowed_ips),
        "dns": list(config.dns),
        "format": options.format.value,
        "config": config.render(options.format),
    }
