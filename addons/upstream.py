"""Upstream failures: a clear error page naming the reason, instead of a bare 502.

With mitmproxy's ``eager`` connection strategy the upstream TLS handshake (and its certificate
verification) happens before the client's; when it fails, the client handshake still completes
and each request on that connection arrives here with ``server_conn.error`` set. We answer it
ourselves, so the origin is never contacted and the user learns why.
"""

from __future__ import annotations

import html
import logging
from datetime import UTC, datetime

from mitmproxy import http

logger = logging.getLogger(__name__)

UNTRUSTED_STATUS = 502


class UpstreamErrors:
    def request(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None or not flow.live:
            return
        error = flow.server_conn.error
        if not error:
            return
        host = flow.request.pretty_host
        if error.startswith("Certificate verify failed"):
            title = "The origin's certificate is not trusted"
            reason = error.removeprefix("Certificate verify failed:").strip() or error
            detail = f"Gateway could not verify the TLS certificate of {host}: {reason}."
        else:
            title = "The origin could not be reached"
            detail = f"Gateway could not connect to {host}: {error}."
        logger.info("upstream error for %s (flow %s): %s", host, flow.id, error)
        flow.response = error_response(flow, UNTRUSTED_STATUS, title, detail)
        flow.metadata["gateway.upstream_error"] = error


def error_response(flow: http.HTTPFlow, status: int, title: str, detail: str) -> http.Response:
    """An HTML page for browsers, plain text for everything else."""
    when = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    accept = flow.request.headers.get("accept", "")
    headers = {"cache-control": "no-store", "x-gateway-error": title}
    if "text/html" in accept:
        body = _PAGE.format(
            title=html.escape(title), detail=html.escape(detail), host=html.escape(flow.request.pretty_host), when=when
        )
        headers["content-type"] = "text/html; charset=utf-8"
    else:
        body = f"{title}\n{detail}\nhost: {flow.request.pretty_host}\ntime: {when}\n"
        headers["content-type"] = "text/plain; charset=utf-8"
    return http.Response.make(status, body.encode(), headers)


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:40rem;margin:4rem auto;color:#222}}
h1{{font-size:1.4rem;color:#b00020}}code{{background:#f4f4f4;padding:.1rem .3rem}}</style></head>
<body><h1>{title}</h1><p>{detail}</p>
<p>Host: <code>{host}</code><br>Time: <code>{when}</code></p>
<p><small>Gateway</small></p></body></html>
"""
