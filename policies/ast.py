"""The parsed form of an expression: frozen nodes that remember where they came from.

Every node has ``start``/``end``: character offsets of its text in the source, so errors can
point at it and explanations can quote it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import Enum

from policies.lexer import IpNetwork
from policies.scheme import IpAddress

logger = logging.getLogger(__name__)


class CompareOp(Enum):
    EQ = "=="
    NE = "!="
    LT = "<"
    LE = "<="
    GT = ">"
    GE = ">="
    CONTAINS = "contains"
    MATCHES = "matches"
    WILDCARD = "wildcard"
    STRICT_WILDCARD = "strict wildcard"
    BITWISE_AND = "&"
    IN = "in"

    @property
    def ordering(self) -> bool:
        return self in (CompareOp.LT, CompareOp.LE, CompareOp.GT, CompareOp.GE)

    @property
    def pattern(self) -> bool:
        """Operators whose right side is a pattern written as a quoted or raw string."""
        return self in (CompareOp.MATCHES, CompareOp.WILDCARD, CompareOp.STRICT_WILDCARD)


class Function(Enum):
    """Transformations applied to a field's value before comparing it (string → string)."""

    LOWER = "lower"
    UPPER = "upper"


class Quantifier(Enum):
    ANY = "any"
    ALL = "all"


class IndexKind(Enum):
    NONE = "none"  # the field itself
    EACH = "each"  # field[*] or field[]: each element, inside any()/all()
    AT = "at"  # field[N]


@dataclass(frozen=True)
class Operand:
    """The left side of a comparison: a field, maybe indexed, maybe wrapped in functions.

    ``functions`` are listed innermost first: ``lower(upper(f))`` → (UPPER, LOWER).
    ``field_start``/``field_end`` locate the field name itself.
    """

    field: str
    index: IndexKind
    position: int
    functions: tuple[Function, ...]
    start: int
    end: int
    field_start: int
    field_end: int


@dataclass(frozen=True)
class StringLit:
    """A string: quoted, raw, or a byte string (``6F:72:67``, ``bytes_form``)."""

    value: str
    regex: bool
    start: int
    end: int
    bytes_form: bool = False


@dataclass(frozen=True)
class IntLit:
    value: int
    start: int
    end: int


@dataclass(frozen=True)
class IntRange:
    low: int
    high: int
    start: int
    end: int


@dataclass(frozen=True)
class IpLit:
    """An address; ``loose`` when written with leading zeros (``1.1.1.01``, sets only)."""

    value: IpAddress
    start: int
    end: int
    loose: bool = False


@dataclass(frozen=True)
class CidrLit:
    value: IpNetwork
    start: int
    end: int
    loose: bool = False


@dataclass(frozen=True)
class AmbiguousLit:
    """A word that is both an address and a byte string (``10.20.30.40``): the field's type
    picks one before type checking (``checker.resolve``), so no later step ever sees it."""

    address: IpLit
    text: StringLit
    start: int
    end: int


@dataclass(frozen=True)
class IpRange:
    low: IpAddress
    high: IpAddress
    start: int
    end: int


@dataclass(frozen=True)
class ListRef:
    """``$<list id>``, a Gateway list where a set may stand (``http.request.host in $<id>``)."""

    list_id: str
    start: int
    end: int


SetItem = StringLit | IntLit | IntRange | IpLit | CidrLit | IpRange | AmbiguousLit


@dataclass(frozen=True)
class SetLit:
    items: tuple[SetItem, ...]
    start: int
    end: int


Value = StringLit | IntLit | IpLit | CidrLit | SetLit | AmbiguousLit | ListRef


@dataclass(frozen=True)
class Comparison:
    """``lhs op rhs``; ``op``/``rhs`` are None for a boolean field standing alone."""

    lhs: Operand
    op: CompareOp | None
    rhs: Value | None
    op_start: int
    start: int
    end: int


@dataclass(frozen=True)
class Not:
    operand: Expr
    start: int
    end: int


@dataclass(frozen=True)
class And:
    operands: tuple[Expr, ...]
    start: int
    end: int


@dataclass(frozen=True)
class Or:
    operands: tuple[Expr, ...]
    start: int
    end: int


@dataclass(frozen=True)
class Xor:
    operands: tuple[Expr, ...]
    start: int
    end: int


@dataclass(frozen=True)
class Quantified:
    """``any(body)`` / ``all(body)``: body holds ``field[*]`` for one array field."""

    quantifier: Quantifier
    body: Expr
    start: int
    end: int


Expr = Comparison | Not | And | Or | Xor | Quantified
Logical = And | Or | Xor
