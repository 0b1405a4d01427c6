"""GET /accounts and /accounts/{account_id}: the accounts the token may use."""

from __future__ import annotations

import logging

from aiohttp import web

from proxy.api import objects
from proxy.api.envelope import Paging, ok, ok_list
from proxy.api.state import TOKEN, account_of, deps_of
from proxy.services import accounts

logger = logging.getLogger(__name__)


async def list_accounts(request: web.Request) -> web.Response:
    paging = Paging.from_query(request, default=20, maximum=50)
    usable = accounts.accounts_for(deps_of(request).store, request[TOKEN])
    return ok_list([objects.account(a) for a in usable], paging)


async def get_account(request: web.Request) -> web.Response:
    account = deps_of(request).store.accounts.get(account_of(request))
    assert account is not None  # the middleware answered 404 otherwise
    return ok(objects.account(account))
