"""Type-check a parsed expression against a scheme, in source order (the first error wins).

Checks that every field exists, that arrays are only read through ``any()``/``all()`` with
``[*]`` or by index, that functions get strings, and that each operator and value fits the
field's type. Returns the fields the expression reads.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

from policies import ast
from policies.errors import ExpressionError
from policies.limits import Limits
from policies.list_matchers import FIELD_LIST_TYPES, ListLookup
from policies.parser import EXPECT_OPERATOR
from policies.scheme import Field, Kind, Scheme, Type

logger = logging.getLogger(__name__)

_ORDERED = (Kind.STRING, Kind.INT, Kind.IP)


@dataclass
class _Binding:
    """The array an ``any()``/``all()`` iterates: the first ``field[*]`` found in its body."""

    node: ast.Quantified
    field: str | None = None


def check(
    expr: ast.Expr, scheme: Scheme, limits: Limits, source: str, lists: ListLookup | None = None
) -> frozenset[str]:
    """Raise ExpressionError on the first type error; return the names of the fields read.
    ``lists`` resolves ``$<id>``; without it every list reference is unknown."""
    checker = _Checker(scheme, limits, source, lists)
    checker.visit(expr, None)
    return frozenset(checker.fields)


def resolve(expr: ast.Expr, scheme: Scheme) -> ast.Expr:
    """Give each word that reads both as an address and as a byte string (``10.20.30.40``) the
    reading its field's type asks for, as wirefilter lexes the right side by the left's type:
    an address for an ip field, the bytes for any other. Unknown fields keep the address (the
    checker reports the field first)."""
    if isinstance(expr, ast.Comparison):
        if not isinstance(expr.rhs, (ast.AmbiguousLit, ast.SetLit)):
            return expr
        field = scheme.get(expr.lhs.field)
        text = field is not None and value_type(expr.lhs, field).kind is not Kind.IP
        if isinstance(expr.rhs, ast.AmbiguousLit):
            return dataclasses.replace(expr, rhs=_pick(expr.rhs, text))
        items = tuple(_pick(i, text) if isinstance(i, ast.AmbiguousLit) else i for i in expr.rhs.items)
        return dataclasses.replace(expr, rhs=dataclasses.replace(expr.rhs, items=items))
    if isinstance(expr, ast.Not):
        return dataclasses.replace(expr, operand=resolve(expr.operand, scheme))
    if isinstance(expr, ast.Quantified):
        return dataclasses.replace(expr, body=resolve(expr.body, scheme))
    return dataclasses.replace(expr, operands=tuple(resolve(op, scheme) for op in expr.operands))


def _pick(literal: ast.AmbiguousLit, text: bool) -> ast.StringLit | ast.IpLit:
    return literal.text if text else literal.address


def value_type(operand: ast.Operand, field: Field) -> Type:
    """The type compared: an element for ``[*]``/``[N]`` on an array, else the field's own."""
    if operand.index is not ast.IndexKind.NONE and field.type.element is not None:
        return field.type.element
    return field.type


def article(type_: Type) -> str:
    return f"an {type_}" if str(type_)[0] in "aeiou" else f"a {type_}"


def _literal_kind(value: ast.Value | ast.SetItem) -> str:
    if isinstance(value, ast.StringLit):
        return "a byte string" if value.bytes_form else "a string"
    if isinstance(value, ast.IntLit):
        return "an int"
    if isinstance(value, ast.IntRange):
        return "an int range"
    if isinstance(value, ast.IpLit):
        return "an ip"
    if isinstance(value, ast.CidrLit):
        return "a CIDR"
    if isinstance(value, ast.IpRange):
        return "an ip range"
    return "a set"


def quoted_int(field: Field, value: ast.Value | ast.SetItem) -> bool:
    """A quoted decimal number given to a field that accepts one (``status_code == "200"``)."""
    return (
        field.quoted_ints
        and isinstance(value, ast.StringLit)
        and value.value.isascii()
        and value.value.isdigit()
        and len(value.value) <= 18
    )


