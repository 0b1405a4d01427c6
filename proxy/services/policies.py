"""Gateway rules, Access policies and Access applications: CRUD, the engines built from them,
import/export and the dry run (SPEC §6, §7).

Objects come from two places: the store (saved through the API) and the policy files given to
``gateway run --policies DIR`` (read-only through the API). Every mutation builds the merged set
it would leave, builds the engines from it, and writes only when that succeeded, in one
transaction: a change never leaves a broken engine and nothing is half-saved. After the commit
the new engines replace the cached ones (``version`` bumps) and subscribers are told.

The ``*_async`` methods, which the API calls, do the heavy part (reading a thousand rules,
building their engines, YAML, a dry run's trace) in the admin thread (``proxy.services.offload``)
on a connection of their own, so the event loop the proxy shares never waits for it; the
mutation is the same transaction there, and the new engines are installed on the loop before
the method returns. An in-memory store (tests) has no second connection: it runs on the loop.
"""

from __future__ import annotations

import builtins
import dataclasses
import logging
import secrets
import threading
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
from proxy.services.offload import Offload, Ticket
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


@dataclass(frozen=True)
class _Planned[R]:
    """A mutation worked out from the stored objects: what the account will have (the files'
    objects included), how to write it, and the caller's value."""

    state: PolicyState
    write: Callable[[Store], None]
    result: R


