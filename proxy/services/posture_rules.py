"""Device posture rules: API bodies read into ``policies.posture.PostureRule`` values, and the
per-account set of rules with their signing certificates parsed once (cached between changes).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from cryptography import x509

from certs.authority import parse_certificates
from certs.errors import CertError
from policies.posture import PostureRule
from policies.rules import FieldError
from proxy.services.errors import InvalidInput
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
