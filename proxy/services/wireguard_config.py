"""A device's WireGuard client configuration, as ``wg-quick`` reads it or as ``wg setconf`` does.

Pure text: the service fills a :class:`ClientConfig` (keys unsealed for this one answer) and
:meth:`ClientConfig.render` writes it. ``wg-quick`` takes ``Address`` (and ``DNS`` when asked
for) in ``[Interface]``; ``wg setconf`` refuses both, so ``--format wg`` leaves them out and the
caller sets the address with ``ip address add``.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

from proxy.services.errors import InvalidInput

logger = logging.getLogger(__name__)

DEFAULT_ALLOWED_IPS: Final = ("0.0.0.0/0",)
MAX_LIST_ITEMS: Final = 64


class ConfigFormat(StrEnum):
    WG_QUICK = "wg-quick"  # wg-quick up FILE
    WG = "wg"  # wg setconf IFACE FILE: no Address, no DNS


@dataclass(frozen=True)
class ConfigOptions:
    """What the client sends through the tunnel (``AllowedIPs``) and which resolvers it uses."""

    format: ConfigFormat = ConfigFormat.WG_QUICK
    allowed_ips: tuple[str, ...] = DEFAULT_ALLOWED_IPS
    dns: tuple[str, ...] = ()

    @classmethod
    def parse(
        cls, *, format: str | None = None, allowed_ips: str | None = None, dns: str | None = None
    ) -> ConfigOptions:
        """From the API's query: ``format`` (wg-quick, wg), ``allowed_ips`` and ``dns``
        (comma-separated). InvalidInput names the field and what it accepts."""
        try:
            chosen = ConfigFormat(format or ConfigFormat.WG_QUICK)
        except ValueError:
            accepted = ", ".join(f.value for f in ConfigFormat)
            raise InvalidInput("format", f"{format!r} is not a format (accepted: {accepted})") from None
        networks = _items("allowed_ips", allowed_ips) or DEFAULT_ALLOWED_IPS
        resolvers = _items("dns", dns)
        return cls(
            chosen,
            tuple(_network(n) for n in networks),
            tuple(_address(a) for a in resolvers),
        )


def _items(name: str, text: str | None) -> tuple[str, ...]:
    items = tuple(part.strip() for part in (text or "").split(",") if part.strip())
    if len(items) > MAX_LIST_ITEMS:
        raise InvalidInput(name, f"at most {MAX_LIST_ITEMS} entries, got {len(items)}")
    return items


def _network(text: str) -> str:
    try:
        return str(ipaddress.ip_network(text, strict=False))
    except ValueError:
        raise InvalidInput(
            "allowed_ips", f"{text[:64]!r} is not an address or CIDR (such as 0.0.0.0/0 or 10.0.0.0/8)"
        ) from None


def _address(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise InvalidInput("dns", f"{text[:64]!r} is not an IP address (such as 10.0.0.53)") from None


def endpoint(host: str, port: int) -> str:
    """``host:port``, an IPv6 literal in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True)
class ClientConfig:
    """One device's end of its tunnel. Holds the device's private key: render it for that
    device (or the admin who asked), never log it."""

    private_key: str = field(repr=False)
    address: str  # the device's tunnel address with its prefix, "100.96.0.2/32"
    peer_public_key: str  # the gateway's end of this device's tunnel
    endpoint: str  # HOST:PORT of this device's listener
    allowed_ips: Sequence[str] = DEFAULT_ALLOWED_IPS
    dns: Sequence[str] = ()

    def render(self, format: ConfigFormat = ConfigFormat.WG_QUICK) -> str:
        interface = ["[Interface]", f"PrivateKey = {self.private_key}"]
        if format is ConfigFormat.WG_QUICK:
            interface.append(f"Address = {self.address}")
            if self.dns:
                interface.append(f"DNS = {', '.join(self.dns)}")
        peer = [
            "[Peer]",
            f"PublicKey = {self.peer_public_key}",
            f"Endpoint = {self.endpoint}",
            f"AllowedIPs = {', '.join(self.allowed_ips)}",
        ]
        return "\n".join([*interface, "", *peer]) + "\n"
