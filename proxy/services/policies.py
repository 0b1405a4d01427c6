"""Gateway rules, Access policies and Access applications: CRUD, the engines built from them,
import/export and the dry run (SPEC §6, §7).

Objects come from two places: the store (saved through the API) and the policy files given to
``gateway run --policies DIR`` (read-only through the API). Every mutation builds the merged set
it would leave, builds the engines from it, and writes only when that succeeded, in one
transaction: a change never leaves a broken engine and nothing is half-saved. After the commit
the new engines replace the cached ones (``version`` bumps) and subscribers are told.
"""

from __future__ import annotations

import asyncio
import builtins
import dataclasses
import logging
import secrets
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from certs.clock import Clock
from policies.access import AccessEngine
from policies.engine import GatewayEngine
from policies.rules import FieldError
from policies.yaml_io import PolicySet
from proxy.services import policy_transfer
from proxy.services.dry_run import dry_run
from proxy.services.errors import InvalidInput, NotFound
from proxy.services.policy_bodies import check_id
from proxy.services.policy_kinds import PolicyKind
from proxy.services.policy_state import (
    EngineBuilder,
    InvalidPolicy,
    Item,
    Managed,
    Parsed,
    PolicyLoadError,
    PolicyState,
    colliding_ids,
    file_state,
    merged,
)
from proxy.services.subscribers import Subscribers
from proxy.store import Store

logger = logging.getLogger(__name__)

__all__ = ["InvalidPolicy", "Managed", "PolicyEngines", "PolicyLoadError", "PolicyService"]


@dataclass(frozen=True)
class PolicyEngines:
    """An immutable snapshot of one account's engines, swapped whole."""

    gateway: GatewayEngine
    access: AccessEngine
    version: int  # bumps on every committed change


def _random_step() -> int:
    return secrets.randbelow(100) + 1


