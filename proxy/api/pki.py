"""Public, unauthenticated: health, the in-use CA, and the AIA / CRL URLs written into leaves."""

from __future__ import annotations

import logging

from aiohttp import web

from proxy.api import objects
from proxy.api.errors import not_found
from proxy.api.state import ACCOUNTS, CRLS, deps_of
from proxy.store import CertificateRecord

logger = logging.getLogger(__name__)

PEM = "application/x-pem-file"
DER = "application/pkix-cert"
CRL = "application/pkix-crl"


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def _in_use(request: web.Request) -> CertificateRecord:
    """The in-use CA of the default account (the one traffic from no known device gets), else
    of the first account that has one; a device's own account's CA: its agent installs it."""
    deps = deps_of(request)
    default = request.app[ACCOUNTS].default_account_id
    accounts = sorted(deps.store.accounts.list(), key=lambda a: a.id != default)
    for account in accounts:
        record = deps.certificates.in_use(account.id)
        if record is not None:
            return record
    raise not_found("no certificate is in use")


def _file(body: bytes, content_type: str, filename: str, *, max_age: int) -> web.Response:
    headers = {
        "Content-Disposition": f'inline; filename="{filename}"',
        "Cache-Control": f"public, max-age={max_age}" if max_age else "no-cache",
    }
    return web.Response(body=body, content_type=content_type, headers=headers)


async def ca_pem(request: web.Request) -> web.Response:
    record = _in_use(request)
    return _file(record.certificate_pem.encode("ascii"), PEM, "gateway-ca.pem", max_age=0)


async def ca_der(request: web.Request) -> web.Response:
    record = _in_use(request)
    return _file(objects.certificate_der(record), DER, "gateway-ca.crt", max_age=0)


def _signing_ca(request: web.Request) -> CertificateRecord:
    """The CA named in the path, if it can sign (generated, or uploaded with its key)."""
    cert_id = request.match_info["certificate_id"]
    record = deps_of(request).certificates.find(cert_id)
    if record is None or not record.has_private_key:
        raise not_found(f"no CA certificate with id {cert_id!r}")
    return record


async def certificate_der(request: web.Request) -> web.Response:
    """The AIA caIssuers URL of leaves: that CA, DER, whatever its status."""
    record = _signing_ca(request)
    return _file(objects.certificate_der(record), DER, f"{record.id}.crt", max_age=86400)


async def certificate_crl(request: web.Request) -> web.Response:
    """The CRL distribution point of leaves: a current, signed, empty CRL."""
    cert_id = _signing_ca(request).id
    document = request.app[CRLS].get(cert_id)
    max_age = max(0, int((document.refresh_at - deps_of(request).clock()).total_seconds()))
    return _file(document.der, CRL, f"{cert_id}.crl", max_age=max_age)
