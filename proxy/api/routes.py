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
    metrics,
    mtls,
    nodes,
    openapi,
    pki,
    posture,
    rules,
)

logger = logging.getLogger(__name__)

View = Callable[[web.Request], Awaitable[web.StreamResponse]]

API = "/client/v4"
ACCOUNT = f"{API}/accounts/{{account_id}}"
GATEWAY_CERT = f"{ACCOUNT}/gateway/certificates/{{certificate_id}}"
MTLS_CERT = f"{ACCOUNT}/mtls_certificates/{{certificate_id}}"
GATEWAY_RULE = f"{ACCOUNT}/gateway/rules/{{rule_id}}"
ACCESS_POLICY = f"{ACCOUNT}/access/policies/{{policy_id}}"
ACCESS_APP = f"{ACCOUNT}/access/apps/{{app_id}}"
DEVICE = f"{ACCOUNT}/devices/{{device_id}}"
POSTURE_RULE = f"{ACCOUNT}/devices/posture/{{rule_id}}"
AGENT = f"{API}/agent"
UUID = "{certificate_id:[0-9a-fA-F-]{36}}"

ROUTES: tuple[tuple[str, str, View], ...] = (
    ("GET", "/healthz", pki.healthz),
    ("GET", "/metrics", metrics.metrics),
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
    ("GET", f"{GATEWAY_CERT}/devices", agent_trust.certificate_devices),
    ("GET", f"{ACCOUNT}/gateway/configuration", configuration.get_configuration),
    ("PUT", f"{ACCOUNT}/gateway/configuration", configuration.put_configuration),
    ("PATCH", f"{ACCOUNT}/gateway/configuration", configuration.patch_configuration),
    ("GET", f"{ACCOUNT}/gateway/nodes", nodes.list_nodes),
    ("GET", f"{ACCOUNT}/mtls_certificates", mtls.list_mtls),
    ("POST", f"{ACCOUNT}/mtls_certificates", mtls.create_mtls),
    ("GET", MTLS_CERT, mtls.get_mtls),
    ("DELETE", MTLS_CERT, mtls.delete_mtls),
    ("GET", f"{ACCOUNT}/gateway/rules", rules.list_rules),
    ("POST", f"{ACCOUNT}/gateway/rules", rules.create_rule),
    # before {rule_id}, which would match them too
    ("GET", f"{ACCOUNT}/gateway/rules/export", rules.export_policies),
    ("POST", f"{ACCOUNT}/gateway/rules/import", rules.import_policies),
    ("GET", GATEWAY_RULE, rules.get_rule),
    ("PUT", GATEWAY_RULE, rules.put_rule),
    ("DELETE", GATEWAY_RULE, rules.delete_rule),
    ("POST", f"{ACCOUNT}/gateway/policy_test", dryrun.policy_test),
    ("GET", f"{ACCOUNT}/access/policies", access.list_policies),
    ("POST", f"{ACCOUNT}/access/policies", access.create_policy),
    ("GET", ACCESS_POLICY, access.get_policy),
    ("PUT", ACCESS_POLICY, access.put_policy),
    ("DELETE", ACCESS_POLICY, access.delete_policy),
    ("GET", f"{ACCOUNT}/access/apps", access.list_applications),
    ("POST", f"{ACCOUNT}/access/apps", access.create_application),
    ("GET", ACCESS_APP, access.get_application),
    ("PUT", ACCESS_APP, access.put_application),
    ("DELETE", ACCESS_APP, access.delete_application),
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
    ("GET", f"{ACCOUNT}/access/users/{{user_id}}/last_seen_identity", devices.last_seen_identity),
    ("POST", f"{AGENT}/enroll", agent.enroll),
    ("GET", f"{AGENT}/posture_rules", agent.posture_rules),
    ("POST", f"{AGENT}/nonce", agent.nonce),
    ("POST", f"{AGENT}/results", agent.results),
    ("GET", f"{AGENT}/root_certificates", agent_trust.root_certificates),
    ("POST", f"{AGENT}/trust_stores", agent_trust.trust_stores),
)


def setup_routes(app: web.Application) -> None:
    for method, path, view in ROUTES:
        if method == "GET":
            app.router.add_get(path, view)  # and HEAD, for curl -I and link checkers
        else:
            app.router.add_route(method, path, view)
