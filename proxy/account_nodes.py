"""Several accounts in one process: a ``CaNode`` and a ``PolicySync`` per account.

Each account has its own CAs (one in use) and its own policies. This process is one node of
the store (one node id, registered once by the default account's ``CaNode``); every account's
``CaNode`` reports what it loaded for its account under that id. The TLS addon gets each
account's in-use issuer (``use_account_issuer``) and the enforcer each account's snapshot
(``use_account``); the default account's also become their defaults, which sign and decide for
traffic from no known device. Accounts made or deleted while the gateway runs are picked up at
the next ``sync``/``refresh``: after every account change made here (``AccountService``
subscribers) and on the heartbeat for changes made elsewhere.

The heartbeat (``heartbeat``, every 10 s on the event loop) costs a few queries whatever the
number of accounts: every account's deployable certificates in one query, what this node
reported in another; only an account whose certificates changed (or whose loaded CA expired)
is reloaded, and only one whose report differs is reported again. (Walking every account held
the loop for 0.1-0.3 s at 100 accounts: docs/performance.md.)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol

from addons.enforcement import PolicySnapshot
from certs.clock import Clock, utcnow
from certs.issuer import LeafIssuer
from proxy.config import ConfigError
from proxy.node_sync import CaNode, CaSource, ConfigurationSource, EngineSource, IssuerSettings, PolicySync
from proxy.store import Account

logger = logging.getLogger(__name__)


class AccountList(Protocol):
    """The store's accounts (``Store.accounts`` and ``AccountService`` fit)."""

    def list(self) -> list[Account]: ...

    def transaction(self) -> AbstractContextManager[object]: ...


class AccountsCaSource(CaSource, Protocol):
    """``CaSource`` with the heartbeat's queries across accounts (``CertificateService`` fits)."""

    def loadable_versions(self) -> Mapping[str, tuple[tuple[str, str, str, bool], ...]]: ...

    def node_reports(self, node_id: str) -> Mapping[str, Mapping[str, str]]: ...

    def node_heartbeat(self, node_id: str) -> None: ...


class AccountIssuers(Protocol):
    """``addons.inspection.HotTlsConfig`` fits."""

    def use_issuer(self, issuer: LeafIssuer | None) -> None: ...

    def use_account_issuer(self, account_id: str, issuer: LeafIssuer | None) -> None: ...

    def drop_account(self, account_id: str) -> None: ...


class AccountSnapshots(Protocol):
    """``addons.enforcement.Enforcer`` fits."""

    def use(self, snapshot: PolicySnapshot) -> None: ...

    def use_account(self, account_id: str, snapshot: PolicySnapshot) -> None: ...

    def drop_account(self, account_id: str) -> None: ...


def default_account(accounts: Sequence[Account], wanted: str | None) -> Account:
    """``--default-account``: an account id, a unique prefix of one, or a name; the first
    account when not given."""
    if not accounts:
        raise ConfigError("the store has no account: it was not started")
    if not wanted:
        return accounts[0]
    exact = [a for a in accounts if a.id == wanted.lower() or a.name.casefold() == wanted.strip().casefold()]
    matches = exact or [a for a in accounts if a.id.startswith(wanted.lower())]
    if len(matches) == 1:
        return matches[0]
    known = ", ".join(f"{a.id} ({a.name})" for a in accounts[:10])
    if not matches:
        raise ConfigError(f"--default-account {wanted!r}: no such account (accounts: {known})")
    raise ConfigError(f"--default-account {wanted!r} names {len(matches)} accounts: give its whole id")


class _Issuers:
    """One account's view of the TLS addon (a ``CaNode`` sink)."""

    def __init__(self, tls: AccountIssuers, account_id: str, *, default: bool) -> None:
        self._tls = tls
        self._account_id = account_id
        self._default = default

    def use_issuer(self, issuer: LeafIssuer | None) -> None:
        self._tls.use_account_issuer(self._account_id, issuer)
        if self._default:
            self._tls.use_issuer(issuer)


class _Snapshots:
    """One account's view of the enforcer (a ``PolicySync`` sink)."""

    def __init__(self, enforcer: AccountSnapshots, account_id: str, *, default: bool) -> None:
        self._enforcer = enforcer
        self._account_id = account_id
        self._default = default

    def use(self, snapshot: PolicySnapshot) -> None:
        self._enforcer.use_account(self._account_id, snapshot)
        if self._default:
            self._enforcer.use(snapshot)


