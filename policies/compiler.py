"""A checked AST → nested closures. Evaluating runs only these; nothing walks the AST.

Every compiled node is a ``Pred``: ``(ctx, element) -> bool``. ``element`` is the array element
an enclosing ``any()``/``all()`` is looking at (``None`` outside one); leaves that read
``field[*]`` test it, every other node ignores it. Next to the closures the compiler builds a
``Plan`` tree (the same shape as the AST, holding the leaf closures) for explanations.
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from policies import ast
from policies.checker import quoted_int, value_type
from policies.errors import ExpressionError
from policies.limits import Limits
from policies.list_matchers import ListHandle, ListLookup, exact_values
from policies.matchers import (
    Intervals,
    IpSet,
    RegexError,
    WildcardError,
    ascii_lower,
    ascii_upper,
    network_range,
    regex_search,
    rust_only_construct,
    wildcard_match,
)
from policies.scheme import Field, Kind, Scheme, Type, empty_value

logger = logging.getLogger(__name__)

Ctx = Mapping[str, Any]  # values are trusted to have their fields' types
Pred = Callable[[Ctx, Any], bool]
Test = Callable[[Any], bool]
Getter = Callable[[Ctx, Any], Any]
Elements = Callable[[Ctx], Sequence[object]]

_ORDER: dict[ast.CompareOp, Callable[[Any, Any], bool]] = {
    ast.CompareOp.LT: operator.lt,
    ast.CompareOp.LE: operator.le,
    ast.CompareOp.GT: operator.gt,
    ast.CompareOp.GE: operator.ge,
}


@dataclass(frozen=True, eq=False)
class LeafPlan:
    node: ast.Comparison
    test: Pred
    read: Getter  # the value the leaf compares (after functions), for explanations
    handle: ListHandle | None = None  # ``in $<id>``: the list, to name the item that matched


@dataclass(frozen=True, eq=False)
class NotPlan:
    node: ast.Not
    operand: Plan


@dataclass(frozen=True, eq=False)
class LogicalPlan:
    node: ast.And | ast.Or | ast.Xor
    operands: tuple[Plan, ...]


@dataclass(frozen=True, eq=False)
class QuantPlan:
    node: ast.Quantified
    field: str
    elements: Elements
    body: Plan


Plan = LeafPlan | NotPlan | LogicalPlan | QuantPlan


def compile_tree(
    expr: ast.Expr, scheme: Scheme, limits: Limits, source: str, lists: ListLookup | None = None
) -> tuple[Pred, Plan]:
    """Compile a checked expression. Raises ExpressionError for a regex RE2 refuses.
    ``lists`` resolves ``$<id>`` (checked before): leaves keep the list's handle, not its items."""
    return _Compiler(scheme, limits, source, lists).node(expr)


_FUNCTIONS: dict[ast.Function, Callable[[str], str]] = {
    ast.Function.LOWER: ascii_lower,
    ast.Function.UPPER: ascii_upper,
}


def _transform(functions: tuple[ast.Function, ...]) -> Callable[[str], str] | None:
    if not functions:
        return None
    steps = [_FUNCTIONS[f] for f in functions]
    if len(steps) == 1:
        return steps[0]

    def chain(text: str) -> str:
        for step in steps:
            text = step(text)
        return text

    return chain


