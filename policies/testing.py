"""Policy tests: a request, who sends it, the device's posture → the decision the author expects.

The flow is the proxy's: for an https URL the Do Not Inspect rules decide at the ClientHello
(``off`` → the bytes pass through and nothing else runs); then the Gateway HTTP rules decide
the request; a request they allow goes on to Access when an application covers its host (a
blocked or redirected request never reaches Access).

A test case, in the ``tests:`` key of a policy file::

    - name: contractors cannot reach the intranet
      request: {method: GET, url: "https://intranet.example.com/", src_ip: 10.1.2.3}
      identity: {email: pat@contractor.example, groups: [contractors]}
      posture: {passed: [<posture rule id>], failed: []}
      expect: {action: allow, rule: "allow intranet", access: deny}
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from policies.access import AccessDecision, AccessEngine
from policies.engine import Decision, GatewayEngine
from policies.facts import Identity, RequestFacts
from policies.rules import Action, ApiReader

logger = logging.getLogger(__name__)

EXPECTABLE = (Action.ALLOW, Action.BLOCK, Action.OFF, Action.REDIRECT)


class AccessVerdict(StrEnum):
    ALLOW = "allow"
    DENY = "deny"


@dataclass(frozen=True)
class TestRequest:
    url: str
    method: str = "GET"
    src_ip: str = "127.0.0.1"
    dst_ip: str = ""


@dataclass(frozen=True)
class Expectation:
    action: Action
    rule: str | None = None  # a rule's name or id
    access: AccessVerdict | None = None


@dataclass(frozen=True)
class PolicyTest:
    name: str
    request: TestRequest
    expect: Expectation
    email: str = ""
    groups: tuple[str, ...] = ()
    certificate_cn: str | None = None
    passed: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()

    @classmethod
    def from_api(cls, value: object, *, where: str) -> PolicyTest:
        reader = ApiReader(value, where=where)
        name = reader.string("name", non_empty=True)
        reader.where = where = f"{where} {name!r}"

        request = reader.child("request", reader.raw("request"))
        url = request.string("url", non_empty=True)
        test_request = TestRequest(
            url=url,
            method=request.string("method", "GET", non_empty=True).upper(),
            src_ip=_address(request, "src_ip", "127.0.0.1"),
            dst_ip=_address(request, "dst_ip", ""),
        )
        try:
            RequestFacts.from_url(url)
        except ValueError as e:
            request.fail(str(e), "url")
        request.finish()

        identity = reader.child("identity", reader.raw("identity", {}))
        email = identity.string("email", "")
        groups = identity.strings("groups")
        cn = identity.string("certificate_cn", "") if identity.has("certificate_cn") else None
        identity.raw("certificate_cn", None)
        identity.finish()

        posture = reader.child("posture", reader.raw("posture", {}))
        passed, failed = posture.strings("passed"), posture.strings("failed")
        posture.finish()

        expect = reader.child("expect", reader.raw("expect"))
        expectation = Expectation(
            action=expect.choice("action", Action, allowed=EXPECTABLE),
            rule=expect.string("rule", non_empty=True) if expect.has("rule") else None,
            access=expect.choice("access", AccessVerdict) if expect.has("access") else None,
        )
        expect.raw("rule", None)
        expect.raw("access", None)
        expect.finish()
        reader.finish()
        return cls(name, test_request, expectation, email, groups, cn, passed, failed)

    def to_api(self) -> dict[str, object]:
        request: dict[str, object] = {"method": self.request.method, "url": self.request.url}
        if self.request.src_ip != "127.0.0.1":
            request["src_ip"] = self.request.src_ip
        if self.request.dst_ip:
            request["dst_ip"] = self.request.dst_ip
        out: dict[str, object] = {"name": self.name, "request": request}
        identity: dict[str, object] = {}
        if self.email:
            identity["email"] = self.email
        if self.groups:
            identity["groups"] = list(self.groups)
        if self.certificate_cn is not None:
            identity["certificate_cn"] = self.certificate_cn
        if identity:
            out["identity"] = identity
        if self.passed or self.failed:
            out["posture"] = {"passed": list(self.passed), "failed": list(self.failed)}
        expect: dict[str, object] = {"action": self.expect.action.value}
        if self.expect.rule is not None:
            expect["rule"] = self.expect.rule
        if self.expect.access is not None:
            expect["access"] = self.expect.access.value
        out["expect"] = expect
        return out

    def facts(self) -> RequestFacts:
        identity = Identity.of(
            email=self.email,
            groups=self.groups,
            passed=self.passed,
            failed=self.failed,
            verified_certificate_cn=self.certificate_cn,
        )
        return RequestFacts.from_url(
            self.request.url,
            method=self.request.method,
            src_ip=self.request.src_ip,
            dst_ip=self.request.dst_ip or None,
            identity=identity,
        )


def _address(reader: ApiReader, key: str, default: str) -> str:
    text = reader.string(key, default)
    if text:
        try:
            ipaddress.ip_address(text)
        except ValueError:
            reader.fail(f"must be an IP address such as 10.0.0.1, got {text!r}", key)
    return text


# --- the flow -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What the proxy would do with one request. ``connection`` is the ClientHello decision
    (https only); ``request`` is None when that passed the connection through; ``access`` is
    None when the request did not reach Access or no application covers its host."""

    facts: RequestFacts
    connection: Decision | None
    request: Decision | None
    access: AccessDecision | None
    access_reached: bool

    @property
    def decision(self) -> Decision:
        if self.request is not None:
            return self.request
        assert self.connection is not None
        return self.connection

    @property
    def action(self) -> Action:
        return self.decision.action

    def summary(self) -> str:
        decision = self.decision
        text = decision.summary()
        if self.access is not None:
            text += f"; Access {'allow' if self.access.allowed else 'deny'}"
            text += f" by {self.access.policy.label}" if self.access.policy else " (no policy matched)"
        return text

    def render(self) -> str:
        """The full trace: each stage, each rule looked at, the clause that decided it."""
        facts = self.facts
        identity = facts.identity
        who = identity.email or "no identity"
        if identity.groups:
            who += f", groups {', '.join(identity.groups)}"
        posture = f"posture passed {sorted(identity.posture_passed) or 'none'}, failed {sorted(identity.posture_failed) or 'none'}"
        lines = [f"request: {facts.method} {facts.url} from {facts.connection.src_ip} ({who}; {posture})"]
        if self.connection is not None:
            lines.append("at the TLS ClientHello (SNI " + str(facts.connection.sni) + "):")
            lines.extend("  " + line for line in self.connection.render().splitlines())
        if self.request is not None:
            lines.append("HTTP request:")
            lines.extend("  " + line for line in self.request.render().splitlines())
        if self.access is not None:
            lines.append("Access:")
            lines.extend("  " + line for line in (self.access.trace or (self.access.render(),)))
        elif self.access_reached:
            lines.append(f"Access: no application covers {facts.host}")
        elif self.request is not None and self.request.action is not Action.ALLOW:
            lines.append(f"Access: not reached (Gateway decided {self.request.action.value})")
        lines.append(f"result: {self.summary()}")
        return "\n".join(lines)


