"""The expression language's front door: source → checked, compiled ``Expression``.

    expr = compile_expression('any(http.request.domains[*] == "example.com")')
    expr.evaluate({"http.request.domains": ("www.example.com", "example.com")})  # True

Steps (one module each): lexer → parser → checker (literal readings and types, against a
``Scheme``) → compiler
(nested closures). ``evaluate`` runs only the closures; ``explain`` says which clause decided;
``host_hints`` tells a rule index which hosts/domains (or Gateway lists of them) the expression
can possibly match.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from policies import ast
from policies.checker import check, resolve
from policies.compiler import Plan, Pred, compile_tree
from policies.errors import ExpressionError, PolicyError
from policies.explain import Explanation, explain
from policies.limits import Limits
from policies.list_matchers import ListHandle, ListLookup, ListType
from policies.parser import parse
from policies.scheme import GATEWAY_SCHEME, Scheme

logger = logging.getLogger(__name__)

__all__ = [
    "Explanation",
    "Expression",
    "ExpressionError",
    "HostHints",
    "Limits",
    "PolicyError",
    "compile_expression",
]

# Fields whose exact value, or whose domain list, can index rules (see HostHints).
HOST_FIELDS = frozenset({"http.request.host", "net.sni.host"})
DOMAIN_FIELDS = frozenset({"http.request.domains", "http.conn.domains"})
HOST_LIST_TYPES = frozenset({ListType.DOMAIN, ListType.HOST})


@dataclass(frozen=True)
class HostHints:
    """The expression can only be true when ``http.request.host`` or ``net.sni.host`` is one of
    ``hosts`` or is in a list of ``host_lists``, or when ``http.request.domains`` or
    ``http.conn.domains`` holds one of ``domains`` or an element in a list of ``domain_lists``.

    Values are compared exactly (case-sensitive, as the expression does), so an index must be
    probed with the context's own values: both host fields, and every element of both domain
    arrays (a list's matcher folds case itself). A request matching none of them cannot match
    the expression. A list hint holds the list's handle, whose matcher is the index of its items:
    a change to the list makes a new handle, so the hint follows it with the rule's recompiling.
    """

    hosts: frozenset[str] = frozenset()
    domains: frozenset[str] = frozenset()
    host_lists: frozenset[ListHandle] = frozenset()
    domain_lists: frozenset[ListHandle] = frozenset()

    def __or__(self, other: HostHints) -> HostHints:
        return HostHints(
            self.hosts | other.hosts,
            self.domains | other.domains,
            self.host_lists | other.host_lists,
            self.domain_lists | other.domain_lists,
        )

    @property
    def size(self) -> int:
        """How many names it admits (a DOMAIN item counts once, its subdomains uncounted)."""
        listed = sum(h.matcher.size for h in self.host_lists | self.domain_lists)
        return len(self.hosts) + len(self.domains) + listed


class Expression:
    """A compiled expression; immutable and safe to share between threads."""

    __slots__ = ("_hints", "_plan", "_pred", "fields", "lists", "source", "tree")

    def __init__(
        self,
        source: str,
        tree: ast.Expr,
        fields: frozenset[str],
        pred: Pred,
        plan: Plan,
        lists: Mapping[str, ListHandle] | None = None,
    ):
        self.source = source
        self.tree = tree
        self.fields = fields
        self._pred = pred
        self._plan = plan
        self.lists: Mapping[str, ListHandle] = lists or {}  # the lists it refers to, by id
        self._hints = host_hints(tree, self.lists)

    def uses_current_lists(self, lists: ListLookup | None) -> bool:
        """Every list it refers to still has the handle it was compiled with in ``lists`` (so it
        need not be compiled again)."""
        return all(lists is not None and lists.get(i) is h for i, h in self.lists.items())

    def evaluate(self, ctx: Mapping[str, object]) -> bool:
        """The expression's value for one request. ``ctx`` maps field names to values of their
        declared types; a missing field reads as its type's empty value."""
        return self._pred(ctx, None)

    def explain(self, ctx: Mapping[str, object]) -> Explanation:
        """The same evaluation as a tree of clauses, marking the ones that decided."""
        return explain(self._plan, ctx, self.source)

    def host_hints(self) -> HostHints | None:
        """Hosts/domains outside which the expression is always false; None if unbounded."""
        return self._hints

    def __repr__(self) -> str:
        return f"Expression({self.source!r})"


def compile_expression(
    source: str,
    *,
    scheme: Scheme = GATEWAY_SCHEME,
    limits: Limits = Limits(),
    lists: ListLookup | None = None,
) -> Expression:
    """Parse, type-check and compile ``source``. Raises ExpressionError (never anything else
    for bad input). An empty expression is an error: "no condition" is the caller's to decide.
    ``lists`` resolves ``$<list id>`` references (``policies.list_matchers``); without it they
    are unknown lists. Results without lists are cached, so recompiling an unchanged rule set is
    cheap; an expression that refers to lists is compiled against the lookup it is given."""
    if not isinstance(source, str):
        raise TypeError(f"expression source must be a str, not {type(source).__name__}")
    if "$" not in source:
        return _compile_cached(source, scheme, limits)
    tree = _parse_cached(source, scheme, limits)
    fields = check(tree, scheme, limits, source, lists)
    pred, plan = compile_tree(tree, scheme, limits, source, lists)
    handles = {ref.list_id: lists.get(ref.list_id) for ref in list_refs(tree)} if lists else {}
    return Expression(source, tree, fields, pred, plan, {k: v for k, v in handles.items() if v is not None})


@functools.lru_cache(maxsize=4096)
def _parse_cached(source: str, scheme: Scheme, limits: Limits) -> ast.Expr:
    return resolve(parse(source, limits), scheme)


@functools.lru_cache(maxsize=4096)
def _compile_cached(source: str, scheme: Scheme, limits: Limits) -> Expression:
    tree = _parse_cached(source, scheme, limits)
    fields = check(tree, scheme, limits, source)
    pred, plan = compile_tree(tree, scheme, limits, source)
    return Expression(source, tree, fields, pred, plan)


def referenced_lists(
    source: str, *, scheme: Scheme = GATEWAY_SCHEME, limits: Limits = Limits()
) -> frozenset[str]:
    """The ids of the lists ``source`` refers to (none when it does not parse)."""
    if "$" not in source:
        return frozenset()
    try:
        tree = _parse_cached(source, scheme, limits)
    except ExpressionError:
        return frozenset()
    return frozenset(ref.list_id for ref in list_refs(tree))


def list_refs(node: ast.Expr) -> Iterator[ast.ListRef]:
    """Every ``$<id>`` in the expression, in source order."""
    if isinstance(node, ast.Comparison):
        if isinstance(node.rhs, ast.ListRef):
            yield node.rhs
    elif isinstance(node, ast.Not):
        yield from list_refs(node.operand)
    elif isinstance(node, ast.Quantified):
        yield from list_refs(node.body)
    else:
        for operand in node.operands:
            yield from list_refs(operand)


def host_hints(node: ast.Expr, lists: Mapping[str, ListHandle] | None = None) -> HostHints | None:
    """Derive HostHints soundly: ``and`` takes the narrowest side that has hints, ``or``/``xor``
    need hints on every side (their union), ``not`` and ``all()`` give none, ``any()`` passes on
    its body's (a true any() means its body held for some element). ``lists``: the handles of
    the lists the expression was compiled against (``host in $<id>`` hints at that list)."""
    lists = lists or {}
    if isinstance(node, ast.Comparison):
        return _comparison_hints(node, lists)
    if isinstance(node, ast.Quantified):
        if node.quantifier is ast.Quantifier.ANY:
            return host_hints(node.body, lists)
        return None
    if isinstance(node, ast.And):
        found = [h for h in (host_hints(op, lists) for op in node.operands) if h is not None]
        return min(found, key=lambda h: h.size) if found else None
    if isinstance(node, (ast.Or, ast.Xor)):
        union = HostHints()
        for operand in node.operands:
            hints = host_hints(operand, lists)
            if hints is None:
                return None
            union = union | hints
        return union
    return None


def _comparison_hints(node: ast.Comparison, lists: Mapping[str, ListHandle]) -> HostHints | None:
    lhs, rhs = node.lhs, node.rhs
    if lhs.functions or rhs is None:
        return None
    if node.op is ast.CompareOp.IN and isinstance(rhs, ast.ListRef):
        return _list_hints(lhs, lists.get(rhs.list_id))
    if node.op is ast.CompareOp.EQ and isinstance(rhs, ast.StringLit):
        values = frozenset({rhs.value})
    elif node.op is ast.CompareOp.IN and isinstance(rhs, ast.SetLit):
        values = frozenset(i.value for i in rhs.items if isinstance(i, ast.StringLit))
    else:
        return None
    if lhs.field in HOST_FIELDS and lhs.index is not ast.IndexKind.AT:
        return HostHints(hosts=values)
    if lhs.field in DOMAIN_FIELDS and lhs.index is ast.IndexKind.EACH:
        return HostHints(domains=values)
    return None


def _list_hints(lhs: ast.Operand, handle: ListHandle | None) -> HostHints | None:
    """``host in $<DOMAIN or HOST list>`` and ``any(domains[*] in $<list>)``: true only for
    names the list's matcher holds (an unresolved list, or another type, gives no hint)."""
    if handle is None or handle.type not in HOST_LIST_TYPES:
        return None
    if lhs.field in HOST_FIELDS and lhs.index is not ast.IndexKind.AT:
        return HostHints(host_lists=frozenset({handle}))
    if lhs.field in DOMAIN_FIELDS and lhs.index is ast.IndexKind.EACH:
        return HostHints(domain_lists=frozenset({handle}))
    return None
