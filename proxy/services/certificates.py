"""Certificate domain operations over the store and ``certs/`` (SPEC §2, §7, §8).

Gateway certificates (generate, activate, deactivate, delete, turn on), mTLS uploads (which,
with a key, can be activated as ``custom`` gateway certificates), the Gateway configuration that
turns a certificate on, and the nodes that load certificates. Rules come from
``certs.lifecycle``; this module loads state, asks the rules, stores the result in one
transaction, and tells subscribers (the proxy nodes) after the commit.
"""

from __future__ import annotations

import asyncio
import builtins
import dataclasses
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from certs import lifecycle
from certs.authority import (
    DEFAULT_VALIDITY_DAYS,
    CertificateAuthority,
    KeyType,
)
from certs.clock import Clock
from certs.errors import CertError
from certs.lifecycle import BindingStatus, CertificateState
from certs.sealing import KeySealer
from proxy.services import deployment, generation
from proxy.services import settings as gw_settings
from proxy.services.errors import InvalidInput, NotFound, Refused
from proxy.services.records import load_authority, new_record
from proxy.services.subscribers import Subscribers
from proxy.services.uploads import parse_upload
from proxy.store import (
    Account,
    CertificateBinding,
    CertificateKind,
    CertificateRecord,
    GatewayConfiguration,
    Store,
)

logger = logging.getLogger(__name__)

GATEWAY_KINDS = frozenset({CertificateKind.GATEWAY_MANAGED, CertificateKind.CUSTOM})
MTLS_KINDS = frozenset({CertificateKind.CUSTOM, CertificateKind.MTLS})
LOADABLE = frozenset({BindingStatus.PENDING_DEPLOYMENT, BindingStatus.AVAILABLE})

type LoadableVersion = tuple[tuple[str, str, str, bool], ...]  # id, fingerprint, status, in use


def _loadable_version(records: Iterable[CertificateRecord | CertificateBinding]) -> LoadableVersion:
    return tuple(
        (r.id, r.fingerprint, str(r.binding_status), r.in_use)
        for r in records
        if r.binding_status in LOADABLE
    )


@dataclass(frozen=True)
class LoadableCa:
    """What a node needs to sign with a certificate."""

    id: str
    fingerprint: str
    authority: CertificateAuthority
    in_use: bool


def state_of(record: CertificateRecord) -> CertificateState:
    """The lifecycle view of a record; an mTLS upload never activated counts as inactive."""
    status = record.binding_status or BindingStatus.INACTIVE
    return CertificateState(record.id, status, record.in_use, record.expires_on)


