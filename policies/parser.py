"""Tokens → AST. Recursive descent that recurses only where the source nests, with the depth
checked before each step down, so no input can exhaust Python's stack.

Grammar (precedence low → high: ``or`` < ``xor`` < ``and`` < ``not``)::

    expr       := xor_expr (("or" | "||") xor_expr)*
    xor_expr   := and_expr (("xor" | "^^") and_expr)*
    and_expr   := unary (("and" | "&&") unary)*
    unary      := ("not" | "!")* primary
    primary    := "(" expr ")" | ("any" | "all") "(" expr ")" | comparison
    comparison := operand [op value]                 (alone only for a bool field)
    operand    := ("lower" | "upper") "(" operand ")" index? | FIELD index?
    index      := "[*]" | "[]" | "[" INT "]"         ("a[*].b" is read as "a.b[*]")
    op         := == != < <= > >= eq ne lt le gt ge contains matches ~ in
                  wildcard "strict wildcard" & bitwise_and
    value      := STRING | BYTES | INT | IP | CIDR | "{" (item ","?)* "}" | "$" LIST_ID   (sets after in)

A function applied to ``field[*]`` gives an array, as in wirefilter: ``lower(f[*])[*]`` is each
element lowered (the same as ``lower(f[*])``) and ``lower(f[*])[2]`` is ``lower(f[2])``.
"""

from __future__ import annotations

import dataclasses
import logging

from policies import ast
from policies.errors import ExpressionError, position
from policies.lexer import IpNetwork, Token, TokenKind, tokenize
from policies.limits import Limits
from policies.scheme import IpAddress

logger = logging.getLogger(__name__)

KEYWORDS = frozenset(
    [
        "and",
        "or",
        "xor",
        "not",
        "in",
        "contains",
        "matches",
        "eq",
        "ne",
        "lt",
        "le",
        "gt",
        "ge",
        "any",
        "all",
        "lower",
        "upper",
        "wildcard",
        "strict",
        "bitwise_and",
    ]
)
_LOGICAL: dict[str, str] = {
    "and": "and", "&&": "and", "or": "or", "||": "or", "xor": "xor", "^^": "xor",
}  # fmt: skip
_COMPARE: dict[str, ast.CompareOp] = {
    "==": ast.CompareOp.EQ, "eq": ast.CompareOp.EQ,
    "!=": ast.CompareOp.NE, "ne": ast.CompareOp.NE,
    "<": ast.CompareOp.LT, "lt": ast.CompareOp.LT,
    "<=": ast.CompareOp.LE, "le": ast.CompareOp.LE,
    ">": ast.CompareOp.GT, "gt": ast.CompareOp.GT,
    ">=": ast.CompareOp.GE, "ge": ast.CompareOp.GE,
    "contains": ast.CompareOp.CONTAINS,
    "matches": ast.CompareOp.MATCHES, "~": ast.CompareOp.MATCHES,
    "wildcard": ast.CompareOp.WILDCARD,
    "&": ast.CompareOp.BITWISE_AND, "bitwise_and": ast.CompareOp.BITWISE_AND,
    "in": ast.CompareOp.IN,
}  # fmt: skip
_FUNCTIONS = {f.value: f for f in ast.Function}
_QUANTIFIERS = {q.value: q for q in ast.Quantifier}

EXPECT_CONDITION = ("a field", "not", "(", "any(", "all(")
EXPECT_LOGICAL = ("and", "or", "xor", "&&", "||", "^^")
EXPECT_OPERATOR = (
    "==", "!=", "<", "<=", ">", ">=", "contains", "matches", "wildcard", "strict wildcard", "&", "in",
)  # fmt: skip
EXPECT_VALUE = ("a string", "an integer", "an IP address")
EXPECT_ITEM = ("a string", "an integer", "a range a..b", "an IP address", "a CIDR", "'}'")
EXPECT_PATTERN = ("a string", 'r"..."')
_SET_ITEMS = {
    TokenKind.STRING, TokenKind.INT, TokenKind.INT_RANGE,
    TokenKind.IP, TokenKind.CIDR, TokenKind.IP_RANGE, TokenKind.BYTES,
}  # fmt: skip


