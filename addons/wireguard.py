"""Device identity in WireGuard mode: the listener a client came in on names its device.

Every enrolled device has a WireGuard listener of its own (``proxy.services.wireguard`` says
why): a connection that arrives on it was sent through that device's tunnel, by that device's
key, so ``client.proxy_mode`` -- the listener's mode -- is the identity. The inner source
address is not: mitmproxy's WireGuard server does not check it against the peer, so a device
that sends from another device's tunnel address is logged and still counted as itself.

The addon keeps the device of each client from ``client_connected`` to ``client_disconnected``;
``device_of(client)`` is the lookup the identity addon makes (one dictionary hit).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

from mitmproxy import connection
from mitmproxy.proxy.mode_specs import ProxyMode, WireGuardMode

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Tunnel:
    """One device's listener: the device, and the address its configuration gives it."""

    device_id: str
    address: str


class TunnelDirectory(Protocol):
    def tunnel(self, mode: ProxyMode) -> Tunnel | None:
        """The device whose listener runs ``mode``; None for a mode that is no device's."""
        ...


class WireGuardPeers:
    def __init__(self, directory: TunnelDirectory) -> None:
        self.directory = directory
        self._devices: dict[str, str] = {}  # client id → device id

    def client_connected(self, client: connection.Client) -> None:
        mode = client.proxy_mode
        if not isinstance(mode, WireGuardMode):
            return
        tunnel = self.directory.tunnel(mode)
        if tunnel is None:  # a listener that outlived its device for a moment
            logger.warning(
                "WireGuard %s: no device has this tunnel (deleted?): connection from %s refused",
                mode.full_spec, client.peername,
            )  # fmt: skip
            client.error = "no device has this WireGuard tunnel"
            return
        self._devices[client.id] = tunnel.device_id
        source = str(client.peername[0]) if client.peername else ""
        if source != tunnel.address:
            logger.warning(
                "WireGuard: device %s sent from %s, not its tunnel address %s: identified as "
                "device %s by its tunnel (the address is not trusted)",
                tunnel.device_id, source, tunnel.address, tunnel.device_id,
            )  # fmt: skip

    def client_disconnected(self, client: connection.Client) -> None:
        self._devices.pop(client.id, None)

    def device_of(self, client: connection.Client) -> str | None:
        """The device whose tunnel the client came through; None outside WireGuard mode."""
        return self._devices.get(client.id)
