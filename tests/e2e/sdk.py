"""Driving the running gateway with the official Cloudflare SDK (as SPEC §7 promises)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from cloudflare import Cloudflare

from tests.support.wait import poll

from .gateway_process import GatewayProcess

STATUS_TIMEOUT = 15.0


@contextmanager
def client(gw: GatewayProcess) -> Iterator[Cloudflare]:
    assert gw.token, "this gateway has no known admin token"
    with Cloudflare(
        base_url=gw.api_base,
        api_token=gw.token,
        max_retries=0,
        timeout=15,
        http_client=httpx.Client(trust_env=False),
    ) as c:
        yield c


def account_id(c: Cloudflare) -> str:
    """The single account, walking the SDK's auto-pagination (bounded: a server that ignores
    `page` would otherwise loop forever)."""
    accounts = list(itertools.islice(c.accounts.list(), 20))
    assert len(accounts) == 1, f"expected the one embedded account, got {len(accounts)}: {accounts[:3]}"
    assert accounts[0].id
    return accounts[0].id


def certificates(c: Cloudflare, account: str) -> dict[str, Any]:
    """Gateway certificates by id."""
    return {str(cert.id): cert for cert in c.zero_trust.gateway.certificates.list(account_id=account)}


def wait_binding_status(
    c: Cloudflare, account: str, cert_id: str, status: str, *, timeout: float = STATUS_TIMEOUT
) -> Any:
    """Poll `get` until binding_status == status (activation and deactivation go through
    pending_* while the node loads or unloads the CA)."""
    seen: list[str | None] = []

    def fetch() -> Any:
        cert = c.zero_trust.gateway.certificates.get(cert_id, account_id=account)
        assert cert is not None
        if not seen or seen[-1] != cert.binding_status:
            seen.append(cert.binding_status)
        return cert

    cert = poll(fetch, lambda cert: cert.binding_status == status, timeout, interval=0.1)
    assert cert.binding_status == status, (
        f"certificate {cert_id} never became {status!r} in {timeout} s; saw {seen}"
    )
    return cert


def generate_available(c: Cloudflare, account: str, *, days: int = 1825) -> Any:
    """Generate a CA, activate it and wait until it is available (not turned on)."""
    created = c.zero_trust.gateway.certificates.create(account_id=account, validity_period_days=days)
    assert created is not None and created.id
    assert created.binding_status == "inactive", created.binding_status
    assert created.in_use is False
    c.zero_trust.gateway.certificates.activate(created.id, account_id=account)
    return wait_binding_status(c, account, created.id, "available")


def turn_on(c: Cloudflare, account: str, cert_id: str) -> None:
    c.zero_trust.gateway.configurations.edit(account_id=account, settings={"certificate": {"id": cert_id}})
