"""The block page in a real browser: headless Chromium, trusting the gateway's CA through its NSS
database, loads a URL a `--policies` rule blocks; the page shows the configuration's block_page
settings (set through the SDK), the rule and the reason, and the screenshot shows the colour."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from . import chromium, curl, png, sdk
from .gateway_process import GatewayProcess
from .origin import body_for
from .policy_lab import BLOCK_REASON, BLOCK_RULE, BLOCKED, PolicyLab

pytestmark = pytest.mark.e2e

CaFile = Callable[[GatewayProcess], Path]
DEFAULT_HEADER = "This page was blocked"
BACKGROUND = "#ff8800"


def test_block_page_in_chromium_shows_rule_reason_and_settings(
    policy_lab: PolicyLab, ca_file: CaFile, tmp_path: Path
) -> None:
    gw = policy_lab.gateway
    ca = ca_file(gw)
    header = f"E2E stop here {uuid.uuid4().hex[:8]}"
    footer = "Questions? Ask the e2e help desk."
    shot = tmp_path / "block-page.png"
    home = chromium.make_home(tmp_path / "home", ca)
    with sdk.client(gw) as c:
        account = sdk.account_id(c)
        c.zero_trust.gateway.configurations.edit(
            account_id=account,
            settings={
                "block_page": {
                    "enabled": True,
                    "name": "E2E Gateway",
                    "header_text": header,
                    "footer_text": footer,
                    "background_color": BACKGROUND,
                }
            },
        )
        try:
            page = chromium.load(
                policy_lab.url(BLOCKED, "/from-the-browser"),
                proxy_port=gw.proxy_port,
                home=home,
                screenshot=shot,
            )
        finally:
            c.zero_trust.gateway.configurations.edit(account_id=account, settings={"block_page": None})

    context = f"DOM: {page.dom[:1500]!r}\nnet errors: {page.net_errors}\nstderr: {page.stderr[-800:]}"
    assert not {e for e in page.net_errors if e.startswith("ERR_CERT")}, context
    assert f"<h1>{header}</h1>" in page.dom, context
    for text in (BLOCK_RULE.name, BLOCK_RULE.id, BLOCK_REASON, BLOCKED, footer, "E2E Gateway"):
        assert text in page.dom, (text, context)
    assert body_for(BLOCKED) not in page.dom, context

    data = shot.read_bytes()
    assert data.startswith(png.SIGNATURE) and len(data) > 1000, data[:16]
    image = png.read(data)
    assert (image.width, image.height) == (800, 600)
    # The page's background, outside the centred white box, is the configured colour.
    assert image.pixel(2, 2) == (0xFF, 0x88, 0x00), image.pixel(2, 2)
    assert image.pixel(image.width - 3, image.height - 3) == (0xFF, 0x88, 0x00)

    # Settings put back: the next block page has the default header again.
    again = curl.via_proxy(
        gw.proxy_port, policy_lab.url(BLOCKED), cacert=ca, args=("-H", "Accept: text/html")
    )
    assert again.status == 403
    assert f"<h1>{DEFAULT_HEADER}</h1>" in again.body and header not in again.body, again.body
