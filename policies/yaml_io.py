"""Policy files: YAML in the API's JSON shapes, loaded with ``file:line:col`` on every error.

A policy file is a mapping with any of the keys ``lists``, ``gateway_rules``,
``access_applications``, ``access_policies`` and ``tests``; each holds a list of objects shaped as
the admin API's JSON (so an export loads back: ``load(dump(s)) == s``). Several files load as one
:class:`PolicySet`; the lists of every file are read first, so a rule may refer (``$<id>``) to a
list of another file.

Every error is a :class:`Problem` at a place in a file: the key or value at fault, or, for an
expression, the exact character inside the YAML string when the string sits on one line (plain
or quoted) or is a ``|`` block. Loading collects every problem before it raises
:class:`PolicyFileError`, so ``gateway policy lint`` reports them all at once.

YAML 1.1's ``on``/``off``/``yes``/``no`` booleans are read as strings (``action: off`` is Do
Not Inspect, as in the API); only ``true`` and ``false`` are booleans.
"""

from __future__ import annotations

import difflib
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import yaml  # type: ignore[import-untyped, unused-ignore]  # stubs: types-PyYAML

from policies.access import AccessApplication, AccessEngine, AccessPolicy
from policies.engine import GatewayEngine
from policies.errors import ExpressionError, PolicyError
from policies.list_matchers import ListLookup, static_lookup
from policies.lists import GatewayList
from policies.rules import ConflictError, FieldError, GatewayRule
from policies.testing import PolicyTest

logger = logging.getLogger(__name__)

SECTIONS: Final = ("gateway_rules", "access_applications", "access_policies", "tests", "lists")
_LIST_ID: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_\-]*\Z")


@dataclass(frozen=True)
class Location:
    file: str
    line: int  # 1-based
    column: int  # 1-based

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


@dataclass(frozen=True)
class Problem:
    """One error at one place: ``str()`` is the one line ``file:line:col: message``;
    :meth:`render` adds the file's line and a caret under the column."""

    location: Location
    message: str
    source_line: str | None = None

    def __str__(self) -> str:
        return f"{self.location}: {self.message}"

    def render(self) -> str:
        if self.source_line is None:
            return str(self)
        text = self.source_line.rstrip("\n")
        pad = "".join("\t" if ch == "\t" else " " for ch in text[: self.location.column - 1])
        return f"{self}\n    {text}\n    {pad}^"


class PolicyFileError(PolicyError):
    """One or more problems in policy files; ``str()`` is the first one (and how many more)."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        more = len(self.problems) - 1
        super().__init__(
            str(self.problems[0]) + (f" (and {more} more problem{'s' if more > 1 else ''})" if more else "")
        )


@dataclass(frozen=True)
class PolicySet:
    """Everything a set of policy files holds. ``locations`` (where each object was read from)
    takes no part in equality."""

    gateway_rules: tuple[GatewayRule, ...] = ()
    access_applications: tuple[AccessApplication, ...] = ()
    access_policies: tuple[AccessPolicy, ...] = ()
    tests: tuple[PolicyTest, ...] = ()
    locations: Mapping[int, Location] = field(default_factory=dict, compare=False, repr=False)
    sources: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)
    lists: tuple[GatewayList, ...] = ()

    def merge(self, *others: PolicySet) -> PolicySet:
        sets = (self, *others)
        locations: dict[int, Location] = {}
        sources: dict[str, str] = {}
        for item in sets:
            locations.update(item.locations)
            sources.update(item.sources)
        return PolicySet(
            tuple(r for s in sets for r in s.gateway_rules),
            tuple(a for s in sets for a in s.access_applications),
            tuple(p for s in sets for p in s.access_policies),
            tuple(t for s in sets for t in s.tests),
            locations,
            sources,
            tuple(gl for s in sets for gl in s.lists),
        )

    def source_line(self, location: Location) -> str | None:
        lines = self.sources.get(location.file, "").splitlines()
        return lines[location.line - 1] if 0 < location.line <= len(lines) else None

    def location_of(self, item: object) -> Location | None:
        return self.locations.get(id(item))

    def list_lookup(self) -> ListLookup:
        """The lists' handles, for compiling the rules that refer to them."""
        return static_lookup(self.lists)

    def gateway_engine(self) -> GatewayEngine:
        return GatewayEngine.build(self.gateway_rules, lists=self.list_lookup())

    def access_engine(self) -> AccessEngine:
        return AccessEngine.build(self.access_applications, self.access_policies)

    def to_api(self) -> dict[str, list[object]]:
        out: dict[str, list[object]] = {}
        sections: tuple[tuple[str, Sequence[Any]], ...] = (
            ("lists", self.lists),
            ("gateway_rules", self.gateway_rules),
            ("access_applications", self.access_applications),
            ("access_policies", self.access_policies),
            ("tests", self.tests),
        )
        for key, items in sections:
            if items:
                out[key] = [item.to_api() for item in items]
        return out


