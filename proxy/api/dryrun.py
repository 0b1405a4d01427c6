"""Our addition: POST gateway/policy_test, the dry run of one request against the live policies."""

from __future__ import annotations

import logging

from aiohttp import web

from proxy.api.bodies import read_object
from proxy.api.envelope import ok
from proxy.api.state import account_of, policies_of

logger = logging.getLogger(__name__)


async def policy_test(request: web.Request) -> web.Response:
    """The decision (action, rule, stage, Access) and its rendered trace for one request."""
    body = await read_object(request)
    return ok(policies_of(request).dry_run(account_of(request), body))
