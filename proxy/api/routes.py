"""URL wiring only: every route of the admin API, in one table."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from proxy.api import (
    access,
    accounts,
    agent,
    agent_trust,
    certificates,
    configuration,
    devices,
    dryrun,
    lists,
    metrics,
    mtls,
    nodes,
    openapi,
    pac,
    pki,
    posture,
    requests_log,
    rotations,
    rules,
    wireguard,
)
from proxy.api.policy_views import PolicyViews

logger = logging.getLogger(__name__)

View = Callable[[web.Request], Awaitable[web.StreamResponse]]

API = "/client/v4"
ACCOUNT = f"{API}/accounts/{{account_id}}"
GATEWAY_CERT = f"{ACCOUNT}/gateway/certificates/{{certificate_id}}"
ROTATIONS = f"{ACCOUNT}/gateway/certificates/rotations"
ROTATION = f"{ROTATIONS}/{{rotation_id}}"
MTLS_CERT = f"{ACCOUNT}/mtls_certificates/{{certificate_id}}"
DEVICE = f"{ACCOUNT}/devices/{{device_id}}"
POSTURE_RULE = f"{ACCOUNT}/devices/posture/{{rule_id}}"
AGENT = f"{API}/agent"
UUID = "{certificate_id:[0-9a-fA-F-]{36}}"

type Route = tuple[str, str, View]


def _crud(collection: str, views: PolicyViews) -> tuple[Route, ...]:
    """A policy resource's five routes: the collection's list and create, one object's get, put
    and delete under ``collection/{param}``."""
    one = f"{collection}/{{{views.param}}}"
    return (
        ("GET", collection, views.list),
        ("POST", collection, views.create),
        ("GET", one, views.get),
        ("PUT", one, views.put),
        ("DELETE", one, views.delete),
    )


ROUTES: tuple[Route, ...] = (
    ("GET", "/healthz", pki.healthz),
    ("GET", "/metrics", metrics.metrics),
    ("GET", "/pki/ca.pem", pki.ca_pem),
    ("GET", "/pki/ca.crt", pki.ca_der),
    ("GET", f"/pki/{UUID}.crt", pki.certificate_der),
    ("GET", f"/pki/{UUID}.crl", pki.certificate_crl),
    ("GET", "/proxy.pac", pac.proxy_pac),
    ("GET", f"{API}/openapi.json", openapi.document),
    ("GET", f"{API}/accounts", accounts.list_accounts),
    ("POST", f"{API}/accounts", accounts.create_account),
    ("GET", ACCOUNT, accounts.get_account),
    ("DELETE", ACCOUNT, accounts.delete_account),
    ("GET", f"{ACCOUNT}/gateway/certificates", certificates.list_certificates),
    ("POST", f"{ACCOUNT}/gateway/certificates", certificates.create_certificate),
    # rotations before gateway/certificates/{certificate_id}, which would match them too
    ("GET", ROTATIONS, rotations.list_rotations),
    ("POST", ROTATIONS, rotations.start_rotation),
    ("GET", f"{ROTATIONS}/current", rotations.current_rotation),
    ("GET", ROTATION, rotations.get_rotation),
    *((("POST", f"{ROTATION}/{a}", v) for a, v in rotations.ACTIONS.items())),
    ("GET", GATEWAY_CERT, certificates.get_certificate),
    ("DELETE", GATEWAY_CERT, certificates.delete_certificate),
    ("POST", f"{GATEWAY_CERT}/activate", certificates.activate_certificate),
    ("POST", f"{GATEWAY_CERT}/deactivate", certificates.deactivate_certificate),
    ("GET", f"{GATEWAY_CERT}/download", certificates.download_certificate),
    ("GET", f"{GATEWAY_CERT}/devices", agent_trust.certificate_devices),
    ("GET", f"{ACCOUNT}/gateway/configuration", configuration.get_configuration),
    ("PUT", f"{ACCOUNT}/gateway/configuration", configuration.put_configuration),
    ("PATCH", f"{ACCOUNT}/gateway/configuration", configuration.patch_configuration),
    ("GET", f"{ACCOUNT}/gateway/nodes", nodes.list_nodes),
    ("GET", f"{ACCOUNT}/mtls_certificates", mtls.list_mtls),
    ("POST", f"{ACCOUNT}/mtls_certificates", mtls.create_mtls),
    ("GET", MTLS_CERT, mtls.get_mtls),
    ("DELETE", MTLS_CERT, mtls.delete_mtls),
    # before gateway/rules/{rule_id}, which would match them too
    ("GET", f"{ACCOUNT}/gateway/rules/export", rules.export_policies),
    ("POST", f"{ACCOUNT}/gateway/rules/import", rules.import_policies),
    *_crud(f"{ACCOUNT}/gateway/rules", rules.RULES),
    ("POST", f"{ACCOUNT}/gateway/policy_test", dryrun.policy_test),
    ("GET", f"{ACCOUNT}/gateway/requests", requests_log.list_requests),
    ("GET", f"{ACCOUNT}/gateway/lists", lists.LISTING.list),
    *_crud(f"{ACCOUNT}/gateway/lists", lists.LISTS)[1:],
    ("PATCH", f"{ACCOUNT}/gateway/lists/{{list_id}}", lists.patch_list),
    ("GET", f"{ACCOUNT}/gateway/lists/{{list_id}}/items", lists.list_items),
    *_crud(f"{ACCOUNT}/access/policies", access.POLICIES),
    *_crud(f"{ACCOUNT}/access/apps", access.APPLICATIONS),
    ("GET", f"{ACCOUNT}/devices", devices.list_devices),
    # devices/posture... before devices/{device_id}, and posture/logs before posture/{rule_id}
    ("GET", f"{ACCOUNT}/devices/posture", posture.list_rules),
    ("POST", f"{ACCOUNT}/devices/posture", posture.create_rule),
    ("GET", f"{ACCOUNT}/devices/posture/logs", posture.list_logs),
    ("GET", POSTURE_RULE, posture.get_rule),
    ("PUT", POSTURE_RULE, posture.put_rule),
    ("DELETE", POSTURE_RULE, posture.delete_rule),
    ("POST", f"{ACCOUNT}/devices/enrollment_tokens", devices.create_enrollment_token),
    ("GET", DEVICE, devices.get_device),
    ("DELETE", DEVICE, devices.delete_device),
    ("GET", f"{DEVICE}/addresses", devices.list_addresses),
    ("PUT", f"{DEVICE}/addresses", devices.bind_address),
    ("DELETE", f"{DEVICE}/addresses", devices.unbind_address),
    ("GET", f"{DEVICE}/wireguard", wireguard.device_config),
    ("GET", f"{ACCOUNT}/access/users/{{user_id}}/last_seen_identity", devices.last_seen_identity),
    ("POST", f"{AGENT}/enroll", agent.enroll),
    ("GET", f"{AGENT}/posture_rules", agent.posture_rules),
    ("POST", f"{AGENT}/nonce", agent.nonce),
    ("POST", f"{AGENT}/results", agent.results),
    ("PUT", f"{AGENT}/addresses", agent.addresses),
    ("GET", f"{AGENT}/root_certificates", agent_trust.root_certificates),
    ("POST", f"{AGENT}/trust_stores", agent_trust.trust_stores),
    ("GET", f"{AGENT}/wireguard", wireguard.agent_config),
)


def setup_routes(app: web.Application) -> None:
    for method, path, view in ROUTES:
        if method == "GET":
            app.router.add_get(path, view)  # and HEAD, for curl -I and link checkers
        else:
            app.router.add_route(method, path, view)
