"""One account's policies as the service sees them: the store's and the policy files', merged.

- :class:`Managed` is one rule, policy or application with where it comes from: the policy files
  (read-only through the API) or the store.
- :class:`PolicyState` is an immutable snapshot of them all; mutations build a new one, validate it
  by building the engines from it, and only then write.
- The conversions between the library's values (``policies.rules`` / ``policies.access``) and the
  store's rows, and the errors the API answers 400 for, live here too.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from policies.access import AccessApplication, AccessEngine, AccessPolicy, PolicyRef
from policies.engine import GatewayEngine
from policies.expression import referenced_lists
from policies.list_matchers import ExactMatcher, ListHandle, ListLookup, ListRegistry, ListType
from policies.lists import GatewayList, ListItem
from policies.rules import (
    CompiledRule,
    ConflictError,
    FieldError,
    GatewayRule,
    Part,
    render_path,
)
from policies.yaml_io import PolicySet
from proxy.services.errors import InvalidInput, Refused, ServiceError
from proxy.store import (
    ListRecord,
    PolicyLink,
    StoredApplication,
    StoredList,
    StoredListItem,
    StoredPolicy,
    StoredRule,
)

logger = logging.getLogger(__name__)

# Keys of an object's API JSON that the store keeps in columns of their own.
_COLUMNS = frozenset({"id", "created_at", "updated_at"})
# The namespace of the ids given to the files' objects that have none.
_FILE_IDS = uuid.UUID("8f0b6a55-4c1e-4d0e-9a59-2f6d3c1b7e10")

_NO_ITEMS = ExactMatcher((), hosts=False)
MAX_PRECEDENCE = 2**31 - 1  # Cloudflare's precedences are 32-bit; the store's column takes 64

type Item = GatewayRule | AccessPolicy | AccessApplication | GatewayList


class InvalidPolicy(InvalidInput):
    """A rule, policy or application (or a set of them) that cannot be saved: 400. The message
    names the object and the field, and for an expression the line, column and a caret."""

    def __init__(self, message: str, field: str = "") -> None:
        ServiceError.__init__(self, message)
        self.field = field


class PolicyLoadError(ServiceError):
    """At start: the policy files and the objects saved through the API do not load together
    (an id in both, a precedence in both, an application whose policy left the files)."""


def field_message(error: FieldError, *, where: str | None = None) -> str:
    """A :class:`FieldError` as one API message; an expression error with its caret."""
    where = where or error.where
    expression = error.expression_error
    if expression is not None:
        return f"{where}: {render_path(error.path)}: {expression.render()}"
    return str(FieldError(where, error.path, error.reason, on_key=error.on_key))


def check_storable(item: Item, where: str) -> None:
    """What parsing lets through but the store could not keep: a precedence past 32 bits, or
    text that is not Unicode (a lone surrogate from a YAML ``\\ud800`` escape)."""
    too_big = f"must be at most {MAX_PRECEDENCE}"
    if isinstance(item, GatewayRule) and item.precedence > MAX_PRECEDENCE:
        raise InvalidPolicy(f"{where}: precedence: {too_big}, got {item.precedence}", "precedence")
    if isinstance(item, AccessApplication):
        for index, ref in enumerate(item.policies):
            if ref.precedence is not None and ref.precedence > MAX_PRECEDENCE:
                field = f"policies[{index}].precedence"
                raise InvalidPolicy(f"{where}: {field}: {too_big}, got {ref.precedence}", field)
    try:
        json.dumps(item.to_api(), ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidPolicy(
            f"{where}: holds a lone surrogate (such as \\ud800): text must be valid Unicode"
        ) from None


@dataclass(frozen=True)
class Managed[T: Item]:
    """One object and its origin: ``file`` (and ``line``) for the policy files, None for the API."""

    item: T
    file: str | None = None
    line: int | None = None

    @property
    def read_only(self) -> bool:
        return self.file is not None

    @property
    def id(self) -> str:
        return self.item.id

    def refuse_change(self, what: str) -> None:
        """Refused (400) when the object comes from a policy file."""
        if self.file is None:
            return
        at = f" (line {self.line})" if self.line else ""
        raise Refused(
            f"{what} {self.item.name!r} (id {self.id}) is managed by file {self.file}{at}; "
            "edit the file (the API cannot change or delete it)"
        )


@dataclass(frozen=True)
class PolicyState:
    """Every rule (by precedence), policy and application of one account."""

    rules: tuple[Managed[GatewayRule], ...] = ()
    policies: tuple[Managed[AccessPolicy], ...] = ()
    applications: tuple[Managed[AccessApplication], ...] = ()
    lists: tuple[Managed[GatewayList], ...] = ()

    def list_types(self) -> ListLookup:
        """The lists' ids, types and names, enough to check a rule (no items are read)."""
        return {m.id: ListHandle(m.id, m.item.type, m.item.name, _NO_ITEMS) for m in self.lists}

    def rules_using(self, list_id: str) -> list[Managed[GatewayRule]]:
        """The rules whose expressions refer to the Gateway list ``$list_id``."""
        return [
            m
            for m in self.rules
            if any(list_id in referenced_lists(m.item.expression(part)) for part in Part)
        ]

    def users_of(self, policy_id: str) -> list[Managed[AccessApplication]]:
        """The applications that refer to ``policy_id``."""
        return [m for m in self.applications if any(r.id == policy_id for r in m.item.policies)]

    def next_precedence(self, random_step: Callable[[], int]) -> int:
        """Cloudflare's rule for a rule created without one: 1000 for the first, else the
        highest so far plus a random step (1-100)."""
        if not self.rules:
            return 1000
        return max(m.item.precedence for m in self.rules) + random_step()

    def policy_set(self) -> PolicySet:
        return PolicySet(
            tuple(m.item for m in self.rules),
            tuple(m.item for m in self.applications),
            tuple(m.item for m in self.policies),
            lists=tuple(m.item for m in self.lists),
        )

    def check_references(self, application: AccessApplication, *, where: str) -> None:
        """Every policy an application names must exist (a 400 naming the list entry)."""
        known = {m.id for m in self.policies}
        for index, ref in enumerate(application.policies):
            if ref.id not in known:
                raise InvalidPolicy(
                    f"{where}: policies[{index}]: no Access policy with id {ref.id!r} in this "
                    "account (create it under access/policies first)",
                    f"policies[{index}]",
                )


