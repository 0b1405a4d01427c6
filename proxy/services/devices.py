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

import dataclasses
import hmac
import logging
import secrets
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from certs.clock import Clock
from policies.facts import ANONYMOUS, Identity
from policies.posture import PostureRule
from proxy.services.device_enrollment import (
    DeviceDetails,
    check_email,
    encode_token,
    secret_hash,
    token_lifetime,
    user_id,
)
from proxy.services.device_errors import Unauthenticated
from proxy.services.device_identity import Posture, posture_of
from proxy.services.device_reports import Ingest, StoredOutcome
from proxy.services.device_writer import GroupCommit
from proxy.services.errors import InvalidInput, NotFound, Refused
from proxy.services.posture_nonces import IssuedNonce, NonceMinter
from proxy.services.posture_rules import (
    MAX_RULES,
    RuleSet,
    check_certificate_id,
    load_rule,
    load_rule_set,
    parse_rule,
    stored_body,
)
from proxy.services.posture_verify import Report
from proxy.store import (
    Device,
    EnrollmentToken,
    LogQuery,
    Outcome,
    PostureLogEntry,
    PostureResult,
    Store,
    StoredPostureRule,
)

logger = logging.getLogger(__name__)

__all__ = ["DeviceService", "Enrolled", "IssuedToken", "StoredOutcome", "Unauthenticated"]

NONCE_LIFETIME: Final = timedelta(minutes=2)
REFUSAL_LOG_INTERVAL: Final = timedelta(minutes=1)  # per device: refused secrets in the log
SEEN_INTERVAL: Final = timedelta(minutes=1)  # last_seen is written at most this often (or new IP)
_DUMMY_HASH: Final = bytes(32)
MAX_ID_CHARS: Final = 128
MAX_SECRET_CHARS: Final = 512


@dataclass(frozen=True)
class IssuedToken:
    id: str
    token: str  # shown once; the store keeps the secret's hash
    email: str
    created_at: datetime
    expires_at: datetime


