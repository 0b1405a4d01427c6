"""GET/PUT/PATCH gateway/configuration: settings; ``settings.certificate.id`` turns a CA on (with a
warning in ``messages`` when reporting devices have not installed it: ``agent_trust``)."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from proxy.api import agent_trust, objects
from proxy.api.bodies import read_object, reject_unknown
from proxy.api.envelope import ok
from proxy.api.errors import invalid_field
from proxy.api.state import account_of, deps_of

logger = logging.getLogger(__name__)


async def _settings(request: web.Request) -> Any:
    body = await read_object(request)
    reject_unknown(body, {"settings"})
    if "settings" not in body:
        raise invalid_field("settings", "required: an object of settings")
    return body["settings"]


async def get_configuration(request: web.Request) -> web.Response:
    configuration = deps_of(request).certificates.configuration(account_of(request))
    return ok(objects.configuration(configuration))


async def put_configuration(request: web.Request) -> web.Response:
    settings = await _settings(request)
    service = deps_of(request).certificates
    turning_on = agent_trust.turning_on(request, settings)
    configuration = service.replace_configuration(account_of(request), settings)
    return agent_trust.ok_warned(request, objects.configuration(configuration), turning_on)


async def patch_configuration(request: web.Request) -> web.Response:
    settings = await _settings(request)
    service = deps_of(request).certificates
    turning_on = agent_trust.turning_on(request, settings)
    configuration = service.update_configuration(account_of(request), settings)
    return agent_trust.ok_warned(request, objects.configuration(configuration), turning_on)
