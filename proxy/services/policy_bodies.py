"""Request bodies of the policy API read into the library's values, or a 400 naming the field."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Final

from policies.access import AccessApplication, AccessPolicy
from policies.lists import GatewayList
from policies.rules import FieldError, GatewayRule
from proxy.services.errors import InvalidInput
from proxy.services.policy_state import (
    InvalidPolicy,
    PolicyState,
    check_storable,
    field_message,
)

logger = logging.getLogger(__name__)

BODY: Final = "request body"


def _refused(error: FieldError) -> InvalidPolicy:
    return InvalidPolicy(field_message(error), ".".join(map(str, error.path)))


def parse[T: (GatewayRule, AccessPolicy, AccessApplication, GatewayList)](
    kind: type[T], body: Mapping[str, Any]
) -> T:
    """A rule, policy or application from a request body, checked that the store can keep it."""
    try:
        item = kind.from_api(body, where=BODY)
    except FieldError as e:
        raise _refused(e) from None
    check_storable(item, f"{BODY} {item.name!r}")
    return item


def parse_rule(state: PolicyState, body: Mapping[str, Any]) -> GatewayRule:
    """Its expressions may refer to the account's Gateway lists (``$<id>``), by type."""
    try:
        rule = GatewayRule.from_api(body, where=BODY, lists=state.list_types())
    except FieldError as e:
        raise _refused(e) from None
    check_storable(rule, f"{BODY} {rule.name!r}")
    return rule


def parse_application(state: PolicyState, body: Mapping[str, Any]) -> AccessApplication:
    """Also checks that every policy it names exists in ``state``."""
    application = parse(AccessApplication, body)
    state.check_references(application, where=f"{BODY} {application.name!r}")
    return application


def check_id(body: Mapping[str, Any], ident: str) -> None:
    """A PUT body may repeat the object's id, not name another."""
    given = body.get("id")
    if given is not None and given != ident:
        raise InvalidInput("id", f"{given!r} does not match the id in the path ({ident})")