@dataclass(frozen=True)
class Enrolled:
    device: Device
    secret: str  # shown once


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
    ) -> None:
        """``public_base_url``: the admin server's URL as devices reach it (it goes into
        enrollment tokens); ``server_fingerprint``: SHA-256 colon hex of its TLS certificate,
        ``""`` when it serves plain HTTP (loopback); ``nonce_key``: the key nonces are minted
        with (``posture_nonces.nonce_key_from_master``; random per process when None)."""
        self._store = store
        self._clock = clock
        self._public_base_url = public_base_url.rstrip("/")
        self._server_fingerprint = server_fingerprint
        self._minter = NonceMinter(nonce_key, nonce_lifetime)
        self.writer = GroupCommit(store)
        self._ingest = Ingest(store, self.writer, self._minter, self._results_stored)
        self._subscribers: list[Callable[[], None]] = []
        self._rule_sets: dict[str, RuleSet] = {}  # by account
        self._devices: dict[str, Device] = {}  # by id: credentials and attributes
        self._postures: dict[str, _CachedPosture] = {}  # by device id
        self._refusals_logged: dict[str, datetime] = {}
        self._seen: dict[str, tuple[str, datetime]] = {}  # device id: last written (ip, time)
        self._pruned_at: datetime | None = None

    def close(self) -> None:
        """Stop the group-commit writer (its thread and connection); call at shutdown."""
        self.writer.close()

    # -- subscribers ----------------------------------------------------------------------------

    def subscribe(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` after every committed change of results, rules or devices."""
        self._subscribers.append(callback)

    def _notify(self) -> None:
        for callback in list(self._subscribers):
            try:
                callback()
            except Exception:  # one broken subscriber must not hide the change from the others
                logger.exception("device posture subscriber %r failed", callback)

    def _results_stored(self, device_id: str) -> None:
        self._postures.pop(device_id, None)
        self._notify()

    def _rules_changed(self, account_id: str) -> None:
        self._rule_sets.pop(account_id, None)
        self._postures.clear()
        self._notify()

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
        return list(self._rules(account_id).rules)

    def rule(self, account_id: str, rule_id: str) -> PostureRule:
        self._account(account_id)
        found = self._rules(account_id).by_id.get(rule_id)
        if found is None:
            raise NotFound("device posture rule", rule_id)
        return found

    def create_rule(self, account_id: str, body: dict[str, Any]) -> PostureRule:
        rule = parse_rule({**body, "id": ""})
        now = self._clock()
        with self._store.transaction():
            self._account(account_id)
            if len(self._store.posture_rules.list(account_id)) >= MAX_RULES:
                raise Refused(f"an account has at most {MAX_RULES} device posture rules")
            check_certificate_id(self._store, account_id, rule)
            rule = dataclasses.replace(rule, id=str(uuid.uuid4()))
            self._save_rule(account_id, rule, created_at=now, now=now)
        logger.info("account %s: created device posture rule %s %r", account_id, rule.id, rule.name)
        return rule

    def replace_rule(self, account_id: str, rule_id: str, body: dict[str, Any]) -> PostureRule:
        """PUT: the body replaces the rule. Results verified against other requirements (type
        or input changed) are dropped: devices report again under the new ones."""
        given = body.get("id")
        if given is not None and given != rule_id:
            raise InvalidInput("id", f"{given!r} does not match the id in the path ({rule_id})")
        rule = dataclasses.replace(parse_rule({**body, "id": ""}), id=rule_id)
        now = self._clock()
        with self._store.transaction():
            self._account(account_id)
            stored = self._store.posture_rules.get(account_id, rule_id)
            if stored is None:
                raise NotFound("device posture rule", rule_id)
            check_certificate_id(self._store, account_id, rule)
            before = load_rule(stored)
            if (before.type, before.input) != (rule.type, rule.input):
                self._store.posture_results.delete_for_rule(rule_id)
                logger.info("device posture rule %s: requirements changed, results dropped", rule_id)
            self._save_rule(account_id, rule, created_at=stored.created_at, now=now)
        logger.info("account %s: replaced device posture rule %s", account_id, rule_id)
        return rule

    def delete_rule(self, account_id: str, rule_id: str) -> PostureRule:
        with self._store.transaction():
            rule = self.rule(account_id, rule_id)
            self._store.posture_rules.delete(account_id, rule_id)
            self._store.posture_results.delete_for_rule(rule_id)
            self._store.after_commit(lambda: self._rules_changed(account_id))
        logger.info("account %s: deleted device posture rule %s", account_id, rule_id)
        return rule

    def _save_rule(
        self, account_id: str, rule: PostureRule, *, created_at: datetime, now: datetime
    ) -> None:
        stored = StoredPostureRule(account_id, rule.id, stored_body(rule), created_at, now)
        self._store.posture_rules.save(stored)
        self._store.after_commit(lambda: self._rules_changed(account_id))

    def _rules(self, account_id: str) -> RuleSet:
        cached = self._rule_sets.get(account_id)
        if cached is None:
            cached = load_rule_set(self._store, account_id)
            if not self._store.in_transaction:  # read what may yet roll back: do not keep it
                self._rule_sets[account_id] = cached
        return cached

    # -- enrollment -----------------------------------------------------------------------------

    def create_enrollment_token(
        self, account_id: str, *, email: str = "", expires_in: str | None = None
    ) -> IssuedToken:
        """A single-use token; ``email`` (optional) becomes the user of the device it enrolls."""
        self._account(account_id)
        email = check_email(email) if email.strip() else ""
        lifetime = token_lifetime(expires_in)
        secret = secrets.token_urlsafe(32)
        now = self._clock()
        record = EnrollmentToken(
            id=str(uuid.uuid4()),
            account_id=account_id,
            secret_sha256=secret_hash(secret),
            email=email,
            created_at=now,
            expires_at=now + lifetime,
        )
        with self._store.transaction():
            self._store.enrollment_tokens.delete_expired(now - timedelta(days=1))
            self._store.enrollment_tokens.add(record)
        token = encode_token(
            server_url=self._public_base_url, account_id=account_id, secret=secret,
            fingerprint=self._server_fingerprint,
        )  # fmt: skip
        logger.info(
            "account %s: enrollment token %s made (user %s, expires %s)",
            account_id, record.id, email or "named by the device", record.expires_at,
        )  # fmt: skip
        return IssuedToken(record.id, token, email, now, record.expires_at)

    def enroll(self, secret: str, details: DeviceDetails, ip: str) -> Enrolled:
        """Admit a device with an enrollment token's secret (single use, not expired)."""
        now = self._clock()
        token = self._store.enrollment_tokens.by_secret(secret_hash(secret[:MAX_SECRET_CHARS]))
        if token is None or len(secret) > MAX_SECRET_CHARS:
            logger.warning("enrollment from %s refused: unknown enrollment secret", ip)
            raise Unauthenticated(
                "secret: not a valid enrollment token (make one with `gateway device token`)"
            )
        if token.used_at is not None:
            logger.warning("enrollment from %s refused: token %s already used", ip, token.id)
            raise Refused(
                f"enrollment token {token.id} was already used (by device {token.device_id}): "
                "tokens are single use; make a new one with `gateway device token`"
            )
        if token.expires_at <= now:
            logger.warning("enrollment from %s refused: token %s expired", ip, token.id)
            raise Refused(
                f"enrollment token {token.id} expired at {token.expires_at:%Y-%m-%dT%H:%M:%SZ}: "
                "make a new one with `gateway device token`"
            )
        email = token.email or details.email
        if not email:
            raise InvalidInput(
                "email", "required: the enrollment token names no user, so the device must"
            )
        device_secret = secrets.token_urlsafe(32)
        device = Device(
            id=str(uuid.uuid4()), account_id=token.account_id,
            secret_sha256=secret_hash(device_secret), name=details.name, os=details.os.value,
            os_version=details.os_version, serial_number=details.serial_number,
            hostname=details.hostname, email=email, ip=ip, created_at=now, updated_at=now,
            last_seen=now,
        )  # fmt: skip
        with self._store.transaction():
            if not self._store.enrollment_tokens.use(token.id, device.id, now):
                raise Refused(f"enrollment token {token.id} was already used")
            self._store.devices.add(device)
            self._store.after_commit(self._notify)
        logger.info(
            "account %s: enrolled device %s %r (%s, user %s) from %s with token %s",
            device.account_id, device.id, device.name, device.os, email, ip, token.id,
        )  # fmt: skip
        return Enrolled(device, device_secret)

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
        self._notify()

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
        return SeenIdentity(
            device, tuple((rule, results[rule.id]) for rule in rules if rule.id in results)
        )

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
