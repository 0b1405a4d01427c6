"""Which device is at a source address: transparent mode's identity (docs/modes.md).

Two kinds of entries:

- **registered**: the addresses a device's agent reports (at enrollment and with each report);
  each report replaces the device's set, and every address keeps when it was first and last seen;
- **bound**: a network (an address or a CIDR) an administrator bound to a device.

A source address resolves to the device of the most specific bound network containing it; failing
that, to the device that registered that exact address most recently. Two devices bound to the
same most specific network, or registering the address at the same moment, make it ambiguous:
nobody (unidentified), with a log line. The answers are kept in memory and rebuilt after every
change, so a lookup per connection is a dictionary hit.

What this is worth: anyone on the same network segment can send from a registered address. It
identifies devices on a segment you trust (or behind a NAT-free router that filters spoofed
sources); where that does not hold, use WireGuard mode, whose tunnel key is the identity.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from certs.clock import Clock
from proxy.services.errors import InvalidInput, NotFound
from proxy.store import Store
from proxy.store.device_addresses import AddressSource, DeviceAddress

logger = logging.getLogger(__name__)

MAX_REGISTERED = 64  # addresses one agent may register
MAX_BINDINGS = 256  # networks bound to one device
REFRESH_INTERVAL = timedelta(minutes=1)  # an unchanged report refreshes last_seen at most this often

type Network = ipaddress.IPv4Network | ipaddress.IPv6Network
type Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_network(text: object, field: str) -> Network:
    """An address (``10.0.0.5``, a /32 or /128) or a network (``10.0.0.0/24``), as an admin binds it."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidInput(field, f"must be an IP address or CIDR network, got {text!r}")
    try:
        return ipaddress.ip_network(text.strip())
    except ValueError as e:
        try:
            loose = ipaddress.ip_network(text.strip(), strict=False)
        except ValueError:
            raise InvalidInput(
                field, f"{text.strip()!r} is not an IP address or CIDR network ({e})"
            ) from None
        raise InvalidInput(field, f"{text.strip()!r} has host bits set (did you mean {loose}?)") from None


def parse_registered(value: Any, field: str = "addresses") -> list[str]:
    """The addresses an agent reports: IP literals; loopback, unspecified, multicast and
    link-local ones are dropped (they never reach a gateway as a source). Canonical /32, /128."""
    if not isinstance(value, list):
        raise InvalidInput(field, f"must be an array of IP addresses, got {type(value).__name__}")
    if len(value) > MAX_REGISTERED:
        raise InvalidInput(field, f"at most {MAX_REGISTERED} addresses, got {len(value)}")
    networks: list[str] = []
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise InvalidInput(f"{field}[{index}]", "must be a string")
        try:
            address = ipaddress.ip_address(item.strip().partition("%")[0])  # fe80::1%eth0
        except ValueError:
            raise InvalidInput(f"{field}[{index}]", f"{item[:64]!r} is not an IP address") from None
        if address.is_loopback or address.is_unspecified or address.is_multicast or address.is_link_local:
            continue
        text = str(ipaddress.ip_network(address))
        if text not in networks:
            networks.append(text)
    return networks


@dataclass(frozen=True)
class _Candidate:
    network: Network
    device_id: str
    last_seen: datetime


class AddressIndex:
    """Immutable lookup structure over every entry; ``device_at`` remembers its answers."""

    def __init__(self, entries: Iterable[DeviceAddress]) -> None:
        self._bound: list[_Candidate] = []  # most specific first
        self._registered: dict[Address, list[_Candidate]] = {}
        for entry in entries:
            candidate = _Candidate(ipaddress.ip_network(entry.network), entry.device_id, entry.last_seen)
            if entry.source == AddressSource.ADMIN:
                self._bound.append(candidate)
            else:
                self._registered.setdefault(candidate.network.network_address, []).append(candidate)
        self._bound.sort(key=lambda c: c.network.prefixlen, reverse=True)
        self._answers: dict[str, str | None] = {}

    def device_at(self, address: str) -> str | None:
        try:
            return self._answers[address]
        except KeyError:
            pass
        answer = self._resolve(address)
        if len(self._answers) > 65_536:
            self._answers.clear()
        self._answers[address] = answer
        return answer

    def _resolve(self, text: str) -> str | None:
        try:
            address = ipaddress.ip_address(text.partition("%")[0])
        except ValueError:
            return None
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # ::ffff:10.0.0.5 on a dual-stack listener
        bound = [c for c in self._bound if c.network.version == address.version and address in c.network]
        if bound:
            best = [c for c in bound if c.network.prefixlen == bound[0].network.prefixlen]
            return _one(best, address, f"bound to /{bound[0].network.prefixlen}")
        registered = self._registered.get(address, [])
        if not registered:
            return None
        latest = max(c.last_seen for c in registered)
        return _one([c for c in registered if c.last_seen == latest], address, "registered at the same time")


