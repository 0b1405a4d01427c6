"""Devices and their posture (SPEC §5, §7): posture rules, enrollment, the agent's calls, and the
identity the proxy attaches to each flow.

- Posture rules: CRUD in Cloudflare's shapes, validated by ``policies.posture``; a rule's
  ``input.certificate_id`` must name an mTLS upload of the account.
- Enrollment: an admin makes a single-use token (1 hour by default); a device presents its secret
  once and gets a device id and secret. Both secrets are stored as SHA-256 hashes only.
- Agent calls (device id and secret): its rules with their signing certificates, nonces (single
  use, 2 minutes) and results, which the server verifies (``posture_verify``) before storing.
  The writes of concurrent agent requests share one transaction (``device_writer``).
- For the proxy: :meth:`DeviceService.authenticate` and :meth:`DeviceService.identity`, both a
  dictionary lookup once warm (``device_identity`` says what passed and failed means).

Every result, and every refused report about a known device, goes to the posture log.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from certs.clock import Clock
from policies.facts import ANONYMOUS, Identity
from policies.posture import PostureRule
from proxy.services.device_addresses import DeviceAddressBook
from proxy.services.device_enrollment import (
    MAX_SECRET_CHARS,
    DeviceDetails,
    Enrolled,
    Enrollment,
    IssuedToken,
    secret_hash,
    user_id,
)
from proxy.services.device_errors import Unauthenticated
from proxy.services.device_identity import Posture, posture_of
from proxy.services.device_reports import Ingest, StoredOutcome
from proxy.services.device_writer import GroupCommit
from proxy.services.errors import NotFound
from proxy.services.posture_nonces import IssuedNonce, NonceMinter
from proxy.services.posture_rules import RuleBook, RuleSet
from proxy.services.posture_verify import Report
from proxy.services.proof_worker import ProofWorker
from proxy.services.subscribers import Subscribers
from proxy.store import Changes, Device, LogQuery, Outcome, PostureLogEntry, PostureResult, Store

logger = logging.getLogger(__name__)

__all__ = ["DeviceService", "Enrolled", "IssuedToken", "StoredOutcome", "Unauthenticated"]

NONCE_LIFETIME: Final = timedelta(minutes=2)
REFUSAL_LOG_INTERVAL: Final = timedelta(minutes=1)  # per device: refused secrets in the log
SEEN_INTERVAL: Final = timedelta(minutes=1)  # last_seen is written at most this often (or new IP)
_DUMMY_HASH: Final = bytes(32)
MAX_ID_CHARS: Final = 128


@dataclass(frozen=True)
class SeenIdentity:
    """``last_seen_identity``: the user's most recently seen device and its results."""

    device: Device
    results: tuple[tuple[PostureRule, PostureResult], ...]


@dataclass(frozen=True)
class _CachedPosture:
    identity: Identity
    valid_until: datetime


