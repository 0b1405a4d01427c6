"""``GET /proxy.pac``: public, unauthenticated, the proxy auto-config file for browsers.

It names the gateway's explicit proxy for everything but loopback, private ranges, the admin host
and the configuration's ``pac_file.exclude`` (``policies/pac.py`` writes the file). The proxy is
named as clients reach it: the listen address, or the public URL's host when the proxy listens on
every interface. The query string is never read: ``/proxy.pac?anything`` is the same file.
"""

from __future__ import annotations

import ipaddress
import logging
from urllib.parse import urlsplit

from aiohttp import web

from policies.pac import CONTENT_TYPE, Exclusion, PacError, PacFile
from proxy.api.state import ApiDeps, deps_of
from proxy.services import settings as gw_settings

logger = logging.getLogger(__name__)

DEFAULT_PROXY_PORT = 8080  # `gateway run --proxy-listen`'s default port


async def proxy_pac(request: web.Request) -> web.Response:
    deps = deps_of(request)
    admin_host = urlsplit(deps.public_base_url).hostname or ""
    pac = PacFile(proxy_address(deps), _exclusions(deps), direct_hosts=(admin_host,))
    headers = {"Cache-Control": "no-cache", "Content-Disposition": 'inline; filename="proxy.pac"'}
    return web.Response(text=pac.render(), content_type=CONTENT_TYPE, headers=headers)


def proxy_address(deps: ApiDeps) -> str:
    """``HOST:PORT`` of the explicit proxy as clients reach it."""
    public_host = urlsplit(deps.public_base_url).hostname or "127.0.0.1"
    host, _, port = deps.proxy_listen.rpartition(":")
    host = host.strip("[]")
    if not port.isdigit():
        host, port = public_host, str(DEFAULT_PROXY_PORT)
    elif not host or _unspecified(host):  # every interface: the name clients use for this machine
        host = public_host
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _unspecified(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def _exclusions(deps: ApiDeps) -> tuple[Exclusion, ...]:
    """The first account's ``pac_file.exclude`` (the embedded default has exactly one account);
    an entry that no longer passes the check is left out, with a log line, never a 500."""
    accounts = deps.store.accounts.list()
    if not accounts:
        return ()
    stored = deps.certificates.configuration(accounts[0].id).settings
    found = []
    for entry in gw_settings.pac_exclusions(stored):
        try:
            found.append(PacFile.exclusion(entry))
        except PacError as e:
            logger.warning("proxy.pac: configured exclusion left out: %s", e)
    return tuple(found)
