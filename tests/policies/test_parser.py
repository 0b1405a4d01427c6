"""policies/parser.py: precedence, n-ary grouping, operands, values, limits, syntax errors."""

from __future__ import annotations

import sys

import pytest

from policies import ast
from policies.errors import ExpressionError
from policies.limits import HARD_MAX_DEPTH, Limits
from policies.parser import parse


def shape(node: ast.Expr) -> object:
    """A compact picture of the tree: leaves by their field name."""
    if isinstance(node, ast.Comparison):
        return node.lhs.field
    if isinstance(node, ast.Not):
        return ("not", shape(node.operand))
    if isinstance(node, ast.Quantified):
        return (node.quantifier.value, shape(node.body))
    name = {ast.And: "and", ast.Or: "or", ast.Xor: "xor"}[type(node)]
    return (name, *(shape(op) for op in node.operands))


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("a", "a"),
        ("a and b", ("and", "a", "b")),
        ("a && b && c", ("and", "a", "b", "c")),
        ("a or b and c", ("or", "a", ("and", "b", "c"))),
        ("a and b or c", ("or", ("and", "a", "b"), "c")),
        ("a xor b or c", ("or", ("xor", "a", "b"), "c")),
        ("a or b xor c", ("or", "a", ("xor", "b", "c"))),
        ("a and b xor c", ("xor", ("and", "a", "b"), "c")),
        ("a ^^ b ^^ c", ("xor", "a", "b", "c")),
        ("a || b || c", ("or", "a", "b", "c")),
        ("not a and b", ("and", ("not", "a"), "b")),
        ("!a || b", ("or", ("not", "a"), "b")),
        ("not not a", ("not", ("not", "a"))),
        ("not (a and b)", ("not", ("and", "a", "b"))),
        ("not(a) and b", ("and", ("not", "a"), "b")),
        ("(a or b) and c", ("and", ("or", "a", "b"), "c")),
        ("((a))", "a"),
        ("a and (b and c)", ("and", "a", ("and", "b", "c"))),
        ("any(x[*] == 1) or all(y[*] == 2)", ("or", ("any", "x"), ("all", "y"))),
        ("any(x[*] == 1 and b)", ("any", ("and", "x", "b"))),
        ("not a == 1 or b", ("or", ("not", "a"), "b")),
    ],
)
def test_precedence_and_grouping(source: str, expected: object) -> None:
    assert shape(parse(source)) == expected


def test_comparison_node() -> None:
    node = parse('lower(http.request.host) eq "x"')
    assert isinstance(node, ast.Comparison)
    assert node.op is ast.CompareOp.EQ
    assert node.lhs.functions == (ast.Function.LOWER,)
    assert node.lhs.field == "http.request.host"
    assert (node.lhs.start, node.lhs.end) == (0, 24)
    assert (node.lhs.field_start, node.lhs.field_end) == (6, 23)
    assert node.rhs == ast.StringLit("x", False, 28, 31)
    assert (node.start, node.end) == (0, 31)


def test_functions_listed_innermost_first() -> None:
    node = parse('lower(upper(a)) == "x"')
    assert isinstance(node, ast.Comparison)
    assert node.lhs.functions == (ast.Function.UPPER, ast.Function.LOWER)


@pytest.mark.parametrize(
    ("word", "symbol"),
    [("eq", "=="), ("ne", "!="), ("lt", "<"), ("le", "<="), ("gt", ">"), ("ge", ">="), ("matches", "~")],
)
def test_word_operators_equal_symbols(word: str, symbol: str) -> None:
    value = '"x"' if word == "matches" else "1"
    first, second = parse(f"a {word} {value}"), parse(f"a {symbol} {value}")
    assert isinstance(first, ast.Comparison) and isinstance(second, ast.Comparison)
    assert first.op is second.op


@pytest.mark.parametrize(
    ("source", "field", "index", "position"),
    [
        ("any(f[*] == 1)", "f", ast.IndexKind.EACH, 0),
        ("any(f[] == 1)", "f", ast.IndexKind.EACH, 0),
        ("f[3] == 1", "f", ast.IndexKind.AT, 3),
        ("f == 1", "f", ast.IndexKind.NONE, 0),
        ('any(identity.groups[*].name == "x")', "identity.groups.name", ast.IndexKind.EACH, 0),
    ],
)
def test_indexes(source: str, field: str, index: ast.IndexKind, position: int) -> None:
    node = parse(source)
    leaf = node.body if isinstance(node, ast.Quantified) else node
    assert isinstance(leaf, ast.Comparison)
    assert (leaf.lhs.field, leaf.lhs.index, leaf.lhs.position) == (field, index, position)