class _Compiler:
    def __init__(self, scheme: Scheme, limits: Limits, source: str, lists: ListLookup | None) -> None:
        self.scheme = scheme
        self.limits = limits
        self.source = source
        self.lists = lists
        self.handles: dict[str, ListHandle] = {}  # every list the expression refers to

    def node(self, node: ast.Expr) -> tuple[Pred, Plan]:
        if isinstance(node, ast.Comparison):
            return self.leaf(node)
        if isinstance(node, ast.Not):
            inner, plan = self.node(node.operand)
            return (lambda c, e: not inner(c, e)), NotPlan(node, plan)
        if isinstance(node, ast.Quantified):
            return self.quantified(node)
        compiled = [self.node(operand) for operand in node.operands]
        preds = tuple(pred for pred, _ in compiled)
        return _logical(node, preds), LogicalPlan(node, tuple(plan for _, plan in compiled))

    # -- any() / all() ----------------------------------------------------------------------

    def quantified(self, node: ast.Quantified) -> tuple[Pred, Plan]:
        field = self.scheme.get(_bound_field(node.body))
        assert field is not None, "checked expressions only name known fields"
        elements = _elements(field)
        body, plan = self.node(node.body)
        fast = self.fast_quantified(node, field)
        if fast is not None:
            return fast, QuantPlan(node, field.name, elements, plan)
        if node.quantifier is ast.Quantifier.ANY:

            def any_(ctx: Ctx, _: Any) -> bool:
                for element in elements(ctx):
                    if body(ctx, element):
                        return True
                return False

            return any_, QuantPlan(node, field.name, elements, plan)

        def all_(ctx: Ctx, _: Any) -> bool:
            for element in elements(ctx):
                if not body(ctx, element):
                    return False
            return True

        return all_, QuantPlan(node, field.name, elements, plan)

    def fast_quantified(self, node: ast.Quantified, field: Field) -> Pred | None:
        """``any(f[*] == v)``, ``any(f[*] in {...})``, ``all(f[*] in {...})`` as set operations."""
        leaf = node.body
        if not (
            isinstance(leaf, ast.Comparison)
            and field.type.element is not None
            and field.type.element.kind in (Kind.STRING, Kind.INT)
            and not leaf.lhs.functions
            and leaf.rhs is not None
        ):
            return None
        name, any_ = field.name, node.quantifier is ast.Quantifier.ANY
        if leaf.op is ast.CompareOp.EQ and any_:
            wanted = self.scalar(leaf.rhs, field)
            return lambda c, _: wanted in (c.get(name) or ())
        if leaf.op is ast.CompareOp.IN and isinstance(leaf.rhs, ast.ListRef):
            handle = self.handle(leaf.rhs)
            values = exact_values(handle, name)
            if values is not None and any_:
                return lambda c, _: not values.isdisjoint(c.get(name) or ())
            if any_:
                return lambda c, _: any(v in handle.matcher for v in c.get(name) or ())
            return lambda c, _: all(v in handle.matcher for v in c.get(name) or ())
        if leaf.op is ast.CompareOp.IN and isinstance(leaf.rhs, ast.SetLit):
            members = self.members(leaf.rhs, field, field.type.element)
            if not isinstance(members, frozenset):
                return None
            if any_:
                return lambda c, _: not members.isdisjoint(c.get(name) or ())
            return lambda c, _: members.issuperset(c.get(name) or ())
        return None

    # -- comparisons ------------------------------------------------------------------------

    def leaf(self, node: ast.Comparison) -> tuple[Pred, Plan]:
        lhs = node.lhs
        field = self.scheme.get(lhs.field)
        assert field is not None, "checked expressions only name known fields"
        type_ = value_type(lhs, field)
        read = _getter(lhs, field)
        test = self.test(node, field, type_)
        pred = self.fast_leaf(node, field, type_)
        if pred is None and lhs.index is ast.IndexKind.AT:

            def at_index(ctx: Ctx, element: Any) -> bool:
                value = read(ctx, element)
                return value is not ABSENT and test(value)

            pred = at_index
        if pred is None:
            pred = lambda c, e: test(read(c, e))  # noqa: E731
        handle = self.handle(node.rhs) if isinstance(node.rhs, ast.ListRef) else None
        return pred, LeafPlan(node, pred, read, handle)

    def fast_leaf(self, node: ast.Comparison, field: Field, type_: Type) -> Pred | None:
        """Plain scalar fields with ==, != or in: one dict lookup and one comparison."""
        lhs = node.lhs
        if lhs.index is not ast.IndexKind.NONE or lhs.functions:
            return None
        if type_.kind is Kind.IP and node.op is not ast.CompareOp.IN:
            return None  # == and != need the absent-address rule: the generic path has it
        name = field.name
        default: Any = empty_value(type_)
        if node.op is None:
            return lambda c, _: bool(c.get(name))
        if node.op is ast.CompareOp.EQ and node.rhs is not None:
            value = self.scalar(node.rhs, field)
            return lambda c, _: (c.get(name) or default) == value
        if node.op is ast.CompareOp.NE and node.rhs is not None:
            value = self.scalar(node.rhs, field)
            return lambda c, _: (c.get(name) or default) != value
        if node.op is ast.CompareOp.IN and isinstance(node.rhs, ast.SetLit):
            members = self.members(node.rhs, field, type_)
            return lambda c, _: (c.get(name) or default) in members
        if node.op is ast.CompareOp.IN and isinstance(node.rhs, ast.ListRef):
            handle = self.handle(node.rhs)
            return lambda c, _: (c.get(name) or default) in handle.matcher
        return None

    def test(self, node: ast.Comparison, field: Field, type_: Type) -> Test:
        op, rhs = node.op, node.rhs
        if op is None or rhs is None:
            return bool
        if op is ast.CompareOp.IN and isinstance(rhs, ast.ListRef):
            handle = self.handle(rhs)
            return lambda v: v in handle.matcher
        if op is ast.CompareOp.IN:
            assert isinstance(rhs, ast.SetLit)
            members = self.members(rhs, field, type_)
            return lambda v: v in members
        if op is ast.CompareOp.CONTAINS:
            needle = self.scalar(rhs, field)
            return lambda v: needle in v
        if op is ast.CompareOp.MATCHES:
            assert isinstance(rhs, ast.StringLit)
            return self.regex(rhs)
        if op in (ast.CompareOp.WILDCARD, ast.CompareOp.STRICT_WILDCARD):
            assert isinstance(rhs, ast.StringLit)
            return self.wildcard(rhs, case_sensitive=op is ast.CompareOp.STRICT_WILDCARD)
        value = self.scalar(rhs, field)
        if op is ast.CompareOp.BITWISE_AND:
            mask = value
            return lambda v: bool(v & mask)
        if type_.kind is Kind.IP:
            return _ip_test(op, value)
        if op is ast.CompareOp.EQ:
            return lambda v: bool(v == value)
        if op is ast.CompareOp.NE:
            return lambda v: bool(v != value)
        compare = _ORDER[op]
        return lambda v: compare(v, value)

    def handle(self, ref: ast.ListRef) -> ListHandle:
        found = self.lists.get(ref.list_id) if self.lists is not None else None
        assert found is not None, "checked expressions only name known lists"
        self.handles[ref.list_id] = found
        return found

    def scalar(self, value: ast.Value, field: Field) -> object:
        if isinstance(value, ast.StringLit) and quoted_int(field, value):
            return int(value.value)
        if isinstance(value, (ast.StringLit, ast.IntLit, ast.IpLit)):
            return value.value
        raise AssertionError(f"unchecked value {value!r}")

    def members(self, value: ast.SetLit, field: Field, type_: Type) -> frozenset[object] | Intervals | IpSet:
        if type_.kind is Kind.IP:
            return IpSet(_ip_ranges(value.items))
        if type_.kind is Kind.INT:
            numbers = [
                int(item.value) for item in value.items if isinstance(item, (ast.IntLit, ast.StringLit))
            ]
            ranges = [(i.low, i.high) for i in value.items if isinstance(i, ast.IntRange)]
            if ranges:
                return Intervals(ranges + [(n, n) for n in numbers])
            return frozenset(numbers)
        return frozenset(item.value for item in value.items if isinstance(item, ast.StringLit))

    def wildcard(self, literal: ast.StringLit, *, case_sensitive: bool) -> Test:
        try:
            return wildcard_match(literal.value, case_sensitive=case_sensitive)
        except WildcardError as e:
            offset = (
                literal.start
                if literal.value != self.source[literal.start + 1 : literal.end - 1]
                else (literal.start + 1 + e.offset)
            )
            raise ExpressionError(f"invalid wildcard: {e}", source=self.source, offset=offset) from None

    def regex(self, literal: ast.StringLit) -> Test:
        problem = rust_only_construct(literal.value)
        if problem is not None:
            raise ExpressionError(f"regex not portable: {problem}", source=self.source, offset=literal.start)
        try:
            return regex_search(literal.value, max_mem=self.limits.regex_max_mem)
        except RegexError as e:
            if e.too_large:
                message = (
                    f"regex too large: its compiled program exceeds the memory limit of "
                    f"{self.limits.regex_max_mem} bytes"
                )
            else:
                message = f"invalid regex: {e}"
            raise ExpressionError(message, source=self.source, offset=literal.start) from None


