"""Request bodies of the policy API read into the library's values, or a 400 naming the field."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Final

from policies.access import AccessApplication, AccessPolicy
from policies.rules import FieldError, GatewayRule
from proxy.services.errors import InvalidInput, NotFound
from proxy.services.policy_state import (
    InvalidPolicy,
    Item,
    Managed,
    PolicyState,
    check_storable,
    field_message,
)

logger = logging.getLogger(__name__)

BODY: Final = "request body"


def _refused(error: FieldError) -> InvalidPolicy:
    return InvalidPolicy(field_message(error), ".".join(map(str, error.path)))


def parse_rule(body: Mapping[str, Any]) -> GatewayRule:
    try:
        rule = GatewayRule.from_api(body, where=BODY)
    except FieldError as e:
        raise _refused(e) from None
    check_storable(rule, f"{BODY} {rule.name!r}")
    return rule


def parse_policy(body: Mapping[str, Any]) -> AccessPolicy:
    try:
        policy = AccessPolicy.from_api(body, where=BODY)
    except FieldError as e:
        raise _refused(e) from None
    check_storable(policy, f"{BODY} {policy.name!r}")
    return policy


def parse_application(state: PolicyState, body: Mapping[str, Any]) -> AccessApplication:
    """Also checks that every policy it names exists in ``state``."""
    try:
        application = AccessApplication.from_api(body, where=BODY)
    except FieldError as e:
        raise _refused(e) from None
    where = f"{BODY} {application.name!r}"
    check_storable(application, where)
    state.check_references(application, where=where)
    return application


def check_id(body: Mapping[str, Any], ident: str) -> None:
    """A PUT body may repeat the object's id, not name another."""
    given = body.get("id")
    if given is not None and given != ident:
        raise InvalidInput("id", f"{given!r} does not match the id in the path ({ident})")


def existing[T: Item](found: Managed[T] | None, what: str, ident: str) -> Managed[T]:
    if found is None:
        raise NotFound(what, ident)
    return found
