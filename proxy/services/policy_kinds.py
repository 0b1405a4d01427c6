"""Gateway rules, Access policies and Access applications as kinds of one thing.

The policy service has one create/read/update/delete path (``PolicyService.create(kind, ...)``
and so on); a :class:`PolicyKind` holds what differs between the three: the name errors and logs
use, where a :class:`PolicyState` keeps them, how a request body is read, how one is saved, and
the few rules of one kind only (a rule's default precedence, a policy refused while in use).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

from policies.access import AccessApplication, AccessPolicy
from policies.lists import GatewayList, ListItem, normalise, read_items
from policies.rules import ApiReader, FieldError, GatewayRule
from proxy.services.errors import NotFound, Refused
from proxy.services.policy_bodies import BODY, parse, parse_application, parse_rule
from proxy.services.policy_state import (
    InvalidPolicy,
    Item,
    Managed,
    PolicyState,
    application_record,
    by_precedence,
    field_message,
    list_record,
    policy_record,
    replaced,
    rule_record,
)
from proxy.store import ListRecord, Store, StoredApplication, StoredPolicy, StoredRule

logger = logging.getLogger(__name__)

__all__ = [
    "ACCESS_APPLICATIONS",
    "ACCESS_POLICIES",
    "GATEWAY_LISTS",
    "GATEWAY_LIST_EDITS",
    "GATEWAY_RULES",
    "KINDS",
    "PolicyKind",
    "Table",
]

type Body = Mapping[str, Any]


class Table[R](Protocol):
    """What the service asks of a kind's store table (``store.gateway_rules`` ...)."""

    def save(self, record: R, /) -> None: ...

    def delete(self, account_id: str, ident: str, /) -> None: ...

    def delete_all(self, account_id: str, /) -> None: ...


def _as_given[T: Item](
    body: Body, state: PolicyState, current: Managed[T] | None, step: Callable[[], int]
) -> Body:
    return body


def _deletable[T: Item](state: PolicyState, current: Managed[T]) -> None:
    return None


def _quoted_name(item: Item) -> str:
    return repr(item.name)


@dataclass(frozen=True)
class PolicyKind[T: Item, R]:
    """One kind of policy object (``T``, kept in the store as an ``R`` row), for the service's
    generic path."""

    name: str  # "gateway rule": in "no gateway rule with id ...", "gateway rule ... is managed by file"
    field: str  # the PolicyState attribute that holds them
    parse: Callable[[PolicyState, Body], T]  # a request body (InvalidPolicy naming the field)
    record: Callable[[str, T], R]  # (account id, item): its row
    table: Callable[[Store], Table[R]]
    # Where a new or replaced object goes among the others (in place, or by precedence).
    place: Callable[[tuple[Managed[T], ...], Managed[T]], tuple[Managed[T], ...]] = replaced
    # The body completed before parsing: (body, state, the object replaced or None, random step).
    complete: Callable[[Body, PolicyState, Managed[T] | None, Callable[[], int]], Body] = _as_given
    # Raises (Refused) when the object may not be deleted from this state.
    check_delete: Callable[[PolicyState, Managed[T]], None] = _deletable
    describe: Callable[[T], str] = _quoted_name  # the object in log lines, after its id

    def __post_init__(self) -> None:
        if self.field not in {f.name for f in dataclasses.fields(PolicyState)}:
            raise ValueError(f"{self.name}: PolicyState has no field {self.field!r}")

    def save(self, store: Store, account_id: str, item: T) -> None:
        """Insert or replace the item's row (inside the mutation's transaction)."""
        self.table(store).save(self.record(account_id, item))

    def items(self, state: PolicyState) -> tuple[Managed[T], ...]:
        return cast(tuple[Managed[T], ...], getattr(state, self.field))

    def find(self, state: PolicyState, ident: str) -> Managed[T] | None:
        return next((m for m in self.items(state) if m.id == ident), None)

    def existing(self, state: PolicyState, ident: str) -> Managed[T]:
        """The object of that id: NotFound (404) without one."""
        found = self.find(state, ident)
        if found is None:
            raise NotFound(self.name, ident)
        return found

    def changeable(self, state: PolicyState, ident: str) -> Managed[T]:
        """The object of that id, which the API may change: NotFound, or Refused for a file's."""
        found = self.existing(state, ident)
        found.refuse_change(self.name)
        return found

    def with_item(self, state: PolicyState, item: T) -> PolicyState:
        """The state with ``item`` added, or in place of the object of its id."""
        return self._with_items(state, self.place(self.items(state), Managed(item)))

    def without(self, state: PolicyState, ident: str) -> PolicyState:
        return self._with_items(state, tuple(m for m in self.items(state) if m.id != ident))

    def _with_items(self, state: PolicyState, items: tuple[Managed[T], ...]) -> PolicyState:
        changes: dict[str, Any] = {self.field: items}
        return dataclasses.replace(state, **changes)


