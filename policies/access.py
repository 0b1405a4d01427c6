"""Access: self-hosted applications, the policies that protect them, and the decision for a request.

Shapes are Cloudflare's (``access/apps`` and ``access/policies``). Semantics follow Cloudflare's
documentation:

- A policy matches when **any** ``include`` rule holds, **all** ``require`` rules hold and **no**
  ``exclude`` rule holds.
- Order of execution: ``bypass`` and ``non_identity`` (Service Auth) policies first, then
  ``allow`` and ``deny``, each group in the application's order (``precedence`` when given,
  else list position). The first matching policy decides: ``allow``, ``bypass`` and
  ``non_identity`` let the request through, ``deny`` refuses it.
- No matching policy: denied (Access denies by default).
- ``bypass`` and ``non_identity`` policies take only rules that need no user identity
  (everyone, ip, device_posture, certificate, common_name): they are decided without a login.
- Email and email-domain comparisons ignore case; so does ``common_name``. ``certificate``
  holds when the device presented a client certificate the server verified.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Final, NoReturn

from policies.facts import Identity, IPAddress, PostureState, RequestFacts
from policies.rules import (
    READ_ONLY_KEYS,
    ApiReader,
    ConflictError,
    FieldError,
    format_timestamp,
    is_empty,
)
from policies.scheme import host_name_problem

logger = logging.getLogger(__name__)


class PolicyDecision(StrEnum):
    ALLOW = "allow"
    DENY = "deny"
    BYPASS = "bypass"
    NON_IDENTITY = "non_identity"


LETS_THROUGH: Final = frozenset({PolicyDecision.ALLOW, PolicyDecision.BYPASS, PolicyDecision.NON_IDENTITY})
EVALUATED_FIRST: Final = frozenset({PolicyDecision.BYPASS, PolicyDecision.NON_IDENTITY})


class RuleKind(StrEnum):
    EVERYONE = "everyone"
    EMAIL = "email"
    EMAIL_DOMAIN = "email_domain"
    IP = "ip"
    DEVICE_POSTURE = "device_posture"
    CERTIFICATE = "certificate"
    COMMON_NAME = "common_name"


IDENTITY_KINDS: Final = frozenset({RuleKind.EMAIL, RuleKind.EMAIL_DOMAIN})
# The one key inside each rule object, e.g. {"email": {"email": "a@b.c"}}; None: an empty object.
VALUE_KEYS: Final[Mapping[RuleKind, str | None]] = {
    RuleKind.EVERYONE: None,
    RuleKind.EMAIL: "email",
    RuleKind.EMAIL_DOMAIN: "domain",
    RuleKind.IP: "ip",
    RuleKind.DEVICE_POSTURE: "integration_uid",
    RuleKind.CERTIFICATE: None,
    RuleKind.COMMON_NAME: "common_name",
}
DURATION: Final = re.compile(r"^(?:\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h))+$")
LABEL: Final = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$")


def _parse_network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError as e:
        if "host bits set" in str(e):
            loose = ipaddress.ip_network(text, strict=False)
            raise ValueError(f"{text!r} has host bits set (did you mean {loose}?)") from None
        raise ValueError(f"{text!r} is not an IP address or CIDR such as 10.0.0.0/8") from None


@dataclass(frozen=True)
class AccessRule:
    """One Cloudflare rule object, e.g. ``{"email_domain": {"domain": "corp.example"}}``."""

    kind: RuleKind
    value: str = ""
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = field(
        default=None, compare=False, repr=False
    )

    @classmethod
    def from_api(cls, value: object, *, where: str, path: tuple[str | int, ...]) -> AccessRule:
        kinds = ", ".join(k.value for k in RuleKind)
        if not isinstance(value, Mapping) or len(value) != 1:
            raise FieldError(
                where,
                path,
                f'must be one rule object such as {{"everyone": {{}}}} (one of: {kinds})',
            )
        ((name, body),) = value.items()
        kind = next((k for k in RuleKind if k.value == name), None)
        if kind is None:
            raise FieldError(
                where,
                (*path, str(name)),
                f"unknown or unsupported Access rule {name!r} (one of: {kinds})",
                on_key=True,
            )
        reader = ApiReader({} if body is None else body, where=where, path=(*path, kind.value))
        key = VALUE_KEYS[kind]
        text = ""
        network = None
        if kind is RuleKind.DEVICE_POSTURE:
            reader.ignored.add("account_id")  # Cloudflare's optional owner of the posture rule
        for other in reader.mapping:
            if other != key and other not in reader.ignored:
                expected = f"only {key!r}" if key else "nothing: write {}"
                reader.fail(
                    f"unknown key {other!r} ({kind.value} takes {expected})",
                    str(other),
                    on_key=True,
                )
        if key is not None:
            text = reader.string(key, non_empty=True).strip()
            if kind is RuleKind.EMAIL and "@" not in text:
                reader.fail(f"must be an email address, got {text!r}", key)
            if kind is RuleKind.EMAIL_DOMAIN and ("@" in text or "." not in text):
                reader.fail(f"must be a domain such as corp.example (no @), got {text!r}", key)
            if kind is RuleKind.IP:
                try:
                    network = _parse_network(text)
                except ValueError as e:
                    reader.fail(str(e), key)
        reader.finish()
        return cls(kind, text, network)

    def to_api(self) -> dict[str, object]:
        key = VALUE_KEYS[self.kind]
        return {self.kind.value: {} if key is None else {key: self.value}}

    def holds(self, facts: RequestFacts) -> bool:
        identity = facts.connection.identity
        match self.kind:
            case RuleKind.EVERYONE:
                return True
            case RuleKind.EMAIL:
                return bool(identity.email) and identity.email.casefold() == self.value.casefold()
            case RuleKind.EMAIL_DOMAIN:
                return identity.email.casefold().endswith("@" + self.value.casefold())
            case RuleKind.IP:
                return _in_network(facts.connection.src_ip, self.network)
            case RuleKind.DEVICE_POSTURE:
                return self.value in identity.posture_passed
            case RuleKind.CERTIFICATE:
                return identity.verified_certificate_cn is not None
            case RuleKind.COMMON_NAME:
                cn = identity.verified_certificate_cn
                return cn is not None and cn.casefold() == self.value.casefold()

    def describe(self) -> str:
        return self.kind.value if not self.value else f"{self.kind.value} {self.value}"


def _in_network(address: IPAddress, network: ipaddress.IPv4Network | ipaddress.IPv6Network | None) -> bool:
    return network is not None and address.version == network.version and address in network


def _rules(reader: ApiReader, key: str, *, required: bool = False) -> tuple[AccessRule, ...]:
    items = reader.sequence(key, default=None if required else ())
    if required and not items:
        reader.fail('needs at least one rule (e.g. {"everyone": {}})', key)
    return tuple(
        AccessRule.from_api(item, where=reader.where, path=(key, index)) for index, item in enumerate(items)
    )


def _duration(reader: ApiReader, key: str) -> str:
    text = reader.string(key, "")
    if text and not DURATION.match(text):
        reader.fail(f"must be a duration such as 24h, 30m or 2h45m, got {text!r}", key)
    return text


def _refuse_unsupported(reader: ApiReader, keys: Iterable[str]) -> None:
    for key in keys:
        if not is_empty(reader.raw(key, None)):
            reader.fail(f"{key!r} is not supported by this gateway; remove it", key, on_key=True)


UNSUPPORTED_POLICY_KEYS: Final = (
    "approval_required",
    "approval_groups",
    "isolation_required",
    "purpose_justification_required",
    "purpose_justification_prompt",
    "mfa_config",
    "connection_rules",
)


@dataclass(frozen=True)
class AccessPolicy:
    id: str
    name: str
    decision: PolicyDecision
    include: tuple[AccessRule, ...]
    require: tuple[AccessRule, ...] = ()
    exclude: tuple[AccessRule, ...] = ()
    session_duration: str = ""
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @classmethod
    def from_api(cls, value: object, *, where: str) -> AccessPolicy:
        if isinstance(value, Mapping) and isinstance(value.get("name"), str) and value["name"].strip():
            where = f"{where} {value['name']!r}"
        reader = ApiReader(
            value, where=where, ignored=READ_ONLY_KEYS | {"reusable", "app_count", "precedence"}
        )
        _refuse_unsupported(reader, UNSUPPORTED_POLICY_KEYS)
        policy = cls(
            id=reader.string("id", ""),
            name=reader.string("name", non_empty=True),
            decision=reader.choice("decision", PolicyDecision),
            include=_rules(reader, "include", required=True),
            require=_rules(reader, "require"),
            exclude=_rules(reader, "exclude"),
            session_duration=_duration(reader, "session_duration"),
            created_at=reader.timestamp("created_at"),
            updated_at=reader.timestamp("updated_at"),
        )
        reader.finish()
        if policy.decision in EVALUATED_FIRST:
            for key in ("include", "require", "exclude"):
                for index, rule in enumerate(getattr(policy, key)):
                    if rule.kind in IDENTITY_KINDS:
                        _fail_rule(where, key, index, rule, policy.decision)
        return policy

    def to_api(self) -> dict[str, object]:
        out: dict[str, object] = {}
        if self.id:
            out["id"] = self.id
        out["name"] = self.name
        out["decision"] = self.decision.value
        out["include"] = [r.to_api() for r in self.include]
        out["require"] = [r.to_api() for r in self.require]
        out["exclude"] = [r.to_api() for r in self.exclude]
        if self.session_duration:
            out["session_duration"] = self.session_duration
        if self.created_at is not None:
            out["created_at"] = format_timestamp(self.created_at)
        if self.updated_at is not None:
            out["updated_at"] = format_timestamp(self.updated_at)
        return out

    @property
    def label(self) -> str:
        return f"{self.name!r} ({self.decision.value}{', id ' + self.id if self.id else ''})"

    def matches(self, facts: RequestFacts) -> bool:
        return (
            any(r.holds(facts) for r in self.include)
            and all(r.holds(facts) for r in self.require)
            and not any(r.holds(facts) for r in self.exclude)
        )

    def unmet(self, facts: RequestFacts) -> tuple[AccessRule, ...]:
        """The rules that keep it from matching: every ``include`` rule when none holds, the
        ``require`` rules that do not hold, the ``exclude`` rules that do (empty: it matches)."""
        include = () if any(r.holds(facts) for r in self.include) else self.include
        require = tuple(r for r in self.require if not r.holds(facts))
        exclude = tuple(r for r in self.exclude if r.holds(facts))
        return (*include, *require, *exclude)

    def explain(self, facts: RequestFacts) -> tuple[bool, tuple[str, ...]]:
        """Whether it matches, and one line per list saying which rule decided."""
        lines: list[str] = []
        included = [r for r in self.include if r.holds(facts)]
        lines.append(
            f"include (any of {len(self.include)}): "
            + (
                f"yes, {included[0].describe()} holds"
                if included
                else "no rule holds: " + _list(self.include)
            )
        )
        failed = [r for r in self.require if not r.holds(facts)]
        if self.require:
            lines.append(
                f"require (all of {len(self.require)}): "
                + (f"no, {failed[0].describe()} does not hold" if failed else "yes, all hold")
            )
        excluded = [r for r in self.exclude if r.holds(facts)]
        if self.exclude:
            lines.append(
                f"exclude (none of {len(self.exclude)}): "
                + (f"excluded, {excluded[0].describe()} holds" if excluded else "none holds")
            )
        return bool(included) and not failed and not excluded, tuple(lines)


def _list(rules: Sequence[AccessRule]) -> str:
    return ", ".join(r.describe() for r in rules)


def _fail_rule(where: str, key: str, index: int, rule: AccessRule, decision: PolicyDecision) -> NoReturn:
    raise FieldError(
        where,
        (key, index, rule.kind.value),
        f"decision {decision.value!r} is decided without a login, so it takes only rules that need no "
        f"identity (everyone, ip, device_posture, certificate, common_name), not {rule.kind.value!r}",
        on_key=True,
    )


@dataclass(frozen=True)
class PolicyRef:
    """An application's reference to a reusable policy; ``precedence`` None = list position."""

    id: str
    precedence: int | None = None

    def to_api(self) -> object:
        return self.id if self.precedence is None else {"id": self.id, "precedence": self.precedence}