# --- loading ------------------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):  # type: ignore[misc, unused-ignore]
    """SafeLoader with YAML 1.2 booleans: only true/false (so ``action: off`` stays a string)."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


class _Reader:
    """One file's text and node tree; turns paths into locations."""

    def __init__(self, text: str, file: str) -> None:
        self.text = text
        self.file = file
        self.lines = text.splitlines()

    def at(self, mark: yaml.Mark) -> Problem:
        return Problem(Location(self.file, mark.line + 1, mark.column + 1), "", self._line(mark.line + 1))

    def problem(self, mark: yaml.Mark, message: str) -> Problem:
        return Problem(
            Location(self.file, mark.line + 1, mark.column + 1), message, self._line(mark.line + 1)
        )

    def problem_at(self, line: int, column: int, message: str) -> Problem:
        return Problem(Location(self.file, line, column), message, self._line(line))

    def _line(self, line: int) -> str | None:
        return self.lines[line - 1] if 0 < line <= len(self.lines) else None


def _find(node: yaml.Node, path: Sequence[str | int], *, on_key: bool) -> yaml.Node:
    """The node at ``path`` (its key node when ``on_key``), or the deepest one that exists."""
    for index, step in enumerate(path):
        last = index == len(path) - 1
        if isinstance(node, yaml.MappingNode) and isinstance(step, str):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value == step:
                    node = key if (last and on_key) else value
                    break
            else:
                return node
        elif isinstance(node, yaml.SequenceNode) and isinstance(step, int) and 0 <= step < len(node.value):
            node = node.value[step]
        else:
            return node
    return node


def _duplicate_keys(root: yaml.Node, reader: _Reader, problems: list[Problem]) -> None:
    """Every mapping, once each (aliases share nodes; a recursive alias must not loop)."""
    seen_nodes: set[int] = set()
    pending = [root]
    while pending:
        node = pending.pop()
        if id(node) in seen_nodes:
            continue
        seen_nodes.add(id(node))
        if isinstance(node, yaml.MappingNode):
            keys: set[str] = set()
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode):
                    if key.value in keys and key.value != "<<":
                        message = f"duplicate key {key.value!r} (the second one would win silently)"
                        problems.append(reader.problem(key.start_mark, message))
                    keys.add(key.value)
                pending.append(value)
        elif isinstance(node, yaml.SequenceNode):
            pending.extend(node.value)
    problems.sort(key=lambda p: (p.location.line, p.location.column))


_ESCAPE_LENGTHS: Final = {"x": 2, "u": 4, "U": 8}


def _raw_offsets(raw: str, style: str | None) -> list[int]:
    """For a one-line scalar's source text (quotes included), the raw index of each character of
    its value, plus one past the end."""
    if style is None:
        return list(range(len(raw) + 1))
    body_start, body = 1, raw[1:-1]
    offsets: list[int] = []
    i = 0
    while i < len(body):
        offsets.append(body_start + i)
        if style == "'" and body.startswith("''", i):
            i += 2
        elif style == '"' and body[i] == "\\" and i + 1 < len(body):
            i += 2 + _ESCAPE_LENGTHS.get(body[i + 1], 0)
        else:
            i += 1
    offsets.append(body_start + len(body))
    return offsets


