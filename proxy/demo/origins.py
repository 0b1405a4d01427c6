"""The demo sites: one HTTPS listener on loopback, a certificate per name chosen by SNI, and a
page per site saying what the trainer should see in the browser at that address."""

from __future__ import annotations

import html
import logging
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from certs.issuer import Leaf
from proxy.demo.layout import LOOPBACK
from proxy.demo.pki import write_leaf

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Site:
    host: str
    title: str
    expect: str  # what the trainer should see at this address
    origin_says: str  # what this page, if it shows, proves


SITES: tuple[Site, ...] = (
    Site(
        "www.demo.test",
        "Allowed",
        "This page. The gateway inspected it: the certificate your browser shows was issued by the "
        "gateway's own CA, not by the demo origins' CA.",
        "No rule blocked www.demo.test, so the gateway let the request through.",
    ),
    Site(
        "blocked.demo.test",
        "Blocked by a Gateway HTTP rule",
        "Not this page: the gateway's block page, naming the rule 'Block blocked.demo.test'.",
        "If you can read this, the block rule did not apply: check the policies the gateway loaded.",
    ),
    Site(
        "secure.demo.test",
        "Access granted: the device passed its posture check",
        "This page while the demo laptop's client certificate is in its NSS database. After "
        "`gateway demo posture fail`: the gateway's 'Access denied' page instead; after "
        "`gateway demo posture pass`: this page again.",
        "The Access application 'Secure demo app' let you in: the agent proved it holds the "
        "client certificate issued by the Gateway Demo Device CA.",
    ),
    Site(
        "bank.demo.test",
        "Not inspected (Do Not Inspect)",
        "This page, with the bank's own certificate: issued by 'Gateway Demo Origins CA', not by the "
        "gateway's CA. The gateway passed the TLS connection through without decrypting it.",
        "The gateway did not decrypt this connection: a Do Not Inspect rule matched its SNI.",
    ),
)
SITE_NAMES: tuple[str, ...] = tuple(site.host for site in SITES)


def page(site: Site) -> str:
    e = html.escape
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{e(site.host)}: {e(site.title)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:3rem auto;max-width:40rem;color:#222}}
h1{{font-size:1.6rem}}.expect{{background:#eef6ee;padding:1rem;border-radius:6px}}</style></head>
<body><h1>{e(site.host)}: {e(site.title)}</h1>
<p>{e(site.origin_says)}</p>
<p class="expect"><b>What the trainer should see here:</b> {e(site.expect)}</p>
<p><small>Served by the demo origin behind the Gateway demo lab.</small></p></body></html>
"""


def tls_context(certificates: Mapping[str, tuple[Path, Path]]) -> ssl.SSLContext:
    """One context per name, picked by the client's SNI (the first name's without one)."""
    contexts = {}
    for name, (cert, key) in certificates.items():
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        contexts[name] = context
    default = next(iter(contexts.values()))

    def pick(sock: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext) -> None:
        chosen = contexts.get((server_name or "").lower())
        if chosen is not None:
            sock.context = chosen

    default.sni_callback = pick
    return default


def app() -> web.Application:
    by_host = {site.host: site for site in SITES}

    async def handle(request: web.Request) -> web.Response:
        host = (request.host or "").rsplit(":", 1)[0].lower()
        site = by_host.get(host)
        if site is None:
            return web.Response(status=404, text=f"no demo site {host!r}\n")
        return web.Response(text=page(site), content_type="text/html")

    application = web.Application()
    application.router.add_route("*", "/{tail:.*}", handle)
    return application


class Origins:
    """The demo sites listening on ``127.0.0.1:port`` until :meth:`stop`."""

    def __init__(self, runner: web.AppRunner) -> None:
        self._runner = runner

    @classmethod
    async def start(cls, leaves: Mapping[str, Leaf], directory: Path, port: int) -> Origins:
        files = {name: write_leaf(leaf, directory, name) for name, leaf in leaves.items()}
        runner = web.AppRunner(app(), handle_signals=False, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, LOOPBACK, port, ssl_context=tls_context(files)).start()
        except BaseException:
            await runner.cleanup()
            raise
        logger.info("demo origins: %s on %s:%d", ", ".join(leaves), LOOPBACK, port)
        return cls(runner)

    async def stop(self) -> None:
        await self._runner.cleanup()