def _logical(node: ast.And | ast.Or | ast.Xor, preds: tuple[Pred, ...]) -> Pred:
    if isinstance(node, ast.Xor):

        def xor(ctx: Ctx, element: Any) -> bool:
            result = False
            for pred in preds:
                result ^= pred(ctx, element)
            return result

        return xor
    if len(preds) == 2:
        first, second = preds
        if isinstance(node, ast.And):
            return lambda c, e: first(c, e) and second(c, e)
        return lambda c, e: first(c, e) or second(c, e)
    if isinstance(node, ast.And):

        def and_(ctx: Ctx, element: Any) -> bool:
            for pred in preds:
                if not pred(ctx, element):
                    return False
            return True

        return and_

    def or_(ctx: Ctx, element: Any) -> bool:
        for pred in preds:
            if pred(ctx, element):
                return True
        return False

    return or_


def _ip_test(op: ast.CompareOp, value: Any) -> Test:
    """IP comparisons: an absent address (None) is false to everything; families never mix."""
    if op is ast.CompareOp.EQ:
        return lambda v: bool(v == value)
    if op is ast.CompareOp.NE:
        return lambda v: v is not None and bool(v != value)
    compare = _ORDER[op]
    version = value.version
    return lambda v: v is not None and v.version == version and compare(v, value)