def evaluate(
    gateway: GatewayEngine, access: AccessEngine, facts: RequestFacts, *, explain: bool = False
) -> Outcome:
    """Run the proxy's decision flow for one request; ``explain`` fills every trace."""
    connection: Decision | None = None
    if facts.connection.sni is not None:
        connection = (gateway.explain_connection if explain else gateway.decide_connection)(facts.connection)
        if connection.action is Action.OFF:
            return Outcome(facts, connection, None, None, False)
    request = (gateway.explain if explain else gateway.decide)(facts)
    if request.action is not Action.ALLOW:
        return Outcome(facts, connection, request, None, False)
    decision = (access.explain if explain else access.decide)(facts)
    return Outcome(facts, connection, request, decision, True)


@dataclass(frozen=True)
class PolicyTestResult:
    test: PolicyTest
    outcome: Outcome
    problems: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not self.problems

    def render(self) -> str:
        if self.passed:
            return f"PASS {self.test.name}"
        head = f"FAIL {self.test.name}: " + "; ".join(self.problems)
        trace = "\n".join("    " + line for line in self.outcome.render().splitlines())
        return f"{head}\n{trace}"


def run_test(test: PolicyTest, gateway: GatewayEngine, access: AccessEngine) -> PolicyTestResult:
    outcome = evaluate(gateway, access, test.facts(), explain=True)
    decision = outcome.decision
    expect = test.expect
    problems: list[str] = []
    if decision.action is not expect.action:
        problems.append(f"expected action {expect.action.value}, got {decision.action.value}")
    if expect.rule is not None:
        rule = decision.rule
        if rule is None:
            problems.append(f"expected rule {expect.rule!r}, but no rule matched")
        elif expect.rule not in (rule.name, rule.id):
            problems.append(f"expected rule {expect.rule!r}, got {rule.name!r}")
    if expect.access is not None:
        if not outcome.access_reached:
            problems.append(f"expected Access {expect.access.value}, but the request never reached Access")
        elif outcome.access is None:
            problems.append(
                f"expected Access {expect.access.value}, but no Access application covers {outcome.facts.host}"
            )
        else:
            got = AccessVerdict.ALLOW if outcome.access.allowed else AccessVerdict.DENY
            if got is not expect.access:
                problems.append(f"expected Access {expect.access.value}, got {got.value}")
    return PolicyTestResult(test, outcome, tuple(problems))


def run_tests(
    tests: Iterable[PolicyTest], gateway: GatewayEngine, access: AccessEngine
) -> list[PolicyTestResult]:
    return [run_test(test, gateway, access) for test in tests]