def _expression_problem(
    reader: _Reader, node: yaml.Node, error: FieldError, expression: ExpressionError
) -> Problem:
    message = f"{error.where}: {error.path[-1]}: {expression.message}"
    start, end = node.start_mark, node.end_mark
    if isinstance(node, yaml.ScalarNode) and node.style in (None, "'", '"') and start.line == end.line:
        offsets = _raw_offsets(reader.text[start.index : end.index], node.style)
        if expression.offset < len(offsets):
            return reader.problem_at(start.line + 1, start.column + 1 + offsets[expression.offset], message)
    if isinstance(node, yaml.ScalarNode) and node.style == "|":
        line = start.line + 1 + expression.line  # content starts on the line after the indicator
        text = reader.lines[line - 1] if line <= len(reader.lines) else ""
        first = next((ln for ln in reader.lines[start.line + 1 : end.line + 1] if ln.strip()), "")
        indent = len(first) - len(first.lstrip(" "))
        if text.strip():
            return reader.problem_at(line, indent + expression.column, message)
    where = f" (line {expression.line}, column {expression.column} of the expression)"
    return reader.problem(start, message + where)


def _locate(reader: _Reader, root: yaml.Node, section: str, index: int, error: FieldError) -> Problem:
    node = _find(root, (section, index, *error.path), on_key=error.on_key)
    if error.expression_error is not None:
        return _expression_problem(reader, node, error, error.expression_error)
    return reader.problem(node.start_mark, str(error))


def _section_item(
    section: str, item: object, where: str, lists: ListLookup
) -> GatewayList | GatewayRule | AccessApplication | AccessPolicy | PolicyTest:
    if section == "lists":
        return _file_list(item, where)
    if section == "gateway_rules":
        return GatewayRule.from_api(item, where=where, lists=lists)
    if section == "access_applications":
        return AccessApplication.from_api(item, where=where)
    if section == "access_policies":
        return AccessPolicy.from_api(item, where=where)
    return PolicyTest.from_api(item, where=where)


def _file_list(item: object, where: str) -> GatewayList:
    """A list in a file needs an id: rules refer to it by ``$<id>``."""
    gateway_list = GatewayList.from_api(item, where=where)
    if not gateway_list.id:
        raise FieldError(where, ("id",), "required in policy files: rules refer to a list as $<id>")
    if not _LIST_ID.match(gateway_list.id):
        raise FieldError(
            where, ("id",), f"{gateway_list.id!r}: a list id is letters, digits, '_' and '-' (a UUID)"
        )
    return gateway_list


def _compose(reader: _Reader) -> tuple[yaml.MappingNode | None, Any, list[Problem]]:
    """The root mapping node and its plain data, or the problems that prevent them."""
    start = Location(reader.file, 1, 1)
    try:
        root = yaml.compose(reader.text, Loader=_Loader)
    except RecursionError:
        return None, None, [Problem(start, "not valid YAML: nested too deeply")]
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        message = f"not valid YAML: {e.problem or e.context}"
        return None, None, [reader.problem(mark, message) if mark else Problem(start, message)]
    except yaml.YAMLError as e:
        return None, None, [Problem(start, f"not valid YAML: {e}")]
    expected = f"a policy file is a mapping with any of: {', '.join(SECTIONS)}"
    if root is None:
        return None, None, [Problem(start, f"the file is empty; {expected} (write {{}} for none)")]
    if not isinstance(root, yaml.MappingNode):
        return None, None, [reader.problem(root.start_mark, f"{expected}, not {_node_kind(root)}")]
    problems: list[Problem] = []
    _duplicate_keys(root, reader, problems)
    try:
        data = _Loader("").construct_document(root)
    except yaml.MarkedYAMLError as e:  # e.g. an unhashable key, or a tag safe loading refuses
        mark = e.problem_mark or root.start_mark
        return None, None, [*problems, reader.problem(mark, f"not valid here: {e.problem}")]
    except RecursionError:
        return None, None, [Problem(start, "not valid YAML: nested too deeply")]
    return root, data, problems


@dataclass
class _File:
    """One file composed: its reader, root node, plain data, and what was found so far."""

    reader: _Reader
    root: yaml.MappingNode | None
    data: Any
    problems: list[Problem]
    composed: int = 0  # problems[:composed] are the YAML's own (duplicate keys ...), reported first
    found: dict[str, list[object]] = field(default_factory=dict)
    locations: dict[int, Location] = field(default_factory=dict)


