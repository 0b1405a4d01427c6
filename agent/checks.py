"""Each posture rule against every candidate certificate on this device.

The server's answer to ``GET /agent/posture_rules`` is a list of ``{"rule": <rule, API shape>,
"signing_certificates": PEM}`` (a flat rule with a ``signing_certificates`` key is read too).
For each rule the CN and SAN templates are filled with the host name and serial number the
device enrolled with (what the server fills in too), the rule's locations are read
(``agent.locations``) and every candidate goes through
``certs.client_check.check_certificate``. The first passing certificate wins, preferring one
whose private key is at hand (a pass is worth something only with a proof of possession);
every rejected certificate and unreadable location keeps its reason.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from cryptography import x509

from agent.errors import AgentError
from agent.locations import Candidate, Inventory, KeyUnavailable, Locator, Problem
from agent.store_key import StoreKey
from certs.client_check import ClientCertRequirements, check_certificate, common_name
from certs.clock import utcnow
from certs.errors import CertError
from certs.keys import PrivateKey
from policies.errors import PolicyError
from policies.posture import Locations, OperatingSystem, PostureRule

logger = logging.getLogger(__name__)

ProofKey = PrivateKey | StoreKey  # a key the agent holds, or one the platform signs with


class Finder(Protocol):
    """Where one platform finds candidates for a rule (``agent.locations.Locator`` on Linux,
    ``agent.stores_macos`` and ``agent.stores_windows`` elsewhere)."""

    platform: str  # Cloudflare's name: linux, mac, windows

    def find_for(self, locations: Locations) -> Inventory: ...

    def quiet(self, problem: Problem, locations: Locations) -> bool:
        """A problem not worth showing (a default store the rule did not name is missing)."""
        ...


@dataclass(frozen=True)
class Device:
    """The values the CN and SAN templates are filled with."""

    hostname: str
    serial_number: str


@dataclass(frozen=True)
class AgentRule:
    """A rule as the server sent it; ``problem`` when it could not be read (then ``rule`` is None)."""

    rule_id: str
    name: str
    rule: PostureRule | None
    signing_certificates: tuple[x509.Certificate, ...] = ()
    problem: str = ""


@dataclass(frozen=True)
class Rejected:
    """A certificate that did not pass, or a location that gave none; and why."""

    source: str
    reason: str
    cn: str | None = None


@dataclass(frozen=True)
class RuleCheck:
    rule_id: str
    name: str
    passed: bool
    reason: str  # why it failed; or what the passing certificate passed on
    candidate: Candidate | None = None
    key: ProofKey | None = None
    key_problem: str = ""  # why there is no key for the proof, when ``key`` is None
    rejected: tuple[Rejected, ...] = ()

    @property
    def certificate(self) -> x509.Certificate | None:
        return self.candidate.certificate if self.candidate else None


def parse_rules(result: object) -> list[AgentRule]:
    """The server's rule list; a malformed entry becomes a rule with a ``problem``."""
    if not isinstance(result, list):
        raise AgentError("the server's answer to GET /agent/posture_rules is not a list of rules")
    return [_parse_rule(item, index) for index, item in enumerate(result)]


def _parse_rule(item: object, index: int) -> AgentRule:
    if not isinstance(item, dict):
        return AgentRule("", f"rule #{index + 1}", None, problem="not a JSON object")
    body: Any = (
        item.get("rule")
        if isinstance(item.get("rule"), dict)
        else {k: v for k, v in item.items() if k != "signing_certificates"}
    )
    rule_id = str(body.get("id") or "")
    name = str(body.get("name") or rule_id or f"rule #{index + 1}")
    try:
        rule = PostureRule.from_api(body, where="posture rule")
    except PolicyError as e:
        return AgentRule(rule_id, name, None, problem=f"this agent cannot read the rule: {e}")
    pem = item.get("signing_certificates")
    if not isinstance(pem, str) or not pem.strip():
        return AgentRule(rule_id, name, rule, problem="the server sent no signing certificate for this rule")
    try:
        signing = tuple(x509.load_pem_x509_certificates(pem.encode()))
    except ValueError:
        return AgentRule(
            rule_id, name, rule, problem="the server sent a signing certificate that cannot be read"
        )
    return AgentRule(rule_id, name, rule, signing)


