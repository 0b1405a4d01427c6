"""Why an expression gave its answer: each clause's text and value, and which clauses decided.

Short-circuit aware, like evaluation: in ``a and b`` with ``a`` false, ``a`` decided and ``b``
was never evaluated (its value is None). For a true ``and`` (or a false ``or``) every operand
decided. ``any()`` that is true was decided by the first matching element, ``all()`` that is
false by the first failing one; otherwise every element decided.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from policies import ast
from policies.compiler import ABSENT, LeafPlan, LogicalPlan, NotPlan, Plan, QuantPlan
from policies.list_matchers import ListHandle

logger = logging.getLogger(__name__)

# Elements shown for an any()/all() that no single element decided.
MAX_ELEMENTS_SHOWN = 10
_MAX_VALUE_CHARS = 200


@dataclass(frozen=True)
class Explanation:
    """One clause. ``value`` is None when short-circuiting skipped it; ``decisive`` tells whether
    its value decided its parent's (the root is decisive). ``note`` says what a comparison saw
    (``http.request.method = "GET"``) or which element of an array decided."""

    text: str
    value: bool | None
    decisive: bool
    start: int
    end: int
    children: tuple[Explanation, ...] = ()
    note: str = ""

    @property
    def result(self) -> bool:
        """The clause's value as a bool (a skipped clause counts as false)."""
        return bool(self.value)

    def deciding(self) -> tuple[Explanation, ...]:
        """The innermost clauses that decided the result, following decisive children down."""
        if self.value is None:
            return ()
        chosen = [child for child in self.children if child.decisive and child.value is not None]
        if not chosen:
            return (self,)
        found: list[Explanation] = []
        for child in chosen:
            found.extend(child.deciding())
        return tuple(found)

    def render(self) -> str:
        """An indented tree; ``*`` marks the clauses on the deciding path."""
        lines: list[str] = []
        self._render(lines, 0, True)
        return "\n".join(lines)

    def _render(self, lines: list[str], depth: int, on_path: bool) -> None:
        value = "skipped" if self.value is None else str(self.value).lower()
        mark = "*" if on_path and self.value is not None else " "
        note = f"    [{self.note}]" if self.note else ""
        lines.append(f"{'  ' * depth}{mark} {value:<7} {self.text}{note}")
        for child in self.children:
            child._render(lines, depth + 1, on_path and child.decisive)


def explain(plan: Plan, ctx: Mapping[str, object], source: str) -> Explanation:
    return _Explainer(source, ctx).visit(plan, None, True)


