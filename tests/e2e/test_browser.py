"""A real browser (headless Debian Chromium) through the proxy: loads the page when the gateway's CA
is in its NSS database, refuses it with ERR_CERT_AUTHORITY_INVALID when it is not."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from . import chromium
from .gateway_process import GatewayProcess
from .origin import Origin, body_for

pytestmark = pytest.mark.e2e

CaFile = Callable[[GatewayProcess], Path]


def test_chromium_trusting_gateway_ca_loads_page(
    shared_gateway: GatewayProcess, origin: Origin, ca_file: CaFile, tmp_path: Path
) -> None:
    home = chromium.make_home(tmp_path / "home", ca_file(shared_gateway))
    page = chromium.load(origin.url("origin.test"), proxy_port=shared_gateway.proxy_port, home=home)
    assert body_for("origin.test") in page.dom, (
        f"DOM: {page.dom[:500]!r}\nnet errors: {page.net_errors}\nstderr: {page.stderr[-1500:]}"
    )
    assert "ERR_CERT_AUTHORITY_INVALID" not in page.net_errors


def test_chromium_without_gateway_ca_refuses(
    shared_gateway: GatewayProcess, origin: Origin, tmp_path: Path
) -> None:
    home = chromium.make_home(tmp_path / "home", None)
    page = chromium.load(origin.url("origin.test"), proxy_port=shared_gateway.proxy_port, home=home)
    assert body_for("origin.test") not in page.dom
    assert "ERR_CERT_AUTHORITY_INVALID" in page.net_errors, (
        f"net errors: {page.net_errors}\nDOM: {page.dom[:300]!r}\nstderr: {page.stderr[-1500:]}"
    )
