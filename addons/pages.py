"""Pages the gateway answers with instead of the origin: block pages and upstream error pages.

HTML for browsers (``Accept: text/html``), plain text for everything else, both naming the rule,
the reason, the host and the time, so that a user can tell an administrator what happened.
The configuration's ``block_page`` settings (name, header and footer text, background colour)
dress the HTML page.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from mitmproxy import http

_COLOUR = re.compile(r"#[0-9a-fA-F]{3,8}|[a-zA-Z]{3,20}")


@dataclass(frozen=True)
class BlockPage:
    """The ``settings.block_page`` of the gateway configuration that we apply."""

    name: str = "Gateway"
    header_text: str = "This page was blocked"
    footer_text: str = ""
    background_color: str = "#ffffff"
    mailto_address: str = ""

    @classmethod
    def from_settings(cls, settings: Mapping[str, object] | None) -> BlockPage:
        settings = settings or {}
        default = cls()

        def text(key: str, fallback: str) -> str:
            value = settings.get(key)
            return value if isinstance(value, str) and value.strip() else fallback

        colour = text("background_color", default.background_color)
        return cls(
            name=text("name", default.name),
            header_text=text("header_text", default.header_text),
            footer_text=text("footer_text", default.footer_text),
            background_color=colour if _COLOUR.fullmatch(colour) else default.background_color,
            mailto_address=text("mailto_address", ""),
        )


@dataclass(frozen=True)
class PageFacts:
    """What a page tells the user."""

    title: str
    detail: str
    host: str
    rule_name: str = ""
    rule_id: str = ""


def render(
    flow: http.HTTPFlow, status: int, facts: PageFacts, page: BlockPage, *, now: datetime | None = None
) -> http.Response:
    when = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    headers = {"cache-control": "no-store", "x-gateway-page": facts.title}
    if facts.rule_id:
        headers["x-gateway-rule"] = facts.rule_id
    if "text/html" in flow.request.headers.get("accept", ""):
        body = _html(facts, page, when)
        headers["content-type"] = "text/html; charset=utf-8"
    else:
        lines = [facts.title, facts.detail, f"host: {facts.host}"]
        if facts.rule_name or facts.rule_id:
            lines.append(f"rule: {facts.rule_name} ({facts.rule_id})".replace(" ()", ""))
        lines.append(f"time: {when}")
        body = "\n".join(lines) + "\n"
        headers["content-type"] = "text/plain; charset=utf-8"
    return http.Response.make(status, body.encode(), headers)


def _html(facts: PageFacts, page: BlockPage, when: str) -> str:
    e = html.escape
    rule = ""
    if facts.rule_name or facts.rule_id:
        rule = f"<tr><th>Rule</th><td>{e(facts.rule_name)} <code>{e(facts.rule_id)}</code></td></tr>"
    contact = ""
    if page.mailto_address:
        contact = f'<p>Questions? <a href="mailto:{e(page.mailto_address)}">{e(page.mailto_address)}</a></p>'
    footer = f"<footer>{e(page.footer_text)}</footer>" if page.footer_text else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{e(facts.title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font-family:system-ui,sans-serif;background:{page.background_color};color:#222;margin:0}}
main{{max-width:42rem;margin:4rem auto;padding:2rem;background:#fff;border-radius:8px;box-shadow:0 1px 4px #0003}}
h1{{font-size:1.5rem;margin-top:0}}h2{{font-size:1.1rem;color:#b00020}}th{{text-align:left;padding-right:1rem}}
code{{background:#f4f4f4;padding:.1rem .3rem}}footer{{margin-top:2rem;color:#666;font-size:.9rem}}</style></head>
<body><main><h1>{e(page.header_text)}</h1><h2>{e(facts.title)}</h2><p>{e(facts.detail)}</p>
<table><tr><th>Host</th><td><code>{e(facts.host)}</code></td></tr>{rule}
<tr><th>Time</th><td><code>{when}</code></td></tr></table>{contact}{footer}
<p><small>{e(page.name)}</small></p></main></body></html>
"""
