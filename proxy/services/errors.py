"""Errors of the domain services that are not ``certs.errors.CertError``.

The API maps them once: ``NotFound`` → 404, ``InvalidInput`` and ``Refused`` → 400,
``Conflict`` → 409 (with ``x-should-retry: false``: retrying cannot help).
"""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)


class ServiceError(Exception):
    """Base class of the errors below."""


class NotFound(ServiceError):
    """No such object in this account."""

    def __init__(self, what: str, ident: str) -> None:
        super().__init__(f"no {what} with id {ident!r} in this account")
        self.what = what
        self.ident = ident


class InvalidInput(ServiceError):
    """A request field has a value the domain does not accept; ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class Refused(ServiceError):
    """The request is well formed but the object's state forbids it."""


class Conflict(ServiceError):
    """The request clashes with other objects (a duplicate name, objects still attached)."""