@pytest.mark.parametrize(
    ("source", "items"),
    [
        ('a in {"x" "y"}', ("x", "y")),
        ('a in {"x", "y"}', ("x", "y")),
        ('a in {"x","y" "z"}', ("x", "y", "z")),
        ("a in {80 443}", (80, 443)),
        ("a in {80..443 8080}", ((80, 443), 8080)),
    ],
)
def test_sets(source: str, items: tuple[object, ...]) -> None:
    node = parse(source)
    assert isinstance(node, ast.Comparison) and isinstance(node.rhs, ast.SetLit)
    found = tuple(
        (i.low, i.high) if isinstance(i, ast.IntRange) else i.value  # type: ignore[union-attr]
        for i in node.rhs.items
    )
    assert found == items


def test_parenthesised_span_includes_the_parentheses() -> None:
    node = parse("not (a or b)")
    assert isinstance(node, ast.Not)
    assert (node.operand.start, node.operand.end) == (4, 12)


def test_multiline_source() -> None:
    node = parse('a == "x"\n  and\n  b == 1')
    assert shape(node) == ("and", "a", "b")


def nested(depth: int) -> str:
    return "(" * depth + "a" + ")" * depth


@pytest.mark.parametrize(
    "source",
    [
        nested(128),
        "not " * 127 + "a",
        "any(" * 64 + "x[*] == 1" + ")" * 64,
        "lower(" * 127 + "x)" + ")" * 126 + ' == "a"',
        " and ".join(["a"] * 5000),  # long flat chains are not nesting
    ],
    ids=["parentheses", "bare-not", "any", "lower", "flat-and"],
)
def test_nesting_up_to_the_limit_parses(source: str) -> None:
    parse(source)


@pytest.mark.parametrize(
    ("source", "column"),
    [
        (nested(129), 129),
        ("not " * 129 + "a", 513),
        ("not(" * 129 + "a" + ")" * 129, 516),
        ("(" * 100 + "not " * 29 + "a" + ")" * 100, 213),
        ("lower(" * 129 + "x" + ")" * 129 + ' == "a"', 6 * 128 + 6),
    ],
    ids=["parentheses", "bare-not", "not-call", "mixed", "lower"],
)
def test_nesting_past_the_limit_is_refused(source: str, column: int) -> None:
    with pytest.raises(ExpressionError, match="nesting deeper than 128 levels") as caught:
        parse(source)
    assert caught.value.column == column


def test_depth_limit_is_a_setting() -> None:
    parse(nested(5), Limits(max_depth=5))
    with pytest.raises(ExpressionError, match="deeper than 5"):
        parse(nested(6), Limits(max_depth=5))
    with pytest.raises(ValueError, match=f"max_depth must be between 1 and {HARD_MAX_DEPTH}"):
        Limits(max_depth=HARD_MAX_DEPTH + 1)
    with pytest.raises(ValueError, match=f"max_depth must be between 1 and {HARD_MAX_DEPTH}"):
        Limits(max_depth=0)