# Presentation, cookie and login-page settings of a Cloudflare application: they change nothing
# this gateway decides, so an export reads back with them dropped.
IGNORED_APP_KEYS: Final = READ_ONLY_KEYS | {
    "aud",
    "app_launcher_visible",
    "auto_redirect_to_identity",
    "enable_binding_cookie",
    "http_only_cookie_attribute",
    "same_site_cookie_attribute",
    "path_cookie_attribute",
    "logo_url",
    "skip_interstitial",
    "tags",
    "options_preflight_bypass",
    "service_auth_401_redirect",
    "custom_deny_message",
    "custom_deny_url",
    "custom_non_identity_deny_url",
    "allow_authenticate_via_warp",
    "cors_headers",
    "allowed_idps",
    "custom_pages",
}


def _domain(reader: ApiReader) -> str:
    text = reader.string("domain", non_empty=True).strip().lower().rstrip(".")
    if "://" in text:
        reader.fail(f"is a host name such as intranet.example.com, without a scheme; got {text!r}", "domain")
    if "/" in text:
        reader.fail(
            f"paths are not supported: protect the whole host ({text.split('/')[0]!r}); got {text!r}",
            "domain",
        )
    if ":" in text:
        reader.fail(f"ports are not supported: give the host only; got {text!r}", "domain")
    problem = host_name_problem(text)
    if problem:
        reader.fail(problem, "domain")
    labels = text.split(".")
    wildcard = labels[0] == "*"
    if wildcard:
        labels = labels[1:]
    if len(labels) < (2 if wildcard else 1) or not all(LABEL.match(label) for label in labels):
        reader.fail(
            f"must be a host such as intranet.example.com or a wildcard such as *.example.com; got {text!r}",
            "domain",
        )
    return text


