"""Node-side synchronisation: this process's twins of what the store says.

Two twins, each refreshed after every change made through this process and (``CaNode``) on the
heartbeat timer, for changes made by other nodes:

- ``CaNode``: which CAs are loaded here and which one signs. The store says which certificates
  are deployable (pending_deployment or available) and which one is in use; ``sync`` builds a
  ``LeafIssuer`` for each deployable CA (its leaf key made now, so a handshake costs one
  signature), hands the in-use one to the TLS addon, drops the rest, and reports what it loaded
  so the store can promote pending certificates to available (and pending_deletion ones to
  inactive). ``gateway run`` and the stock-mitmdump script both run one.
- ``PolicySync``: the enforcer's snapshot (policy engines, ``tls_decrypt``, block page).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from addons.enforcement import Engines, PolicySnapshot
from addons.pages import BlockPage
from certs.issuer import LeafIssuer
from proxy.services.certificates import LoadableCa
from proxy.store import GatewayConfiguration
from proxy.store.database import StoreError

logger = logging.getLogger(__name__)


class CaSource(Protocol):
    def register_node(self, node_id: str, name: str) -> None: ...

    def loadable(self, account_id: str) -> list[LoadableCa]: ...

    def loadable_version(self, account_id: str) -> tuple[tuple[str, str, str, bool], ...]: ...

    def node_stopped(self, node_id: str) -> None: ...

    def node_loaded(self, node_id: str, account_id: str, fingerprints_by_id: Mapping[str, str]) -> None: ...


class IssuerSink(Protocol):
    def use_issuer(self, issuer: LeafIssuer | None) -> None: ...


@dataclass(frozen=True)
class IssuerSettings:
    public_base_url: str
    lifetime: timedelta = timedelta(days=47)
    cache_size: int = 10_000

    def issuer_for(self, ca: LoadableCa) -> LeafIssuer:
        return LeafIssuer(
            ca.authority,
            lifetime=self.lifetime,
            cache_size=self.cache_size,
            aia_url=f"{self.public_base_url}/pki/{ca.id}.crt",
            crl_url=f"{self.public_base_url}/pki/{ca.id}.crl",
        )


class CaNode:
    def __init__(
        self,
        source: CaSource,
        sink: IssuerSink,
        *,
        account_id: str,
        settings: IssuerSettings,
        node_id: str | None = None,
    ) -> None:
        self.node_id = node_id or uuid.uuid4().hex
        self._source = source
        self._sink = sink
        self._account_id = account_id
        self._settings = settings
        self._issuers: dict[str, LeafIssuer] = {}  # by certificate id
        self._current: LeafIssuer | None = None
        self._version: tuple[tuple[str, str, str, bool], ...] | None = None  # of what is loaded
        self.in_use_id: str | None = None

    @property
    def account_id(self) -> str:
        return self._account_id

    @property
    def version(self) -> tuple[tuple[str, str, str, bool], ...] | None:
        """The ``loadable_version`` of what is loaded (None: nothing loaded yet)."""
        return self._version

    def expired(self, now: datetime) -> bool:
        """Whether a loaded CA has expired since it was loaded (``sync`` drops it)."""
        return any(i.authority.certificate.not_valid_after_utc <= now for i in self._issuers.values())

    @property
    def loaded(self) -> Mapping[str, str]:
        """Certificate id → fingerprint of every CA this node can sign with."""
        return {cid: issuer.authority.fingerprint for cid, issuer in self._issuers.items()}

    def start(self, name: str) -> None:
        """Register this node as live (having loaded nothing yet), then load what the store says."""
        self._source.register_node(self.node_id, name)
        self.sync()

    @contextmanager
    def live(self, name: str) -> Iterator[CaNode]:
        """Started for the ``with`` block, and stopped after it, also when the first sync fails."""
        try:
            self.start(name)
            yield self
        finally:
            self.stop()

    def stop(self) -> None:
        """Leave the store's live nodes, so no certificate waits for this node (when the store
        is away, the node ages out of them after the heartbeat timeout instead)."""
        try:
            self._source.node_stopped(self.node_id)
        except StoreError as e:
            logger.warning(
                "node %s could not leave the live nodes (%s): it ages out instead", self.node_id[:8], e
            )

    def sync(self) -> None:
        """Load what the store says, and report it (the heartbeat: also when nothing changed)."""
        self._load()
        self.report()

    def refresh(self) -> bool:
        """After another process changed the store: reload only if the deployable certificates
        changed, and report only if what is loaded changed (reporting is a write every other
        node would see as a change in turn). True if it reloaded."""
        version = self._source.loadable_version(self._account_id)
        if version == self._version:
            return False
        before = dict(self.loaded)
        self._load()
        if self.loaded != before:
            self.report()
        return True

    def _load(self) -> None:
        version = self._source.loadable_version(self._account_id)
        wanted = {ca.id: ca for ca in self._source.loadable(self._account_id)}
        issuers: dict[str, LeafIssuer] = {}
        for cid, ca in wanted.items():
            current = self._issuers.get(cid)
            if current is not None and current.authority.fingerprint == ca.fingerprint:
                issuers[cid] = current
            else:
                issuers[cid] = self._settings.issuer_for(ca)
                logger.info("node %s loaded CA %s (%s)", self.node_id[:8], cid, ca.fingerprint)
        for cid in self._issuers.keys() - issuers.keys():
            logger.info("node %s unloaded CA %s", self.node_id[:8], cid)
        in_use = next((ca.id for ca in wanted.values() if ca.in_use), None)
        # One assignment: every handshake from here on signs with the new CA.
        self._issuers = issuers
        self._version = version
        current = issuers[in_use] if in_use else None
        if current is not self._current:
            self._sink.use_issuer(current)
            self._current = current
            self.in_use_id = in_use

    def report(self) -> None:
        """Tell the store what is loaded here (a heartbeat too)."""
        self._source.node_loaded(self.node_id, self._account_id, self.loaded)


class ConfigurationSource(Protocol):
    """Where the account's settings live (``CertificateService`` fits)."""

    def configuration(self, account_id: str) -> GatewayConfiguration: ...

    def tls_decrypt_enabled(self, account_id: str) -> bool: ...


class EngineSource(Protocol):
    """Where the account's compiled policies live (``PolicyService`` fits)."""

    def engines(self, account_id: str) -> Engines: ...


class SnapshotSink(Protocol):
    """Who enforces a snapshot (``addons.enforcement.Enforcer`` fits)."""

    def use(self, snapshot: PolicySnapshot) -> None: ...


class PolicySync:
    """Keeps the enforcer's snapshot (engines, tls_decrypt, block page) in step with the store."""

    def __init__(
        self, sink: SnapshotSink, settings: ConfigurationSource, policies: EngineSource, account_id: str
    ) -> None:
        self._sink = sink
        self._settings = settings
        self._policies = policies
        self._account_id = account_id

    def refresh(self) -> None:
        settings = self._settings.configuration(self._account_id).settings
        block_page = settings.get("block_page")
        self._sink.use(
            PolicySnapshot(
                engines=self._policies.engines(self._account_id),
                tls_decrypt=self._settings.tls_decrypt_enabled(self._account_id),
                block_page=BlockPage.from_settings(block_page if isinstance(block_page, dict) else None),
            )
        )