class _Explainer:
    def __init__(self, source: str, ctx: Mapping[str, object]) -> None:
        self.source = source
        self.ctx = ctx

    def make(
        self,
        node: ast.Expr,
        value: bool | None,
        decisive: bool,
        children: tuple[Explanation, ...] = (),
        note: str = "",
    ) -> Explanation:
        text = self.source[node.start : node.end]
        return Explanation(text, value, decisive, node.start, node.end, children, note)

    def skipped(self, plan: Plan) -> Explanation:
        return self.make(plan.node, None, False)

    def visit(self, plan: Plan, element: Any, decisive: bool) -> Explanation:
        if isinstance(plan, LeafPlan):
            value = plan.test(self.ctx, element)
            return self.make(plan.node, value, decisive, note=self.seen(plan, element))
        if isinstance(plan, NotPlan):
            inner = self.visit(plan.operand, element, True)
            return self.make(plan.node, not inner.value, decisive, (inner,))
        if isinstance(plan, LogicalPlan):
            return self.logical(plan, element, decisive)
        return self.quantified(plan, decisive)

    def logical(self, plan: LogicalPlan, element: Any, decisive: bool) -> Explanation:
        node = plan.node
        if isinstance(node, ast.Xor):
            children = tuple(self.visit(p, element, True) for p in plan.operands)
            value = sum(bool(c.value) for c in children) % 2 == 1
            return self.make(node, value, decisive, children)
        stop_on = not isinstance(node, ast.And)  # `or` stops at true, `and` at false
        evaluated: list[Explanation] = []
        for operand in plan.operands:
            child = self.visit(operand, element, True)
            if child.value is stop_on:
                evaluated = [_undecisive(c) for c in evaluated]
                rest = plan.operands[len(evaluated) + 1 :]
                children = tuple(evaluated) + (child,) + tuple(self.skipped(p) for p in rest)
                return self.make(node, stop_on, decisive, children)
            evaluated.append(child)
        return self.make(node, not stop_on, decisive, tuple(evaluated))

    def quantified(self, plan: QuantPlan, decisive: bool) -> Explanation:
        node = plan.node
        stop_on = node.quantifier is ast.Quantifier.ANY  # any stops at true, all at false
        elements = list(plan.elements(self.ctx))
        shown: list[Explanation] = []
        for index, element in enumerate(elements):
            child = self.visit(plan.body, element, True)
            child = _with_note(child, f"{plan.field}[{index}] = {format_value(element)}")
            if child.value is stop_on:
                note = f"element {index} of {len(elements)} decided"
                return self.make(node, stop_on, decisive, (child,), note)
            if len(shown) < MAX_ELEMENTS_SHOWN:
                shown.append(child)
        if not elements:
            note = f"{plan.field} is empty: {node.quantifier.value}() is {str(not stop_on).lower()}"
        else:
            more = len(elements) - len(shown)
            note = f"{len(elements)} elements" + (f", {more} not shown" if more else "")
        return self.make(node, not stop_on, decisive, tuple(shown), note)

    def seen(self, plan: LeafPlan, element: Any) -> str:
        lhs = plan.node.lhs
        subject = self.source[lhs.start : lhs.end]
        value = plan.read(self.ctx, element)
        if value is ABSENT:
            count = len(self.ctx.get(lhs.field) or ())  # type: ignore[arg-type]
            return f"{subject} is absent ({count} elements)"
        if value is None:
            return f"{subject} is absent"
        listed = "" if plan.handle is None else list_note(plan.handle, value)
        if lhs.index is ast.IndexKind.EACH and not lhs.functions:
            return listed  # the enclosing any()/all() names the element
        seen = f"{subject} = {format_value(value)}"
        return f"{seen}; {listed}" if listed else seen


def list_note(handle: ListHandle, value: object) -> str:
    """Which item of the list ``value`` matched: ``matched item "example.com" of list 'x'``."""
    item = handle.matcher.find(value)
    if item is None:
        return f"in no item of list {handle.name!r} ({handle.type.value})"
    return f"matched item {format_value(item)} of list {handle.name!r} ({handle.type.value}, id {handle.id})"


def _undecisive(explanation: Explanation) -> Explanation:
    return Explanation(
        explanation.text,
        explanation.value,
        False,
        explanation.start,
        explanation.end,
        explanation.children,
        explanation.note,
    )


def _with_note(explanation: Explanation, note: str) -> Explanation:
    combined = f"{note}; {explanation.note}" if explanation.note else note
    return Explanation(
        explanation.text,
        explanation.value,
        explanation.decisive,
        explanation.start,
        explanation.end,
        explanation.children,
        combined,
    )


def format_value(value: object) -> str:
    """A context value written the way the expression language writes literals."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        if len(value) > _MAX_VALUE_CHARS:
            value = value[:_MAX_VALUE_CHARS] + "…"
        escaped = "".join(_escape(ch) for ch in value)
        return f'"{escaped}"'
    if isinstance(value, (int, ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return str(value)
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(format_value(v) for v in value[:MAX_ELEMENTS_SHOWN]) + "]"
    return repr(value)


def _escape(ch: str) -> str:
    if ch in '"\\':
        return "\\" + ch
    if ch.isprintable():
        return ch
    if 0xDC80 <= ord(ch) <= 0xDCFF:  # a byte that is not UTF-8, as surrogateescape keeps it
        return f"\\x{ord(ch) - 0xDC00:02x}"
    return "".join(f"\\x{b:02x}" for b in ch.encode("utf-8", "surrogatepass"))