def _parse(text: str, file: str) -> tuple[PolicySet, list[Problem]]:
    parsed = _compose_file(text, file)
    lists = _read_sections(parsed, ("lists",), static_lookup(()))
    return _finish(parsed, static_lookup(lists)), parsed.problems


def _compose_file(text: str, file: str) -> _File:
    reader = _Reader(text, file)
    root, data, problems = _compose(reader)
    parsed = _File(reader, root, data, problems, len(problems), {section: [] for section in SECTIONS})
    if root is not None:
        for key_node, value_node in root.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if key not in SECTIONS:
                close = difflib.get_close_matches(str(key), SECTIONS, n=1)
                hint = f" (did you mean {close[0]}?)" if close else f" (known: {', '.join(SECTIONS)})"
                problems.append(reader.problem(key_node.start_mark, f"unknown key {key!r}{hint}"))
            elif data[key] is not None and not isinstance(value_node, yaml.SequenceNode):
                kind = _node_kind(value_node)
                message = f"{key} must be a list (items start with '- '), not {kind}"
                problems.append(reader.problem(value_node.start_mark, message))
    return parsed


def _read_sections(parsed: _File, sections: Sequence[str], lists: ListLookup) -> list[GatewayList]:
    """Read ``sections`` of the file into ``parsed.found``; return the lists read."""
    if parsed.root is None:
        return []
    for key_node, value_node in parsed.root.value:
        key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
        if not isinstance(key, str) or key not in sections or not isinstance(value_node, yaml.SequenceNode):
            continue
        for index, item in enumerate(parsed.data[key] or ()):
            try:
                value = _section_item(key, item, f"{key}[{index}]", lists)
            except FieldError as e:
                parsed.problems.append(_locate(parsed.reader, parsed.root, key, index, e))
                continue
            parsed.locations[id(value)] = parsed.reader.at(value_node.value[index].start_mark).location
            parsed.found[key].append(value)
    return list(_only(parsed.found["lists"], GatewayList)) if "lists" in sections else []


def _finish(parsed: _File, lists: ListLookup) -> PolicySet:
    """Read the sections after ``lists`` (rules resolve ``$<id>`` through ``lists``)."""
    _read_sections(parsed, tuple(s for s in SECTIONS if s != "lists"), lists)
    parsed.problems[parsed.composed :] = sorted(
        parsed.problems[parsed.composed :], key=lambda p: (p.location.line, p.location.column)
    )
    found = parsed.found
    return PolicySet(
        _only(found["gateway_rules"], GatewayRule),
        _only(found["access_applications"], AccessApplication),
        _only(found["access_policies"], AccessPolicy),
        _only(found["tests"], PolicyTest),
        parsed.locations,
        {parsed.reader.file: parsed.reader.text},
        _only(found["lists"], GatewayList),
    )


def _only[T](items: list[object], kind: type[T]) -> tuple[T, ...]:
    return tuple(item for item in items if isinstance(item, kind))


def _node_kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    return f"the scalar {node.value!r}" if len(str(node.value)) < 40 else "a scalar"


def check(policy_set: PolicySet) -> list[Problem]:
    """What cannot be loaded together (duplicate precedence, unknown policy ids, two apps for one
    domain, tests naming rules that do not exist), each at the place of the object to fix."""
    problems: list[Problem] = _duplicate_lists(policy_set)
    if problems:
        return problems
    for build in (policy_set.gateway_engine, policy_set.access_engine):
        try:
            build()
        except ConflictError as e:
            problems.append(_conflict_problem(policy_set, e))
    problems.extend(_unknown_test_rules(policy_set))
    return problems


def _duplicate_lists(policy_set: PolicySet) -> list[Problem]:
    seen: set[str] = set()
    problems: list[Problem] = []
    for gateway_list in policy_set.lists:
        if gateway_list.id in seen:
            location = policy_set.location_of(gateway_list) or Location("<policies>", 1, 1)
            message = f"list {gateway_list.label}: another list has the id {gateway_list.id}"
            problems.append(Problem(location, message, policy_set.source_line(location)))
        seen.add(gateway_list.id)
    return problems


def _conflict_problem(policy_set: PolicySet, error: ConflictError) -> Problem:
    for subject in reversed(error.subjects):
        location = policy_set.location_of(subject)
        if location is not None:
            return Problem(location, error.reason, policy_set.source_line(location))
    return Problem(Location("<policies>", 1, 1), error.reason)


