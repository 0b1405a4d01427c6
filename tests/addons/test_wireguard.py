"""addons/wireguard.py: a WireGuard client's device is its listener's, whatever address it claims."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import pytest
from mitmproxy.proxy.mode_specs import ProxyMode
from mitmproxy.test import tflow

from addons.identity import DeviceIdentity
from addons.wireguard import Tunnel, WireGuardPeers
from policies.facts import Identity

ANN = ProxyMode.parse("wireguard:/data/wireguard/ann.conf@10.0.0.1:51820")
BOB = ProxyMode.parse("wireguard:/data/wireguard/bob.conf@10.0.0.1:51821")
STALE = ProxyMode.parse("wireguard:/data/wireguard/gone.conf@10.0.0.1:51822")


@dataclass
class Tunnels:
    by_conf: dict[str, Tunnel] = field(
        default_factory=lambda: {ANN.data: Tunnel("ann", "100.96.0.2"), BOB.data: Tunnel("bob", "100.96.0.3")}
    )

    def tunnel(self, mode: ProxyMode) -> Tunnel | None:
        return self.by_conf.get(mode.data)


class Directory:
    def authenticate(self, device_id: str, secret: str) -> str | None:
        return None

    def identity(self, device_id: str) -> Identity:
        return Identity.of(email=f"{device_id}@corp.test", device_id=device_id)


def _client(mode: ProxyMode, source: str) -> tflow.connection.Client:
    client = tflow.tclient_conn()
    client.proxy_mode = mode
    client.peername = (source, 40000)
    return client


def test_the_listener_names_the_device() -> None:
    peers = WireGuardPeers(Tunnels())
    identity = DeviceIdentity(Directory(), resolvers=[peers])
    ann, bob = _client(ANN, "100.96.0.2"), _client(BOB, "100.96.0.3")
    peers.client_connected(ann)
    peers.client_connected(bob)
    assert identity.identity_of(ann).device_id == "ann"
    assert identity.identity_of(bob).device_id == "bob"
    peers.client_disconnected(ann)
    assert peers.device_of(ann) is None


def test_another_devices_address_does_not_make_it_that_device(caplog: pytest.LogCaptureFixture) -> None:
    peers = WireGuardPeers(Tunnels())
    bob_as_ann = _client(BOB, "100.96.0.2")
    with caplog.at_level(logging.WARNING):
        peers.client_connected(bob_as_ann)
    assert peers.device_of(bob_as_ann) == "bob"
    assert "device bob sent from 100.96.0.2, not its tunnel address 100.96.0.3" in caplog.text
    assert bob_as_ann.error is None


def test_a_listener_without_a_device_is_refused(caplog: pytest.LogCaptureFixture) -> None:
    peers = WireGuardPeers(Tunnels())
    client = _client(STALE, "100.96.0.9")
    with caplog.at_level(logging.WARNING):
        peers.client_connected(client)
    assert client.error and peers.device_of(client) is None
    assert "no device has this tunnel" in caplog.text


def test_other_modes_are_left_alone() -> None:
    peers = WireGuardPeers(Tunnels())
    client = _client(ProxyMode.parse("regular@8080"), "127.0.0.1")
    peers.client_connected(client)
    assert peers.device_of(client) is None and client.error is None
