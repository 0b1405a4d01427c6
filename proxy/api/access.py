"""Access policies and Access applications (self-hosted): list (paged), create, get, replace,
delete. The lists page as Cloudflare's do (the SDK asks for page after page until an empty one)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from policies.access import AccessApplication, AccessPolicy
from proxy.api.bodies import read_object
from proxy.api.envelope import Paging, ok, ok_list
from proxy.api.state import account_of, policies_of
from proxy.services.policy_state import Managed, PolicyState

logger = logging.getLogger(__name__)

DEFAULT_PER_PAGE = 25
MAX_PER_PAGE = 1000


def _paging(request: web.Request) -> Paging:
    return Paging.from_query(request, default=DEFAULT_PER_PAGE, maximum=MAX_PER_PAGE)


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
        policy = state.policy(ref.id)
        shown = policy_object(policy, state) if policy else {"id": ref.id}
        precedence = ref.precedence if ref.precedence is not None else position + 1
        expanded.append({**shown, "precedence": precedence})
    out["policies"] = expanded
    out["read_only"] = managed.read_only
    return out


# --- Access policies ------------------------------------------------------------------------------


async def list_policies(request: web.Request) -> web.Response:
    paging = _paging(request)
    state = policies_of(request).state(account_of(request))
    return ok_list([policy_object(m, state) for m in state.policies], paging)


async def create_policy(request: web.Request) -> web.Response:
    body = await read_object(request)
    service, account = policies_of(request), account_of(request)
    created = service.create_access_policy(account, body)
    return ok(policy_object(created, service.state(account)))


async def get_policy(request: web.Request) -> web.Response:
    service, account = policies_of(request), account_of(request)
    found = service.access_policy(account, request.match_info["policy_id"])
    return ok(policy_object(found, service.state(account)))


async def put_policy(request: web.Request) -> web.Response:
    body = await read_object(request)
    service, account = policies_of(request), account_of(request)
    replaced = service.replace_access_policy(account, request.match_info["policy_id"], body)
    return ok(policy_object(replaced, service.state(account)))


async def delete_policy(request: web.Request) -> web.Response:
    await read_object(request)
    service = policies_of(request)
    deleted = service.delete_access_policy(account_of(request), request.match_info["policy_id"])
    return ok({"id": deleted.id})


# --- Access applications --------------------------------------------------------------------------


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


async def list_applications(request: web.Request) -> web.Response:
    paging = _paging(request)
    state = policies_of(request).state(account_of(request))
    found = _matching(request, state.applications)
    return ok_list([application_object(m, state) for m in found], paging)


async def create_application(request: web.Request) -> web.Response:
    body = await read_object(request)
    service, account = policies_of(request), account_of(request)
    created = service.create_access_application(account, body)
    return ok(application_object(created, service.state(account)))


async def get_application(request: web.Request) -> web.Response:
    service, account = policies_of(request), account_of(request)
    found = service.access_application(account, request.match_info["app_id"])
    return ok(application_object(found, service.state(account)))


async def put_application(request: web.Request) -> web.Response:
    body = await read_object(request)
    service, account = policies_of(request), account_of(request)
    replaced = service.replace_access_application(account, request.match_info["app_id"], body)
    return ok(application_object(replaced, service.state(account)))


async def delete_application(request: web.Request) -> web.Response:
    await read_object(request)
    service = policies_of(request)
    deleted = service.delete_access_application(account_of(request), request.match_info["app_id"])
    return ok({"id": deleted.id})
