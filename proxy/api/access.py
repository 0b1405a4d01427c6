"""Access policies and Access applications (self-hosted): their objects, the applications' list
filters and the paging (the handlers are ``policy_views``'). The lists page as Cloudflare's do (the
SDK asks for page after page until an empty one)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from policies.access import AccessApplication, AccessPolicy
from proxy.api.policy_views import PolicyResource, views
from proxy.services.policy_kinds import ACCESS_APPLICATIONS, ACCESS_POLICIES
from proxy.services.policy_state import Managed, PolicyState

logger = logging.getLogger(__name__)


def policy_object(managed: Managed[AccessPolicy], state: PolicyState) -> dict[str, Any]:
    return {
        **managed.item.to_api(),
        "reusable": True,
        "app_count": len(state.users_of(managed.id)),
        "read_only": managed.read_only,
    }


def application_object(managed: Managed[AccessApplication], state: PolicyState) -> dict[str, Any]:
    """As Cloudflare's: ``policies`` expanded to the policy objects, each with its precedence."""
    out = managed.item.to_api()
    expanded = []
    for position, ref in enumerate(managed.item.policies):
        policy = ACCESS_POLICIES.find(state, ref.id)
        shown = policy_object(policy, state) if policy else {"id": ref.id}
        precedence = ref.precedence if ref.precedence is not None else position + 1
        expanded.append({**shown, "precedence": precedence})
    out["policies"] = expanded
    out["read_only"] = managed.read_only
    return out


def _matching(
    request: web.Request, applications: Sequence[Managed[AccessApplication]]
) -> list[Managed[AccessApplication]]:
    """The SDK's filters: ``name`` and ``domain`` (substring, or whole with ``exact=true``) and
    ``search`` (either); other query keys are ignored."""
    query = request.query
    exact = query.get("exact", "").lower() == "true"

    def fits(value: str, wanted: str | None) -> bool:
        if not wanted:
            return True
        value, wanted = value.lower(), wanted.lower()
        return value == wanted if exact else wanted in value

    search = query.get("search", "").lower()
    return [
        m
        for m in applications
        if fits(m.item.name, query.get("name"))
        and fits(m.item.domain, query.get("domain"))
        and (not search or search in m.item.name.lower() or search in m.item.domain)
    ]


# Paged as Cloudflare's Access lists: 25 a page unless asked, at most 1000.
POLICIES = views(PolicyResource(ACCESS_POLICIES, "policy_id", lambda m, state: policy_object(m, state())))
APPLICATIONS = views(
    PolicyResource(
        ACCESS_APPLICATIONS, "app_id", lambda m, state: application_object(m, state()), select=_matching
    )
)
