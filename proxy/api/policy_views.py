"""The five handlers of a policy resource (Gateway rules, Access policies, Access applications),
written once: list (paged, or one page), create, get, replace (PUT), delete. A :class:`PolicyResource` says
what differs: the service's kind, the path's id parameter, the object shown and the paging."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from proxy.api.bodies import read_object
from proxy.api.envelope import Paging, ok, ok_all, ok_list
from proxy.api.offload import calling, offloaded
from proxy.api.state import account_of, policies_of
from proxy.services.offload import Ticket
from proxy.services.policies import PolicyService
from proxy.services.policy_kinds import PolicyKind
from proxy.services.policy_state import Item, Managed, PolicyState

logger = logging.getLogger(__name__)

type View = Callable[[web.Request], Awaitable[web.StreamResponse]]
type StateOf = Callable[[], PolicyState]  # the account's state, read only if an object needs it
type Shown = dict[str, Any]


def _everything[T: Item](request: web.Request, found: Sequence[Managed[T]]) -> Sequence[Managed[T]]:
    return found


@dataclass(frozen=True)
class PolicyResource[T: Item]:
    kind: PolicyKind[T, Any]
    param: str  # the path's id parameter: "rule_id" for .../gateway/rules/{rule_id}
    show: Callable[[Managed[T], StateOf], Shown]  # the API object
    # Paged lists: a page's size when the query gives none (Cloudflare's default), and its most.
    # ``single_page``: every object on one page, paging ignored, as Cloudflare's SinglePage lists.
    per_page: int = 25
    max_per_page: int = 1000
    single_page: bool = False
    # The list's query filters (other query keys are ignored).
    select: Callable[[web.Request, Sequence[Managed[T]]], Sequence[Managed[T]]] = _everything


@dataclass(frozen=True)
class PolicyViews:
    """The handlers of one resource, for routes.py."""

    param: str
    list: View
    create: View
    get: View
    put: View
    delete: View


def _state_of(state: PolicyState) -> StateOf:
    return lambda: state


def views[T: Item](resource: PolicyResource[T]) -> PolicyViews:
    """Every handler does its heavy part (reading and rendering a thousand objects, parsing a
    large body, building the engines a change leaves) in the admin thread (``offload``)."""
    kind, show = resource.kind, resource.show

    async def list_all(request: web.Request) -> web.Response:
        paging = (
            None
            if resource.single_page
            else Paging.from_query(request, default=resource.per_page, maximum=resource.max_per_page)
        )
        service, account = policies_of(request), account_of(request)
        state = await calling(request, lambda offload: service.state_async(account, offload=offload))

        def render(ticket: Ticket) -> web.Response:
            found = resource.select(request, kind.items(state))
            shown = [show(m, _state_of(state)) for m in found]
            return ok_all(shown) if paging is None else ok_list(shown, paging)

        return await offloaded(request, render)

    async def create(request: web.Request) -> web.Response:
        body = await read_object(request)
        service, account = policies_of(request), account_of(request)
        created = await calling(
            request, lambda offload: service.create_async(kind, account, body, offload=offload)
        )
        return await _shown(request, service, account, created)

    async def get(request: web.Request) -> web.Response:
        service, account = policies_of(request), account_of(request)
        state = await calling(request, lambda offload: service.state_async(account, offload=offload))
        found = kind.existing(state, request.match_info[resource.param])
        return ok(show(found, _state_of(state)))

    async def put(request: web.Request) -> web.Response:
        body = await read_object(request)
        service, account, ident = (
            policies_of(request),
            account_of(request),
            request.match_info[resource.param],
        )
        replaced = await calling(
            request, lambda offload: service.replace_async(kind, account, ident, body, offload=offload)
        )
        return await _shown(request, service, account, replaced)

    async def delete(request: web.Request) -> web.Response:
        await read_object(request)  # empty, as the SDK sends it, or a JSON object
        service, account, ident = (
            policies_of(request),
            account_of(request),
            request.match_info[resource.param],
        )
        deleted = await calling(
            request, lambda offload: service.delete_async(kind, account, ident, offload=offload)
        )
        return ok({"id": deleted.id})

    async def _shown(
        request: web.Request, service: PolicyService, account: str, managed: Managed[T]
    ) -> web.Response:
        state = await calling(request, lambda offload: service.state_async(account, offload=offload))
        return ok(show(managed, _state_of(state)))

    return PolicyViews(resource.param, list_all, create, get, put, delete)
