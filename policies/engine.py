"""The Gateway decision engine: compiled rules in evaluation order, indexed by host.

Order (Cloudflare's): Do Not Inspect rules (``off``, and ``on`` as their exceptions) first, by
precedence; then the HTTP rules (``allow``, ``block``, ``redirect``) by precedence; the first
match decides; none matches: allow. A rule matches when all its non-empty expressions hold.

- :meth:`GatewayEngine.decide_connection` runs at the TLS ClientHello, with connection facts
  only: the first matching ``off``/``on`` rule decides (``off`` = pass the bytes through).
- :meth:`GatewayEngine.decide` runs per HTTP request. An ``off`` rule that matches here means
  the connection was inspected although it should not have been (the rule came later, or the
  identity was only known now): the request is allowed, untouched by HTTP rules. An ``on``
  rule that matches stops the Do Not Inspect stage and the HTTP rules run.
- :meth:`GatewayEngine.explain` / :meth:`explain_connection` decide the same and return a
  trace: every rule looked at, which part and clause decided it.

HTTP rules whose traffic expression can only hold for given hosts or domains
(``Expression.host_hints()``) are indexed under them; a request evaluates only the rules
indexed under its host and its parent domains plus the rules that cannot be indexed, merged back
into precedence order. A rule that tests a host against a DOMAIN or HOST list
(``http.request.host in $<id>``, ``any(http.request.domains[*] in $<id>)``) is indexed under
that list: the list's matcher (a hash index of its items, built once per change to the list) is
probed with the request's names, so a host in no item never evaluates the rule, whatever the
list's size, and building an engine does not walk the items. The engine is immutable; build a
new one when the rules or lists change.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Final

from policies.expression import Explanation, Expression, HostHints
from policies.facts import ConnectionFacts, RequestFacts, connection_context, request_context
from policies.list_matchers import ListHandle, ListLookup, ListType
from policies.rules import (
    INSPECTION_ACTIONS,
    Action,
    CompiledRule,
    ConflictError,
    GatewayRule,
    Part,
    RuleSettings,
    UntrustedCertAction,
)
from policies.scheme import domains_of

logger = logging.getLogger(__name__)

CANDIDATE_CACHE_SIZE: Final = 4096
NO_SETTINGS: Final = RuleSettings()


class Stage(StrEnum):
    CONNECTION = "connection"  # at the TLS ClientHello
    REQUEST = "request"  # per HTTP request


@dataclass(frozen=True)
class PartTrace:
    """One expression of a rule: whether it held, and the clause tree that says why."""

    part: Part
    holds: bool
    explanation: Explanation

    def deciding(self) -> str:
        """The clauses that decided, each with what it saw: ``http.request.host == "a" is
        false (http.request.host = "b")``."""
        clauses = self.explanation.deciding() or (self.explanation,)
        return "; ".join(
            f"{c.text} is {'true' if c.value else 'false'}" + (f" ({c.note})" if c.note else "")
            for c in clauses
        )


@dataclass(frozen=True)
class RuleTrace:
    """One rule looked at. ``matched`` None: not evaluated (``note`` says why)."""

    rule: GatewayRule
    matched: bool | None
    parts: tuple[PartTrace, ...] = ()
    note: str = ""

    def render(self) -> str:
        rule = self.rule
        head = f"[{rule.precedence}] {rule.name!r} ({rule.action.value})"
        if self.matched is None:
            return f"{head}: skipped, {self.note}"
        lines = [
            f"{head}: {'MATCH' if self.matched else 'no match'}" + (f", {self.note}" if self.note else "")
        ]
        for part in self.parts:
            lines.append(
                f"    {part.part.value} {'holds' if part.holds else 'does not hold'}: {part.deciding()}"
            )
        if not self.parts:
            lines.append("    no conditions: matches everything")
        return "\n".join(lines)


@dataclass(frozen=True)
class Decision:
    """What to do. ``rule`` None: no rule matched (allow). ``trace`` is filled by the explain
    methods only (deciding stays allocation-light)."""

    action: Action
    rule: GatewayRule | None
    stage: Stage
    settings: RuleSettings = NO_SETTINGS
    trace: tuple[RuleTrace, ...] = ()
    note: str = ""

    @property
    def untrusted_cert(self) -> UntrustedCertAction:
        """What an untrusted upstream certificate gets: the rule's setting, else the block page
        (SPEC §4: an untrusted upstream gets a block page unless a rule says pass through)."""
        return self.settings.untrusted_cert or UntrustedCertAction.BLOCK

    @property
    def passes_through(self) -> bool:
        """At the ClientHello: do not inspect, let the TLS bytes through."""
        return self.stage is Stage.CONNECTION and self.action is Action.OFF

    def summary(self) -> str:
        if self.rule is None:
            what = (
                "inspect (no Do Not Inspect rule matched)"
                if self.stage is Stage.CONNECTION
                else "allow (no rule matched)"
            )
            return what
        verb = {Action.OFF: "do not inspect", Action.ON: "inspect"}.get(self.action, self.action.value)
        text = f"{verb} by rule {self.rule.label}"
        return text + (f" ({self.note})" if self.note else "")

    def render(self) -> str:
        lines = [trace.render() for trace in self.trace]
        lines.append(f"decision: {self.summary()}")
        return "\n".join(lines)


@dataclass(frozen=True)
class _Index:
    """Positions (in precedence order) of the HTTP rules, by the hosts/domains they need, and by
    the DOMAIN/HOST lists of them they need (each list once, with every position it admits)."""

    hosts: Mapping[str, tuple[int, ...]]
    domains: Mapping[str, tuple[int, ...]]
    host_lists: tuple[tuple[ListHandle, tuple[int, ...]], ...]
    domain_lists: tuple[tuple[ListHandle, tuple[int, ...]], ...]
    unindexed: tuple[int, ...]
    hints: Mapping[int, HostHints]

    @classmethod
    def build(cls, rules: Sequence[CompiledRule]) -> _Index:
        hosts: dict[str, list[int]] = {}
        domains: dict[str, list[int]] = {}
        host_lists: dict[ListHandle, list[int]] = {}
        domain_lists: dict[ListHandle, list[int]] = {}
        unindexed: list[int] = []
        hints: dict[int, HostHints] = {}
        for position, compiled in enumerate(rules):
            traffic = _part(compiled, Part.TRAFFIC)
            found = traffic.host_hints() if traffic is not None else None
            if found is None:
                unindexed.append(position)
                continue
            hints[position] = found
            for host in found.hosts:
                hosts.setdefault(host, []).append(position)
            for domain in found.domains:
                domains.setdefault(domain, []).append(position)
            for handle in found.host_lists:
                host_lists.setdefault(handle, []).append(position)
            for handle in found.domain_lists:
                domain_lists.setdefault(handle, []).append(position)
        return cls(
            {k: tuple(v) for k, v in hosts.items()},
            {k: tuple(v) for k, v in domains.items()},
            tuple((k, tuple(v)) for k, v in host_lists.items()),
            tuple((k, tuple(v)) for k, v in domain_lists.items()),
            tuple(unindexed),
            hints,
        )

    def candidates(self, host: str, sni: str) -> tuple[int, ...]:
        """Probed as ``HostHints`` asks: both host fields and both domain lists. Lower case, as
        the rules read them (the context lowercases the SNI; a ClientHello may carry capitals);
        this runs only when the candidate cache misses."""
        host, sni = host.lower(), sni.lower()
        found: set[int] = set(self.unindexed)
        found.update(self.hosts.get(host, ()))
        found.update(self.hosts.get(sni, ()))
        if self.domains:
            for domain in (*domains_of(host), *domains_of(sni)):
                found.update(self.domains.get(domain, ()))
        names = tuple(name for name in (host, sni) if name)
        for handle, positions in self.host_lists:
            matcher = handle.matcher
            if any(name in matcher for name in names):
                found.update(positions)
        for handle, positions in self.domain_lists:
            matcher = handle.matcher
            # A DOMAIN item holding a parent of the name holds the name: the name alone is enough.
            probes = names if handle.type is ListType.DOMAIN else (*domains_of(host), *domains_of(sni))
            if any(name in matcher for name in probes):
                found.update(positions)
        return tuple(sorted(found))


def _part(compiled: CompiledRule, part: Part) -> Expression | None:
    return next((e for p, e in compiled.parts if p is part), None)


class _RuleList:
    """Rules in precedence order, each with the decision it hands out, and (when indexed) the
    candidate positions per (host, SNI), cached in a bounded table cleared when full."""

    def __init__(
        self, rules: Sequence[CompiledRule], decisions: Sequence[Decision], *, indexed: bool
    ) -> None:
        self.rules = tuple(rules)
        self.checks = tuple(c.check for c in self.rules)
        self.decisions = tuple(decisions)
        self.index = _Index.build(self.rules) if indexed else None
        self.every = tuple(range(len(self.rules)))
        self.cache: dict[tuple[str, str], tuple[int, ...]] = {}

    def candidates(self, host: str, sni: str) -> tuple[int, ...]:
        if self.index is None:
            return self.every
        key = (host, sni)
        found = self.cache.get(key)
        if found is None:
            found = self.index.candidates(host, sni)
            if len(self.cache) >= CANDIDATE_CACHE_SIZE:
                self.cache.clear()
            self.cache[key] = found
        return found

    def first(self, ctx: Mapping[str, object], host: str, sni: str) -> int | None:
        """The position of the first rule that matches, or None."""
        checks = self.checks
        for position in self.candidates(host, sni):
            if checks[position](ctx):
                return position
        return None

    def not_for_host(self, position: int, host: str) -> str:
        assert self.index is not None
        hints = self.index.hints[position]
        wanted = [f"a host in list {h.name!r} ({h.type.value}, id {h.id})" for h in hints.host_lists]
        wanted += [f"a domain in list {h.name!r} ({h.type.value}, id {h.id})" for h in hints.domain_lists]
        wanted += sorted(hints.hosts) + [f"*.{d} or {d}" for d in sorted(hints.domains)]
        shown = ", ".join(wanted[:3]) + (f" and {len(wanted) - 3} more" if len(wanted) > 3 else "")
        return f"applies only to {shown}, not {host}"


class GatewayEngine:
    """Immutable once built: compiled rules, their order and the host index."""

    def __init__(
        self,
        inspection: Sequence[CompiledRule],
        http: Sequence[CompiledRule],
        *,
        indexed: bool = True,
    ) -> None:
        connection = [c for c in inspection if c.connection_level]
        self._connection = _RuleList(
            connection, [_decision(c.rule, Stage.CONNECTION) for c in connection], indexed=indexed
        )
        # At request level an `off` match allows the request untouched; an `on` match (None)
        # ends the Do Not Inspect stage and the HTTP rules decide.
        self._inspection = _RuleList(
            inspection,
            [_late_off(c.rule) if c.rule.action is Action.OFF else INSPECTED for c in inspection],
            indexed=indexed,
        )
        self._http = _RuleList(http, [_decision(c.rule, Stage.REQUEST) for c in http], indexed=indexed)

    @classmethod
    def build(
        cls,
        rules: Iterable[GatewayRule | CompiledRule],
        *,
        indexed: bool = True,
        lists: ListLookup | None = None,
    ) -> GatewayEngine:
        """Compile (unless given compiled; ``$<list id>`` through ``lists``) and order the enabled
        rules. Raises ``FieldError`` for a broken expression and ``ConflictError`` for two
        enabled rules with one precedence. ``indexed=False`` evaluates every rule (for tests and
        comparisons)."""
        compiled = [r if isinstance(r, CompiledRule) else r.compile(lists=lists) for r in rules]
        enabled = sorted((c for c in compiled if c.rule.enabled), key=lambda c: c.rule.precedence)
        for first, second in itertools.pairwise(enabled):
            if first.rule.precedence == second.rule.precedence:
                raise ConflictError(
                    f"gateway rules {first.rule.name!r} and {second.rule.name!r} both have "
                    f"precedence {second.rule.precedence}; give each enabled rule its own",
                    first.rule,
                    second.rule,
                )
        inspection = [c for c in enabled if c.rule.action in INSPECTION_ACTIONS]
        http = [c for c in enabled if c.rule.action not in INSPECTION_ACTIONS]
        logger.info("gateway engine: %d Do Not Inspect rules, %d HTTP rules", len(inspection), len(http))
        return cls(inspection, http, indexed=indexed)

    @property
    def is_empty(self) -> bool:
        """No enabled rule: every connection is inspected and every request allowed."""
        return not (self._connection.rules or self._inspection.rules or self._http.rules)

    @property
    def inspects_every_connection(self) -> bool:
        """No Do Not Inspect rule decides at the ClientHello: ``decide_connection`` is always
        ``inspect``, whatever the connection's facts."""
        return not self._connection.rules

    @property
    def rules(self) -> tuple[GatewayRule, ...]:
        """The enabled rules in evaluation order."""
        return tuple(c.rule for c in (*self._inspection.rules, *self._http.rules))

    def candidates(self, host: str, sni: str | None = None) -> tuple[GatewayRule, ...]:
        """The HTTP rules a request for ``host`` (over a TLS connection for ``sni``) evaluates,
        in precedence order: those indexed under its names plus every unindexed one."""
        return tuple(self._http.rules[p].rule for p in self._http.candidates(host, sni or ""))

    # --- deciding --------------------------------------------------------------------------------

    def decide_connection(self, facts: ConnectionFacts) -> Decision:
        """At the ClientHello: ``off`` → pass the TLS bytes through; else inspect."""
        rules = self._connection
        if self.inspects_every_connection:
            return INSPECT
        position = rules.first(connection_context(facts), "", (facts.sni or "").lower())
        return INSPECT if position is None else rules.decisions[position]

    def decide(self, facts: RequestFacts) -> Decision:
        """Per HTTP request: Do Not Inspect rules, then the HTTP rules; none matches: allow."""
        ctx = request_context(facts)
        host, sni = facts.host, facts.connection.sni or ""
        inspection = self._inspection
        if inspection.rules:
            position = inspection.first(ctx, host, sni)
            if position is not None and inspection.decisions[position] is not INSPECTED:
                return inspection.decisions[position]
        position = self._http.first(ctx, host, sni)
        return ALLOW if position is None else self._http.decisions[position]

    # --- explaining ------------------------------------------------------------------------------

    def explain_connection(self, facts: ConnectionFacts) -> Decision:
        ctx = connection_context(facts)
        trace: list[RuleTrace] = []
        for compiled in self._inspection.rules:
            if not compiled.connection_level:
                note = "uses fields only known after decryption"
                trace.append(RuleTrace(compiled.rule, None, note=note))
                continue
            step = _explain_rule(compiled, ctx)
            trace.append(step)
            if step.matched:
                rule = compiled.rule
                return Decision(rule.action, rule, Stage.CONNECTION, rule.rule_settings, tuple(trace))
        return Decision(Action.ON, None, Stage.CONNECTION, trace=tuple(trace))

    def explain(self, facts: RequestFacts) -> Decision:
        """As :meth:`decide`, with every rule looked at in the trace (rules the index skips for
        this host are listed as skipped, with the hosts they apply to)."""
        ctx = request_context(facts)
        host, sni = facts.host, facts.connection.sni or ""
        trace: list[RuleTrace] = []
        for stage in (self._inspection, self._http):
            candidates = set(stage.candidates(host, sni))
            for position, compiled in enumerate(stage.rules):
                if position not in candidates:
                    note = stage.not_for_host(position, host)
                    trace.append(RuleTrace(compiled.rule, None, note=note))
                    continue
                step = _explain_rule(compiled, ctx)
                trace.append(step)
                if not step.matched:
                    continue
                decided = stage.decisions[position]
                if decided is INSPECTED:
                    break  # an `on` rule: the HTTP rules decide
                return replace(decided, trace=tuple(trace))
        return Decision(Action.ALLOW, None, Stage.REQUEST, trace=tuple(trace))


ALLOW: Final = Decision(Action.ALLOW, None, Stage.REQUEST)
INSPECT: Final = Decision(Action.ON, None, Stage.CONNECTION)
INSPECTED: Final = Decision(Action.ON, None, Stage.REQUEST)  # marker: an `on` rule matched


def _decision(rule: GatewayRule, stage: Stage) -> Decision:
    return Decision(rule.action, rule, stage, rule.rule_settings)


def _late_off(rule: GatewayRule) -> Decision:
    return Decision(
        Action.ALLOW,
        rule,
        Stage.REQUEST,
        rule.rule_settings,
        note="a Do Not Inspect rule matched an inspected request: allowed untouched",
    )


def _explain_rule(compiled: CompiledRule, ctx: Mapping[str, object]) -> RuleTrace:
    """Parts in order, stopping at the first that does not hold (as matching does)."""
    parts: list[PartTrace] = []
    for part, expression in compiled.parts:
        explanation = expression.explain(ctx)
        parts.append(PartTrace(part, bool(explanation.value), explanation))
        if not explanation.value:
            return RuleTrace(compiled.rule, False, tuple(parts))
    return RuleTrace(compiled.rule, True, tuple(parts))