def _unknown_test_rules(policy_set: PolicySet) -> list[Problem]:
    names = {r.name for r in policy_set.gateway_rules} | {r.id for r in policy_set.gateway_rules if r.id}
    problems = []
    for test in policy_set.tests:
        rule = test.expect.rule
        if rule and rule not in names:
            location = policy_set.location_of(test) or Location("<policies>", 1, 1)
            close = difflib.get_close_matches(rule, sorted(names), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(
                Problem(
                    location,
                    f"test {test.name!r} expects rule {rule!r}, which no loaded rule is named or has as id{hint}",
                    policy_set.source_line(location),
                )
            )
    return problems


def load(text: str, *, file: str = "<string>") -> PolicySet:
    """Parse and check one policy file's text; raises :class:`PolicyFileError` with every problem."""
    policy_set, problems = _parse(text, file)
    if not problems:
        problems = check(policy_set)
    if problems:
        raise PolicyFileError(problems)
    return policy_set


def load_files(paths: Iterable[str | Path]) -> PolicySet:
    """Load several files (a directory means its ``*.yaml`` and ``*.yml`` files, sorted) as one
    set, checked together; raises :class:`PolicyFileError` with every problem of every file."""
    files: list[_File] = []
    problems: list[Problem] = []
    for path in expand(paths):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            problems.append(
                Problem(Location(str(path), 1, 1), f"cannot read: {getattr(e, 'strerror', None) or e}")
            )
            continue
        files.append(_compose_file(text, str(path)))
    every_list = [gl for parsed in files for gl in _read_sections(parsed, ("lists",), static_lookup(()))]
    lookup = static_lookup(every_list)
    sets = [_finish(parsed, lookup) for parsed in files]
    for parsed in files:
        problems.extend(parsed.problems)
    merged = sets[0].merge(*sets[1:]) if sets else PolicySet()
    if not problems:
        problems = check(merged)
    if problems:
        raise PolicyFileError(problems)
    return merged


def expand(paths: Iterable[str | Path]) -> list[Path]:
    out: list[Path] = []
    for item in paths:
        path = Path(item)
        if path.is_dir():
            out.extend(sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file()))
        else:
            out.append(path)
    return out


# --- dumping ------------------------------------------------------------------------------------


class _Dumper(yaml.SafeDumper):  # type: ignore[misc, unused-ignore]
    pass


_STR = "tag:yaml.org,2002:str"
_PRINTABLE_ASCII = re.compile(r"[\x20-\x7e]*")


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    """Multi-line text as a ``|`` block, the rest as PyYAML chooses, as long as the text reads
    back as the same string; otherwise double-quoted, whose escapes keep every character (PyYAML
    folds U+0085 NEL in a plain or single-quoted scalar, and a block can lose line ends)."""
    if "\n" not in value and _PRINTABLE_ASCII.fullmatch(value):
        return dumper.represent_scalar(_STR, value)  # PyYAML quotes what needs it
    for style in ("|", None) if "\n" in value else (None,):
        if _reads_back(value, style):
            return dumper.represent_scalar(_STR, value, style=style)
    return dumper.represent_scalar(_STR, value, style='"')


def _reads_back(value: str, style: str | None) -> bool:
    class OneStyle(yaml.SafeDumper):  # type: ignore[misc, unused-ignore]
        pass

    OneStyle.add_representer(str, lambda d, v: d.represent_scalar(_STR, v, style=style))
    text = yaml.dump({"k": value}, Dumper=OneStyle, allow_unicode=True, width=1 << 16)
    try:
        return bool(yaml.load(text, Loader=_Loader) == {"k": value})
    except yaml.YAMLError:
        return False


_Dumper.add_representer(str, _represent_str)


def dump(policy_set: PolicySet) -> str:
    """YAML text in the API's shapes; expressions stay on one line so errors point inside them."""
    data: Any = policy_set.to_api()
    if not data:
        return "{}\n"
    return str(
        yaml.dump(
            data,
            Dumper=_Dumper,
            sort_keys=False,
            allow_unicode=True,
            width=1 << 16,
            default_flow_style=False,
        )
    )