def _policy_refs(reader: ApiReader) -> tuple[PolicyRef, ...]:
    refs: list[PolicyRef] = []
    for index, item in enumerate(reader.sequence("policies", default=())):
        if isinstance(item, str) and item.strip():
            refs.append(PolicyRef(item.strip()))
            continue
        if isinstance(item, Mapping) and "id" not in item:
            raise FieldError(
                reader.where,
                ("policies", index),
                "inline policies are not supported: define it under access_policies and refer to it by id",
            )
        # A Cloudflare response expands each reference into the whole policy: keep id and precedence.
        expanded = set(item) - {"id", "precedence"} if isinstance(item, Mapping) else set()
        sub = ApiReader(item, where=reader.where, path=("policies", index), ignored=expanded)
        refs.append(
            PolicyRef(
                sub.string("id", non_empty=True),
                sub.integer("precedence", 0, minimum=0) if sub.has("precedence") else None,
            )
        )
        sub.finish()
    return tuple(refs)


@dataclass(frozen=True)
class AccessApplication:
    """A self-hosted application: one host (``intranet.example.com``) or every subdomain of one
    (``*.example.com``, any depth, not the apex)."""

    name: str
    domain: str
    policies: tuple[PolicyRef, ...] = ()
    id: str = ""
    type: str = "self_hosted"
    session_duration: str = ""
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @classmethod
    def from_api(cls, value: object, *, where: str) -> AccessApplication:
        if isinstance(value, Mapping) and isinstance(value.get("name"), str) and value["name"].strip():
            where = f"{where} {value['name']!r}"
        reader = ApiReader(value, where=where, ignored=IGNORED_APP_KEYS)
        kind = reader.string("type", "self_hosted")
        if kind != "self_hosted":
            reader.fail(f"only 'self_hosted' applications are supported, got {kind!r}", "type")
        domain = _domain(reader)
        for key in ("self_hosted_domains", "destinations"):
            for index, item in enumerate(reader.sequence(key, default=())):
                other = item.get("uri") if isinstance(item, Mapping) else item
                if not isinstance(other, str) or other.strip().lower().rstrip(".") != domain:
                    raise FieldError(
                        where,
                        (key, index),
                        f"only the one domain {domain!r} is supported per application",
                    )
        app = cls(
            name=reader.string("name", non_empty=True),
            domain=domain,
            policies=_policy_refs(reader),
            id=reader.string("id", ""),
            type=kind,
            session_duration=_duration(reader, "session_duration"),
            created_at=reader.timestamp("created_at"),
            updated_at=reader.timestamp("updated_at"),
        )
        reader.finish()
        return app

    def to_api(self) -> dict[str, object]:
        out: dict[str, object] = {}
        if self.id:
            out["id"] = self.id
        out["type"] = self.type
        out["name"] = self.name
        out["domain"] = self.domain
        out["policies"] = [p.to_api() for p in self.policies]
        if self.session_duration:
            out["session_duration"] = self.session_duration
        if self.created_at is not None:
            out["created_at"] = format_timestamp(self.created_at)
        if self.updated_at is not None:
            out["updated_at"] = format_timestamp(self.updated_at)
        return out

    @property
    def label(self) -> str:
        return f"{self.name!r} ({self.domain})"


