"""Device posture rules: API bodies read into ``policies.posture.PostureRule`` values, the
per-account set of rules with their signing certificates parsed once, and :class:`RuleBook`, which
changes them and caches the sets between changes.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from cryptography import x509

from certs.authority import parse_certificates
from certs.clock import Clock
from certs.errors import CertError
from policies.posture import PostureRule
from policies.rules import FieldError
from proxy.services.errors import InvalidInput, NotFound, Refused
from proxy.services.policy_state import InvalidPolicy, field_message
from proxy.store import CertificateKind, Store, StoredPostureRule

logger = logging.getLogger(__name__)

BODY: Final = "request body"
MTLS_KINDS: Final = frozenset({CertificateKind.MTLS, CertificateKind.CUSTOM})
MAX_RULES: Final = 1000  # per account: every device fetches all of its rules at each check


def parse_rule(body: Mapping[str, Any]) -> PostureRule:
    """A rule from an API body; InvalidInput names the field (``input.cn``, ``schedule``)."""
    try:
        return PostureRule.from_api(body, where=BODY)
    except FieldError as e:
        raise InvalidPolicy(field_message(e), ".".join(map(str, e.path))) from None


def stored_body(rule: PostureRule) -> dict[str, Any]:
    """What the store keeps: the API shape without id (a column) and the computed ``enabled``."""
    body = rule.to_api()
    body.pop("id", None)
    body.pop("enabled", None)
    return body


def load_rule(stored: StoredPostureRule) -> PostureRule:
    """A stored rule; the store only holds rules this module validated."""
    return PostureRule.from_api({**stored.body, "id": stored.id}, where=f"stored rule {stored.id}")


@dataclass(frozen=True)
class Signers:
    """The certificates of one mTLS upload (the CA, then its chain), parsed and as PEM."""

    certificates: tuple[x509.Certificate, ...]
    pem: str


@dataclass
class RuleSet:
    """One account's rules, their signing certificates, and the rules per device platform."""

    rules: tuple[PostureRule, ...]
    signers: dict[str, Signers]  # by mTLS certificate id (missing: the upload is gone)
    by_id: dict[str, PostureRule] = field(init=False)
    _by_platform: dict[str, tuple[PostureRule, ...]] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self.by_id = {rule.id: rule for rule in self.rules}

    def for_platform(self, platform: str) -> tuple[PostureRule, ...]:
        """The rules whose ``match`` lists ``platform``, or lists none, oldest first."""
        found = self._by_platform.get(platform)
        if found is None:
            found = self._by_platform[platform] = tuple(
                rule for rule in self.rules if rule.applies_to(platform)
            )
        return found


def load_rule_set(store: Store, account_id: str) -> RuleSet:
    rules = tuple(load_rule(stored) for stored in store.posture_rules.list(account_id))
    signers: dict[str, Signers] = {}
    for certificate_id in {rule.certificate_id for rule in rules}:
        found = load_signers(store, account_id, certificate_id)
        if found is not None:
            signers[certificate_id] = found
    return RuleSet(rules, signers)


def load_signers(store: Store, account_id: str, certificate_id: str) -> Signers | None:
    """The mTLS upload's certificates; None when the account has no such upload."""
    record = store.certificates.get(certificate_id, account_id=account_id)
    if record is None or record.kind not in MTLS_KINDS:
        return None
    pem = record.certificate_pem + record.chain_pem
    try:
        certificates = tuple(parse_certificates(pem))
    except CertError as e:  # stored uploads were checked when uploaded: should not happen
        logger.error("mTLS certificate %s cannot be parsed: %s", certificate_id, e)
        return None
    return Signers(certificates, pem)


def check_certificate_id(store: Store, account_id: str, rule: PostureRule) -> None:
    if load_signers(store, account_id, rule.certificate_id) is None:
        raise InvalidInput(
            "input.certificate_id",
            f"no mTLS certificate with id {rule.certificate_id!r} in this account: upload the "
            "CA that signs the device certificates through mtls_certificates first",
        )


class RuleBook:
    """Every account's rules: each change in one transaction, validated first; the rule sets
    cached between changes. ``changed(account_id)`` runs after each committed change."""

    def __init__(self, store: Store, clock: Clock, changed: Callable[[str], None]) -> None:
        self._store = store
        self._clock = clock
        self._changed = changed
        self._sets: dict[str, RuleSet] = {}

    def rule_set(self, account_id: str) -> RuleSet:
        cached = self._sets.get(account_id)
        if cached is None:
            cached = load_rule_set(self._store, account_id)
            if not self._store.in_transaction:  # read what may yet roll back: do not keep it
                self._sets[account_id] = cached
        return cached

    def forget_all(self) -> None:
        """Another process may have changed any account's rules: read them again when next
        asked (a data-plane node, after it followed the store)."""
        self._sets.clear()

    def get(self, account_id: str, rule_id: str) -> PostureRule:
        found = self.rule_set(account_id).by_id.get(rule_id)
        if found is None:
            raise NotFound("device posture rule", rule_id)
        return found

    def create(self, account_id: str, body: Mapping[str, Any]) -> PostureRule:
        rule = parse_rule({**body, "id": ""})
        now = self._clock()
        with self._store.transaction():
            if len(self._store.posture_rules.list(account_id)) >= MAX_RULES:
                raise Refused(f"an account has at most {MAX_RULES} device posture rules")
            check_certificate_id(self._store, account_id, rule)
            rule = dataclasses.replace(rule, id=str(uuid.uuid4()))
            self._save(account_id, rule, created_at=now, now=now)
        logger.info("account %s: created device posture rule %s %r", account_id, rule.id, rule.name)
        return rule

    def replace(self, account_id: str, rule_id: str, body: Mapping[str, Any]) -> PostureRule:
        """The body replaces the rule; results verified against other requirements (type or
        input changed) are dropped."""
        given = body.get("id")
        if given is not None and given != rule_id:
            raise InvalidInput("id", f"{given!r} does not match the id in the path ({rule_id})")
        rule = dataclasses.replace(parse_rule({**body, "id": ""}), id=rule_id)
        now = self._clock()
        with self._store.transaction():
            stored = self._store.posture_rules.get(account_id, rule_id)
            if stored is None:
                raise NotFound("device posture rule", rule_id)
            check_certificate_id(self._store, account_id, rule)
            before = load_rule(stored)
            if (before.type, before.input) != (rule.type, rule.input):
                self._store.posture_results.delete_for_rule(rule_id)
                logger.info("device posture rule %s: requirements changed, results dropped", rule_id)
            self._save(account_id, rule, created_at=stored.created_at, now=now)
        logger.info("account %s: replaced device posture rule %s", account_id, rule_id)
        return rule

    def delete(self, account_id: str, rule_id: str) -> PostureRule:
        with self._store.transaction():
            rule = self.get(account_id, rule_id)
            self._store.posture_rules.delete(account_id, rule_id)
            self._store.posture_results.delete_for_rule(rule_id)
            self._store.after_commit(lambda: self.forget(account_id))
        logger.info("account %s: deleted device posture rule %s", account_id, rule_id)
        return rule

    def _save(self, account_id: str, rule: PostureRule, *, created_at: datetime, now: datetime) -> None:
        stored = StoredPostureRule(account_id, rule.id, stored_body(rule), created_at, now)
        self._store.posture_rules.save(stored)
        self._store.after_commit(lambda: self.forget(account_id))

    def forget(self, account_id: str) -> None:
        """This account's rules changed (here, or in another process): read them again when
        next asked, and tell ``changed``."""
        self._sets.pop(account_id, None)
        self._changed(account_id)