def parse(source: str, limits: Limits = Limits()) -> ast.Expr:
    """Parse ``source`` into an AST (syntax only: fields and types are the checker's job)."""
    if len(source) > limits.max_length:
        raise ExpressionError(
            f"expression is {len(source)} characters long; the limit is {limits.max_length}",
            source=source,
            offset=limits.max_length,
        )
    if not source.strip():
        raise ExpressionError("empty expression", source=source, offset=0, expected=EXPECT_CONDITION)
    return _Parser(source, tokenize(source), limits).parse()


def describe(token: Token) -> str:
    """A token as an error message names it."""
    if token.kind is TokenKind.EOF:
        return "end of expression"
    text = token.text if len(token.text) <= 40 else token.text[:37] + "..."
    if token.kind in (TokenKind.IDENT, TokenKind.DOT_NAME, TokenKind.LIST_REF):
        return f"'{text}'"
    kind = str(token.kind.value)
    if kind.startswith("'"):
        return kind
    return f"{kind} {text}"


class _Parser:
    def __init__(self, source: str, tokens: list[Token], limits: Limits) -> None:
        self.source = source
        self.tokens = tokens
        self.limits = limits
        self.pos = 0
        self.depth = 0

    # -- helpers ----------------------------------------------------------------------------

    @property
    def tok(self) -> Token:
        return self.tokens[self.pos]

    def peek(self, ahead: int = 1) -> Token:
        return self.tokens[min(self.pos + ahead, len(self.tokens) - 1)]

    def advance(self) -> Token:
        token = self.tokens[self.pos]
        if token.kind is not TokenKind.EOF:
            self.pos += 1
        return token

    def error(self, message: str, offset: int, expected: tuple[str, ...] = ()) -> ExpressionError:
        return ExpressionError(message, source=self.source, offset=offset, expected=expected)

    def unexpected(self, wanted: str, expected: tuple[str, ...], hint: str = "") -> ExpressionError:
        found = describe(self.tok)
        return self.error(f"expected {wanted}, found {found}{hint}", self.tok.start, expected)

    def enter(self, token: Token) -> None:
        self.depth += 1
        if self.depth > self.limits.max_depth:
            raise self.error(f"nesting deeper than {self.limits.max_depth} levels", token.start, ())

    def where(self, token: Token) -> str:
        line, column = position(self.source, token.start)
        return f"line {line}, column {column}"

    def close(self, opener: Token, what: str) -> Token:
        if self.tok.kind is TokenKind.RPAREN:
            self.depth -= 1
            return self.advance()
        wanted = f"')' to close the '{what}' at {self.where(opener)}"
        raise self.unexpected(wanted, (")",) + EXPECT_LOGICAL)

    def looking_at(self, kind: TokenKind) -> bool:
        return self.tok.kind is kind

    def is_word(self, token: Token, *words: str) -> bool:
        return token.kind is TokenKind.IDENT and token.text in words

    # -- expressions ------------------------------------------------------------------------

    def parse(self) -> ast.Expr:
        expr = self.expr()
        if self.tok.kind is TokenKind.RPAREN:
            raise self.error("unexpected ')': no '(' to close", self.tok.start, EXPECT_LOGICAL)
        if self.tok.kind is not TokenKind.EOF:
            raise self.unexpected("and, or, xor or the end", EXPECT_LOGICAL, self.keyword_hint(self.tok))
        return expr

    def logical_op(self) -> str | None:
        token = self.tok
        if token.kind in (TokenKind.AND_AND, TokenKind.OR_OR, TokenKind.XOR_XOR):
            return _LOGICAL[token.text]
        if token.kind is TokenKind.IDENT:
            return _LOGICAL.get(token.text)
        return None

    def expr(self) -> ast.Expr:
        operands = [self.unary()]
        ops: list[str] = []
        while (op := self.logical_op()) is not None:
            self.advance()
            ops.append(op)
            operands.append(self.unary())
        return _group(operands, ops)

    def unary(self) -> ast.Expr:
        nots: list[tuple[Token, bool]] = []
        while self.tok.kind is TokenKind.BANG or self.is_word(self.tok, "not"):
            token = self.advance()
            counted = self.tok.kind is not TokenKind.LPAREN
            if counted:
                self.enter(token)
            nots.append((token, counted))
        operand = self.primary()
        for token, counted in reversed(nots):
            operand = ast.Not(operand, token.start, operand.end)
            if counted:
                self.depth -= 1
        return operand

    def primary(self) -> ast.Expr:
        token = self.tok
        if token.kind is TokenKind.LPAREN:
            self.advance()
            self.enter(token)
            inner = self.expr()
            end = self.close(token, "(")
            return dataclasses.replace(inner, start=token.start, end=end.end)
        if token.kind is TokenKind.IDENT and token.text in _QUANTIFIERS:
            self.advance()
            opener = self.tok
            if opener.kind is not TokenKind.LPAREN:
                raise self.unexpected(f"'(' after {token.text}", ("(",))
            self.advance()
            self.enter(opener)
            body = self.expr()
            end = self.close(opener, f"{token.text}(")
            return ast.Quantified(_QUANTIFIERS[token.text], body, token.start, end.end)
        if token.kind is TokenKind.IDENT and token.text not in KEYWORDS - _FUNCTIONS.keys():
            return self.comparison()
        raise self.unexpected("a condition", EXPECT_CONDITION, self.condition_hint(token))

    def condition_hint(self, token: Token) -> str:
        if token.kind in (TokenKind.STRING, TokenKind.INT, TokenKind.IP, TokenKind.CIDR):
            return " (a condition starts with a field: field == value)"
        return self.keyword_hint(token)

    def keyword_hint(self, token: Token) -> str:
        if token.kind is TokenKind.AMP:
            return " (did you mean '&&'? a single '&' is bitwise and: int_field & 1)"
        if token.kind is TokenKind.IDENT and token.text.lower() in KEYWORDS:
            return f" (keywords are lowercase: did you mean '{token.text.lower()}'?)"
        return ""

    # -- comparisons ------------------------------------------------------------------------

    def comparison(self) -> ast.Comparison:
        lhs = self.operand()
        op_token = self.tok
        op = self.compare_op(op_token)
        if op is None:
            if self.logical_op() is not None or op_token.kind in (
                TokenKind.RPAREN,
                TokenKind.EOF,
            ):
                return ast.Comparison(lhs, None, None, lhs.end, lhs.start, lhs.end)
            hint = self.keyword_hint(op_token)
            if self.is_word(op_token, "not"):
                hint = " (to negate, write not (field in {...}))"
            elif op_token.kind is TokenKind.BANG:
                hint = " (did you mean '!='?)"
            raise self.unexpected("a comparison operator", EXPECT_OPERATOR, hint)
        self.advance()
        if op is ast.CompareOp.STRICT_WILDCARD:
            self.advance()  # "strict" was the operator token; this is "wildcard"
        value = self.value(op, op_token)
        return ast.Comparison(lhs, op, value, op_token.start, lhs.start, value.end)

    def compare_op(self, token: Token) -> ast.CompareOp | None:
        if token.kind in (TokenKind.STRING, TokenKind.BYTES):
            return None
        if self.is_word(token, "strict"):
            if self.is_word(self.peek(), "wildcard"):
                return ast.CompareOp.STRICT_WILDCARD
            raise self.error(
                f"expected 'wildcard' after 'strict', found {describe(self.peek())}",
                self.peek().start,
                ("wildcard",),
            )
        return _COMPARE.get(token.text)

    def operand(self) -> ast.Operand:
        functions: list[tuple[ast.Function, Token, Token]] = []
        while (
            self.tok.kind is TokenKind.IDENT
            and self.peek().kind is TokenKind.LPAREN
            and self.tok.text in _FUNCTIONS
        ):
            name, opener = self.advance(), self.advance()
            self.enter(opener)
            functions.append((_FUNCTIONS[name.text], name, opener))
        field_token = self.tok
        if field_token.kind is not TokenKind.IDENT or field_token.text in KEYWORDS:
            raise self.unexpected("a field name", ("a field",), self.condition_hint(field_token))
        if self.peek().kind is TokenKind.LPAREN:
            raise self.error(
                f"unknown function {field_token.text}() (functions: any, all, lower, upper)",
                field_token.start,
                ("any", "all", "lower", "upper"),
            )
        self.advance()
        field, field_end = field_token.text, field_token.end
        index, at, end = ast.IndexKind.NONE, 0, field_token.end
        if self.tok.kind is TokenKind.LBRACKET:
            index, at, end = self.index()
            if index is ast.IndexKind.EACH and self.looking_at(TokenKind.DOT_NAME):
                suffix = self.advance()
                field, end = f"{field}.{suffix.value}", suffix.end
                field_end = suffix.end
        start = field_token.start
        for function, name, opener in reversed(functions):
            end = self.close(opener, f"{function.value}(").end
            start = name.start
            if self.tok.kind is TokenKind.LBRACKET:
                index, at, end = self.function_index(function, index, at)
        return ast.Operand(
            field=field,
            index=index,
            position=at,
            functions=tuple(f for f, _, _ in reversed(functions)),
            start=start,
            end=end,
            field_start=field_token.start,
            field_end=field_end,
        )

    def function_index(
        self, function: ast.Function, inner: ast.IndexKind, at: int
    ) -> tuple[ast.IndexKind, int, int]:
        """``f(x[*])[*]`` / ``f(x[*])[N]``: only a function over ``x[*]`` returns an array."""
        bracket = self.tok
        if inner is not ast.IndexKind.EACH:
            raise self.error(
                f"{function.value}() returns a string here, which cannot be indexed; "
                f"{function.value}(field[*]) gives an array",
                bracket.start,
                EXPECT_OPERATOR,
            )
        kind, position, end = self.index()
        return kind, (position if kind is ast.IndexKind.AT else at), end

    def index(self) -> tuple[ast.IndexKind, int, int]:
        self.advance()  # [
        if self.tok.kind is TokenKind.STAR:
            self.advance()
            kind, at = ast.IndexKind.EACH, 0
        elif self.tok.kind is TokenKind.RBRACKET:
            kind, at = ast.IndexKind.EACH, 0
        elif self.tok.kind is TokenKind.INT and isinstance(self.tok.value, int):
            at = self.tok.value
            if at < 0:
                raise self.error("an index cannot be negative", self.tok.start, ("0", "1", "..."))
            self.advance()
            kind = ast.IndexKind.AT
        else:
            raise self.unexpected("'*', ']' or an index", ("*", "]", "an integer"))
        if self.tok.kind is not TokenKind.RBRACKET:
            raise self.unexpected("']'", ("]",))
        return kind, at, self.advance().end

    def value(self, op: ast.CompareOp, op_token: Token) -> ast.Value:
        token = self.tok
        after = f"after '{op_token.text}'"
        if op is ast.CompareOp.IN:
            if token.kind is TokenKind.LBRACE:
                return self.set_()
            if token.kind is TokenKind.LIST_REF and isinstance(token.value, str):
                self.advance()
                return ast.ListRef(token.value, token.start, token.end)
            raise self.unexpected(f"a set {{...}} {after}", ("{", "$<list id>"))
        if op.pattern:
            if token.kind is TokenKind.STRING and isinstance(token.value, str):
                self.advance()
                return ast.StringLit(token.value, op is ast.CompareOp.MATCHES, token.start, token.end)
            if token.kind is TokenKind.BYTES or token.as_bytes is not None:
                raise self.error(
                    f'{op.value} takes a quoted or raw string, not a byte string (write "{_escaped(token)}")',
                    token.start,
                    EXPECT_PATTERN,
                )
            what = "a regex string" if op is ast.CompareOp.MATCHES else "a wildcard string"
            raise self.unexpected(f"{what} {after}", EXPECT_PATTERN)
        if op is ast.CompareOp.BITWISE_AND:
            if token.kind is TokenKind.INT and isinstance(token.value, int):
                self.advance()
                return ast.IntLit(token.value, token.start, token.end)
            raise self.unexpected(f"an integer {after}", ("an integer",))
        if token.kind in (TokenKind.LBRACE, TokenKind.LIST_REF):
            what = "a list" if token.kind is TokenKind.LIST_REF else "a set"
            raise self.error(f"{what} needs 'in', not '{op_token.text}'", op_token.start, ("in",))
        literal = self.literal(token)
        if literal is None or isinstance(literal, (ast.IntRange, ast.IpRange)):
            hint = ""
            if token.kind is TokenKind.IDENT and token.as_bytes is None:
                hint = f' (strings must be quoted: "{token.text}")'
            raise self.unexpected(f"a value {after}", EXPECT_VALUE, hint)
        self.advance()
        return literal

    def literal(self, token: Token) -> ast.SetItem | None:
        v, s, e = token.value, token.start, token.end
        if token.kind is TokenKind.STRING and isinstance(v, str):
            return ast.StringLit(v, False, s, e)
        if token.kind is TokenKind.BYTES and isinstance(v, str):
            return ast.StringLit(v, False, s, e, bytes_form=True)
        if token.kind is TokenKind.IDENT and token.as_bytes is not None:
            return ast.StringLit(token.as_bytes, False, s, e, bytes_form=True)
        if token.kind is TokenKind.INT and isinstance(v, int):
            return ast.IntLit(v, s, e)
        if token.kind is TokenKind.IP and isinstance(v, IpAddress):
            address = ast.IpLit(v, s, e, loose=token.loose)
            if token.as_bytes is None:
                return address
            return ast.AmbiguousLit(address, ast.StringLit(token.as_bytes, False, s, e, True), s, e)
        if token.kind is TokenKind.CIDR and isinstance(v, IpNetwork):
            return ast.CidrLit(v, s, e, loose=token.loose)
        if token.kind is TokenKind.INT_RANGE and isinstance(v, tuple):
            return ast.IntRange(v[0], v[1], s, e)
        if token.kind is TokenKind.IP_RANGE and isinstance(v, tuple):
            return ast.IpRange(v[0], v[1], s, e)
        return None

    def set_(self) -> ast.SetLit:
        opener = self.advance()
        items: list[ast.SetItem] = []
        after_comma = False
        while self.tok.kind is not TokenKind.RBRACE:
            token = self.tok
            if token.kind is TokenKind.COMMA and items and not after_comma:
                after_comma = True
                self.advance()
                continue
            spelled = token.kind in _SET_ITEMS or token.as_bytes is not None
            item = self.literal(token) if spelled else None
            if item is None:
                if token.kind is TokenKind.EOF:
                    wanted = f"'}}' to close the set at {self.where(opener)}"
                    raise self.unexpected(wanted, EXPECT_ITEM)
                hint = f' (strings must be quoted: "{token.text}")' if token.kind is TokenKind.IDENT else ""
                if token.kind is TokenKind.LBRACE:
                    hint = " (sets do not nest)"
                raise self.unexpected("a set item", EXPECT_ITEM, hint)
            if len(items) >= self.limits.max_set_size:
                raise self.error(f"set has more than {self.limits.max_set_size} items", token.start, ("'}'",))
            items.append(item)
            after_comma = False
            self.advance()
        if after_comma:
            raise self.unexpected("a set item after ','", EXPECT_ITEM[:-1])
        close = self.advance()
        return ast.SetLit(tuple(items), opener.start, close.end)