@dataclass(frozen=True)
class AccessDecision:
    """``policy`` None: no policy matched and Access denied by default. ``trace`` is filled by
    :meth:`AccessEngine.explain` only."""

    application: AccessApplication
    policy: AccessPolicy | None
    allowed: bool
    trace: tuple[str, ...] = ()
    posture: tuple[str, ...] = ()  # the posture rule ids the application's policies consult

    def render(self) -> str:
        verdict = "allowed" if self.allowed else "denied"
        by = (
            f"by policy {self.policy.label}"
            if self.policy
            else "(no policy matched: Access denies by default)"
        )
        return f"Access application {self.application.label}: {verdict} {by}"


@dataclass(frozen=True)
class _App:
    application: AccessApplication
    policies: tuple[AccessPolicy, ...]  # in execution order
    posture: tuple[str, ...] = ()  # posture rule ids its policies consult, first use first

    @classmethod
    def of(cls, application: AccessApplication, policies: tuple[AccessPolicy, ...]) -> _App:
        posture = dict.fromkeys(
            rule.value
            for policy in policies
            for rule in (*policy.include, *policy.require, *policy.exclude)
            if rule.kind is RuleKind.DEVICE_POSTURE
        )
        return cls(application, policies, tuple(posture))


# Rules that only an identified device (its posture or its verified client certificate) can meet.
DEVICE_KINDS: Final = frozenset({RuleKind.DEVICE_POSTURE, RuleKind.CERTIFICATE, RuleKind.COMMON_NAME})
CERTIFICATE_KINDS: Final = frozenset({RuleKind.CERTIFICATE, RuleKind.COMMON_NAME})