def test_hard_depth_never_exhausts_the_stack() -> None:
    """At the hard cap, from an already deep stack, nothing raises RecursionError."""
    from policies.expression import compile_expression
    from policies.scheme import BOOL, Field, Scheme, array_of

    scheme = Scheme([Field("a", BOOL), Field("x", array_of(BOOL))])
    limits = Limits(max_depth=HARD_MAX_DEPTH)
    depth = HARD_MAX_DEPTH
    sources = [
        nested(depth),
        "not " * depth + "a",
        "not(" * depth + "a" + ")" * depth,
        "not(a and " * depth + "a" + ")" * depth,  # two nodes per level: the worst shape
        "any(x[*] and " * depth + "a" + ")" * depth,
        "(a or " * depth + "a" + ")" * depth,
    ]

    def descend(levels: int) -> None:
        if levels:
            descend(levels - 1)
            return
        for source in sources:
            expression = compile_expression(source, scheme=scheme, limits=limits)
            expression.evaluate({"a": True})
            expression.explain({"a": True}).render()
            expression.host_hints()

    descend(sys.getrecursionlimit() // 4)
    context = {"a": True, "x": (False, True)}
    for source in sources:
        expression = compile_expression(source, scheme=scheme, limits=limits)
        assert expression.explain(context).value is expression.evaluate(context)


def test_length_limit() -> None:
    parse("a" * 100, Limits(max_length=100))
    with pytest.raises(ExpressionError, match="101 characters long; the limit is 100") as caught:
        parse("a" * 101, Limits(max_length=100))
    assert caught.value.column == 101


def test_set_size_limit() -> None:
    parse("a in {1 2 3}", Limits(max_set_size=3))
    with pytest.raises(ExpressionError, match="more than 3 items") as caught:
        parse("a in {1 2 3 40}", Limits(max_set_size=3))
    assert caught.value.column == 13


ERRORS = [
    # (source, line, column, message fragment, one of the expected items)
    ("", 1, 1, "empty expression", "a field"),
    ("  \n ", 1, 1, "empty expression", "a field"),
    ('(a == "x"', 1, 10, "expected ')' to close the '(' at line 1, column 1, found end of expression", ")"),
    ('a == "x")', 1, 9, "unexpected ')': no '(' to close", "and"),
    ("a ==", 1, 5, "expected a value after '==', found end of expression", "a string"),
    ("a == ", 1, 6, "expected a value after '=='", "a string"),
    ("a in", 1, 5, "expected a set {...} after 'in'", "{"),
    ("a in 1", 1, 6, "expected a set {...} after 'in', found integer 1", "{"),
    ("a matches", 1, 10, "expected a regex string after 'matches'", "a string"),
    ("a matches 1", 1, 11, "expected a regex string", 'r"..."'),
    ('a "x"', 1, 3, 'expected a comparison operator, found string "x"', "=="),
    ("a == example.com", 1, 6, 'strings must be quoted: "example.com"', "a string"),
    ("a == {1}", 1, 3, "a set needs 'in', not '=='", "in"),
    ("a in {{1}}", 1, 7, "expected a set item, found '{' (sets do not nest)", "a string"),
    ("a in {1,}", 1, 9, "expected a set item", "an integer"),
    ("a in {,1}", 1, 7, "expected a set item, found ','", "an integer"),
    ("a in {1 2", 1, 10, "expected '}' to close the set at line 1, column 6", "'}'"),
    ("a in {x}", 1, 7, 'strings must be quoted: "x"', "a string"),
    ("a == 1 AND b", 1, 8, "did you mean 'and'?", "and"),
    ("a == 1 b", 1, 8, "expected and, or, xor or the end, found 'b'", "or"),
    ("NOT a", 1, 5, "expected a comparison operator, found 'a'", "=="),
    ("a not in {1}", 1, 3, "to negate, write not (field in {...})", "in"),
    ("a ! 1", 1, 3, "did you mean '!='?", "!="),
    ("and", 1, 1, "expected a condition, found 'and'", "a field"),
    ('"x" == a', 1, 1, "a condition starts with a field", "a field"),
    ("a == 1 and", 1, 11, "expected a condition, found end of expression", "not"),
    ("()", 1, 2, "expected a condition, found ')'", "("),
    ("any a", 1, 5, "expected '(' after any", "("),
    ("any(x[*] == 1", 1, 14, "expected ')' to close the 'any(' at line 1, column 4", ")"),
    ("lower(a == 1", 1, 9, "expected ')' to close the 'lower(' at line 1, column 6", ")"),
    ("len(a) == 1", 1, 1, "unknown function len()", "lower"),
    ("a[x] == 1", 1, 3, "expected '*', ']' or an index", "*"),
    ("a[-1] == 1", 1, 3, "an index cannot be negative", "0"),
    ("a[1 == 1", 1, 5, "expected ']'", "]"),
    ('a == "x" and\n  b == ', 2, 8, "expected a value after '=='", "a string"),
]


@pytest.mark.parametrize(("source", "line", "column", "fragment", "expects"), ERRORS)
def test_syntax_errors(source: str, line: int, column: int, fragment: str, expects: str) -> None:
    with pytest.raises(ExpressionError) as caught:
        parse(source)
    error = caught.value
    assert fragment in error.message
    assert (error.line, error.column) == (line, column)
    assert expects in error.expected
    assert str(error) == f"line {line}, column {column}: {error.message}"
