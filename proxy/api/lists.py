"""Gateway lists in Cloudflare's shapes (``zero_trust.gateway.lists`` in the SDK): the list's five
routes are ``policy_views``'; here are the object shown, PATCH (``append`` / ``remove``) and the
paged items of one list."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from policies.lists import GatewayList
from proxy.api.bodies import read_object
from proxy.api.envelope import Paging, ok, ok_list
from proxy.api.offload import calling, offloaded
from proxy.api.policy_views import PolicyResource, StateOf, views
from proxy.api.state import account_of, policies_of
from proxy.services.policy_kinds import GATEWAY_LIST_EDITS, GATEWAY_LISTS
from proxy.services.policy_state import Managed

logger = logging.getLogger(__name__)


def list_object(managed: Managed[GatewayList], *, items: bool = True) -> dict[str, Any]:
    """Cloudflare's list object; ``items`` only for one list (a listing gives the ``count``)."""
    api = managed.item.to_api()
    if not items:
        api.pop("items")
    api["id"] = managed.id
    api["read_only"] = managed.read_only
    return api


def _shown(managed: Managed[GatewayList], state: StateOf) -> dict[str, Any]:
    return list_object(managed)


LISTS = views(PolicyResource(GATEWAY_LISTS, "list_id", _shown, single_page=True))
# Every list on one page, without its items (SinglePage in the SDK).
LISTING = views(
    PolicyResource(GATEWAY_LISTS, "list_id", lambda m, state: list_object(m, items=False), single_page=True)
)


async def patch_list(request: web.Request) -> web.Response:
    """``{"append": [{"value", "description"}], "remove": ["value"]}``: only these items change."""
    body = await read_object(request)
    service, account, ident = policies_of(request), account_of(request), request.match_info["list_id"]
    edited = await calling(  # the engines' rebuild runs in the admin thread, as for every change
        request,
        lambda offload: service.replace_async(GATEWAY_LIST_EDITS, account, ident, body, offload=offload),
    )
    return ok(list_object(Managed(edited.item)))


async def list_items(request: web.Request) -> web.Response:
    """One list's items, paged (``page``/``per_page``: the SDK walks the pages until one is empty)."""
    paging = Paging.from_query(request, default=50, maximum=1000)
    service, account = policies_of(request), account_of(request)
    found = service.get(GATEWAY_LISTS, account, request.match_info["list_id"])
    # a list may hold 100,000 items: rendered in the admin thread, off the proxy's event loop
    items = await offloaded(request, lambda ticket: found.item.to_api()["items"])
    assert isinstance(items, list)
    return ok_list(items, paging)
