"""Gateway rules: the rule object and the list's paging (the handlers are ``policy_views``'); export
and import of every policy as YAML."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from policies.rules import GatewayRule
from proxy.api.envelope import ok
from proxy.api.errors import INVALID_JSON, ApiError
from proxy.api.offload import calling
from proxy.api.policy_views import PolicyResource, views
from proxy.api.state import account_of, policies_of
from proxy.services.policy_kinds import GATEWAY_RULES
from proxy.services.policy_state import Managed

logger = logging.getLogger(__name__)

YAML = "application/yaml"


def rule_object(managed: Managed[GatewayRule]) -> dict[str, Any]:
    """Cloudflare's rule object; always action, enabled, filters, name, precedence, traffic."""
    api = managed.item.to_api()
    return {
        "id": managed.id,
        "name": api["name"],
        "description": api["description"],
        "precedence": api["precedence"],
        "enabled": api["enabled"],
        "action": api["action"],
        "filters": api["filters"],
        "traffic": api["traffic"],
        "identity": api["identity"],
        "device_posture": api["device_posture"],
        "rule_settings": api.get("rule_settings", {}),
        "created_at": api["created_at"],
        "updated_at": api["updated_at"],
        "read_only": managed.read_only,
    }


# Every rule by precedence, as one page; filters the SDK may send (and any other query key) are ignored.
RULES = views(
    PolicyResource(
        GATEWAY_RULES,
        "rule_id",
        lambda m, state: rule_object(m),
        single_page=True,
    )
)


async def export_policies(request: web.Request) -> web.Response:
    """Our addition: every rule, policy and application as one policy file (YAML)."""
    service, account = policies_of(request), account_of(request)
    text = await calling(request, lambda offload: service.export_async(account, offload=offload))
    headers = {"Content-Disposition": 'inline; filename="gateway-policies.yaml"'}
    return web.Response(text=text, content_type=YAML, charset="utf-8", headers=headers)


async def import_policies(request: web.Request) -> web.Response:
    """Our addition: a policy file (YAML, or the same as JSON) replaces every object saved
    through the API, atomically; objects of the policy files stay as they are."""
    raw = await request.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, INVALID_JSON, "request body is not UTF-8 text") from None
    service, account = policies_of(request), account_of(request)
    counts = await calling(
        request, lambda offload: service.import_policies_async(account, text, offload=offload)
    )
    return ok(counts)
