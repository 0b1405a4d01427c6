"""Export and import of a whole account's policies as one policy file (``policies.yaml_io``).

Export writes every object, those of the policy files included, so the file is the complete
picture and loads with ``gateway policy lint/test``. Import replaces the objects saved through
the API with the file's: an object equal to one of the policy files (as an export of it is) is
left to its file, and one that differs from it is refused. Everything is parsed and checked
before the store is touched.
"""

from __future__ import annotations

import dataclasses
import logging
import pickle
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, cast

from policies.access import AccessApplication, AccessPolicy
from policies.lists import GatewayList
from policies.rules import GatewayRule, format_timestamp
from policies.yaml_io import PolicyFileError, PolicySet, dump, load
from proxy.services.policy_kinds import (
    ACCESS_APPLICATIONS,
    ACCESS_POLICIES,
    GATEWAY_LISTS,
    GATEWAY_RULES,
    KINDS,
    PolicyKind,
)
from proxy.services.policy_state import InvalidPolicy, Item, Managed, PolicyState, check_storable
from proxy.store import Store

logger = logging.getLogger(__name__)

SOURCE: Final = "request body"
MAX_PROBLEMS_SHOWN: Final = 20
ID: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


def export(
    state: PolicyState, account_id: str, now: datetime, dumping: Callable[[PolicySet], str] = dump
) -> str:
    """The policy file of ``state``; ``dumping`` writes the YAML (``dump``, or the same in the
    admin's child process: ``PolicyService.export_async``)."""
    groups = (state.lists, state.rules, state.policies, state.applications)
    files = [m.file for group in groups for m in group if m.file]
    header = (
        f"# Gateway rules and Access policies of account {account_id}, exported {format_timestamp(now)}.\n"
    )
    if files:
        header += (
            f"# {len(files)} of these objects come from policy files, read-only through the API "
            f"({', '.join(sorted(set(files)))});\n# importing this file leaves those to their files.\n"
        )
    return header + dumping(state.policy_set())


def problems_message(error: PolicyFileError) -> str:
    """Every problem (up to a limit) with its line, column and caret, one after the other."""
    shown = [problem.render() for problem in error.problems[:MAX_PROBLEMS_SHOWN]]
    more = len(error.problems) - MAX_PROBLEMS_SHOWN
    if more > 0:
        shown.append(f"... and {more} more problem{'s' if more > 1 else ''}")
    return "\n".join(shown)


@dataclass(frozen=True)
class ImportPlan:
    """What the store will hold once the import is written: every API-managed object."""

    state: PolicyState
    left_to_files: int

    @property
    def counts(self) -> dict[str, int]:
        return {
            "gateway_rules": len(self.state.rules),
            "access_policies": len(self.state.policies),
            "access_applications": len(self.state.applications),
            "left_to_policy_files": self.left_to_files,
        } | ({"lists": len(self.state.lists)} if self.state.lists else {})

    def write(self, store: Store, account_id: str) -> None:
        """Replace the account's API-managed objects (call inside one transaction)."""
        for kind in reversed(KINDS):  # applications refer to policies
            kind.table(store).delete_all(account_id)
        for kind in KINDS:
            for managed in kind.items(self.state):
                kind.save(store, account_id, managed.item)


def parse(text: str) -> PolicySet:
    """The policy file's objects, checked together; InvalidPolicy with every problem otherwise.
    Pure (no store): slow for big files, so callers on the event loop run it in a thread."""
    try:
        return load(text, file=SOURCE)
    except PolicyFileError as e:
        raise InvalidPolicy(problems_message(e)) from None


# Objects per pickle between the child and the admin thread: unpickling one piece holds the
# interpreter well under a millisecond, where a whole PolicySet of 1,000 rules held it 15 ms.
PIECE: Final = 32
_SECTIONS: Final = ("gateway_rules", "access_applications", "access_policies", "tests", "lists")


def parse_in_pieces(text: str) -> tuple[dict[str, list[bytes]], dict[str, str]]:
    """``parse``, in the admin's child process: each section's objects as pickles of ``PIECE``
    objects, and the set's sources, for :func:`assemble` in the admin thread."""
    parsed = parse(text)
    pieces = {}
    for name in _SECTIONS:
        items = getattr(parsed, name)
        pieces[name] = [
            pickle.dumps(items[at : at + PIECE], protocol=pickle.HIGHEST_PROTOCOL)
            for at in range(0, len(items), PIECE)
        ]
    return pieces, dict(parsed.sources)


def assemble(parsed: tuple[dict[str, list[bytes]], dict[str, str]]) -> PolicySet:
    """The PolicySet of :func:`parse_in_pieces`, unpickled a piece at a time (the loop gets the
    interpreter between pieces). Its ``locations`` (keyed by the objects' ids in the child) are
    left out: nothing after parsing reads them."""
    pieces, sources = parsed

    def section(name: str) -> tuple[Any, ...]:
        return tuple(item for piece in pieces[name] for item in pickle.loads(piece))

    return PolicySet(
        gateway_rules=section("gateway_rules"),
        access_applications=section("access_applications"),
        access_policies=section("access_policies"),
        tests=section("tests"),
        sources=sources,
        lists=section("lists"),
    )


