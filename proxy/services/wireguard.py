"""Each enrolled device's WireGuard tunnel (issue 16, SPEC §4): the tunnel is the identity.

mitmproxy's WireGuard server accepts any of its peer keys from any tunnel address and never
tells Python which key sent a packet, so peers sharing one listener cannot be told apart. Every
device therefore gets a listener of its own: a UDP port from the configured range, a key pair
for the gateway's end and one for the device's end, and its own tunnel address. A packet that
reaches a device's port and decrypts came from that device's key, whatever inner address it
claims; another device's key does not complete a handshake there.

- :meth:`WireGuardService.reconcile` gives every device a tunnel (new devices get the lowest
  free port and address; a tunnel whose port left the range moves) and returns them all.
- Private keys are generated with ``cryptography``'s X25519 and kept sealed (``certs.sealing``,
  bound to the device id and the key's role); :meth:`WireGuardService.listener_keys` unseals
  them for mitmproxy's conf file, :meth:`WireGuardService.client_config` for the device's own
  configuration. Neither is logged.
"""

from __future__ import annotations

import base64
import ipaddress
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from certs.clock import Clock
from certs.sealing import KeySealer
from proxy.services.errors import NotFound, Refused
from proxy.services.wireguard_config import ClientConfig, ConfigOptions, endpoint
from proxy.store import Store
from proxy.store.database import INTEGRITY_ERRORS
from proxy.store.wireguard import WireGuardTunnel

logger = logging.getLogger(__name__)

# Cloudflare WARP gives devices addresses from 100.96.0.0/12 (shared address space, RFC 6598:
# never routed on the Internet, and not "global" to mitmproxy's block_global).
DEFAULT_NETWORK: Final = ipaddress.IPv4Network("100.96.0.0/12")
FIRST_HOST: Final = 2  # .1 is left for the gateway's end, as a wg-quick user would expect


class WireGuardOff(Refused):
    """The gateway runs without device tunnels."""

    def __init__(self) -> None:
        super().__init__(
            "WireGuard device tunnels are off on this gateway: start it with "
            "--wireguard-ports FIRST-LAST (or --mode wireguard@HOST:PORT)"
        )


@dataclass(frozen=True)
class WireGuardSettings:
    """``listen_host``: where the device listeners bind; ``ports``: one UDP port per device;
    ``endpoint_host``: the host devices reach them at (in their configurations)."""

    listen_host: str
    ports: range
    endpoint_host: str
    network: ipaddress.IPv4Network = DEFAULT_NETWORK

    def __post_init__(self) -> None:
        if not self.ports or self.ports.step != 1 or self.ports.start < 1 or self.ports.stop > 65536:
            raise ValueError(f"WireGuard ports {self.ports!r}: give a range of UDP ports within 1-65535")
        if not self.endpoint_host:
            raise ValueError("WireGuard needs the host devices reach the gateway at")


def parse_ports(text: str) -> range:
    """``FIRST-LAST`` (both included) or one ``PORT``; ValueError says what is accepted."""
    first, dash, last = text.strip().partition("-")
    try:
        low = int(first)
        high = int(last) if dash else low
    except ValueError:
        raise ValueError(f"{text!r}: give UDP ports as FIRST-LAST, such as 51820-51919") from None
    if not 1 <= low <= high <= 65535:
        raise ValueError(f"{text!r}: ports must be 1-65535 and FIRST <= LAST, such as 51820-51919")
    return range(low, high + 1)


@dataclass(frozen=True)
class ListenerKeys:
    """What mitmproxy's conf file for one device's listener holds: the gateway's private key
    and the device's private key (mitmproxy derives the one peer it accepts from it)."""

    server_key: str = field(repr=False)
    client_key: str = field(repr=False)


def generate_private_key() -> str:
    """An X25519 private key as WireGuard writes it: base64 of the 32 raw bytes (``wg genkey``)."""
    return base64.b64encode(X25519PrivateKey.generate().private_bytes_raw()).decode("ascii")


def public_key(private_key: str) -> str:
    """The public key of a base64 private key (``wg pubkey``)."""
    raw = X25519PrivateKey.from_private_bytes(base64.b64decode(private_key, validate=True))
    return base64.b64encode(raw.public_key().public_bytes_raw()).decode("ascii")


def _context(device_id: str, role: str) -> bytes:
    return f"wireguard/{device_id}/{role}".encode()


