"""The dashboard's routes: ``/`` (the page) and ``/dashboard/{app.js,style.css}``, all public; the
data they show comes from the admin API with the bearer token the user types in.

Every dashboard answer carries a strict Content-Security-Policy (scripts from this origin only,
no inline script or style, no framing, API calls to this origin only), ``X-Frame-Options: DENY``,
``Referrer-Policy: no-referrer`` and ``X-Content-Type-Options: nosniff``. The files are read once
when the app is made."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

logger = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "form-action 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cache-Control": "no-cache",
}


@dataclass(frozen=True)
class StaticFile:
    """One file of the dashboard, served from memory with the security headers."""

    body: bytes
    content_type: str

    @classmethod
    def load(cls, name: str, content_type: str) -> StaticFile:
        return cls((STATIC / name).read_bytes(), content_type)

    async def serve(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self.body,
            headers={**SECURITY_HEADERS, "Content-Type": f"{self.content_type}; charset=utf-8"},
        )


# path -> (file in static/, content type)
FILES = {
    "/": ("index.html", "text/html"),
    "/dashboard/app.js": ("app.js", "text/javascript"),
    "/dashboard/style.css": ("style.css", "text/css"),
    "/dashboard/icon.svg": ("icon.svg", "image/svg+xml"),
}


def setup_dashboard(app: web.Application) -> None:
    for path, (name, content_type) in FILES.items():
        app.router.add_get(path, StaticFile.load(name, content_type).serve)