@dataclass(frozen=True)
class _ApiShapes:
    """What ``dump`` reads of a PolicySet: its API shapes, already made."""

    shapes: Any

    def to_api(self) -> Any:
        return self.shapes


def dump_api_shapes(shapes: Any) -> str:
    """``dump`` of a PolicySet's ``to_api()``, in the admin's child process: plain dicts and
    lists pickle in a millisecond where the objects take 20."""
    return dump(cast(PolicySet, _ApiShapes(shapes)))


def plan_import(imported: PolicySet, files: PolicyState, stored: PolicyState, now: datetime) -> ImportPlan:
    """What the store will hold; InvalidPolicy (or Refused, for a file's object) otherwise."""
    stamp = _Stamper(now)
    sections = _Sections(files)
    rules = sections.take("gateway_rules", GATEWAY_RULES, imported.gateway_rules)
    policies = sections.take("access_policies", ACCESS_POLICIES, imported.access_policies)
    applications = sections.take("access_applications", ACCESS_APPLICATIONS, imported.access_applications)
    lists = sections.take("lists", GATEWAY_LISTS, imported.lists)
    # by id, as kind.find would (the first of an id), in one pass: find per object was quadratic
    # (a third of an import's time in the admin thread at 1,000 rules)
    old_rules, old_policies = _by_id(GATEWAY_RULES, stored), _by_id(ACCESS_POLICIES, stored)
    old_applications, old_lists = _by_id(ACCESS_APPLICATIONS, stored), _by_id(GATEWAY_LISTS, stored)
    state = PolicyState(
        tuple(Managed(stamp(r, old_rules.get(r.id))) for r in rules),
        tuple(Managed(stamp(p, old_policies.get(p.id))) for p in policies),
        tuple(Managed(stamp(a, old_applications.get(a.id))) for a in applications),
        tuple(Managed(stamp(gl, old_lists.get(gl.id))) for gl in lists),
    )
    state = dataclasses.replace(state, rules=tuple(sorted(state.rules, key=lambda m: m.item.precedence)))
    return ImportPlan(state, sections.left_to_files)


def _by_id[T: (GatewayRule, AccessPolicy, AccessApplication, GatewayList)](
    kind: PolicyKind[T, Any], state: PolicyState
) -> dict[str, Managed[T]]:
    found: dict[str, Managed[T]] = {}
    for managed in kind.items(state):
        found.setdefault(managed.id, managed)
    return found


class _Sections:
    """Takes each section's objects: ids given or made, unique; files' objects set aside."""

    def __init__(self, files: PolicyState) -> None:
        self._files = files
        self.left_to_files = 0

    def take[T: (GatewayRule, AccessPolicy, AccessApplication, GatewayList)](
        self, section: str, kind: PolicyKind[T, Any], items: Sequence[T]
    ) -> list[T]:
        kept: list[T] = []
        seen: set[str] = set()
        files = _by_id(kind, self._files)
        for index, item in enumerate(items):
            where = f"{SOURCE}: {section}[{index}] {item.name!r}"
            file_object = files.get(item.id) if item.id else None
            if file_object is not None:
                if _unstamped(file_object.item) == _unstamped(item):
                    self.left_to_files += 1
                    continue
                file_object.refuse_change(kind.name)
            check_storable(item, where)
            ident = item.id or str(uuid.uuid4())
            if not ID.match(ident):
                raise InvalidPolicy(
                    f"{where}: id: must be 1-128 letters, digits, '.', '_', ':' or '-' (a UUID), "
                    f"got {ident!r}",
                    "id",
                )
            if ident in seen:
                raise InvalidPolicy(f"{where}: id: {ident!r} is used by another {kind.name} above", "id")
            seen.add(ident)
            kept.append(dataclasses.replace(item, id=ident))
        return kept


def _unstamped(item: Item) -> Item:
    return dataclasses.replace(item, created_at=None, updated_at=None)


class _Stamper:
    """Timestamps of an imported object: kept when it is unchanged, ``updated_at`` now when it
    changed, and for a new one its own ``created_at`` (if the file has one) or now."""

    def __init__(self, now: datetime) -> None:
        self._now = now

    def __call__[T: (GatewayRule, AccessPolicy, AccessApplication, GatewayList)](
        self, item: T, current: Managed[T] | None
    ) -> T:
        if current is None:
            created = item.created_at or self._now
            return dataclasses.replace(item, created_at=created, updated_at=self._now)
        previous = current.item
        unchanged = _unstamped(previous) == _unstamped(item)
        return dataclasses.replace(
            item,
            created_at=previous.created_at,
            updated_at=previous.updated_at if unchanged else self._now,
        )