class WireGuardService:
    def __init__(
        self, store: Store, sealer: KeySealer, clock: Clock, settings: WireGuardSettings | None
    ) -> None:
        """``settings`` None: tunnels are off (the configuration endpoints say so)."""
        self._store = store
        self._sealer = sealer
        self._clock = clock
        self.settings = settings

    @property
    def enabled(self) -> bool:
        return self.settings is not None

    # -- tunnels --------------------------------------------------------------------------------

    def reconcile(self) -> list[WireGuardTunnel]:
        """Every device's tunnel, on a port of the range: devices without one get one, tunnels on
        a port outside the range move to a free one (their keys and address stay). Devices past
        the range's size get none (logged) until a port frees up or the range grows."""
        settings = self.settings
        if settings is None:
            return []
        tunnels = self._store.wireguard_tunnels
        try:
            with self._store.transaction():
                self._move_outside(settings)
                existing = tunnels.list()
                ports = {t.port for t in existing}
                addresses = {t.address for t in existing}
                for device_id, account_id in tunnels.devices_without():
                    if not self._add(settings, device_id, account_id, ports, addresses):
                        break
        except INTEGRITY_ERRORS as e:  # another node allocated the same port meanwhile
            logger.warning(
                "WireGuard: tunnels not allocated this time (%s); trying again on the next change", e
            )
        return [t for t in tunnels.list() if t.port in settings.ports]

    def _move_outside(self, settings: WireGuardSettings) -> None:
        tunnels = self._store.wireguard_tunnels.list()
        free = iter(sorted(set(settings.ports) - {t.port for t in tunnels}))
        for tunnel in tunnels:
            if tunnel.port in settings.ports:
                continue
            port = next(free, None)
            if port is None:
                logger.warning(
                    "WireGuard: device %s keeps port %d, outside %s, and has no listener: "
                    "every port of the range is taken (widen --wireguard-ports)",
                    tunnel.device_id, tunnel.port, _describe(settings.ports),
                )  # fmt: skip
                continue
            self._store.wireguard_tunnels.move(tunnel.device_id, port, self._clock())
            logger.warning(
                "WireGuard: device %s moves from port %d (outside %s) to %d: its configuration "
                "must be fetched again (gateway agent wireguard)",
                tunnel.device_id, tunnel.port, _describe(settings.ports), port,
            )  # fmt: skip

    def _add(
        self,
        settings: WireGuardSettings,
        device_id: str,
        account_id: str,
        ports: set[int],
        addresses: set[str],
    ) -> bool:
        """A tunnel for the device on the lowest free port and address (``ports`` and
        ``addresses`` are the ones taken, and get the new ones); False when the range is full."""
        port = next((p for p in settings.ports if p not in ports), None)
        if port is None:
            logger.warning(
                "WireGuard: device %s has no tunnel: every port of %s is taken (widen --wireguard-ports)",
                device_id, _describe(settings.ports),
            )  # fmt: skip
            return False
        address = _free_address(settings.network, addresses)
        ports.add(port)
        addresses.add(address)
        server_key, client_key = generate_private_key(), generate_private_key()
        now = self._clock()
        self._store.wireguard_tunnels.add(
            WireGuardTunnel(
                device_id=device_id,
                account_id=account_id,
                port=port,
                address=address,
                server_public_key=public_key(server_key),
                client_public_key=public_key(client_key),
                sealed_server_key=self._sealer.seal(
                    server_key.encode(), context=_context(device_id, "server")
                ),
                sealed_client_key=self._sealer.seal(
                    client_key.encode(), context=_context(device_id, "client")
                ),
                created_at=now,
                updated_at=now,
            )
        )
        logger.info("WireGuard: device %s gets port %d, tunnel address %s", device_id, port, address)
        return True

    def tunnel(self, account_id: str, device_id: str) -> WireGuardTunnel:
        """The device's tunnel (made now if the device has none yet); NotFound for a device not
        in the account; WireGuardOff, Refused when tunnels are off or the range is full."""
        settings = self.settings
        if settings is None:
            raise WireGuardOff()
        if self._store.devices.get(device_id, account_id=account_id) is None:
            raise NotFound("device", device_id)
        found = self._store.wireguard_tunnels.get(device_id)
        if found is None or found.port not in settings.ports:
            self.reconcile()
            found = self._store.wireguard_tunnels.get(device_id)
        if found is None or found.port not in settings.ports:
            raise Refused(
                f"device {device_id} has no WireGuard tunnel: every port of "
                f"{_describe(settings.ports)} is taken (widen --wireguard-ports or delete a device)"
            )
        return found

    # -- keys -----------------------------------------------------------------------------------

    def listener_keys(self, tunnel: WireGuardTunnel) -> ListenerKeys:
        """For mitmproxy's conf file of this device's listener (written 0600, never logged)."""
        return ListenerKeys(
            server_key=self._unseal(tunnel, "server", tunnel.sealed_server_key),
            client_key=self._unseal(tunnel, "client", tunnel.sealed_client_key),
        )

    def client_config(self, account_id: str, device_id: str, options: ConfigOptions) -> ClientConfig:
        """The device's own configuration, its private key included: for that device, or for an
        admin who asked for it explicitly."""
        tunnel = self.tunnel(account_id, device_id)
        assert self.settings is not None  # tunnel() refused otherwise
        logger.info("WireGuard: configuration of device %s handed out (%s)", device_id, options.format)
        return ClientConfig(
            private_key=self._unseal(tunnel, "client", tunnel.sealed_client_key),
            address=f"{tunnel.address}/32",
            peer_public_key=tunnel.server_public_key,
            endpoint=endpoint(self.settings.endpoint_host, tunnel.port),
            allowed_ips=options.allowed_ips,
            dns=options.dns,
        )

    def _unseal(self, tunnel: WireGuardTunnel, role: str, sealed: bytes) -> str:
        return self._sealer.unseal(sealed, context=_context(tunnel.device_id, role)).decode("ascii")


def _free_address(network: ipaddress.IPv4Network, used: set[str]) -> str:
    base = int(network.network_address)
    for offset in range(FIRST_HOST, network.num_addresses - 1):
        candidate = str(ipaddress.IPv4Address(base + offset))
        if candidate not in used:
            return candidate
    raise Refused(f"WireGuard: no free tunnel address left in {network}")


def _describe(ports: Sequence[int]) -> str:
    return f"{ports[0]}-{ports[-1]}" if len(ports) > 1 else str(ports[0])