# --- Gateway rules --------------------------------------------------------------------------------


def _last_by_precedence(
    rules: tuple[Managed[GatewayRule], ...], new: Managed[GatewayRule]
) -> tuple[Managed[GatewayRule], ...]:
    """A new or replaced rule goes after the others of its precedence (disabled ones may share)."""
    return by_precedence([*(m for m in rules if m.id != new.id), new])


def _with_precedence(
    body: Body, state: PolicyState, current: Managed[GatewayRule] | None, step: Callable[[], int]
) -> Body:
    """Without a precedence, a new rule goes after every other one (Cloudflare's rule) and a
    replaced one keeps its own."""
    if body.get("precedence") is not None:
        return body
    precedence = current.item.precedence if current is not None else state.next_precedence(step)
    return {**body, "precedence": precedence}


GATEWAY_RULES = PolicyKind[GatewayRule, StoredRule](
    name="gateway rule",
    field="rules",
    parse=parse_rule,
    record=rule_record,
    table=lambda store: store.gateway_rules,
    place=_last_by_precedence,
    complete=_with_precedence,
)


# --- Access policies ------------------------------------------------------------------------------


def _unused(state: PolicyState, current: Managed[AccessPolicy]) -> None:
    """A policy is refused deletion while an application refers to it."""
    users = state.users_of(current.id)
    if users:
        names = ", ".join(f"{m.item.label} (id {m.id})" for m in users)
        raise Refused(
            f"Access policy {current.item.name!r} (id {current.id}) is used by Access "
            f"application {names}: remove it from the application's policies first"
        )


ACCESS_POLICIES = PolicyKind[AccessPolicy, StoredPolicy](
    name="Access policy",
    field="policies",
    parse=lambda state, body: parse(AccessPolicy, body),
    record=policy_record,
    table=lambda store: store.access_policies,
    check_delete=_unused,
)


# --- Access applications --------------------------------------------------------------------------


ACCESS_APPLICATIONS = PolicyKind[AccessApplication, StoredApplication](
    name="Access application",
    field="applications",
    parse=parse_application,
    record=application_record,
    table=lambda store: store.access_applications,
    describe=lambda application: application.label,
)

# --- Gateway lists --------------------------------------------------------------------------------


def _list_unused(state: PolicyState, current: Managed[GatewayList]) -> None:
    """A list is refused deletion while a rule refers to it (``$<id>``)."""
    users = state.rules_using(current.id)
    if users:
        names = ", ".join(f"{m.item.name!r} (id {m.id})" for m in users)
        raise Refused(
            f"Gateway list {current.item.name!r} (id {current.id}) is used by gateway rule "
            f"{names}: remove it from the rules first"
        )