def by_precedence(rules: Iterable[Managed[GatewayRule]]) -> tuple[Managed[GatewayRule], ...]:
    return tuple(sorted(rules, key=lambda m: m.item.precedence))


def replaced[T: Item](items: tuple[Managed[T], ...], new: Managed[T]) -> tuple[Managed[T], ...]:
    """``items`` with ``new`` in place of the one of its id, or after them all."""
    if any(m.id == new.id for m in items):
        return tuple(new if m.id == new.id else m for m in items)
    return (*items, new)


class EngineBuilder:
    """Builds an account's engines from a state, reusing what it compiled for the last build."""

    def __init__(self) -> None:
        self._compiled: dict[str, dict[GatewayRule, CompiledRule]] = {}
        self._lists: dict[str, ListRegistry] = {}

    def build(self, account_id: str, state: PolicyState) -> tuple[GatewayEngine, AccessEngine]:
        """Raises :class:`InvalidPolicy` when the objects do not load together. A rule compiled
        for the last build is reused unless a Gateway list it refers to changed."""
        previous = self._compiled.get(account_id, {})
        compiled: dict[GatewayRule, CompiledRule] = {}
        lists = self._lists.setdefault(account_id, ListRegistry()).lookup(m.item for m in state.lists)
        try:
            for managed in state.rules:
                rule = managed.item
                known = previous.get(rule)
                usable = known is not None and known.uses_current_lists(lists)
                compiled[rule] = known if known is not None and usable else rule.compile(lists=lists)
            gateway = GatewayEngine.build(compiled.values())
            access = AccessEngine.build(
                [m.item for m in state.applications], [m.item for m in state.policies]
            )
        except ConflictError as e:
            raise InvalidPolicy(e.reason) from None
        except FieldError as e:
            raise InvalidPolicy(field_message(e)) from None
        self._compiled[account_id] = compiled
        return gateway, access


# --- the store's rows <-> the library's values ----------------------------------------------------


def _body(api: Mapping[str, object], *drop: str) -> dict[str, Any]:
    return {k: v for k, v in api.items() if k not in _COLUMNS and k not in drop}


def rule_record(account_id: str, rule: GatewayRule) -> StoredRule:
    assert rule.created_at is not None and rule.updated_at is not None
    return StoredRule(
        account_id, rule.id, rule.precedence, _body(rule.to_api(), "precedence"),
        rule.created_at, rule.updated_at,
    )  # fmt: skip


def policy_record(account_id: str, policy: AccessPolicy) -> StoredPolicy:
    assert policy.created_at is not None and policy.updated_at is not None
    return StoredPolicy(account_id, policy.id, _body(policy.to_api()), policy.created_at, policy.updated_at)


def application_record(account_id: str, application: AccessApplication) -> StoredApplication:
    assert application.created_at is not None and application.updated_at is not None
    links = tuple(PolicyLink(ref.id, ref.precedence) for ref in application.policies)
    return StoredApplication(
        account_id, application.id, _body(application.to_api(), "policies"), links,
        application.created_at, application.updated_at,
    )  # fmt: skip


def list_record(account_id: str, gateway_list: GatewayList) -> ListRecord:
    """Its rows; an item without a time of its own is dated when the list was saved."""
    assert gateway_list.created_at is not None and gateway_list.updated_at is not None
    saved = gateway_list.updated_at
    head = StoredList(
        account_id, gateway_list.id, gateway_list.name, gateway_list.description,
        gateway_list.type.value, 0, gateway_list.created_at, saved,
    )  # fmt: skip
    items = tuple(StoredListItem(i.value, i.description, i.created_at or saved) for i in gateway_list.items)
    return ListRecord(head, items)


