"""A request's host and URL as mitmproxy's ``pretty_host`` and ``pretty_url`` give them, and the
IP addresses of connections, parsed once per distinct value instead of at every request.

mitmproxy parses the Host header again at each ``pretty_host`` and each ``pretty_url`` (its
``url.parse_authority``, which also checks the host name: ~4 µs per call here), and the policy
facts of a request need both, the request log the host again. A keep-alive client sends the same
Host header on every request, and a connection's addresses do not change. Both parses are pure
functions of a string, so their results are kept in bounded LRU caches: the Host header is the
client's to choose, so at most ``CACHE_SIZE`` distinct values are kept of each, and a Host header
longer than any host name and port (``CACHEABLE_LENGTH``) is parsed without being kept.

The values are mitmproxy's own, by construction (its parser, its ``unparse``) and by test
(``tests/addons/test_request_names.py`` compares them with ``pretty_host``/``pretty_url``).
"""

from __future__ import annotations

import functools
import ipaddress
from typing import Final

from mitmproxy import http
from mitmproxy.net.http import url

from policies.facts import IPAddress

__all__ = ["CACHEABLE_LENGTH", "CACHE_SIZE", "ip", "pretty_host", "pretty_host_and_url"]

CACHE_SIZE: Final = 4096
CACHEABLE_LENGTH: Final = 270  # a DNS name is at most 253 characters; brackets, colon and port fit too


def _authority(authority: str) -> tuple[str, int | None]:
    if len(authority) > CACHEABLE_LENGTH:
        return url.parse_authority(authority, check=False)
    return _cached_authority(authority)


@functools.lru_cache(maxsize=CACHE_SIZE)
def _cached_authority(authority: str) -> tuple[str, int | None]:
    return url.parse_authority(authority, check=False)


@functools.lru_cache(maxsize=CACHE_SIZE)
def ip(text: str) -> IPAddress:
    """``ipaddress.ip_address(text)``, memoised (the objects are immutable). Raises
    ``ValueError`` for what is not an address, as ``ip_address`` does (not memoised)."""
    return ipaddress.ip_address(text)


def pretty_host(request: http.Request) -> str:
    """``request.pretty_host``."""
    authority = request.host_header
    if authority:
        return _authority(authority)[0]
    return request.host


def pretty_host_and_url(request: http.Request) -> tuple[str, str]:
    """``(request.pretty_host, request.pretty_url)``, from one look at the Host header."""
    if request.first_line_format == "authority":  # CONNECT host:port: no path to add
        return request.pretty_host, request.pretty_url
    authority = request.host_header
    if not authority:
        return request.host, request.url
    host, port = _authority(authority)
    scheme = request.scheme
    path = request.path
    return host, url.unparse(
        scheme, host, port or url.default_port(scheme) or 443, "" if path == "*" else path
    )