def _no_certificate(identity: Identity) -> str:
    """Why a device has no verified client certificate: the posture check that does not pass
    (its state and stored reason), when the directory noted one."""
    failing = next((n for n in identity.posture_notes if n.state is not PostureState.PASSED), None)
    if failing is None:
        return "the device has no verified client certificate"
    return f"the device has no verified client certificate ({failing.describe()})"


class AccessEngine:
    """Built once from applications and policies; immutable; ``decide`` per request."""

    def __init__(self, exact: Mapping[str, _App], wildcard: Mapping[str, _App]) -> None:
        self._exact = dict(exact)
        self._wildcard = dict(wildcard)

    @property
    def is_empty(self) -> bool:
        """No application: Access decides nothing."""
        return not (self._exact or self._wildcard)

    @classmethod
    def build(
        cls, applications: Iterable[AccessApplication], policies: Iterable[AccessPolicy]
    ) -> AccessEngine:
        by_id: dict[str, AccessPolicy] = {}
        for policy in policies:
            if not policy.id:
                raise ConflictError(
                    f"Access policy {policy.label} has no id; applications refer to policies by id",
                    policy,
                )
            if policy.id in by_id:
                raise ConflictError(
                    f"Access policies {by_id[policy.id].label} and {policy.label} share the id {policy.id!r}",
                    by_id[policy.id],
                    policy,
                )
            by_id[policy.id] = policy
        exact: dict[str, _App] = {}
        wildcard: dict[str, _App] = {}
        for application in applications:
            table, key = (
                (wildcard, application.domain[2:])
                if application.domain.startswith("*.")
                else (exact, application.domain)
            )
            if key in table:
                other = table[key].application
                raise ConflictError(
                    f"Access applications {other.label} and {application.label} protect the same domain",
                    other,
                    application,
                )
            table[key] = _App.of(application, _ordered(application, by_id))
        return cls(exact, wildcard)

    def application_for(self, host: str) -> _App | None:
        host = host.lower().rstrip(".")
        found = self._exact.get(host)
        if found is not None or not self._wildcard:
            return found
        labels = host.split(".")
        for start in range(1, len(labels)):
            found = self._wildcard.get(".".join(labels[start:]))
            if found is not None:
                return found
        return None

    def covers(self, host: str) -> AccessApplication | None:
        app = self.application_for(host)
        return app.application if app else None

    def decide(self, facts: RequestFacts) -> AccessDecision | None:
        """None when no application covers the request's host."""
        app = self.application_for(facts.host)
        if app is None:
            return None
        for policy in app.policies:
            if policy.matches(facts):
                return AccessDecision(
                    app.application, policy, policy.decision in LETS_THROUGH, posture=app.posture
                )
        return AccessDecision(app.application, None, False, posture=app.posture)

    def why_denied(self, facts: RequestFacts) -> str:
        """What failed, in a few words, for a request :meth:`decide` denies (the block page and
        the log say it): ``policy 'X' (deny) matched``; ``no device identified``; the first
        posture check an allowing policy needed, with the device's state and stored reason
        (``posture check 'Client certificate' failed: no certificate matched``); else ``no policy
        matched``. Only called for denials: it walks the policies again."""
        app = self.application_for(facts.host)
        if app is None:
            return ""
        if not app.policies:
            return "no policy matched: the application has no policies"
        for policy in app.policies:
            if policy.matches(facts):
                if policy.decision in LETS_THROUGH:
                    return ""
                return f"policy {policy.name!r} (deny) matched"
        identity = facts.identity
        allowing = [p for p in app.policies if p.decision in LETS_THROUGH]
        if not identity.device_id and any(
            rule.kind in DEVICE_KINDS for p in allowing for rule in (*p.include, *p.require)
        ):
            return "no device identified"
        needed = [(p, [r for r in p.unmet(facts) if r not in p.exclude]) for p in allowing]
        for _, rules in needed:
            for rule in rules:
                if rule.kind is RuleKind.DEVICE_POSTURE:
                    return identity.posture_note(rule.value).describe()
        for policy, rules in needed:
            for rule in rules:
                if rule.kind in CERTIFICATE_KINDS and identity.verified_certificate_cn is None:
                    return f"policy {policy.name!r} needs {rule.describe()}: {_no_certificate(identity)}"
        for policy, rules in needed:
            if rules:
                return f"no policy matched (policy {policy.name!r} needs {rules[0].describe()})"
        return "no policy matched"

    def explain(self, facts: RequestFacts) -> AccessDecision | None:
        """As :meth:`decide`, with a trace line per policy looked at."""
        app = self.application_for(facts.host)
        if app is None:
            return None
        trace = [f"Access application {app.application.label} covers {facts.host}"]
        if not app.policies:
            trace.append("  it has no policies")
        for policy in app.policies:
            matched, lines = policy.explain(facts)
            trace.append(f"  policy {policy.label}: {'MATCH' if matched else 'no match'}")
            trace.extend(f"    {line}" for line in lines)
            if matched:
                decision = AccessDecision(app.application, policy, policy.decision in LETS_THROUGH)
                return AccessDecision(
                    decision.application, policy, decision.allowed, (*trace, decision.render())
                )
        decision = AccessDecision(app.application, None, False)
        return AccessDecision(app.application, None, False, (*trace, decision.render()))


def _ordered(application: AccessApplication, by_id: Mapping[str, AccessPolicy]) -> tuple[AccessPolicy, ...]:
    """Cloudflare's order of execution: bypass and non_identity first, then allow and deny; each
    group by precedence (list position when not given)."""
    ranked: list[tuple[int, int, AccessPolicy]] = []
    for position, ref in enumerate(application.policies):
        policy = by_id.get(ref.id)
        if policy is None:
            known = ", ".join(sorted(by_id)) or "none"
            raise ConflictError(
                f"Access application {application.label} refers to policy id {ref.id!r}, which does not exist (known: {known})",
                application,
            )
        ranked.append((ref.precedence if ref.precedence is not None else position + 1, position, policy))
    ranked.sort(key=lambda item: (item[2].decision not in EVALUATED_FIRST, item[0], item[1]))
    return tuple(policy for _, _, policy in ranked)