class PolicyService:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        *,
        files: PolicySet | None = None,
        random_step: Callable[[], int] = _random_step,
    ) -> None:
        """``files``: what ``gateway run --policies DIR`` loaded (``policies.yaml_io.load_files``);
        it applies to every account. Raises :class:`PolicyLoadError` when the files and the
        objects saved through the API do not load together."""
        self._store = store
        self._clock = clock
        self._random_step = random_step
        self._files = file_state(files or PolicySet(), clock())
        self._builder = EngineBuilder()
        self._parsed = Parsed()
        self._engines: dict[str, PolicyEngines] = {}
        self._states: dict[str, PolicyState] = {}  # read cache, dropped at every commit
        self._version = 0
        self._subscribers = Subscribers("policy change")
        for account in store.accounts.list():
            self._check_at_start(account.id)

    def _check_at_start(self, account_id: str) -> None:
        try:
            stored = self._stored(account_id)
        except FieldError as e:  # saved by another version of the gateway, now refused
            raise PolicyLoadError(f"account {account_id}: the store holds {e}") from None
        clashes = colliding_ids(self._files, stored)
        if clashes:
            raise PolicyLoadError(
                f"account {account_id}: id {clashes[0]} names an object in the policy files and "
                "one saved through the API; change the id in the file"
            )
        try:
            gateway, access = self._builder.build(account_id, merged(self._files, stored))
        except InvalidInput as e:
            raise PolicyLoadError(
                f"account {account_id}: the policy files and the policies saved through the API "
                f"do not load together: {e}"
            ) from None
        self._engines[account_id] = PolicyEngines(gateway, access, self._version)

    # -- subscribers and engines ----------------------------------------------------------------

    def subscribe(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` after every committed change of rules, policies or applications."""
        self._subscribers.add(callback)

    def engines(self, account_id: str) -> PolicyEngines:
        """The account's engines: cached, rebuilt only after a change."""
        cached = self._engines.get(account_id)
        if cached is None:
            self._account(account_id)
            gateway, access = self._builder.build(account_id, self.state(account_id))
            cached = PolicyEngines(gateway, access, self._version)
            if not self._store.in_transaction:  # built from what may yet roll back
                self._engines[account_id] = cached
        return cached

    def _commit(self, account_id: str, state: PolicyState) -> None:
        """Inside the mutation's transaction, before writing: build the engines the change
        leaves (InvalidPolicy if they cannot be built); install them once it commits."""
        gateway, access = self._builder.build(account_id, state)
        self._store.after_commit(lambda: self._install(account_id, gateway, access))

    def _install(self, account_id: str, gateway: GatewayEngine, access: AccessEngine) -> None:
        self._states.pop(account_id, None)
        self._version += 1
        self._engines[account_id] = PolicyEngines(gateway, access, self._version)
        logger.info("account %s: policies changed, engines version %d", account_id, self._version)
        self._subscribers.notify()

    # -- state ----------------------------------------------------------------------------------

    def state(self, account_id: str) -> PolicyState:
        """Everything the account has: the files' objects and the store's, merged (cached
        between changes; mutations read the store itself)."""
        if self._store.in_transaction:  # it may have written, and may yet roll back
            return self._fresh(account_id)
        cached = self._states.get(account_id)
        if cached is None:
            cached = self._states[account_id] = self._fresh(account_id)
        return cached

    def _fresh(self, account_id: str) -> PolicyState:
        """The state as the store has it now (inside a mutation's transaction)."""
        return merged(self._files, self._stored(account_id))

    def _stored(self, account_id: str) -> PolicyState:
        store = self._store
        return self._parsed.state(
            account_id,
            store.gateway_rules.list(account_id),
            store.access_policies.list(account_id),
            store.access_applications.list(account_id),
            store.gateway_lists.list(account_id),
            store.gateway_lists.items,
        )

    # -- rules, policies and applications: one path for every kind ------------------------------

    def list[T: Item](self, kind: PolicyKind[T, Any], account_id: str) -> builtins.list[Managed[T]]:
        """Every object of the kind (rules by precedence)."""
        self._account(account_id)
        return builtins.list(kind.items(self.state(account_id)))

    def get[T: Item](self, kind: PolicyKind[T, Any], account_id: str, ident: str) -> Managed[T]:
        self._account(account_id)
        return kind.existing(self.state(account_id), ident)

    def create[T: Item](
        self, kind: PolicyKind[T, Any], account_id: str, body: Mapping[str, Any]
    ) -> Managed[T]:
        """A new object with a new id (a rule without a precedence goes after every other one)."""
        now = self._clock()
        with self._store.transaction():
            self._account(account_id)
            state = self._fresh(account_id)
            parsed = kind.parse(state, kind.complete(body, state, None, self._random_step))
            item = dataclasses.replace(parsed, id=str(uuid.uuid4()), created_at=now, updated_at=now)
            self._commit(account_id, kind.with_item(state, item))
            kind.save(self._store, account_id, item)
        logger.info("account %s: created %s %s %s", account_id, kind.name, item.id, kind.describe(item))
        return Managed(item)

    def replace[T: Item](
        self, kind: PolicyKind[T, Any], account_id: str, ident: str, body: Mapping[str, Any]
    ) -> Managed[T]:
        """PUT: the body replaces the object (a rule without a precedence keeps its own)."""
        now = self._clock()
        with self._store.transaction():
            self._account(account_id)
            state = self._fresh(account_id)
            current = kind.changeable(state, ident)
            check_id(body, ident)
            parsed = kind.parse(state, kind.complete(body, state, current, self._random_step))
            created_at = current.item.created_at
            item = dataclasses.replace(parsed, id=ident, created_at=created_at, updated_at=now)
            self._commit(account_id, kind.with_item(state, item))
            kind.save(self._store, account_id, item)
        logger.info("account %s: replaced %s %s %s", account_id, kind.name, ident, kind.describe(item))
        return Managed(item)

    def delete[T: Item](self, kind: PolicyKind[T, Any], account_id: str, ident: str) -> Managed[T]:
        """Refused for a file's object, and for an Access policy an application refers to."""
        with self._store.transaction():
            self._account(account_id)
            state = self._fresh(account_id)
            current = kind.changeable(state, ident)
            kind.check_delete(state, current)
            self._commit(account_id, kind.without(state, ident))
            kind.table(self._store).delete(account_id, ident)
        logger.info("account %s: deleted %s %s", account_id, kind.name, ident)
        return current

    # -- export, import, dry run ----------------------------------------------------------------

    def export(self, account_id: str) -> str:
        """Everything (files' objects included) as a policy file: YAML that import reads back."""
        self._account(account_id)
        return policy_transfer.export(self.state(account_id), account_id, self._clock())

    async def export_async(self, account_id: str) -> str:
        """``export`` with the YAML written in a worker thread (a second at 1,000 rules)."""
        self._account(account_id)
        state, now = self.state(account_id), self._clock()
        return await asyncio.to_thread(policy_transfer.export, state, account_id, now)

    def import_policies(self, account_id: str, text: str) -> dict[str, int]:
        """Replace every object saved through the API with those of a policy file (YAML or
        JSON). Everything is validated before the store is touched; one transaction writes it.
        Objects equal to ones of the policy files are left to the files."""
        return self._import(account_id, policy_transfer.parse(text))

    async def import_policies_async(self, account_id: str, text: str) -> dict[str, int]:
        """``import_policies`` with the YAML read in a worker thread."""
        self._account(account_id)
        return self._import(account_id, await asyncio.to_thread(policy_transfer.parse, text))

    def _import(self, account_id: str, imported: PolicySet) -> dict[str, int]:
        now = self._clock()
        with self._store.transaction():
            self._account(account_id)
            stored = self._stored(account_id)
            plan = policy_transfer.plan_import(imported, self._files, stored, now)
            self._commit(account_id, merged(self._files, plan.state))
            plan.write(self._store, account_id)
        logger.info("account %s: imported policies %s", account_id, plan.counts)
        return plan.counts

    def dry_run(self, account_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Decide one request as the proxy would, with the full trace (the API's policy test)."""
        engines = self.engines(account_id)
        return dry_run(engines.gateway, engines.access, body)

    # -- internals ------------------------------------------------------------------------------

    def _account(self, account_id: str) -> None:
        if self._store.accounts.get(account_id) is None:
            raise NotFound("account", account_id)
