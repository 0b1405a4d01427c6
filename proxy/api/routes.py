"""URL wiring only: every route of the admin API, in one table."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from proxy.api import accounts, certificates, configuration, mtls, nodes, openapi, pki

logger = logging.getLogger(__name__)

View = Callable[[web.Request], Awaitable[web.StreamResponse]]

API = "/client/v4"
ACCOUNT = f"{API}/accounts/{{account_id}}"
GATEWAY_CERT = f"{ACCOUNT}/gateway/certificates/{{certificate_id}}"
MTLS_CERT = f"{ACCOUNT}/mtls_certificates/{{certificate_id}}"
UUID = "{certificate_id:[0-9a-fA-F-]{36}}"

ROUTES: tuple[tuple[str, str, View], ...] = (
    ("GET", "/healthz", pki.healthz),
    ("GET", "/pki/ca.pem", pki.ca_pem),
    ("GET", "/pki/ca.crt", pki.ca_der),
    ("GET", f"/pki/{UUID}.crt", pki.certificate_der),
    ("GET", f"/pki/{UUID}.crl", pki.certificate_crl),
    ("GET", f"{API}/openapi.json", openapi.document),
    ("GET", f"{API}/accounts", accounts.list_accounts),
    ("GET", ACCOUNT, accounts.get_account),
    ("GET", f"{ACCOUNT}/gateway/certificates", certificates.list_certificates),
    ("POST", f"{ACCOUNT}/gateway/certificates", certificates.create_certificate),
    ("GET", GATEWAY_CERT, certificates.get_certificate),
    ("DELETE", GATEWAY_CERT, certificates.delete_certificate),
    ("POST", f"{GATEWAY_CERT}/activate", certificates.activate_certificate),
    ("POST", f"{GATEWAY_CERT}/deactivate", certificates.deactivate_certificate),
    ("GET", f"{GATEWAY_CERT}/download", certificates.download_certificate),
    ("GET", f"{ACCOUNT}/gateway/configuration", configuration.get_configuration),
    ("PUT", f"{ACCOUNT}/gateway/configuration", configuration.put_configuration),
    ("PATCH", f"{ACCOUNT}/gateway/configuration", configuration.patch_configuration),
    ("GET", f"{ACCOUNT}/gateway/nodes", nodes.list_nodes),
    ("GET", f"{ACCOUNT}/mtls_certificates", mtls.list_mtls),
    ("POST", f"{ACCOUNT}/mtls_certificates", mtls.create_mtls),
    ("GET", MTLS_CERT, mtls.get_mtls),
    ("DELETE", MTLS_CERT, mtls.delete_mtls),
)


def setup_routes(app: web.Application) -> None:
    for method, path, view in ROUTES:
        if method == "GET":
            app.router.add_get(path, view)  # and HEAD, for curl -I and link checkers
        else:
            app.router.add_route(method, path, view)