class DeviceService:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        *,
        public_base_url: str,
        server_fingerprint: str = "",
        nonce_lifetime: timedelta = NONCE_LIFETIME,
        nonce_key: bytes | None = None,
        proof_worker: bool = False,
    ) -> None:
        """``public_base_url``: the admin server's URL as devices reach it (it goes into
        enrollment tokens); ``server_fingerprint``: SHA-256 colon hex of its TLS certificate,
        ``""`` when it serves plain HTTP (loopback); ``nonce_key``: the key nonces are minted
        with (``posture_nonces.nonce_key_from_master``; random per process when None);
        ``proof_worker``: verify proof signatures in a child process (``proof_worker``), off the
        event loop, rather than in this one."""
        self._store = store
        self._clock = clock
        self._rulebook = RuleBook(store, clock, self._rules_changed)
        self._enrollment = Enrollment(
            store, clock, server_url=public_base_url.rstrip("/"), fingerprint=server_fingerprint
        )
        self._minter = NonceMinter(nonce_key, nonce_lifetime)
        self.writer = GroupCommit(store)
        self.proofs = ProofWorker() if proof_worker else None
        self._ingest = Ingest(store, self.writer, self._minter, self._results_stored, self.proofs)
        self._subscribers = Subscribers("device posture")
        self._devices: dict[str, Device] = {}  # by id: credentials and attributes
        self._postures: dict[str, _CachedPosture] = {}  # by device id
        self._refusals_logged: dict[str, datetime] = {}
        self._seen: dict[str, tuple[str, datetime]] = {}  # device id: last written (ip, time)
        self._pruned_at: datetime | None = None
        self.addresses = DeviceAddressBook(store, clock)  # transparent mode: device by source address

    def close(self) -> None:
        """Stop the group-commit writer (its thread and connection); call at shutdown."""
        self.writer.close()

    async def aclose(self) -> None:
        """:meth:`close`, and stop the proof worker's process."""
        if self.proofs is not None:
            await self.proofs.close()
        self.close()

    # -- subscribers ----------------------------------------------------------------------------

    def subscribe(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` after every committed change of results, rules or devices."""
        self._subscribers.add(callback)

    def _results_stored(self, device_id: str) -> None:
        self._postures.pop(device_id, None)
        self._subscribers.notify()

    def _rules_changed(self, account_id: str) -> None:
        self._postures.clear()
        self._subscribers.notify()

    def forget_cached(self) -> None:
        """Another process changed the store (a data-plane node): read devices, posture rules
        and results again when next asked. Nothing is dropped while the store cannot be read."""
        self._devices.clear()
        self._postures.clear()
        self._rulebook.forget_all()
        self.addresses.refresh()
        self._subscribers.notify()

    def forget_changed(self, changes: Changes) -> None:
        """Another process made ``changes`` (the store's change journal): forget those devices,
        those accounts' rules (and every posture computed with them), read the address index
        again if an address changed; all of it when the journal cannot tell."""
        if changes.everything:
            self.forget_cached()
            return
        for device_id in changes.devices:
            self._devices.pop(device_id, None)
            self._postures.pop(device_id, None)
        for account_id in changes.rule_accounts:
            self._rulebook.forget(account_id)  # _rules_changed: every cached posture, subscribers
        if changes.addresses:
            self.addresses.refresh()
        if changes.devices or changes.addresses:
            self._subscribers.notify()

    # -- the proxy ------------------------------------------------------------------------------

    def authenticate(self, device_id: str, secret: str) -> str | None:
        """The device id when ``secret`` is the device's (constant-time compare), else None."""
        device = self.check_secret(device_id, secret)
        return device.id if device is not None else None

    def identity(self, device_id: str) -> Identity:
        """The device's user and posture now (cached until a result, rule or the earliest
        expiry of a pass changes it); ANONYMOUS for an unknown device."""
        cached = self._postures.get(device_id)
        if cached is not None and self._clock() < cached.valid_until:
            return cached.identity
        device = self._device(device_id)
        if device is None:
            return ANONYMOUS
        posture = self._posture(device, self._clock())
        if not self._store.in_transaction:
            self._postures[device_id] = _CachedPosture(posture.identity, posture.valid_until)
        return posture.identity

    def _posture(self, device: Device, now: datetime) -> Posture:
        rules = self._rules(device.account_id).for_platform(device.os)
        results = {r.rule_id: r for r in self._store.posture_results.for_device(device.id)}
        return posture_of(device, rules, results, now)

    # -- posture rules --------------------------------------------------------------------------

    def rules(self, account_id: str) -> list[PostureRule]:
        self._account(account_id)
        return list(self._rulebook.rule_set(account_id).rules)

    def rule(self, account_id: str, rule_id: str) -> PostureRule:
        self._account(account_id)
        return self._rulebook.get(account_id, rule_id)

    def create_rule(self, account_id: str, body: dict[str, Any]) -> PostureRule:
        self._account(account_id)
        return self._rulebook.create(account_id, body)

    def replace_rule(self, account_id: str, rule_id: str, body: dict[str, Any]) -> PostureRule:
        """PUT: the body replaces the rule. Results verified against other requirements (type
        or input changed) are dropped: devices report again under the new ones."""
        self._account(account_id)
        return self._rulebook.replace(account_id, rule_id, body)

    def delete_rule(self, account_id: str, rule_id: str) -> PostureRule:
        self._account(account_id)
        return self._rulebook.delete(account_id, rule_id)

    def _rules(self, account_id: str) -> RuleSet:
        return self._rulebook.rule_set(account_id)

    # -- enrollment -----------------------------------------------------------------------------

    def create_enrollment_token(
        self, account_id: str, *, email: str = "", expires_in: str | None = None
    ) -> IssuedToken:
        """A single-use token; ``email`` (optional) becomes the user of the device it enrolls."""
        self._account(account_id)
        return self._enrollment.issue(account_id, email=email, expires_in=expires_in)

    def enroll(self, secret: str, details: DeviceDetails, ip: str, addresses: Sequence[str] = ()) -> Enrolled:
        """Admit a device with an enrollment token's secret (single use, not expired);
        ``addresses``: the device's own (``device_addresses.parse_registered``)."""
        enrolled = self._enrollment.admit(secret, details, ip)
        if addresses:
            device = enrolled.device
            self.addresses.register(self._store, device.id, device.account_id, addresses, self._clock())
            self.addresses.registered(device.id, addresses)
        self._subscribers.notify()
        return enrolled

    async def register_addresses(self, device: Device, addresses: Sequence[str]) -> None:
        """The agent's addresses now (each report): written when changed, or a minute after the
        last write; the index of transparent mode sees them once committed."""
        now = self._clock()
        if not self.addresses.due(device.id, addresses, now):
            return
        book, device_id, account_id = self.addresses, device.id, device.account_id
        await self.writer.run(lambda store: book.register(store, device_id, account_id, addresses, now))
        book.registered(device_id, addresses)

    def device_at(self, address: str) -> str | None:
        """The device at a source address (transparent mode), or None: unknown or ambiguous."""
        return self.addresses.device_at(address)

    # -- the agent's calls ----------------------------------------------------------------------

    def check_secret(self, device_id: str, secret: str) -> Device | None:
        """The device if ``secret`` is its secret; None otherwise (nothing logged)."""
        if len(device_id) > MAX_ID_CHARS or len(secret) > MAX_SECRET_CHARS:
            return None
        device = self._device(device_id)
        digest = secret_hash(secret)
        if device is None:
            hmac.compare_digest(_DUMMY_HASH, digest)  # as long as a wrong secret takes
            return None
        return device if hmac.compare_digest(device.secret_sha256, digest) else None

    async def login(self, device_id: str, secret: str, ip: str) -> Device:
        """The agent's device; Unauthenticated (logged, and in the posture log when the device
        exists, at most once a minute per device) otherwise."""
        device = self.check_secret(device_id, secret)
        if device is not None:
            return device
        known = self._device(device_id) if len(device_id) <= MAX_ID_CHARS else None
        reason = "wrong device secret" if known else "unknown device"
        logger.warning("agent API: refused device %r from %s: %s", device_id[:64], ip, reason)
        if known is not None and self._refusal_due(known.id):
            entry = self._log_entry(known, None, Outcome.REFUSED, f"{reason} (from {ip})")
            await self.writer.run(lambda store: store.posture_logs.add([entry]))
        raise Unauthenticated(f"{reason}: check the agent's device id and secret, or enroll again")

    async def log_refused(self, device: Device, reason: str) -> None:
        """A request of an authenticated device that was refused before any result (a
        malformed body, say): into the posture log."""
        logger.warning("device %s: %s", device.id, reason)
        entry = self._log_entry(device, None, Outcome.REFUSED, reason[:1000])
        await self.writer.run(lambda store: store.posture_logs.add([entry]))

    def _refusal_due(self, device_id: str) -> bool:
        now = self._clock()
        last = self._refusals_logged.get(device_id)
        if last is not None and now - last < REFUSAL_LOG_INTERVAL:
            return False
        self._refusals_logged[device_id] = now
        return True

    def agent_rules(self, device: Device) -> list[tuple[PostureRule, str]]:
        """The rules that apply to the device, each with its signing certificates' PEM."""
        rules = self._rules(device.account_id)
        return [
            (rule, signers.pem if (signers := rules.signers.get(rule.certificate_id)) else "")
            for rule in rules.for_platform(device.os)
        ]

    async def issue_nonce(self, device: Device, ip: str) -> IssuedNonce:
        """A fresh nonce for this device only: single use, valid for 2 minutes (no write:
        ``posture_nonces``)."""
        now = self._clock()
        issued = self._minter.issue(device.id, now)
        if self._seen_due(device.id, ip, now):
            await self.writer.run(lambda store: store.devices.seen(device.id, ip, now))
        return issued

    def offer_nonce(self, device: Device) -> IssuedNonce:
        """A fresh nonce handed out with another answer (no write at all): the agent proves its
        next report with it and saves a ``POST /agent/nonce``."""
        return self._minter.issue(device.id, self._clock())

    @property
    def nonce_lifetime(self) -> timedelta:
        return self._minter.lifetime

    def _seen_due(self, device_id: str, ip: str, now: datetime) -> bool:
        """Write the device's last sighting when its address changed or a minute went by (a
        write per agent request would cost more than the rest of a nonce)."""
        last = self._seen.get(device_id)
        if last is not None and last[0] == ip and now - last[1] < SEEN_INTERVAL:
            return False
        self._seen[device_id] = (ip, now)
        return True

    def _prune_due(self, now: datetime) -> bool:
        """Once a minute at most."""
        if self._pruned_at is not None and now - self._pruned_at < timedelta(minutes=1):
            return False
        self._pruned_at = now
        return True

    async def submit(self, device: Device, reports: Sequence[Report], ip: str) -> list[StoredOutcome]:
        """Verify and store the device's results (``device_reports.Ingest``)."""
        now = self._clock()
        rules = self._rules(device.account_id)
        seen = self._seen_due(device.id, ip, now)
        prune = self._prune_due(now)
        return await self._ingest.submit(device, rules, reports, ip, now, seen=seen, prune=prune)

    # -- devices --------------------------------------------------------------------------------

    def devices(self, account_id: str) -> list[Device]:
        self._account(account_id)
        return self._store.devices.list(account_id)

    def device(self, account_id: str, device_id: str) -> Device:
        self._account(account_id)
        found = self._store.devices.get(device_id, account_id=account_id)
        if found is None:
            raise NotFound("device", device_id)
        return found

    def delete_device(self, account_id: str, device_id: str) -> Device:
        """Forget a device: its secret stops working at once (results and nonces go with it)."""
        with self._store.transaction():
            device = self.device(account_id, device_id)
            self._store.devices.delete(device_id)
            self._store.after_commit(lambda: self._forget(device_id))
        logger.info("account %s: deleted device %s %r", account_id, device_id, device.name)
        return device

    def _forget(self, device_id: str) -> None:
        self._devices.pop(device_id, None)
        self._seen.pop(device_id, None)
        self._postures.pop(device_id, None)
        self.addresses.forget(device_id)
        self._subscribers.notify()

    def _device(self, device_id: str) -> Device | None:
        cached = self._devices.get(device_id)
        if cached is None:
            cached = self._store.devices.get(device_id)
            if cached is not None and not self._store.in_transaction:
                self._devices[device_id] = cached
        return cached

    def last_seen_identity(self, account_id: str, user: str) -> SeenIdentity:
        """The user's (``user_id(email)``) most recently seen device and its latest results."""
        self._account(account_id)
        devices = [d for d in self._store.devices.list(account_id) if user_id(d.email) == user]
        if not devices:
            raise NotFound("user", user)
        device = max(devices, key=lambda d: (d.last_seen, d.id))
        results = {r.rule_id: r for r in self._store.posture_results.for_device(device.id)}
        rules = self._rules(account_id).for_platform(device.os)
        return SeenIdentity(device, tuple((rule, results[rule.id]) for rule in rules if rule.id in results))

    def logs(self, query: LogQuery, *, offset: int, limit: int) -> tuple[list[PostureLogEntry], int]:
        self._account(query.account_id)
        return self._store.posture_logs.query(query, offset=offset, limit=limit)

    # -- helpers --------------------------------------------------------------------------------

    def now(self) -> datetime:
        return self._clock()

    def _log_entry(
        self, device: Device, rule: PostureRule | None, outcome: Outcome, reason: str
    ) -> PostureLogEntry:
        return PostureLogEntry(
            account_id=device.account_id, device_id=device.id,
            rule_id=rule.id if rule else "", rule_name=rule.name if rule else "",
            outcome=outcome, verified=False, reason=reason, at=self._clock(),
        )  # fmt: skip

    def _account(self, account_id: str) -> None:
        if self._store.accounts.get(account_id) is None:
            raise NotFound("account", account_id)
