import logging

import pytest
from mitmproxy import exceptions
from mitmproxy.connection import Client, Server
from mitmproxy.proxy.server_hooks import ServerConnectionHookData
from mitmproxy.test import taddons, tflow

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


def _only(tmp_path) -> tuple[LabHosts, taddons.context]:
    hosts = tmp_path / "lab.hosts"
    hosts.write_text(HOSTS)
    addon = LabHosts()
    tctx = taddons.context(addon)
    tctx.configure(addon, gateway_hosts=str(hosts), gateway_hosts_only=True)
    return addon, tctx


def test_hosts_only_refuses_a_connect_to_another_name_with_a_502_page(tmp_path, caplog) -> None:
    addon, tctx = _only(tmp_path)
    with tctx:
        flow = tflow.tflow()
        flow.request.method, flow.request.host, flow.request.port = "CONNECT", "clients2.google.com", 443
        flow.request.headers["accept"] = "text/html"
        caplog.set_level(logging.INFO, logger="addons.hosts")
        addon.http_connect(flow)
    assert flow.response is not None and flow.response.status_code == 502
    assert "clients2.google.com" in flow.response.text and "hosts file" in flow.response.text
    assert "lab hosts only: clients2.google.com:443" in caplog.text and "refused" in caplog.text


@pytest.mark.parametrize("host", ["origin.test", "a.bench.test", "127.0.0.2", "::1"])
def test_hosts_only_lets_lab_names_and_their_addresses_through(tmp_path, host: str) -> None:
    addon, tctx = _only(tmp_path)
    with tctx:
        flow = tflow.tflow()
        flow.request.method, flow.request.host = "CONNECT", host
        addon.http_connect(flow)
        plain = tflow.tflow()
        plain.request.host = host
        addon.requestheaders(plain)
    assert flow.response is None and plain.response is None


def test_hosts_only_refuses_a_plain_http_request_as_text(tmp_path) -> None:
    addon, tctx = _only(tmp_path)
    with tctx:
        flow = tflow.tflow()
        flow.request.host = "detectportal.example"
        addon.requestheaders(flow)
    assert flow.response is not None and flow.response.status_code == 502
    assert flow.response.text.startswith("Not a lab name\n")


def test_hosts_only_refuses_any_other_connection_before_it_is_made(tmp_path) -> None:
    addon, tctx = _only(tmp_path)
    with tctx:
        client = Client(peername=("127.0.0.1", 5000), sockname=("127.0.0.1", 8080), timestamp_start=0)
        server = Server(address=("8.8.8.8", 443))
        addon.server_connect(ServerConnectionHookData(server=server, client=client))
        assert server.error and "not a lab name" in server.error
        assert _connect(addon, "origin.test") == ("127.0.0.1", 443)


def test_without_hosts_only_other_names_pass_untouched(tmp_path) -> None:
    hosts = tmp_path / "lab.hosts"
    hosts.write_text(HOSTS)
    addon = LabHosts()
    with taddons.context(addon) as tctx:
        tctx.configure(addon, gateway_hosts=str(hosts))
        flow = tflow.tflow()
        flow.request.method, flow.request.host = "CONNECT", "example.org"
        addon.http_connect(flow)
        assert flow.response is None


def test_hosts_only_without_a_hosts_file_is_an_options_error() -> None:
    addon = LabHosts()
    with taddons.context(addon) as tctx:
        with pytest.raises(exceptions.OptionsError, match="gateway_hosts_only needs a gateway_hosts file"):
            tctx.configure(addon, gateway_hosts_only=True)
