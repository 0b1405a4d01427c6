"""Our addition: POST gateway/policy_test, the dry run of one request against the live policies
(in the admin thread: its trace walks every rule)."""

from __future__ import annotations

import logging

from aiohttp import web

from proxy.api.bodies import read_object
from proxy.api.envelope import ok
from proxy.api.offload import calling
from proxy.api.state import account_of, policies_of

logger = logging.getLogger(__name__)


async def policy_test(request: web.Request) -> web.Response:
    """The decision (action, rule, stage, Access) and its rendered trace for one request."""
    body = await read_object(request)
    service, account = policies_of(request), account_of(request)
    return ok(await calling(request, lambda offload: service.dry_run_async(account, body, offload=offload)))