def _escaped(token: Token) -> str:
    """A byte-string token written as a quoted string, for hints."""
    value = token.as_bytes if token.as_bytes is not None else token.value
    text = value if isinstance(value, str) else token.text
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch.isprintable() and not 0xDC80 <= ord(ch) <= 0xDCFF:
            out.append(ch)
        else:
            out.extend(f"\\x{b:02x}" for b in ch.encode("utf-8", "surrogateescape"))
    return "".join(out)


def _group(operands: list[ast.Expr], ops: list[str]) -> ast.Expr:
    """Build n-ary nodes from a flat ``a op b op c`` run: or < xor < and."""
    return _split(operands, ops, ("or", "xor", "and"))


def _split(operands: list[ast.Expr], ops: list[str], levels: tuple[str, ...]) -> ast.Expr:
    if not ops:
        return operands[0]
    level, rest = levels[0], levels[1:]
    groups: list[ast.Expr] = []
    start = 0
    for i, op in enumerate(ops + [level]):
        if op == level:
            groups.append(_split(operands[start : i + 1], ops[start:i], rest))
            start = i + 1
    if len(groups) == 1:
        return groups[0]
    start_, end_ = groups[0].start, groups[-1].end
    if level == "or":
        return ast.Or(tuple(groups), start_, end_)
    if level == "xor":
        return ast.Xor(tuple(groups), start_, end_)
    return ast.And(tuple(groups), start_, end_)
