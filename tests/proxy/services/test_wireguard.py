"""WireGuard device tunnels (proxy/services/wireguard.py): ports, addresses, sealed keys."""

from __future__ import annotations

import base64
import logging
import re

import mitmproxy_rs
import pytest

from certs.errors import CertError
from certs.sealing import KeySealer
from proxy.services.errors import NotFound, Refused
from proxy.services.wireguard import (
    WireGuardOff,
    WireGuardService,
    WireGuardSettings,
    generate_private_key,
    parse_ports,
    public_key,
)
from proxy.services.wireguard_config import ConfigFormat, ConfigOptions
from tests.support.devices import Lab


def _service(lab: Lab, sealer: KeySealer, ports: range = range(51820, 51823)) -> WireGuardService:
    settings = WireGuardSettings(listen_host="0.0.0.0", ports=ports, endpoint_host="gw.example.com")
    return WireGuardService(lab.gateway.store, sealer, lab.gateway.clock, settings)


def test_keys_are_what_wireguard_derives() -> None:
    private = generate_private_key()
    assert len(base64.b64decode(private)) == 32
    assert public_key(private) == mitmproxy_rs.wireguard.pubkey(private)
    assert generate_private_key() != private


@pytest.mark.parametrize(
    ("text", "expected"),
    [("51820-51919", range(51820, 51920)), ("51820", range(51820, 51821)), (" 1-2 ", range(1, 3))],
)
def test_parse_ports(text: str, expected: range) -> None:
    assert parse_ports(text) == expected


@pytest.mark.parametrize("text", ["", "a-b", "51919-51820", "0-10", "65535-65536", "51820-"])
def test_parse_ports_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="FIRST-LAST|1-65535"):
        parse_ports(text)


def test_each_device_gets_its_own_port_address_and_keys(lab: Lab, sealer: KeySealer) -> None:
    ann, _ = lab.enroll(name="ann")
    bob, _ = lab.enroll(name="bob", serial="S-2")
    tunnels = {t.device_id: t for t in _service(lab, sealer).reconcile()}
    assert {tunnels[ann.id].port, tunnels[bob.id].port} == {51820, 51821}
    assert {tunnels[ann.id].address, tunnels[bob.id].address} == {"100.96.0.2", "100.96.0.3"}
    assert tunnels[ann.id].client_public_key != tunnels[bob.id].client_public_key
    assert tunnels[ann.id].server_public_key != tunnels[bob.id].server_public_key


def test_private_keys_are_sealed_to_their_device(lab: Lab, sealer: KeySealer) -> None:
    ann, _ = lab.enroll(name="ann")
    service = _service(lab, sealer)
    (tunnel,) = service.reconcile()
    keys = service.listener_keys(tunnel)
    assert public_key(keys.client_key) == tunnel.client_public_key
    assert public_key(keys.server_key) == tunnel.server_public_key
    dump = "\n".join(lab.gateway.store.dump())
    assert keys.client_key not in dump and keys.server_key not in dump
    assert keys.client_key not in repr(keys) and keys.client_key not in repr(tunnel)
    with pytest.raises(CertError, match="wrong master key or corrupted data"):
        sealer.unseal(tunnel.sealed_client_key, context=f"wireguard/{ann.id}x/client".encode())


def test_client_config_is_the_devices_end(lab: Lab, sealer: KeySealer) -> None:
    ann, _ = lab.enroll(name="ann")
    service = _service(lab, sealer)
    (tunnel,) = service.reconcile()
    config = service.client_config(lab.account, ann.id, ConfigOptions())
    text = config.render()
    assert text == (
        f"[Interface]\nPrivateKey = {service.listener_keys(tunnel).client_key}\nAddress = 100.96.0.2/32\n\n"
        f"[Peer]\nPublicKey = {tunnel.server_public_key}\nEndpoint = gw.example.com:51820\n"
        "AllowedIPs = 0.0.0.0/0\n"
    )
    wg = config.render(ConfigFormat.WG)
    assert "Address" not in wg and "DNS" not in wg and "PrivateKey" in wg
    assert "PrivateKey" not in repr(config) and config.private_key not in repr(config)


def test_options_name_the_field(lab: Lab) -> None:
    options = ConfigOptions.parse(format="wg", allowed_ips="10.1.2.3/8, 192.168.0.0/16", dns="10.0.0.53")
    assert options.allowed_ips == ("10.0.0.0/8", "192.168.0.0/16") and options.dns == ("10.0.0.53",)
    for kwargs, field in (
        ({"format": "ini"}, "format"),
        ({"allowed_ips": "x"}, "allowed_ips"),
        ({"dns": "1.2"}, "dns"),
    ):
        with pytest.raises(Exception, match=rf"^{field}: "):
            ConfigOptions.parse(**kwargs)


def test_a_full_range_leaves_a_device_without_a_tunnel_until_one_is_deleted(
    lab: Lab, sealer: KeySealer, caplog: pytest.LogCaptureFixture
) -> None:
    ann, _ = lab.enroll(name="ann")
    bob, _ = lab.enroll(name="bob", serial="S-2")
    service = _service(lab, sealer, range(51820, 51821))
    with caplog.at_level(logging.WARNING):
        (tunnel,) = service.reconcile()  # enrolled at the same (fake) time: either one
    other = bob if tunnel.device_id == ann.id else ann
    assert f"device {other.id} has no tunnel: every port of 51820 is taken" in caplog.text
    with pytest.raises(Refused, match="widen --wireguard-ports"):
        service.tunnel(lab.account, other.id)
    lab.service.delete_device(lab.account, tunnel.device_id)
    assert service.tunnel(lab.account, other.id).port == 51820


def test_a_new_range_moves_tunnels_and_keeps_their_keys(lab: Lab, sealer: KeySealer) -> None:
    lab.enroll(name="ann")
    (before,) = _service(lab, sealer).reconcile()
    (after,) = _service(lab, sealer, range(40000, 40010)).reconcile()
    assert after.port == 40000 and after.client_public_key == before.client_public_key
    assert after.address == before.address


def test_off_and_unknown_devices_are_refused(lab: Lab, sealer: KeySealer) -> None:
    off = WireGuardService(lab.gateway.store, sealer, lab.gateway.clock, None)
    assert off.reconcile() == []
    with pytest.raises(WireGuardOff, match="--wireguard-ports"):
        off.tunnel(lab.account, "x")
    with pytest.raises(NotFound):
        _service(lab, sealer).tunnel(lab.account, "no-such-device")


def test_settings_refuse_an_empty_range() -> None:
    with pytest.raises(ValueError, match="range of UDP ports"):
        WireGuardSettings(listen_host="::", ports=range(5, 5), endpoint_host="h")
    assert re.fullmatch(r"\S+", generate_private_key())
