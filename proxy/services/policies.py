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
import dataclasses
import logging
import secrets
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from certs.clock import Clock
from policies.access import AccessApplication, AccessEngine, AccessPolicy
from policies.engine import GatewayEngine
from policies.rules import FieldError, GatewayRule
from policies.yaml_io import PolicySet
from proxy.services import policy_transfer
from proxy.services.dry_run import dry_run
from proxy.services.errors import InvalidInput, NotFound, Refused
from proxy.services.policy_bodies import (
    check_id,
    existing,
    parse_application,
    parse_policy,
    parse_rule,
)
from proxy.services.policy_state import (
    EngineBuilder,
    InvalidPolicy,
    Managed,
    Parsed,
    PolicyLoadError,
    PolicyState,
    application_record,
    colliding_ids,
    file_state,
    merged,
    policy_record,
    rule_record,
)
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
        self._subscribers: list[Callable[[], None]] = []
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
        self._subscribers.append(callback)

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
        for callback in list(self._subscribers):
            try:
                callback()
            except Exception:  # one broken subscriber must not hide the change from the others
                logger.exception("policy change subscriber %r failed", callback)

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
        )

    # -- gateway rules --------------------------------------------------------------------------

    def rules(self, account_id: str) -> list[Managed[GatewayRule]]:
        """Every rule, by precedence."""
        self._account(account_id)
        return list(self.state(account_id).rules)

    def rule(self, account_id: str, rule_id: str) -> Managed[GatewayRule]:
        self._account(account_id)
        return existing(self.state(account_id).rule(rule_id), "gateway rule", rule_id)

    def create_rule(self, account_id: str, body: Mapping[str, Any]) -> Managed[GatewayRule]:
        """A new rule; without a precedence it goes after every other one."""
        now = self._clock()
        with self._store.transaction():
            self._account(account_id)
            state = self._fresh(account_id)
            if body.get("precedence") is None:
                body = {**body, "precedence": state.next_precedence(self._random_step)}
            rule = parse_rule(body)
            rule = dataclasses.replace(rule, id=str(uuid.uuid4()), created_at=now, updated_at=now)
            self._commit(account_id, state.with_rule(rule))
            self._store.gateway_rules.save(rule_record(account_id, rule))
        logger.info("account %s: created gateway rule %s %r", account_id, rule.id, rule.name)
        return Managed(rule)

    def replace_rule(self, account_id: str, rule_id: str, body: Mapping[str, Any]) -> Managed[GatewayRule]:
        """PUT: the body replaces the rule (a missing precedence keeps the current one)."""
        now = self._clock()
        with self._store.transaction():
            self._account(account_id)
            state = self._fresh(account_id)
            current = existing(state.rule(rule_id), "gateway rule", rule_id)
            current.refuse_change("gateway rule")
            check_id(body, rule_id)
            if body.get("precedence") is None:
                body = {**body, "precedence": current.item.precedence}
            rule = dataclasses.replace(
                parse_rule(body), id=rule_id, created_at=current.item.created_at,
                updated_at=now,
            )  # fmt: skip
            self._commit(account_id, state.with_rule(rule))
            self._store.gateway_rules.save(rule_record(account_id, rule))
        logger.info("account %s: replaced gateway rule %s %r", account_id, rule_id, rule.name)
        return Managed(rule)

    def delete_rule(self, account_id: str, rule_id: str) -> Managed[GatewayRule]:
        with self._store.transaction():
            self._account(account_id)
            state = self._fresh(account_id)
            current = existing(state.rule(rule_id), "gateway rule", rule_id)
            current.refuse_change("gateway rule")
            self._commit(account_id, state.without_rule(rule_id))
            self._store.gateway_rules.delete(account_id, rule_id)
        logger.info("account %s: deleted gateway rule %s", account_id, rule_id)
        return current

    # -- Access policies ------------------------------------------------------------------------

    def access_policies(self, account_id: str) -> list[Managed[AccessPolicy]]:
        self._account(account_id)
        return list(self.state(account_id).policies)

    def access_policy(self, account_id: str, policy_id: str) -> Managed[AccessPolicy]:
        self._account(account_id)
        return existing(self.state(account_id).policy(policy_id), "Access policy", policy_id)

    def create_access_policy(self, account_id: str, body: Mapping[str, Any]) -> Managed[AccessPolicy]:
        now = self._clock()
        with self._store.transaction():
            self._account(account_id)
            state = self._fresh(account_id)
            policy = parse_policy(body)
            policy = dataclasses.replace(policy, id=str(uuid.uuid4()), created_at=now, updated_at=now)
            self._commit(account_id, state.with_policy(policy))
            self._store.access_policies.save(policy_record(account_id, policy))
        logger.info("account %s: created Access policy %s %r", account_id, policy.id, policy.name)
        return Managed(policy)

    def replace_access_policy(
        self, account_id: str, policy_id: str, body: Mapping[str, Any]
    ) -> Managed[AccessPolicy]:
        now = self._clock()
        with self._store.transaction():
            self._account(account_id)
            state = self._fresh(account_id)
            current = existing(state.policy(policy_id), "Access policy", policy_id)
            current.refuse_change("Access policy")
            check_id(body, policy_id)
            policy = dataclasses.replace(
                parse_policy(body), id=policy_id, created_at=current.item.created_at,
                updated_at=now,
            )  # fmt: skip
            self._commit(account_id, state.with_policy(policy))
            self._store.access_policies.save(policy_record(account_id, policy))
        logger.info("account %s: replaced Access policy %s %r", account_id, policy_id, policy.name)
        return Managed(policy)

    def delete_access_policy(self, account_id: str, policy_id: str) -> Managed[AccessPolicy]:
        """Refused while an application refers to the policy."""
        with self._store.transaction():
            self._account(account_id)
            state = self._fresh(account_id)
            current = existing(state.policy(policy_id), "Access policy", policy_id)
            current.refuse_change("Access policy")
            users = state.users_of(policy_id)
            if users:
                names = ", ".join(f"{m.item.label} (id {m.id})" for m in users)
                raise Refused(
                    f"Access policy {current.item.name!r} (id {policy_id}) is used by Access "
                    f"application {names}: remove it from the application's policies first"
                )
            self._commit(account_id, state.without_policy(policy_id))
            self._store.access_policies.delete(account_id, policy_id)
        logger.info("account %s: deleted Access policy %s", account_id, policy_id)
        return current

    # -- Access applications --------------------------------------------------------------------

    def access_applications(self, account_id: str) -> list[Managed[AccessApplication]]:
        self._account(account_id)
        return list(self.state(account_id).applications)

    def access_application(self, account_id: str, application_id: str) -> Managed[AccessApplication]:
        self._account(account_id)
        found = self.state(account_id).application(application_id)
        return existing(found, "Access application", application_id)

    def create_access_application(
        self, account_id: str, body: Mapping[str, Any]
    ) -> Managed[AccessApplication]:
        now = self._clock()
        with self._store.transaction():
            self._account(account_id)
            state = self._fresh(account_id)
            application = parse_application(state, body)
            application = dataclasses.replace(
                application, id=str(uuid.uuid4()), created_at=now, updated_at=now
            )
            self._commit(account_id, state.with_application(application))
            self._store.access_applications.save(application_record(account_id, application))
        logger.info(
            "account %s: created Access application %s %s", account_id, application.id,
            application.label,
        )  # fmt: skip
        return Managed(application)

    def replace_access_application(
        self, account_id: str, application_id: str, body: Mapping[str, Any]
    ) -> Managed[AccessApplication]:
        now = self._clock()
        with self._store.transaction():
            self._account(account_id)
            state = self._fresh(account_id)
            current = existing(state.application(application_id), "Access application", application_id)
            current.refuse_change("Access application")
            check_id(body, application_id)
            application = dataclasses.replace(
                parse_application(state, body), id=application_id,
                created_at=current.item.created_at, updated_at=now,
            )  # fmt: skip
            self._commit(account_id, state.with_application(application))
            self._store.access_applications.save(application_record(account_id, application))
        logger.info("account %s: replaced Access application %s", account_id, application_id)
        return Managed(application)

    def delete_access_application(self, account_id: str, application_id: str) -> Managed[AccessApplication]:
        with self._store.transaction():
            self._account(account_id)
            state = self._fresh(account_id)
            current = existing(state.application(application_id), "Access application", application_id)
            current.refuse_change("Access application")
            self._commit(account_id, state.without_application(application_id))
            self._store.access_applications.delete(account_id, application_id)
        logger.info("account %s: deleted Access application %s", account_id, application_id)
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