def _same_type(
    body: Body, state: PolicyState, current: Managed[GatewayList] | None, step: Callable[[], int]
) -> Body:
    """PUT: a list keeps its type (Cloudflare's update takes none); items it had keep their
    creation time."""
    if current is None:
        return body
    type_ = body.get("type", current.item.type.value)
    if type_ != current.item.type.value:
        raise InvalidPolicy(
            f"{BODY}: type: a list keeps its type ({current.item.type.value}); create a new "
            f"list for {type_!r} items",
            "type",
        )
    items = body.get("items")
    if not isinstance(items, list):
        return {**body, "type": type_}
    times = {i.value: i.created_at for i in current.item.items if i.created_at is not None}
    dated = [
        {**i, "created_at": times[i["value"]]}
        if isinstance(i, Mapping) and i.get("created_at") is None and i.get("value") in times
        else i
        for i in items
    ]
    return {**body, "type": type_, "items": dated}


GATEWAY_LISTS = PolicyKind[GatewayList, ListRecord](
    name="Gateway list",
    field="lists",
    parse=lambda state, body: parse(GatewayList, body),
    record=list_record,
    table=lambda store: store.gateway_lists,
    complete=_same_type,
    check_delete=_list_unused,
    describe=lambda gateway_list: gateway_list.label,
)

_EDITED = "the edited list"  # the key under which _edited hands the list to parse


@dataclass(frozen=True)
class EditedList(GatewayList):
    """A list after a PATCH, knowing what changed, so that saving it writes only that."""

    appended: tuple[ListItem, ...] = field(default=(), compare=False)
    removed: frozenset[str] = field(default=frozenset(), compare=False)


def _edit_record(account_id: str, gateway_list: GatewayList) -> ListRecord:
    if not isinstance(gateway_list, EditedList):
        return list_record(account_id, gateway_list)
    delta = dataclasses.replace(gateway_list, items=gateway_list.appended)
    record = list_record(account_id, delta)
    return dataclasses.replace(record, items=(), delta=(record.items, gateway_list.removed))


def _edited(
    body: Body, state: PolicyState, current: Managed[GatewayList] | None, step: Callable[[], int]
) -> Body:
    """PATCH ``{append: [{value, description}], remove: [value]}``: only the appended values
    are checked; the items kept are the list's own."""
    assert current is not None, "an edit changes an existing list"
    gateway_list = current.item
    try:
        reader = ApiReader(body, where=BODY)
        removed: set[str] = set()
        for index, text in enumerate(reader.strings("remove", default=())):
            problem, value = normalise(gateway_list.type, text)
            if problem is not None:
                raise FieldError(BODY, ("remove", index), problem)
            removed.add(value)
        values = {i.value for i in gateway_list.items}
        missing = sorted(removed - values)
        if missing:
            reader.fail(f"{missing[0]!r} is not in the list", "remove")
        kept = tuple(i for i in gateway_list.items if i.value not in removed)
        appended = read_items(
            reader.sequence("append", default=()),
            gateway_list.type,
            where=BODY,
            path=("append",),
            taken=(i.value for i in kept),
        )
        reader.finish()
    except FieldError as e:
        raise InvalidPolicy(field_message(e), ".".join(map(str, e.path))) from None
    edited = EditedList(
        **{f.name: getattr(gateway_list, f.name) for f in dataclasses.fields(GatewayList)},
        appended=appended,
        removed=frozenset(removed),
    )
    return {_EDITED: dataclasses.replace(edited, items=kept + appended)}


def _edited_list(state: PolicyState, body: Body) -> GatewayList:
    edited = body[_EDITED]
    assert isinstance(edited, GatewayList)
    return edited


GATEWAY_LIST_EDITS = dataclasses.replace(
    GATEWAY_LISTS, parse=_edited_list, complete=_edited, record=_edit_record
)

# In the order they are written: an application refers to policies (delete in reverse).
KINDS: tuple[PolicyKind[Any, Any], ...] = (GATEWAY_LISTS, GATEWAY_RULES, ACCESS_POLICIES, ACCESS_APPLICATIONS)