@dataclass(frozen=True)
class _Done[R]:
    """A mutation committed in the admin thread, for the loop to install."""

    result: R
    gateway: GatewayEngine
    access: AccessEngine
    state: PolicyState  # as read back after the commit
    sequence: int  # commit order: an install never goes back to older engines


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
        self._worker_store: Store | None = None  # the admin thread's connection, opened on first use
        self._own_offload: Offload | None = None  # when a caller gives none (the API gives its own)
        self._worker_lock = threading.Lock()  # mutations in the admin thread, one at a time
        self._committed = 0  # sequence of the admin thread's commits
        self._installed = 0  # the latest of them installed
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

    def reload(self, account_id: str) -> None:
        """Another process changed the account's policies (a data-plane node follows the admin
        plane's changes): read them again, rebuild the engines, tell the subscribers."""
        state = self._fresh(account_id)
        gateway, access = self._builder.build(account_id, state)
        self._install(account_id, gateway, access, state)

    def _commit(self, account_id: str, state: PolicyState) -> None:
        """Inside the mutation's transaction, before writing: build the engines the change
        leaves (InvalidPolicy if they cannot be built); install them once it commits."""
        gateway, access = self._builder.build(account_id, state)
        self._store.after_commit(lambda: self._install(account_id, gateway, access))

    def _install(
        self,
        account_id: str,
        gateway: GatewayEngine,
        access: AccessEngine,
        state: PolicyState | None = None,
    ) -> None:
        if state is None:
            self._states.pop(account_id, None)
        else:
            self._states[account_id] = state
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

    def _fresh(self, account_id: str, store: Store | None = None) -> PolicyState:
        """The state as the store has it now (inside a mutation's transaction)."""
        return merged(self._files, self._stored(account_id, store))

    def _stored(self, account_id: str, store: Store | None = None) -> PolicyState:
        store = store or self._store
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
        return self._mutate(account_id, self._creation(kind, account_id, body))

    async def create_async[T: Item](
        self,
        kind: PolicyKind[T, Any],
        account_id: str,
        body: Mapping[str, Any],
        *,
        offload: Offload | None = None,
    ) -> Managed[T]:
        return await self._mutate_async(offload, account_id, self._creation(kind, account_id, body))

    def _creation[T: Item](
        self, kind: PolicyKind[T, Any], account_id: str, body: Mapping[str, Any]
    ) -> Callable[[PolicyState], _Planned[Managed[T]]]:
        def plan(stored: PolicyState) -> _Planned[Managed[T]]:
            now = self._clock()
            state = merged(self._files, stored)
            parsed = kind.parse(state, kind.complete(body, state, None, self._random_step))
            item = dataclasses.replace(parsed, id=str(uuid.uuid4()), created_at=now, updated_at=now)

            def write(store: Store) -> None:
                kind.save(store, account_id, item)
                logger.info(
                    "account %s: created %s %s %s", account_id, kind.name, item.id, kind.describe(item)
                )

            return _Planned(kind.with_item(state, item), write, Managed(item))

        return plan

    def replace[T: Item](
        self, kind: PolicyKind[T, Any], account_id: str, ident: str, body: Mapping[str, Any]
    ) -> Managed[T]:
        """PUT: the body replaces the object (a rule without a precedence keeps its own)."""
        return self._mutate(account_id, self._replacement(kind, account_id, ident, body))

    async def replace_async[T: Item](
        self,
        kind: PolicyKind[T, Any],
        account_id: str,
        ident: str,
        body: Mapping[str, Any],
        *,
        offload: Offload | None = None,
    ) -> Managed[T]:
        plan = self._replacement(kind, account_id, ident, body)
        return await self._mutate_async(offload, account_id, plan)

    def _replacement[T: Item](
        self, kind: PolicyKind[T, Any], account_id: str, ident: str, body: Mapping[str, Any]
    ) -> Callable[[PolicyState], _Planned[Managed[T]]]:
        def plan(stored: PolicyState) -> _Planned[Managed[T]]:
            now = self._clock()
            state = merged(self._files, stored)
            current = kind.changeable(state, ident)
            check_id(body, ident)
            parsed = kind.parse(state, kind.complete(body, state, current, self._random_step))
            created_at = current.item.created_at
            item = dataclasses.replace(parsed, id=ident, created_at=created_at, updated_at=now)

            def write(store: Store) -> None:
                kind.save(store, account_id, item)
                logger.info(
                    "account %s: replaced %s %s %s", account_id, kind.name, ident, kind.describe(item)
                )

            return _Planned(kind.with_item(state, item), write, Managed(item))

        return plan

    def delete[T: Item](self, kind: PolicyKind[T, Any], account_id: str, ident: str) -> Managed[T]:
        """Refused for a file's object, and for an Access policy an application refers to."""
        return self._mutate(account_id, self._deletion(kind, account_id, ident))

    async def delete_async[T: Item](
        self, kind: PolicyKind[T, Any], account_id: str, ident: str, *, offload: Offload | None = None
    ) -> Managed[T]:
        return await self._mutate_async(offload, account_id, self._deletion(kind, account_id, ident))

    def _deletion[T: Item](
        self, kind: PolicyKind[T, Any], account_id: str, ident: str
    ) -> Callable[[PolicyState], _Planned[Managed[T]]]:
        def plan(stored: PolicyState) -> _Planned[Managed[T]]:
            state = merged(self._files, stored)
            current = kind.changeable(state, ident)
            kind.check_delete(state, current)

            def write(store: Store) -> None:
                kind.table(store).delete(account_id, ident)
                logger.info("account %s: deleted %s %s", account_id, kind.name, ident)

            return _Planned(kind.without(state, ident), write, current)

        return plan

    # -- one mutation: read, plan, build the engines, write; in one transaction ----------------

    def _mutate[R](self, account_id: str, plan: Callable[[PolicyState], _Planned[R]]) -> R:
        """On the caller's thread and connection; the engines install once the outermost
        transaction commits."""
        with self._store.transaction():
            self._account(account_id)
            planned = plan(self._stored(account_id))
            gateway, access = self._builder.build(account_id, planned.state)
            self._store.after_commit(lambda: self._install(account_id, gateway, access))
            planned.write(self._store)
        return planned.result

    async def _mutate_async[R](
        self, offload: Offload | None, account_id: str, plan: Callable[[PolicyState], _Planned[R]]
    ) -> R:
        """``_mutate`` in the admin thread, on its own connection; installed here, on the loop,
        before returning (so the caller's next request meets the new engines)."""
        self._account(account_id)
        if not self._store.path:  # in memory: no second connection
            return self._mutate(account_id, plan)
        done = await self._offload(offload).run(
            lambda ticket: self._mutate_in_worker(account_id, plan, ticket)
        )
        if done.sequence > self._installed:
            self._installed = done.sequence
            self._install(account_id, done.gateway, done.access, done.state)
        return done.result

    def _mutate_in_worker[R](
        self, account_id: str, plan: Callable[[PolicyState], _Planned[R]], ticket: Ticket
    ) -> _Done[R]:
        with self._worker_lock:
            store = self._worker()
            with store.transaction():
                self._account(account_id, store)
                planned = plan(self._stored(account_id, store))
                gateway, access = self._builder.build(account_id, planned.state)
                ticket.claim()  # the caller may have given up: then nothing is written
                planned.write(store)
            self._committed += 1
            return _Done(planned.result, gateway, access, self._fresh(account_id, store), self._committed)

    def _offload(self, given: Offload | None) -> Offload:
        """The caller's admin thread (the API's), or the service's own."""
        if given is not None:
            return given
        if self._own_offload is None:
            self._own_offload = Offload(name="policy-offload")
        return self._own_offload

    def _worker(self) -> Store:
        """The admin thread's connection to the same database."""
        if self._worker_store is None:
            self._worker_store = Store.open(self._store.path)
        return self._worker_store

    def close(self) -> None:
        """Stop the service's own admin thread and close the admin thread's connection (the
        service stays usable: both come back on the next use)."""
        if self._own_offload is not None:
            self._own_offload.close()
            self._own_offload = None
        with self._worker_lock:
            if self._worker_store is not None:
                self._worker_store.close()
                self._worker_store = None

    # -- export, import, dry run ----------------------------------------------------------------

    def export(self, account_id: str) -> str:
        """Everything (files' objects included) as a policy file: YAML that import reads back."""
        self._account(account_id)
        return policy_transfer.export(self.state(account_id), account_id, self._clock())

    async def export_async(self, account_id: str, *, offload: Offload | None = None) -> str:
        """``export`` in the admin thread, its YAML written in the offload's child process (a
        second of pure Python at 1,000 rules)."""
        self._account(account_id)
        now = self._clock()
        running = self._offload(offload)

        def dumping(policy_set: PolicySet) -> str:  # plain dicts pickle in 1 ms, the objects in 20
            return running.child_call(policy_transfer.dump_api_shapes, policy_set.to_api())

        return await running.run(
            lambda ticket: policy_transfer.export(self._state_in_worker(account_id), account_id, now, dumping)
        )

    async def state_async(self, account_id: str, *, offload: Offload | None = None) -> PolicyState:
        """``state``: the cached one, or read in the admin thread (tens of ms at 1,000 rules)."""
        self._account(account_id)
        cached = self._states.get(account_id)
        if cached is not None or not self._store.path:
            return cached or self.state(account_id)
        return await self._offload(offload).run(lambda ticket: self._state_in_worker(account_id))

    def _state_in_worker(self, account_id: str) -> PolicyState:
        cached = self._states.get(account_id)
        if cached is not None:
            return cached
        if not self._store.path:  # in memory: the loop's connection (the caller is on the loop)
            return self.state(account_id)
        version = self._version
        with self._worker_lock:
            state = self._fresh(account_id, self._worker())
        if version == self._version:  # no change installed meanwhile: cache it
            self._states.setdefault(account_id, state)
        return state

    def import_policies(self, account_id: str, text: str) -> dict[str, int]:
        """Replace every object saved through the API with those of a policy file (YAML or
        JSON). Everything is validated before the store is touched; one transaction writes it.
        Objects equal to ones of the policy files are left to the files."""
        return self._mutate(account_id, self._importing(account_id, policy_transfer.parse(text)))

    async def import_policies_async(
        self, account_id: str, text: str, *, offload: Offload | None = None
    ) -> dict[str, int]:
        """``import_policies`` with the YAML read in the offload's child process, the engines
        built and the objects written in the admin thread."""
        self._account(account_id)
        running = self._offload(offload)
        imported = await running.run(
            lambda ticket: policy_transfer.assemble(running.child_call(policy_transfer.parse_in_pieces, text))
        )
        return await self._mutate_async(offload, account_id, self._importing(account_id, imported))

    def _importing(
        self, account_id: str, imported: PolicySet
    ) -> Callable[[PolicyState], _Planned[dict[str, int]]]:
        def plan(stored: PolicyState) -> _Planned[dict[str, int]]:
            transfer = policy_transfer.plan_import(imported, self._files, stored, self._clock())

            def write(store: Store) -> None:
                transfer.write(store, account_id)
                logger.info("account %s: imported policies %s", account_id, transfer.counts)

            return _Planned(merged(self._files, transfer.state), write, transfer.counts)

        return plan

    def dry_run(self, account_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Decide one request as the proxy would, with the full trace (the API's policy test)."""
        engines = self.engines(account_id)
        return dry_run(engines.gateway, engines.access, body)

    async def dry_run_async(
        self, account_id: str, body: Mapping[str, Any], *, offload: Offload | None = None
    ) -> dict[str, Any]:
        """``dry_run`` in the admin thread (the trace of a thousand rules takes tens of ms)."""
        engines = self.engines(account_id)
        return await self._offload(offload).run(lambda ticket: dry_run(engines.gateway, engines.access, body))

    # -- internals ------------------------------------------------------------------------------

    def _account(self, account_id: str, store: Store | None = None) -> None:
        if (store or self._store).accounts.get(account_id) is None:
            raise NotFound("account", account_id)
