"""Errors of the device service beyond ``proxy.services.errors``."""

from __future__ import annotations

import logging

from proxy.services.errors import ServiceError

logger = logging.getLogger(__name__)


class Unauthenticated(ServiceError):
    """A device id and secret, or an enrollment secret, that the server does not accept: 401.
    (A device deleted while its request was under way is one too.)"""
