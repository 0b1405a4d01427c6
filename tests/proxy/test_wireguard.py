"""proxy/wireguard.py: device listeners as mitmproxy modes, their conf files, gateway run's options."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import pytest
from mitmproxy.proxy.mode_specs import ProxyMode

from certs.sealing import KeySealer
from proxy.config import Config, ConfigError
from proxy.services.wireguard import WireGuardService, WireGuardSettings
from proxy.wireguard import WireGuardModes, tune_mitmproxy_logs, with_device_tunnels
from tests.support.devices import Lab

SETTINGS = WireGuardSettings(listen_host="10.9.0.1", ports=range(51820, 51830), endpoint_host="10.9.0.1")


class Pushed:
    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    async def __call__(self, specs: Sequence[str]) -> object:
        self.calls.append(tuple(specs))
        return None


async def test_a_mode_and_a_0600_conf_per_device_added_and_removed(
    lab: Lab, sealer: KeySealer, tmp_path: Path
) -> None:
    service = WireGuardService(lab.gateway.store, sealer, lab.gateway.clock, SETTINGS)
    pushed = Pushed()
    modes = WireGuardModes(service, tmp_path / "wireguard", pushed)
    assert await modes.sync() == ()
    ann, _ = lab.enroll(name="ann")
    (spec,) = await modes.sync()
    conf = tmp_path / "wireguard" / f"{ann.id}.conf"
    assert spec == f"wireguard:{conf}@10.9.0.1:51820"
    assert conf.stat().st_mode & 0o777 == 0o600 and (tmp_path / "wireguard").stat().st_mode & 0o777 == 0o700
    (tunnel,) = service.reconcile()
    assert json.loads(conf.read_text()) == {
        "server_key": service.listener_keys(tunnel).server_key,
        "client_key": service.listener_keys(tunnel).client_key,
    }
    found = modes.tunnel(ProxyMode.parse(spec))
    assert found is not None and found.device_id == ann.id and found.address == "100.96.0.2"
    await modes.sync()
    assert pushed.calls == [(), (spec,)], "nothing changed: nothing pushed"
    lab.service.delete_device(lab.account, ann.id)
    assert await modes.sync() == ()
    assert not conf.exists() and modes.tunnel(ProxyMode.parse(spec)) is None


async def test_changes_are_synced_and_conf_files_go_at_close(
    lab: Lab, sealer: KeySealer, tmp_path: Path
) -> None:
    service = WireGuardService(lab.gateway.store, sealer, lab.gateway.clock, SETTINGS)
    pushed = Pushed()
    modes = WireGuardModes(service, tmp_path / "wireguard", pushed)
    lab.service.subscribe(modes.changed)
    lab.enroll(name="ann")
    lab.enroll(name="bob", serial="S-2")  # one sync under way, one more after it
    await modes.aclose()
    assert pushed.calls[-1] == modes.specs and len(modes.specs) == 2
    assert list((tmp_path / "wireguard").iterdir()) == []


def test_mitmproxys_log_of_a_listener_hides_the_private_key(caplog: pytest.LogCaptureFixture) -> None:
    tune_mitmproxy_logs()
    with caplog.at_level(logging.INFO):
        logging.getLogger("mitmproxy.proxy.mode_servers").info(
            "[Interface]\nPrivateKey = c2VjcmV0\nAddress = x"
        )
    assert "c2VjcmV0" not in caplog.text and "PrivateKey = <hidden>" in caplog.text


@pytest.mark.parametrize(
    ("modes", "ports", "endpoint", "expected", "left"),
    [
        ((), "0.0.0.0:51820-51829", None, ("0.0.0.0", range(51820, 51830), "gw.example.com"), ()),
        ((), "51820-51821", None, ("127.0.0.1", range(51820, 51822), "127.0.0.1"), ()),
        (("wireguard@10.9.0.1:51820", "regular@127.0.0.1:8080"), None, None,
         ("10.9.0.1", range(51820, 51920), "10.9.0.1"), ("regular@127.0.0.1:8080",)),
        ((), "[::]:51820-51821", "vpn.example.com", ("::", range(51820, 51822), "vpn.example.com"), ()),
        (("wireguard:/etc/wg.conf@51820",), None, None, None, ("wireguard:/etc/wg.conf@51820",)),
    ],
)  # fmt: skip
def test_gateway_run_options(
    modes: tuple[str, ...], ports: str | None, endpoint: str | None, expected: tuple[object, ...] | None,
    left: tuple[str, ...],
) -> None:  # fmt: skip
    config = Config(modes=modes, public_url="https://gw.example.com:8081")
    done = with_device_tunnels(config, ports=ports, endpoint=endpoint)
    settings = done.wireguard
    assert (
        (settings.listen_host, settings.ports, settings.endpoint_host) == expected
        if settings
        else expected is None
    )
    assert done.modes == left


@pytest.mark.parametrize(
    ("modes", "ports", "endpoint", "message"),
    [
        (("wireguard@51820",), "51900-51910", None, "give the device tunnels' ports once"),
        ((), "51820-51819", None, "--wireguard-ports '51820-51819': ports must be 1-65535"),
        ((), None, "vpn.example.com", "--wireguard-endpoint: device tunnels are off"),
    ],
)
def test_gateway_run_options_refused(
    modes: tuple[str, ...], ports: str | None, endpoint: str | None, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        with_device_tunnels(Config(modes=modes), ports=ports, endpoint=endpoint)
