"""Accounts: ``GET /accounts`` lists the accounts the token may use; an admin token (one for
every account) makes them (``POST /accounts``) and deletes them (``DELETE /accounts/{id}``)."""

from __future__ import annotations

import logging

from aiohttp import web

from proxy.api import errors, objects
from proxy.api.bodies import read_object, reject_unknown
from proxy.api.envelope import Paging, ok, ok_list
from proxy.api.errors import ApiError
from proxy.api.state import ACCOUNTS, TOKEN, account_of, deps_of
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


async def create_account(request: web.Request) -> web.Response:
    """``{"name": N}``: a new account with its own CA, available and in use."""
    _admin_only(request, "make an account")
    body = await read_object(request)
    reject_unknown(body, {"name", "type", "unit", "standalone"})  # Cloudflare's; accepted, unused
    account, ca = request.app[ACCOUNTS].create(body.get("name"))
    result = objects.account(account)
    return ok(result, notes=[f"certificate {ca.id} ({ca.fingerprint}) is this account's CA, in use"])


async def delete_account(request: web.Request) -> web.Response:
    _admin_only(request, "delete an account")
    account = request.app[ACCOUNTS].delete(account_of(request))
    return ok({"id": account.id})


def _admin_only(request: web.Request, what: str) -> None:
    token = request[TOKEN]
    if token.account_id is not None:
        raise ApiError(
            403,
            errors.FORBIDDEN,
            f"this token is scoped to account {token.account_id}: only a token for every account "
            f"(gateway token create, without --account) may {what}",
        )