def _ip_ranges(items: Sequence[ast.SetItem]) -> list[tuple[Any, Any]]:
    ranges: list[tuple[Any, Any]] = []
    for item in items:
        if isinstance(item, ast.IpLit):
            ranges.append((item.value, item.value))
        elif isinstance(item, ast.CidrLit):
            ranges.append(network_range(item.value))
        elif isinstance(item, ast.IpRange):
            ranges.append((item.low, item.high))
    return ranges


def _getter(lhs: ast.Operand, field: Field) -> Getter:
    """Reads the compared value: the field, its element, or item N; then applies functions."""
    transform = _transform(lhs.functions)
    name = field.name
    if lhs.index is ast.IndexKind.EACH:
        if transform is not None:
            return lambda c, e: transform(e)
        return lambda c, e: e
    if lhs.index is ast.IndexKind.AT:
        at = lhs.position

        def item(ctx: Ctx, _: Any) -> Any:
            values: Sequence[Any] = ctx.get(name) or ()
            if at >= len(values):
                return ABSENT
            return transform(values[at]) if transform is not None else values[at]

        return item
    default: Any = empty_value(field.type)
    if transform is not None:
        return lambda c, _: transform(c.get(name) or default)
    return lambda c, _: c.get(name) or default


class _Absent:
    """An array item past the end (shown in explanations; the leaf is false without testing)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "absent"


ABSENT: Any = _Absent()


def _elements(field: Field) -> Elements:
    """The elements ``field[*]`` walks: an array's items, or a scalar as a one-item array."""
    name = field.name
    if field.type.is_array:
        return lambda c: c.get(name) or ()
    if field.type.kind is Kind.IP:
        return lambda c: () if c.get(name) is None else (c.get(name),)
    default: Any = empty_value(field.type)
    return lambda c: (c.get(name) or default,)


def _bound_field(body: ast.Expr) -> str:
    """The field of the first ``field[*]`` in ``body`` outside nested any()/all()."""
    stack: list[ast.Expr] = [body]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Comparison):
            if node.lhs.index is ast.IndexKind.EACH:
                return node.lhs.field
        elif isinstance(node, ast.Not):
            stack.append(node.operand)
        elif isinstance(node, (ast.And, ast.Or, ast.Xor)):
            stack.extend(reversed(node.operands))
    raise AssertionError("checked any()/all() bodies read a field[*]")