class AccountCaNodes:
    """This node's CAs, per account: one ``CaNode`` each, all under one node id."""

    def __init__(
        self,
        source: AccountsCaSource,
        tls: AccountIssuers,
        accounts: AccountList,
        *,
        default_account_id: str,
        settings: IssuerSettings,
        node_id: str,
        clock: Clock = utcnow,
    ) -> None:
        self._source = source
        self._clock = clock
        self._tls = tls
        self._accounts = accounts
        self._settings = settings
        self.default_account_id = default_account_id
        self.default = CaNode(
            source, _Issuers(tls, default_account_id, default=True),
            account_id=default_account_id, settings=settings, node_id=node_id,
        )  # fmt: skip
        self._nodes: dict[str, CaNode] = {default_account_id: self.default}

    @property
    def node_id(self) -> str:
        return self.default.node_id

    @property
    def in_use_id(self) -> str | None:
        """The default account's in-use certificate."""
        return self.default.in_use_id

    def node(self, account_id: str) -> CaNode | None:
        return self._nodes.get(account_id)

    @contextmanager
    def live(self, name: str) -> Iterator[AccountCaNodes]:
        """Registered (by the default account's node) and every account loaded, for the block."""
        with self.default.live(name):
            self.sync()
            yield self

    def sync(self) -> None:
        """Make the nodes of new accounts, drop those of deleted ones, sync every one: in one
        store transaction, so that every account's report commits at once (one write to disk,
        not one per account: 100 accounts took 0.6-0.9 s one by one)."""
        with self._accounts.transaction():
            self._each(CaNode.sync)

    def heartbeat(self) -> None:
        """The timer's beat: live in the store, every account in step with it, in a few queries
        whatever the number of accounts (module docstring); in one transaction."""
        with self._accounts.transaction():
            versions = self._source.loadable_versions()
            reported = self._source.node_reports(self.node_id)
            now = self._clock()

            def beat(node: CaNode) -> None:
                if node.version != versions.get(node.account_id, ()) or node.expired(now):
                    node.sync()
                elif dict(reported.get(node.account_id, {})) != dict(node.loaded):
                    node.report()

            self._each(beat)
            self._source.node_heartbeat(self.node_id)

    def refresh(self) -> None:
        """After another process changed the store: like ``sync``, but an account's node
        reloads only if its deployable CAs changed, and reports only if what it loaded did
        (``CaNode.refresh``)."""
        self._each(CaNode.refresh)

    def _each(self, update: Callable[[CaNode], object]) -> None:
        present = {a.id for a in self._accounts.list()} | {self.default_account_id}
        for gone in self._nodes.keys() - present:
            del self._nodes[gone]
            self._tls.drop_account(gone)
            logger.info("account %s is gone: its CAs are unloaded", gone)
        for account_id in sorted(present):
            node = self._nodes.get(account_id)
            if node is None:
                node = self._nodes[account_id] = CaNode(
                    self._source, _Issuers(self._tls, account_id, default=False),
                    account_id=account_id, settings=self._settings, node_id=self.node_id,
                )  # fmt: skip
                logger.info("account %s: loading its CAs on node %s", account_id, self.node_id[:8])
            try:
                update(node)
            except Exception:  # one account's trouble must not keep the others from syncing
                logger.exception("account %s: loading its CAs failed", account_id)


class AccountPolicies:
    """The enforcer's snapshots, per account: one ``PolicySync`` each."""

    def __init__(
        self,
        enforcer: AccountSnapshots,
        settings: ConfigurationSource,
        policies: EngineSource,
        accounts: AccountList,
        *,
        default_account_id: str,
    ) -> None:
        self._enforcer = enforcer
        self._settings = settings
        self._policies = policies
        self._accounts = accounts
        self.default_account_id = default_account_id
        self._syncs: dict[str, PolicySync] = {}

    def refresh(self) -> None:
        present = {a.id for a in self._accounts.list()} | {self.default_account_id}
        for gone in self._syncs.keys() - present:
            del self._syncs[gone]
            self._enforcer.drop_account(gone)
            logger.info("account %s is gone: its policies are unloaded", gone)
        for account_id in sorted(present):
            sync = self._syncs.get(account_id)
            if sync is None:
                sink = _Snapshots(self._enforcer, account_id, default=account_id == self.default_account_id)
                sync = self._syncs[account_id] = PolicySync(sink, self._settings, self._policies, account_id)
            try:
                sync.refresh()
            except Exception:
                if account_id == self.default_account_id:
                    raise  # the default decides for everyone unknown: never without its policies
                logger.exception("account %s: loading its policies failed", account_id)
