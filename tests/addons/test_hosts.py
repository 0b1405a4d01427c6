import pytest
from mitmproxy import exceptions
from mitmproxy.connection import Client, Server
from mitmproxy.proxy.server_hooks import ServerConnectionHookData
from mitmproxy.test import taddons

from addons.hosts import HostsMap, LabHosts

HOSTS = """
# lab names
127.0.0.1   origin.test  www.example.com
127.0.0.2   *.bench.test
127.0.0.3   *.deep.bench.test   # longer suffix wins
::1         v6.test
"""


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("origin.test", "127.0.0.1"),
        ("WWW.Example.COM.", "127.0.0.1"),
        ("h1.bench.test", "127.0.0.2"),
        ("x.deep.bench.test", "127.0.0.3"),
        ("bench.test", None),
        ("v6.test", "::1"),
        ("elsewhere.test", None),
    ],
)
def test_resolve_exact_and_wildcard(name: str, expected: str | None) -> None:
    assert HostsMap.parse(HOSTS).resolve(name) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not-an-ip origin.test", r"lab\.hosts:1: 'not-an-ip' is not an IP address"),
        ("\n127.0.0.1", r"lab\.hosts:2: no host name after 127\.0\.0\.1"),
    ],
)
def test_parse_errors_name_file_and_line(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        HostsMap.parse(text, source="lab.hosts")


def _connect(addon: LabHosts, host: str) -> tuple[str, int]:
    client = Client(peername=("127.0.0.1", 5000), sockname=("127.0.0.1", 8080), timestamp_start=0)
    server = Server(address=(host, 443))
    addon.server_connect(ServerConnectionHookData(server=server, client=client))
    assert server.address is not None
    return server.address


def test_server_connect_rewrites_only_known_names(tmp_path) -> None:
    hosts = tmp_path / "lab.hosts"
    hosts.write_text(HOSTS)
    addon = LabHosts()
    with taddons.context(addon) as tctx:
        tctx.configure(addon, gateway_hosts=str(hosts))
        assert _connect(addon, "a.bench.test") == ("127.0.0.2", 443)
        assert _connect(addon, "example.org") == ("example.org", 443)


def test_bad_hosts_file_is_an_options_error(tmp_path) -> None:
    addon = LabHosts()
    with taddons.context(addon) as tctx:
        with pytest.raises(exceptions.OptionsError, match="cannot use hosts file"):
            tctx.configure(addon, gateway_hosts=str(tmp_path / "missing"))