def list_of(head: StoredList, items: Iterable[StoredListItem]) -> GatewayList:
    return GatewayList(
        name=head.name,
        type=ListType(head.type),
        id=head.id,
        description=head.description,
        items=tuple(ListItem(i.value, i.description, i.created_at) for i in items),
        created_at=head.created_at,
        updated_at=head.updated_at,
    )


def _stamped[T: Item](item: T, ident: str, created_at: datetime, updated_at: datetime) -> T:
    return dataclasses.replace(item, id=ident, created_at=created_at, updated_at=updated_at)


def rule_of(record: StoredRule) -> GatewayRule:
    where = f"stored gateway rule {record.id}"
    body = {**record.body, "precedence": record.precedence}
    rule = GatewayRule.from_api(body, where=where, check_expressions=False)
    return _stamped(rule, record.id, record.created_at, record.updated_at)


def policy_of(record: StoredPolicy) -> AccessPolicy:
    policy = AccessPolicy.from_api(record.body, where=f"stored Access policy {record.id}")
    return _stamped(policy, record.id, record.created_at, record.updated_at)


def application_of(record: StoredApplication) -> AccessApplication:
    where = f"stored Access application {record.id}"
    application = AccessApplication.from_api(record.body, where=where)
    refs = tuple(PolicyRef(link.policy_id, link.precedence) for link in record.policies)
    application = dataclasses.replace(application, policies=refs)
    return _stamped(application, record.id, record.created_at, record.updated_at)


class Parsed:
    """Store rows read back into values, remembered per row: a row that has not changed since
    the last read is not parsed again (a thousand rules take a tenth of a second to parse)."""

    def __init__(self) -> None:
        self._seen: dict[str, dict[tuple[str, str], tuple[object, Any]]] = {}

    def state(
        self,
        account_id: str,
        rules: Iterable[StoredRule],
        policies: Iterable[StoredPolicy],
        applications: Iterable[StoredApplication],
        lists: Iterable[StoredList] = (),
        items: Callable[[str, str], Iterable[StoredListItem]] = lambda account, ident: (),
    ) -> PolicyState:
        """``lists`` without their items: ``items(account_id, list_id)`` reads those of a list
        whose row changed (its revision) since the last read, and only those."""
        seen = self._seen.get(account_id, {})
        now: dict[tuple[str, str], tuple[object, Any]] = {}

        def value[R: (StoredRule, StoredPolicy, StoredApplication, StoredList), T: Item](
            kind: str, record: R, parse: Callable[[R], T]
        ) -> T:
            known = seen.get((kind, record.id))
            parsed: T = known[1] if known is not None and known[0] == record else parse(record)
            now[(kind, record.id)] = (record, parsed)
            return parsed

        state = PolicyState(
            tuple(Managed(value("rule", r, rule_of)) for r in rules),
            tuple(Managed(value("policy", p, policy_of)) for p in policies),
            tuple(Managed(value("application", a, application_of)) for a in applications),
            tuple(Managed(value("list", h, lambda h: list_of(h, items(account_id, h.id)))) for h in lists),
        )
        self._seen[account_id] = now
        return state


# --- the policy files -----------------------------------------------------------------------------


def file_state(files: PolicySet, loaded_at: datetime) -> PolicyState:
    """The files' objects, read-only: an object without an id gets a stable one (from its file
    and name); one without timestamps is dated when the files were loaded."""
    taken: set[str] = set()

    def managed[T: Item](item: T, kind: str) -> Managed[T]:
        location = files.location_of(item)
        file = location.file if location else "<policy files>"
        ident = item.id or _file_id(file, kind, item.name, taken)
        taken.add(ident)
        stamped = _stamped(item, ident, item.created_at or loaded_at, item.updated_at or loaded_at)
        return Managed(stamped, file, location.line if location else None)

    return PolicyState(
        by_precedence(managed(r, "gateway_rule") for r in files.gateway_rules),
        tuple(managed(p, "access_policy") for p in files.access_policies),
        tuple(managed(a, "access_application") for a in files.access_applications),
        tuple(managed(gl, "list") for gl in files.lists),
    )


def _file_id(file: str, kind: str, name: str, taken: set[str]) -> str:
    for attempt in range(1000):
        ident = str(uuid.uuid5(_FILE_IDS, f"{file}\0{kind}\0{name}\0{attempt}"))
        if ident not in taken:
            return ident
    raise AssertionError("unreachable: 1000 objects of one name in one file")


def merged(files: PolicyState, stored: PolicyState) -> PolicyState:
    return PolicyState(
        by_precedence((*files.rules, *stored.rules)),
        (*files.policies, *stored.policies),
        (*files.applications, *stored.applications),
        (*files.lists, *stored.lists),
    )


def colliding_ids(files: PolicyState, stored: PolicyState) -> list[str]:
    """Ids that name an object in the files and one saved through the API."""
    found: list[str] = []
    pairs: tuple[tuple[tuple[Managed[Any], ...], tuple[Managed[Any], ...]], ...] = (
        (files.rules, stored.rules),
        (files.policies, stored.policies),
        (files.applications, stored.applications),
        (files.lists, stored.lists),
    )
    for left, right in pairs:
        ids = {m.id for m in left}
        found.extend(m.id for m in right if m.id in ids)
    return found