def _one(candidates: Sequence[_Candidate], address: Address, why: str) -> str | None:
    devices = sorted({c.device_id for c in candidates})
    if len(devices) == 1:
        return devices[0]
    logger.warning(
        "source %s is ambiguous: devices %s are all %s; the client stays unidentified",
        address,
        ", ".join(devices),
        why,
    )
    return None


class DeviceAddressBook:
    """Registered and bound addresses, and the index transparent mode resolves clients with."""

    def __init__(self, store: Store, clock: Clock) -> None:
        self._store = store
        self._clock = clock
        self._last: dict[str, tuple[tuple[str, ...], datetime]] = {}  # device: last registered set
        self.index = AddressIndex(store.device_addresses.all())

    def device_at(self, address: str) -> str | None:
        """The device at this source address, or None (unknown or ambiguous)."""
        return self.index.device_at(address)

    def refresh(self) -> None:
        self.index = AddressIndex(self._store.device_addresses.all())

    def due(self, device_id: str, networks: Sequence[str], now: datetime) -> bool:
        """Whether a report of ``networks`` needs a write (changed, or last seen long ago)."""
        last = self._last.get(device_id)
        return last is None or last[0] != tuple(networks) or now - last[1] >= REFRESH_INTERVAL

    def register(
        self, store: Store, device_id: str, account_id: str, networks: Sequence[str], now: datetime
    ) -> None:
        """Write the agent's set (in the caller's transaction, e.g. the group-commit writer's)."""
        store.device_addresses.register(device_id, account_id, networks, now)
        self._last[device_id] = (tuple(networks), now)

    def registered(self, device_id: str, networks: Sequence[str]) -> None:
        """After the write committed: the index sees it."""
        self.refresh()
        logger.info("device %s registered %s", device_id, ", ".join(networks) or "no addresses")

    def addresses(self, device_id: str) -> list[DeviceAddress]:
        return self._store.device_addresses.of_device(device_id)

    def bind(self, account_id: str, device_id: str, network: object) -> DeviceAddress:
        parsed = parse_network(network, "network")
        if self._store.devices.get(device_id, account_id=account_id) is None:
            raise NotFound("device", device_id)
        bound = [a for a in self.addresses(device_id) if a.source == AddressSource.ADMIN]
        if len(bound) >= MAX_BINDINGS and str(parsed) not in {a.network for a in bound}:
            raise InvalidInput("network", f"at most {MAX_BINDINGS} networks per device")
        entry = self._store.device_addresses.bind(device_id, account_id, str(parsed), self._clock())
        self.refresh()
        logger.info("account %s: bound %s to device %s", account_id, parsed, device_id)
        return entry

    def unbind(self, account_id: str, device_id: str, network: object) -> str:
        parsed = parse_network(network, "network")
        if self._store.devices.get(device_id, account_id=account_id) is None:
            raise NotFound("device", device_id)
        if not self._store.device_addresses.unbind(device_id, str(parsed)):
            raise NotFound("device address", f"{parsed} of device {device_id}")
        self.refresh()
        logger.info("account %s: unbound %s from device %s", account_id, parsed, device_id)
        return str(parsed)

    def forget(self, device_id: str) -> None:
        self._last.pop(device_id, None)
        self.refresh()