def check_rules(
    rules: Sequence[AgentRule],
    device: Device,
    *,
    locator: Finder | None = None,
    clock: Callable[[], datetime] = utcnow,
) -> list[RuleCheck]:
    locator = locator or Locator()
    return [check_rule(rule, device, locator=locator, now=clock()) for rule in rules]


def check_rule(agent_rule: AgentRule, device: Device, *, locator: Finder, now: datetime) -> RuleCheck:
    rule = agent_rule.rule
    if rule is None or agent_rule.problem:
        return RuleCheck(agent_rule.rule_id, agent_rule.name, False, agent_rule.problem)
    not_here = _platform_problem(rule, locator.platform)
    if not_here:
        return RuleCheck(agent_rule.rule_id, agent_rule.name, False, not_here)
    try:
        requirements = ClientCertRequirements.from_templates(
            agent_rule.signing_certificates,
            hostname=device.hostname,
            serial_number=device.serial_number,
            cn=rule.cn_template,
            subject_alternative_names=rule.san_templates,
            extended_key_usage=rule.extended_key_usage,
            check_private_key=rule.check_private_key,
        )
    except CertError as e:
        return RuleCheck(agent_rule.rule_id, agent_rule.name, False, str(e))
    locations = rule.input.locations
    inventory = locator.find_for(locations)
    rejected = [Rejected(p.source, p.reason) for p in inventory.problems if not locator.quiet(p, locations)]
    passing: list[tuple[Candidate, str, ProofKey | None, str]] = []
    without_key = dataclasses.replace(requirements, check_private_key=False)
    for candidate in inventory.candidates:
        cert = candidate.certificate
        result = check_certificate(cert, without_key, now=now)
        if not result.ok:
            rejected.append(Rejected(candidate.source, result.reason, _cn(cert)))
            continue
        key, key_problem = _key(candidate)
        reason = result.reason
        if requirements.check_private_key:
            if isinstance(key, StoreKey):  # proven: it signed a challenge the certificate verifies
                reason += ", private key present"
            elif key is None and candidate.key_in_store:  # present, not usable: never a verified pass
                reason += ", private key present (the store says so; the agent cannot use it)"
            else:
                result = check_certificate(cert, requirements, now=now, private_key=key)
                if not result.ok:
                    reason = key_problem if key is None and key_problem else result.reason
                    rejected.append(Rejected(candidate.source, reason, _cn(cert)))
                    continue
                reason = result.reason
        passing.append((candidate, reason, key, key_problem))
        if key is not None:
            break
    if passing:
        candidate, reason, key, key_problem = next((p for p in passing if p[2] is not None), passing[0])
        logger.info("rule %s passes with %s", agent_rule.rule_id, candidate.source)
        return RuleCheck(
            agent_rule.rule_id, agent_rule.name, True, reason, candidate, key, key_problem, tuple(rejected)
        )
    return RuleCheck(
        agent_rule.rule_id,
        agent_rule.name,
        False,
        _failure(inventory.candidates, rejected),
        rejected=tuple(rejected),
    )


def _platform_problem(rule: PostureRule, platform: str) -> str:
    if not rule.applies_to(platform):
        platforms = ", ".join(p.value for p in rule.match)
        return f"the rule matches {platforms} devices, not {platform}"
    system = rule.input.operating_system
    if system is not None and system is not OperatingSystem(platform):
        return f"the rule checks {system.value} devices (operating_system), not {platform}"
    return ""


def _key(candidate: Candidate) -> tuple[ProofKey | None, str]:
    try:
        key = candidate.private_key()
        if isinstance(key, StoreKey):
            key.prove(candidate.certificate)
            return key, ""
    except KeyUnavailable as e:
        return None, str(e)
    if not isinstance(key, PrivateKey):  # Ed25519 and the like: no proof possible
        return None, "its private key is of a type that cannot make a proof (use EC P-256/P-384 or RSA)"
    return key, ""


def _cn(cert: x509.Certificate) -> str | None:
    try:
        return common_name(cert)
    except ValueError:
        return None


def _failure(candidates: Sequence[Candidate], rejected: Sequence[Rejected]) -> str:
    if not candidates:
        places = "; ".join(f"{r.source}: {r.reason}" for r in rejected)
        return (
            f"no certificate found ({places})"
            if places
            else "no certificate found: the rule lists no location"
        )
    if len(candidates) == 1:
        only = next((r for r in rejected if r.source == candidates[0].source), None)
        return only.reason if only else "the certificate did not pass"
    return f"none of the {len(candidates)} certificates found passed"
