"""proxy/modes.py: the configured modes, dynamic ones pushed to a running mitmproxy."""

from __future__ import annotations

import socket

import pytest
from mitmproxy import options
from mitmproxy.addons import default_addons
from mitmproxy.master import Master

from proxy.config import ConfigError
from proxy.modes import ModeKind, Modes, listen_address, parse_mode


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("bogus@1", "--mode 'bogus@1': unknown mode; expected regular@HOST:PORT"),
        ("transparent@abc", "--mode 'transparent@abc': invalid port: abc"),
        ("socks5", "mode 'socks5' is not served by a gateway"),
        ("regular@70000", "invalid port: 70000"),
    ],
)
def test_a_bad_spec_is_one_line_naming_the_flag(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        parse_mode(spec)


def test_a_spec_without_host_listens_on_loopback() -> None:
    modes = Modes.from_specs(["regular@8080", "transparent@0.0.0.0:8443", "wireguard"])
    assert modes.specs() == [
        "regular@127.0.0.1:8080",
        "transparent@0.0.0.0:8443",
        "wireguard@127.0.0.1:51820",
    ]
    assert [m.type_name for m in modes.of_kind(ModeKind.TRANSPARENT)] == ["transparent"]
    assert listen_address(parse_mode("regular")) == ("127.0.0.1", 8080)


def test_two_modes_on_one_address_are_refused() -> None:
    with pytest.raises(ConfigError, match="127.0.0.1:8080/tcp is already 'regular@127.0.0.1:8080'"):
        Modes.from_specs(["regular@8080", "transparent@127.0.0.1:8080"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


async def test_dynamic_modes_start_and_stop_while_running() -> None:
    port, extra = _free_port(), _free_port()
    modes = Modes.from_specs([f"regular@{port}"])
    master = Master(options.Options(), with_termlog=False)
    master.addons.add(*default_addons())
    modes.attach(master)
    proxyserver = master.addons.get("proxyserver")
    await proxyserver.setup_servers()
    try:
        assert _listening(port)
        await modes.add("wg", f"regular@{extra}")
        assert modes.specs() == [f"regular@127.0.0.1:{port}", f"regular@127.0.0.1:{extra}"]
        assert _listening(extra)
        with pytest.raises(ConfigError, match="is already"):
            await modes.add("other", f"regular@127.0.0.1:{extra}")
        assert modes.dynamic("other") == ()
        await modes.remove("wg", f"regular@{extra}")
        assert not _listening(extra)
        assert master.options.mode == [f"regular@127.0.0.1:{port}"]
    finally:
        await proxyserver.servers.update([])