class CertificateService:
    def __init__(
        self,
        store: Store,
        sealer: KeySealer,
        clock: Clock,
        *,
        live_node_window: timedelta = timedelta(seconds=30),
        live_clock: Clock | None = None,
    ) -> None:
        """``live_node_window``: a node whose last heartbeat is older leaves the live nodes;
        ``live_clock``: the time heartbeats are stamped and measured with (the database's,
        ``Store.now``, so nodes with skewed clocks agree; default ``clock``)."""
        self._store = store
        self._sealer = sealer
        self._clock = clock
        self._deployment = deployment.Deployment(store, live_clock or clock, live_node_window)
        self._subscribers = Subscribers("certificate change")
        self._authorities: dict[str, CertificateAuthority] = {}  # by id, unsealed once
        # What the in-use certificate's expiry warning adds (the CA rotation: under way, or not
        # configured); set by the rotation service's owner
        self.expiry_note: Callable[[CertificateRecord], str] | None = None

    # -- subscribers ----------------------------------------------------------------------------

    def subscribe(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` after every committed change of certificates or configuration."""
        self._subscribers.add(callback)

    def _changed(self) -> None:
        self._store.after_commit(self._subscribers.notify)

    # -- gateway certificates -------------------------------------------------------------------

    def generate(
        self,
        account_id: str,
        validity_period_days: int = DEFAULT_VALIDITY_DAYS,
        key_type: KeyType = KeyType.EC_P256,
        *,
        count_towards_limit: bool = True,
    ) -> CertificateRecord:
        """A new gateway-managed CA, inactive. The 4th counted one in 24 hours: LimitExceeded."""
        account = self._prepare_generation(account_id, validity_period_days, count_towards_limit)
        authority = generation.new_authority(account, validity_period_days, key_type, self._clock)
        return generation.save_generated(
            self._store, self._sealer, account.id, authority, self._clock(),
            counted=count_towards_limit,
        )  # fmt: skip

    async def generate_async(
        self,
        account_id: str,
        validity_period_days: int = DEFAULT_VALIDITY_DAYS,
        key_type: KeyType = KeyType.EC_P256,
    ) -> CertificateRecord:
        """``generate`` with the key made in a worker thread (RSA-4096 takes a while)."""
        account = self._prepare_generation(account_id, validity_period_days, True)
        authority = await asyncio.to_thread(
            generation.new_authority, account, validity_period_days, key_type, self._clock
        )
        return generation.save_generated(
            self._store, self._sealer, account.id, authority, self._clock(), counted=True
        )

    def install_initial_ca(self, account_id: str) -> CertificateRecord:
        """First start: a CA outside the generation limit, available and in use at once.

        No node can have loaded it yet, and none is waiting for it: every node loads all
        available certificates when it starts.
        """
        account = self._account(account_id)
        authority = generation.new_authority(account, DEFAULT_VALIDITY_DAYS, KeyType.EC_P256, self._clock)
        now = self._clock()
        with self._store.transaction():
            record = generation.save_generated(
                self._store, self._sealer, account_id, authority, now,
                counted=False, auto_generated=True,
            )  # fmt: skip
            self._store.certificates.set_binding_status(record.id, BindingStatus.AVAILABLE, now)
            self._store.certificates.set_in_use(account_id, record.id, now)
        logger.info("first start: CA %s (%s) generated and in use", record.id, record.fingerprint)
        return self._gateway_record(account_id, record.id)

    def _prepare_generation(self, account_id: str, days: int, counted: bool) -> Account:
        generation.check_validity(days)
        account = self._account(account_id)
        if counted:
            generation.check_limit(self._store, account_id, self._clock())
        return account

    def list(self, account_id: str) -> list[CertificateRecord]:
        """The account's gateway certificates (generated, and custom ones activated), oldest first."""
        self._account(account_id)
        self._settle(account_id)
        records = self._store.certificates.list(account_id, kinds=GATEWAY_KINDS)
        return [r for r in records if r.is_gateway_certificate]

    def get(self, account_id: str, cert_id: str) -> CertificateRecord:
        self._account(account_id)
        self._settle(account_id)
        return self._gateway_record(account_id, cert_id)

    def in_use(self, account_id: str) -> CertificateRecord | None:
        return next((r for r in self.list(account_id) if r.in_use), None)

    def activate(self, account_id: str, cert_id: str) -> CertificateRecord:
        """inactive → pending_deployment (→ available once every live node loaded it)."""
        now = self._clock()
        with self._store.transaction():
            record = self._activatable(account_id, cert_id)
            others = [state_of(r) for r in self.list(account_id) if r.id != record.id]
            status = lifecycle.activate(state_of(record), others, now)
            self._store.certificates.set_binding_status(record.id, status, now)
            self._settle(account_id)
            self._changed()
        return self._gateway_record(account_id, cert_id)

    def deactivate(self, account_id: str, cert_id: str) -> CertificateRecord:
        """available → pending_deletion (→ inactive once no live node has it loaded)."""
        now = self._clock()
        with self._store.transaction():
            record = self.get(account_id, cert_id)
            status = lifecycle.deactivate(state_of(record))
            self._store.certificates.set_binding_status(record.id, status, now)
            self._settle(account_id)
            self._changed()
        return self._gateway_record(account_id, cert_id)

    def delete(self, account_id: str, cert_id: str) -> CertificateRecord:
        """Delete an inactive certificate; a custom one only leaves Gateway (its mTLS upload stays)."""
        with self._store.transaction():
            record = self.get(account_id, cert_id)
            lifecycle.check_delete(state_of(record))
            if record.kind is CertificateKind.CUSTOM:
                self._store.certificates.set_binding_status(record.id, None, self._clock())
            else:
                self._store.certificates.delete(record.id)
            self._authorities.pop(record.id, None)
        logger.info("account %s: deleted gateway certificate %s", account_id, cert_id)
        return record

    def turn_on(self, account_id: str, cert_id: str) -> CertificateRecord:
        """Make an available certificate the one in use (the previous one stays available)."""
        self.update_configuration(account_id, {"certificate": {"id": cert_id}})
        return self._gateway_record(account_id, cert_id)

    def _turn_on(self, account_id: str, cert_id: str, now: datetime) -> None:
        record = self._store.certificates.get(cert_id, account_id=account_id)
        if record is None or not record.is_gateway_certificate:
            raise InvalidInput(
                "settings.certificate.id",
                f"no gateway certificate with id {cert_id!r} in this account",
            )
        if record.in_use:
            return
        lifecycle.turn_on(state_of(record), now)
        self._store.certificates.set_in_use(account_id, record.id, now)
        logger.info("account %s: certificate %s turned on", account_id, cert_id)

    def expiry_messages(self, records: Sequence[CertificateRecord]) -> builtins.list[str]:
        """Warnings for certificates within 30 days of expiry (or expired), in-use first."""
        now = self._clock()
        messages = []
        for record in sorted(records, key=lambda r: not r.in_use):
            message = lifecycle.expiry_message(state_of(record), now)
            if message and record.in_use and self.expiry_note is not None:
                message = f"{message}; {self.expiry_note(record)}"
            if message:
                messages.append(message)
        return messages

    # -- mTLS certificates ----------------------------------------------------------------------

    def create_mtls(
        self, account_id: str, *, certificates: str, private_key: str | None = None, name: str = ""
    ) -> CertificateRecord:
        """Upload a signing CA; with its key it can later be activated as a custom gateway CA."""
        self._account(account_id)
        upload = parse_upload(certificates, private_key, clock=self._clock)
        kind = CertificateKind.CUSTOM if upload.authority else CertificateKind.MTLS
        record = new_record(
            account_id, kind, upload.certificate, upload.chain, upload.authority, self._sealer,
            name=name, now=self._clock(), binding_status=None,
        )  # fmt: skip
        self._store.certificates.add(record)
        logger.info("account %s: uploaded %s certificate %s", account_id, kind.value, record.id)
        return record

    def list_mtls(self, account_id: str) -> builtins.list[CertificateRecord]:
        self._account(account_id)
        return self._store.certificates.list(account_id, kinds=MTLS_KINDS)

    def get_mtls(self, account_id: str, cert_id: str) -> CertificateRecord:
        self._account(account_id)
        record = self._store.certificates.get(cert_id, account_id=account_id)
        if record is None or record.kind not in MTLS_KINDS:
            raise NotFound("mTLS certificate", cert_id)
        return record

    def delete_mtls(self, account_id: str, cert_id: str) -> CertificateRecord:
        """Delete an upload, unless it is activated for Gateway (anything but inactive) or a
        device posture rule names it."""
        with self._store.transaction():
            self._settle(account_id)
            record = self.get_mtls(account_id, cert_id)
            status = record.binding_status
            if status not in (None, BindingStatus.INACTIVE):
                raise Refused(
                    f"certificate {cert_id} is activated as a gateway certificate ({status}"
                    f"{', in use' if record.in_use else ''}): deactivate it through "
                    "gateway/certificates and wait until it is inactive before deleting it"
                )
            rules = self._store.posture_rules.using_certificate(account_id, record.id)
            if rules:
                raise Refused(
                    f"certificate {cert_id} signs the device certificates of device posture "
                    f"rule(s) {', '.join(rules)}: change or delete those rules first"
                )
            self._store.certificates.delete(record.id)
            self._authorities.pop(record.id, None)
        logger.info("account %s: deleted mTLS certificate %s", account_id, cert_id)
        return record

    # -- configuration --------------------------------------------------------------------------

    def configuration(self, account_id: str) -> GatewayConfiguration:
        """The settings as shown by the API: ``certificate.id`` is the in-use certificate."""
        self._account(account_id)
        stored = self._stored_configuration(account_id)
        in_use = self._store.certificates.list(account_id, kinds=GATEWAY_KINDS)
        in_use_id = next((r.id for r in in_use if r.in_use), None)
        return dataclasses.replace(stored, settings=gw_settings.rendered(stored.settings, in_use_id))

    def replace_configuration(self, account_id: str, settings: object) -> GatewayConfiguration:
        """PUT: the settings given replace the stored ones (the in-use certificate stays)."""
        change = gw_settings.parse_settings(settings, partial=False)
        return self._save_configuration(account_id, change, gw_settings.replaced(change))

    def update_configuration(self, account_id: str, settings: object) -> GatewayConfiguration:
        """PATCH: each top-level setting given replaces the stored one."""
        change = gw_settings.parse_settings(settings, partial=True)
        self._account(account_id)
        stored = self._stored_configuration(account_id).settings
        return self._save_configuration(account_id, change, gw_settings.merged(stored, change))

    def tls_decrypt_enabled(self, account_id: str) -> bool:
        return gw_settings.tls_decrypt_enabled(self._stored_configuration(account_id).settings)

    def _save_configuration(
        self, account_id: str, change: gw_settings.SettingsChange, settings: dict[str, object]
    ) -> GatewayConfiguration:
        now = self._clock()
        with self._store.transaction():
            self._account(account_id)
            if change.certificate_id is not None:
                self._settle(account_id)
                self._turn_on(account_id, change.certificate_id, now)
            self._store.configurations.save(account_id, settings, now)
            self._changed()
        return self.configuration(account_id)

    def _stored_configuration(self, account_id: str) -> GatewayConfiguration:
        stored = self._store.configurations.get(account_id)
        if stored is None:  # an account made before its configuration: defaults, dated now
            now = self._clock()
            return GatewayConfiguration(account_id, dict(gw_settings.DEFAULT_SETTINGS), now, now)
        return stored

    # -- nodes ----------------------------------------------------------------------------------

    def register_node(self, node_id: str, name: str) -> None:
        """A node (re)starts: it is live and has loaded nothing yet."""
        self._deployment.register(node_id, name)

    def node_stopped(self, node_id: str) -> None:
        """A node stops cleanly: nothing waits for it any more (a killed node ages out instead)."""
        self._store.nodes.remove(node_id)
        logger.info("node %s stopped", node_id)

    def loadable(self, account_id: str) -> builtins.list[LoadableCa]:
        """Certificates nodes should hold: pending_deployment and available ones, not expired."""
        now = self._clock()
        result = []
        for record in self.list(account_id):
            if record.binding_status not in LOADABLE:
                continue
            if record.expires_on <= now:
                logger.warning("certificate %s expired: not loading it (expired CAs sign nothing)", record.id)
                continue
            try:
                authority = self._authority(record)
            except CertError as e:
                logger.error("certificate %s cannot be loaded: %s", record.id, e)
                continue
            result.append(LoadableCa(record.id, record.fingerprint, authority, record.in_use))
        return result

    def loadable_version(self, account_id: str) -> LoadableVersion:
        """What ``loadable`` would return, as cheap comparable values (no key is unsealed):
        a node reloads only when this changed."""
        return _loadable_version(self.list(account_id))

    def loadable_versions(self) -> dict[str, LoadableVersion]:
        """Every account's ``loadable_version`` in one query (accounts with none are absent)."""
        by_account: dict[str, builtins.list[CertificateBinding]] = {}
        for record in self._store.certificates.with_status(LOADABLE):
            if record.kind in GATEWAY_KINDS:  # as ``list``: gateway certificates only
                by_account.setdefault(record.account_id, []).append(record)
        return {account_id: _loadable_version(records) for account_id, records in by_account.items()}

    def node_reports(self, node_id: str) -> dict[str, dict[str, str]]:
        """What ``node_id`` reported it loaded: account id → certificate id → fingerprint."""
        return self._store.nodes.loaded_by(node_id)

    def node_heartbeat(self, node_id: str) -> None:
        """The node is alive (what it loaded unchanged); pending certificates are settled."""
        self._deployment.heartbeat(node_id)

    def node_loaded(self, node_id: str, account_id: str, fingerprints_by_id: Mapping[str, str]) -> None:
        """Heartbeat plus what the node has loaded; promotes pending certificates accordingly."""
        self._deployment.loaded(node_id, account_id, fingerprints_by_id)

    def live_nodes(self) -> builtins.list[str]:
        return self._deployment.live_nodes()

    def node_is_live(self, node_id: str) -> bool:
        """Whether a node with this id heartbeated within the live window (a second process
        starting with the same ``--node-id`` is refused while the first one is)."""
        return node_id in self._deployment.live_nodes()

    @property
    def live_node_window(self) -> timedelta:
        return self._deployment.window

    def _settle(self, account_id: str) -> None:
        self._deployment.settle(account_id)

    # -- internals ------------------------------------------------------------------------------

    def authority(self, cert_id: str) -> CertificateAuthority:
        """The CA with its key, for signing (CRLs, leaves); NotFound for a certificate without one."""
        record = self._store.certificates.get(cert_id)
        if record is None or not record.has_private_key:
            raise NotFound("certificate with a private key", cert_id)
        return self._authority(record)

    def find(self, cert_id: str) -> CertificateRecord | None:
        """Any certificate by id, whatever its account (the public ``/pki`` paths)."""
        return self._store.certificates.get(cert_id)

    def _authority(self, record: CertificateRecord) -> CertificateAuthority:
        cached = self._authorities.get(record.id)
        if cached is None or cached.fingerprint != record.fingerprint:
            cached = load_authority(record, self._sealer)
            self._authorities[record.id] = cached
        return cached

    def _account(self, account_id: str) -> Account:
        account = self._store.accounts.get(account_id)
        if account is None:
            raise NotFound("account", account_id)
        return account

    def _gateway_record(self, account_id: str, cert_id: str) -> CertificateRecord:
        record = self._store.certificates.get(cert_id, account_id=account_id)
        if record is None or not record.is_gateway_certificate:
            raise NotFound("gateway certificate", cert_id)
        return record

    def _activatable(self, account_id: str, cert_id: str) -> CertificateRecord:
        self._settle(account_id)
        record = self._store.certificates.get(cert_id, account_id=account_id)
        if record is None:
            raise NotFound("gateway certificate", cert_id)
        if record.kind is CertificateKind.MTLS:
            raise Refused(
                f"mTLS certificate {cert_id} was uploaded without its private key: a gateway "
                "certificate needs one to sign leaves. Upload it again through mtls_certificates "
                "with private_key, then activate the new id"
            )
        return record