class _Checker:
    def __init__(self, scheme: Scheme, limits: Limits, source: str, lists: ListLookup | None) -> None:
        self.scheme = scheme
        self.limits = limits
        self.source = source
        self.lists = lists
        self.fields: set[str] = set()

    def error(self, message: str, offset: int, expected: tuple[str, ...] = ()) -> ExpressionError:
        return ExpressionError(message, source=self.source, offset=offset, expected=expected)

    def text(self, node: ast.Operand | ast.Value | ast.SetItem) -> str:
        text = self.source[node.start : node.end]
        return text if len(text) <= 60 else text[:57] + "..."

    def visit(self, node: ast.Expr, binding: _Binding | None) -> None:
        if isinstance(node, ast.Comparison):
            self.comparison(node, binding)
        elif isinstance(node, ast.Not):
            self.visit(node.operand, binding)
        elif isinstance(node, ast.Quantified):
            inner = _Binding(node)
            self.visit(node.body, inner)
            if inner.field is None:
                name = node.quantifier.value
                raise self.error(
                    f"{name}() needs an array field written with [*] inside, "
                    f'e.g. {name}(http.request.domains[*] == "example.com")',
                    node.start,
                    ("field[*]",),
                )
        else:
            for operand in node.operands:
                self.visit(operand, binding)

    def field(self, operand: ast.Operand, binding: _Binding | None) -> Field:
        field = self.scheme.get(operand.field)
        if field is None:
            suggestion = self.scheme.suggest(operand.field)
            hint = f" (did you mean {suggestion}?)" if suggestion else ""
            raise self.error(f"unknown field '{operand.field}'{hint}", operand.field_start, ("a field",))
        self.fields.add(field.name)
        name, type_ = field.name, field.type
        if operand.index is ast.IndexKind.NONE and type_.is_array:
            raise self.error(
                f"{name} is {article(type_)}: compare its elements inside any({name}[*] ...) "
                f"or all({name}[*] ...), or pick one with {name}[0]",
                operand.field_start,
                (f"any({name}[*] ...)", f"all({name}[*] ...)", f"{name}[0]"),
            )
        if operand.index is ast.IndexKind.AT and not type_.is_array:
            raise self.error(
                f"{name} is {article(type_)}, not an array: it cannot be indexed",
                operand.field_start,
            )
        if operand.index is ast.IndexKind.EACH:
            if binding is None:
                raise self.error(
                    f"{name}[*] can only be used inside any() or all()",
                    operand.field_start,
                    (f"any({name}[*] ...)", f"all({name}[*] ...)"),
                )
            if binding.field is None:
                binding.field = name
            elif binding.field != name:
                raise self.error(
                    f"{binding.node.quantifier.value}() iterates over one array: it already "
                    f"reads {binding.field}[*], not {name}[*] (use a second any()/all())",
                    operand.field_start,
                )
        return field

    def comparison(self, node: ast.Comparison, binding: _Binding | None) -> None:
        lhs = node.lhs
        field = self.field(lhs, binding)
        type_ = value_type(lhs, field)
        subject = self.text(lhs)
        if lhs.functions:
            if type_.kind is not Kind.STRING:
                name = lhs.functions[0].value
                raise self.error(
                    f"{name}() takes a string, but {lhs.field} is {article(type_)}",
                    lhs.start,
                )
        if node.op is None or node.rhs is None:
            if type_.kind is not Kind.BOOL:
                raise self.error(
                    f"{subject} is {article(type_)}: compare it with an operator "
                    f"(==, !=, contains, matches, in, ...)",
                    lhs.end,
                    EXPECT_OPERATOR,
                )
            return
        if type_.kind is Kind.BOOL:
            raise self.error(
                f"{subject} is a bool: use it alone ({subject}) or negated (not {subject})",
                node.op_start,
                ("and", "or", ")"),
            )
        self.operator(node, node.op, node.rhs, field, type_, subject)

    def operator(
        self,
        node: ast.Comparison,
        op: ast.CompareOp,
        rhs: ast.Value,
        field: Field,
        type_: Type,
        subject: str,
    ) -> None:
        if op is ast.CompareOp.CONTAINS or op.pattern:
            if type_.kind is not Kind.STRING:
                raise self.error(
                    f"{op.value} needs a string, but {subject} is {article(type_)}",
                    node.op_start,
                    ("==", "!=", "in") + (("<", "<=", ">", ">=") if type_.kind in _ORDERED else ()),
                )
            if op is ast.CompareOp.MATCHES and isinstance(rhs, ast.StringLit):
                if len(rhs.value) > self.limits.max_regex_length:
                    raise self.error(
                        f"regex is {len(rhs.value)} characters long; "
                        f"the limit is {self.limits.max_regex_length}",
                        rhs.start,
                    )
            self.item(rhs, field, type_, subject, allow=(ast.StringLit,))
            return
        if op is ast.CompareOp.BITWISE_AND:
            if type_.kind is not Kind.INT:
                raise self.error(
                    f"& (bitwise and) needs an int, but {subject} is {article(type_)}",
                    node.op_start,
                    ("==", "!=", "in"),
                )
            self.item(rhs, field, type_, subject, allow=(ast.IntLit,))
            return
        if op is ast.CompareOp.IN:
            if isinstance(rhs, ast.ListRef):
                self.list_ref(rhs, field, type_, subject)
            if isinstance(rhs, ast.SetLit):
                for item in rhs.items:
                    self.item(item, field, type_, subject, allow=_SET_ALLOWED[type_.kind])
            return
        if op.ordering and type_.kind not in _ORDERED:
            raise self.error(f"{op.value} cannot compare {article(type_)}", node.op_start)
        if isinstance(rhs, ast.CidrLit) and type_.kind is Kind.IP:
            raise self.error(
                f"a CIDR only works in a set: {subject} in {{{rhs.value}}}",
                rhs.start,
                ("an ip", "in {...}"),
            )
        if isinstance(rhs, ast.IpLit) and rhs.loose and type_.kind is Kind.IP:
            raise self.error(
                f"IP address {self.text(rhs)} has leading zeros, which Cloudflare's engine accepts "
                f"only inside a set: write {rhs.value}",
                rhs.start,
                (str(rhs.value),),
            )
        self.item(rhs, field, type_, subject, allow=_SCALAR_ALLOWED[type_.kind])

    def list_ref(self, ref: ast.ListRef, field: Field, type_: Type, subject: str) -> None:
        """``$<id>`` names a list whose type fits the field (``FIELD_LIST_TYPES``)."""
        handle = self.lists.get(ref.list_id) if self.lists is not None else None
        if handle is None:
            raise self.error(
                f"unknown list ${ref.list_id}: no Gateway list has this id (create it under "
                "gateway/lists, or in the policy files' lists)",
                ref.start,
                ("$<list id>",),
            )
        allowed = FIELD_LIST_TYPES.get(field.name, frozenset())
        if handle.type not in allowed:
            fits = " or ".join(sorted(t.value for t in allowed))
            hint = f"; {field.name} takes a {fits} list" if fits else f"; no list type fits {field.name}"
            raise self.error(
                f"list ${ref.list_id} ({handle.name!r}) is a {handle.type.value} list, which cannot "
                f"be compared with {subject} ({article(type_)}){hint}",
                ref.start,
                tuple(f"a {t.value} list" for t in sorted(allowed)),
            )

    def item(
        self,
        value: ast.Value | ast.SetItem,
        field: Field,
        type_: Type,
        subject: str,
        allow: tuple[type, ...],
    ) -> None:
        if isinstance(value, allow):
            return
        if type_.kind is Kind.INT and quoted_int(field, value):
            return
        raise self.error(
            f"{subject} is {article(type_)}, but {self.text(value)} is {_literal_kind(value)}",
            value.start,
            _EXPECTED[type_.kind],
        )


_SCALAR_ALLOWED: dict[Kind, tuple[type, ...]] = {
    Kind.STRING: (ast.StringLit,),
    Kind.INT: (ast.IntLit,),
    Kind.IP: (ast.IpLit,),
    Kind.BOOL: (),
    Kind.ARRAY: (),
}
_SET_ALLOWED: dict[Kind, tuple[type, ...]] = {
    Kind.STRING: (ast.StringLit,),
    Kind.INT: (ast.IntLit, ast.IntRange),
    Kind.IP: (ast.IpLit, ast.CidrLit, ast.IpRange),
    Kind.BOOL: (),
    Kind.ARRAY: (),
}
_EXPECTED: dict[Kind, tuple[str, ...]] = {
    Kind.STRING: ("a string",),
    Kind.INT: ("an integer", "a range a..b"),
    Kind.IP: ("an IP address", "a CIDR", "an IP range"),
    Kind.BOOL: (),
    Kind.ARRAY: (),
}
