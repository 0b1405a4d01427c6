import ipaddress

import pytest
from mitmproxy import http
from mitmproxy.test import tutils

from addons import request_names
from addons.request_names import ip, pretty_host, pretty_host_and_url


def _request(
    *,
    host: str = "origin.test",
    port: int = 443,
    scheme: bytes = b"https",
    path: bytes = b"/",
    authority: bytes = b"",
    method: bytes = b"GET",
    http_version: bytes = b"HTTP/1.1",
    host_header: str | None = None,
) -> http.Request:
    request = tutils.treq(
        host=host,
        port=port,
        scheme=scheme,
        path=path,
        authority=authority,
        method=method,
        http_version=http_version,
    )
    request.headers.pop("host", None)
    if host_header is not None:
        request.headers["Host"] = host_header
    return request


REQUESTS = {
    "origin form, Host header": _request(host_header="origin.test", path=b"/a?b=c"),
    "Host header with a port": _request(host_header="origin.test:8443", path=b"/x"),
    "Host header with the default port": _request(host_header="origin.test:443"),
    "Host header differs from the address (transparent mode)": _request(
        host="10.0.0.7", host_header="named.test", path=b"/p"
    ),
    "upper case and a trailing dot": _request(host_header="Origin.TEST.", path=b"/"),
    "IPv6 literal with a port": _request(host="::1", port=8080, host_header="[::1]:8080", path=b"/v6"),
    "IPv4 literal": _request(host="127.0.0.1", port=80, scheme=b"http", host_header="127.0.0.1"),
    "plain http on another port": _request(scheme=b"http", port=8080, host_header="origin.test:8080"),
    "no Host header": _request(host="nohost.test", port=8443, path=b"/q?x=1"),
    "an invalid Host header": _request(host_header="not a host!", path=b"/"),
    "an empty Host header": _request(host="fallback.test", host_header=""),
    "asterisk path (OPTIONS *)": _request(method=b"OPTIONS", path=b"*", host_header="origin.test"),
    "absolute form through a proxy": _request(
        scheme=b"http", port=80, host="abs.test", host_header="abs.test", path=b"/abs"
    ),
    "HTTP/2 with an authority": _request(
        http_version=b"HTTP/2.0", authority=b"h2.test:443", host="h2.test", path=b"/h2"
    ),
    "HTTP/2 without an authority": _request(
        http_version=b"HTTP/2.0", host="h2b.test", host_header="h2b.test"
    ),
    "CONNECT (authority form)": _request(
        method=b"CONNECT", host="tunnel.test", port=443, scheme=b"", path=b"", authority=b"tunnel.test:443"
    ),
}


@pytest.mark.parametrize("name", list(REQUESTS))
def test_host_and_url_are_mitmproxys_own(name: str) -> None:
    request = REQUESTS[name]
    for _ in range(2):  # the second time from the cache
        assert pretty_host(request) == request.pretty_host
        assert pretty_host_and_url(request) == (request.pretty_host, request.pretty_url)


def test_a_changed_host_header_is_read_again() -> None:
    request = _request(host_header="first.test")
    assert pretty_host_and_url(request) == ("first.test", "https://first.test/")
    request.headers["Host"] = "second.test:8443"
    assert pretty_host_and_url(request) == ("second.test", "https://second.test:8443/")
    assert pretty_host(request) == "second.test"


def test_the_cache_of_host_headers_is_bounded_in_count_and_size() -> None:
    cache = request_names._cached_authority
    for i in range(request_names.CACHE_SIZE + 50):
        pretty_host(_request(host_header=f"h{i}.bound.test"))
    assert cache.cache_info().currsize == request_names.CACHE_SIZE
    cache.cache_clear()
    long = _request(host_header="a" * 5000 + ".test:8443", path=b"/long")
    assert pretty_host_and_url(long) == (long.pretty_host, long.pretty_url)
    assert cache.cache_info().currsize == 0  # parsed, not kept
    longest = "a" * 63 + "." + "b" * 63 + "." + "c" * 63 + "." + "d" * 61 + ":65535"  # 253 + port
    assert len(longest) <= request_names.CACHEABLE_LENGTH
    assert pretty_host(_request(host_header=longest)) == longest.rpartition(":")[0]
    assert cache.cache_info().currsize == 1


def test_ip_is_ipaddress_ip_address() -> None:
    for text in ("127.0.0.1", "::1", "fe80::1%eth0", "10.0.0.255"):
        assert ip(text) == ipaddress.ip_address(text)
        assert type(ip(text)) is type(ipaddress.ip_address(text))
    for bad in ("example.test", "", "300.1.1.1"):
        with pytest.raises(ValueError):
            ip(bad)
