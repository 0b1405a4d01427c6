"""Gateway HTTP rules: the model in Cloudflare's API shape, its validation, and its compiled form.

A :class:`GatewayRule` is a value: ``from_api`` validates a JSON/YAML mapping field by field and
``to_api`` gives the same shape back (``from_api(r.to_api()) == r``). :meth:`GatewayRule.compile`
turns the three expressions into a :class:`CompiledRule` once, when the rule is loaded or saved;
deciding a request only runs the compiled form.

Errors are :class:`FieldError`: they name the object (``where``), the field path inside it and
what would be accepted, so the admin API can answer 400 and the YAML loader can point at a line
and column. :class:`ApiReader` is the small field reader shared by ``access.py`` and
``testing.py``.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final, NoReturn, TypeVar

from policies.errors import ExpressionError, PolicyError
from policies.expression import Expression, compile_expression
from policies.list_matchers import ListLookup

logger = logging.getLogger(__name__)

Path = tuple[str | int, ...]
E = TypeVar("E", bound=StrEnum)


class FieldError(PolicyError):
    """One field of a rule, policy, application or test case is not acceptable.

    ``path`` is the field's place inside the object (``("rule_settings", "redirect",
    "target_uri")``, ``("include", 2, "email")``); ``on_key`` says the key itself is wrong (an
    unknown key) rather than its value; ``expression_error`` is set when the field is an
    expression that did not compile, for a caller that wants to point inside it.
    """

    def __init__(
        self,
        where: str,
        path: Path,
        reason: str,
        *,
        on_key: bool = False,
        expression_error: ExpressionError | None = None,
    ) -> None:
        self.where = where
        self.path = path
        self.reason = reason
        self.on_key = on_key
        self.expression_error = expression_error
        super().__init__(self._text())

    def _text(self) -> str:
        shown = self.path[:-1] if self.on_key else self.path  # an unknown key names itself
        return (
            f"{self.where}: {render_path(shown)}: {self.reason}" if shown else f"{self.where}: {self.reason}"
        )

    def __str__(self) -> str:
        return self._text()

    @property
    def message(self) -> str:
        return str(self)


class ConflictError(PolicyError):
    """Objects that are each valid but cannot be loaded together (two enabled rules with the same
    precedence, two applications for one domain, a reference to a policy that does not exist).
    ``subjects`` are the objects involved, the last one being the one to fix."""

    def __init__(self, message: str, *subjects: object) -> None:
        self.subjects = subjects
        self.reason = message
        super().__init__(message)

    def __str__(self) -> str:
        return self.reason

    @property
    def message(self) -> str:
        return self.reason


def render_path(path: Path) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def _describe(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (Mapping, list, tuple)):
        return f"a {'mapping' if isinstance(value, Mapping) else 'list'}"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


_MISSING: Final = object()


class ApiReader:
    """Reads one JSON/YAML object field by field; every failure is a :class:`FieldError` naming
    the field. Call :meth:`finish` last: any key nobody read is unknown (with a suggestion).
    Keys in ``ignored`` (read-only fields a server adds, such as ``deleted_at``) are accepted
    and dropped."""

    def __init__(self, value: object, *, where: str, path: Path = (), ignored: Iterable[str] = ()) -> None:
        self.where = where
        self.path = path
        if not isinstance(value, Mapping):
            self.fail(f"must be a mapping of keys to values, got {_describe(value)}")
        self.mapping: Mapping[Any, Any] = value
        self.ignored: set[str] = set(ignored)
        self.read: set[str] = set()

    def fail(self, reason: str, key: str | int | None = None, *, on_key: bool = False) -> NoReturn:
        path = self.path if key is None else (*self.path, key)
        raise FieldError(self.where, path, reason, on_key=on_key)

    def child(self, key: str, value: object, *, ignored: Iterable[str] = ()) -> ApiReader:
        return ApiReader(value, where=self.where, path=(*self.path, key), ignored=ignored)

    def has(self, key: str) -> bool:
        return self.mapping.get(key) is not None

    def raw(self, key: str, default: object = _MISSING) -> object:
        self.read.add(key)
        value = self.mapping.get(key)
        if value is None:
            if default is _MISSING:
                others = [str(k) for k in self.mapping if k not in self.read | self.ignored]
                close = difflib.get_close_matches(key, others, n=1)
                self.fail(f"required (is {close[0]!r} a typo?)" if close else "required", key)
            return default
        return value

    def string(self, key: str, default: str | None = None, *, non_empty: bool = False) -> str:
        value = self.raw(key, _MISSING if default is None else default)
        if not isinstance(value, str):
            self.fail(f"must be a string, got {_describe(value)}", key)
        if non_empty and not value.strip():
            self.fail("must not be empty", key)
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self.raw(key, default)
        if not isinstance(value, bool):
            self.fail(f"must be true or false, got {_describe(value)}", key)
        return value

    def integer(self, key: str, default: int | None = None, *, minimum: int | None = None) -> int:
        value = self.raw(key, _MISSING if default is None else default)
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(f"must be an integer, got {_describe(value)}", key)
        if minimum is not None and value < minimum:
            self.fail(f"must be at least {minimum}, got {value}", key)
        return value

    def choice(self, key: str, enum: type[E], default: E | None = None, *, allowed: Iterable[E] = ()) -> E:
        value = self.raw(key, _MISSING if default is None else default)
        choices = tuple(allowed) or tuple(enum)
        names = ", ".join(c.value for c in choices)
        if isinstance(value, str):
            for member in choices:
                if member.value == value:
                    return member
            if any(m.value == value for m in enum):
                self.fail(f"{value!r} is not supported here (one of: {names})", key)
        self.fail(f"unknown {key} {_describe(value)} (one of: {names})", key)

    def sequence(self, key: str, *, default: Sequence[object] | None = None) -> list[object]:
        value = self.raw(key, _MISSING if default is None else list(default))
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            self.fail(f"must be a list, got {_describe(value)}", key)
        return list(value)

    def strings(self, key: str, *, default: Sequence[str] = ()) -> tuple[str, ...]:
        items = self.sequence(key, default=default)
        for index, item in enumerate(items):
            if not isinstance(item, str):
                raise FieldError(
                    self.where, (*self.path, key, index), f"must be a string, got {_describe(item)}"
                )
        return tuple(str(item) for item in items)

    def timestamp(self, key: str) -> datetime | None:
        value = self.raw(key, None)
        if value is None:
            return None
        if isinstance(value, datetime):  # YAML reads unquoted timestamps itself
            parsed = value
        elif isinstance(value, str):
            try:
                parsed = datetime.fromisoformat(value)
            except ValueError:
                self.fail(f"must be an RFC 3339 time such as 2025-01-31T12:00:00Z, got {value!r}", key)
        else:
            self.fail(
                f"must be an RFC 3339 time such as 2025-01-31T12:00:00Z, got {_describe(value)}",
                key,
            )
        if parsed.tzinfo is None:
            self.fail("must carry a time zone (end it with Z for UTC)", key)
        return parsed.astimezone(UTC)

    def finish(self) -> None:
        for key in self.mapping:
            if key in self.read or key in self.ignored:
                continue
            if not isinstance(key, str):
                self.fail(f"keys must be strings, got {_describe(key)}", on_key=True)
            known = sorted(self.read)
            close = difflib.get_close_matches(key, known, n=1) or [k for k in known if k.startswith(key)][:1]
            hint = (
                f" (did you mean {close[0]}?)"
                if close
                else (f" (known: {', '.join(known)})" if known else "")
            )
            self.fail(f"unknown key {key!r}{hint}", key, on_key=True)


def format_timestamp(value: datetime) -> str:
    """RFC 3339 with ``Z``, keeping microseconds only when there are some (round-trips)."""
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ" if value.microsecond else "%Y-%m-%dT%H:%M:%SZ")


# --- the model ----------------------------------------------------------------------------------


class Action(StrEnum):
    """HTTP policy actions. ``off`` is Do Not Inspect (decided at the TLS ClientHello, the bytes
    pass through); ``on`` inspects (an exception to a broader Do Not Inspect rule)."""

    ALLOW = "allow"
    BLOCK = "block"
    OFF = "off"
    ON = "on"
    REDIRECT = "redirect"


INSPECTION_ACTIONS: Final = frozenset({Action.OFF, Action.ON})


class UntrustedCertAction(StrEnum):
    """What a request whose upstream certificate does not verify gets (only on ``allow`` rules).
    Unset means ``error``, as at Cloudflare: the gateway's error page (Cloudflare answers 526)."""

    PASS_THROUGH = "pass_through"
    BLOCK = "block"
    ERROR = "error"


class Part(StrEnum):
    """The three expressions of a rule; all the non-empty ones must hold."""

    TRAFFIC = "traffic"
    IDENTITY = "identity"
    DEVICE_POSTURE = "device_posture"


@dataclass(frozen=True)
class RedirectSettings:
    target_uri: str
    preserve_path_and_query: bool = False
    include_context: bool = False

    def to_api(self) -> dict[str, object]:
        return {
            "target_uri": self.target_uri,
            "preserve_path_and_query": self.preserve_path_and_query,
            "include_context": self.include_context,
        }


def is_empty(value: object) -> bool:
    return value is None or value is False or value == "" or value == {} or value == []


SUPPORTED_SETTINGS: Final = ("block_page_enabled", "block_reason", "untrusted_cert", "redirect")


@dataclass(frozen=True)
class RuleSettings:
    """The ``rule_settings`` this gateway enforces. Other Cloudflare settings are refused unless
    empty (a Cloudflare export lists every key with null/false/"" values), so nothing a rule
    asks for is silently ignored."""

    block_page_enabled: bool = False
    block_reason: str = ""
    untrusted_cert: UntrustedCertAction | None = None
    redirect: RedirectSettings | None = None

    @classmethod
    def from_api(cls, value: object, *, where: str, action: Action) -> RuleSettings:
        reader = ApiReader(value, where=where, path=("rule_settings",))
        for key, item in reader.mapping.items():
            if key not in SUPPORTED_SETTINGS and isinstance(key, str) and is_empty(item):
                reader.ignored.add(key)  # an empty Cloudflare setting: nothing to enforce
            elif key not in SUPPORTED_SETTINGS and isinstance(key, str):
                reader.fail(
                    f"setting {key!r} is not supported by this gateway (supported: {', '.join(SUPPORTED_SETTINGS)})",
                    key,
                    on_key=True,
                )
        block_page_enabled = reader.boolean("block_page_enabled", False)
        block_reason = reader.string("block_reason", "")
        if action is not Action.BLOCK:
            for key, item in (
                ("block_page_enabled", block_page_enabled),
                ("block_reason", block_reason),
            ):
                if item:
                    reader.fail(f"applies only to action 'block', not {action.value!r}", key)
        untrusted: UntrustedCertAction | None = None
        if reader.has("untrusted_cert"):
            sub = reader.child("untrusted_cert", reader.raw("untrusted_cert"))
            untrusted = sub.choice("action", UntrustedCertAction)
            sub.finish()
            if action is not Action.ALLOW:
                reader.fail(
                    f"is allowed only on action 'allow' (this rule's action is {action.value!r})",
                    "untrusted_cert",
                )
        else:
            reader.raw("untrusted_cert", None)
        redirect: RedirectSettings | None = None
        if reader.has("redirect"):
            sub = reader.child("redirect", reader.raw("redirect"))
            target = sub.string("target_uri", non_empty=True)
            if not target.startswith(("http://", "https://")):
                sub.fail(f"must be an absolute http:// or https:// URL, got {target!r}", "target_uri")
            redirect = RedirectSettings(
                target_uri=target,
                preserve_path_and_query=sub.boolean("preserve_path_and_query", False),
                include_context=sub.boolean("include_context", False),
            )
            sub.finish()
            if action is not Action.REDIRECT:
                reader.fail(f"applies only to action 'redirect', not {action.value!r}", "redirect")
        else:
            reader.raw("redirect", None)
        reader.finish()
        return cls(block_page_enabled, block_reason, untrusted, redirect)

    def to_api(self) -> dict[str, object]:
        out: dict[str, object] = {}
        if self.block_page_enabled:
            out["block_page_enabled"] = True
        if self.block_reason:
            out["block_reason"] = self.block_reason
        if self.untrusted_cert is not None:
            out["untrusted_cert"] = {"action": self.untrusted_cert.value}
        if self.redirect is not None:
            out["redirect"] = self.redirect.to_api()
        return out


# Response fields a Cloudflare server adds; accepted on input (an export reads back) and dropped.
READ_ONLY_KEYS: Final = frozenset(
    {
        "deleted_at",
        "version",
        "warning_status",
        "read_only",
        "sharable",
        "source_account",
        "account_id",
    }
)
# Rule features this gateway does not enforce; refused unless empty, like unsupported settings.
UNSUPPORTED_KEYS: Final = ("schedule", "expiration")


@dataclass(frozen=True)
class GatewayRule:
    """One Gateway HTTP policy, as the API and the YAML files spell it. ``""`` = no condition."""

    name: str
    action: Action
    precedence: int
    id: str = ""
    description: str = ""
    enabled: bool = True
    filters: tuple[str, ...] = ("http",)
    traffic: str = ""
    identity: str = ""
    device_posture: str = ""
    rule_settings: RuleSettings = field(default_factory=RuleSettings)
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @classmethod
    def from_api(
        cls,
        value: object,
        *,
        where: str,
        check_expressions: bool = True,
        lists: ListLookup | None = None,
    ) -> GatewayRule:
        """Validate a rule mapping; with ``check_expressions`` (the default) its expressions are
        compiled too (``$<list id>`` resolved through ``lists``), so a rule that loads is a rule
        that runs."""
        if isinstance(value, Mapping) and isinstance(value.get("name"), str) and value["name"].strip():
            where = f"{where} {value['name']!r}"
        reader = ApiReader(value, where=where, ignored=READ_ONLY_KEYS)
        name = reader.string("name", non_empty=True)
        action = reader.choice("action", Action)
        precedence = reader.integer("precedence", minimum=0)
        filters = reader.strings("filters", default=("http",))
        if list(filters) != ["http"]:
            reader.fail(
                f'must be ["http"]: this gateway enforces HTTP policies only, got {list(filters)}',
                "filters",
            )
        for key in UNSUPPORTED_KEYS:
            if not is_empty(reader.raw(key, None)):
                reader.fail(f"{key!r} is not supported by this gateway; remove it", key, on_key=True)
        expressions = {part: reader.string(part.value, "") for part in Part}
        settings_value = reader.raw("rule_settings", {})
        rule = cls(
            name=name,
            action=action,
            precedence=precedence,
            id=reader.string("id", ""),
            description=reader.string("description", ""),
            enabled=reader.boolean("enabled", True),
            filters=filters,
            traffic=expressions[Part.TRAFFIC],
            identity=expressions[Part.IDENTITY],
            device_posture=expressions[Part.DEVICE_POSTURE],
            rule_settings=RuleSettings.from_api(settings_value, where=where, action=action),
            created_at=reader.timestamp("created_at"),
            updated_at=reader.timestamp("updated_at"),
        )
        reader.finish()
        if action is Action.REDIRECT and rule.rule_settings.redirect is None:
            reader.fail("action 'redirect' needs rule_settings.redirect.target_uri", "rule_settings")
        if check_expressions:
            rule.compile(where=where, lists=lists)
        return rule

    def to_api(self) -> dict[str, object]:
        """The Cloudflare shape; always carries action, enabled, filters, name, precedence and
        traffic (SPEC §7), and the other expressions as ``""`` when empty (as Cloudflare)."""
        out: dict[str, object] = {}
        if self.id:
            out["id"] = self.id
        out["name"] = self.name
        out["description"] = self.description
        out["precedence"] = self.precedence
        out["enabled"] = self.enabled
        out["action"] = self.action.value
        out["filters"] = list(self.filters)
        out["traffic"] = self.traffic
        out["identity"] = self.identity
        out["device_posture"] = self.device_posture
        settings = self.rule_settings.to_api()
        if settings:
            out["rule_settings"] = settings
        if self.created_at is not None:
            out["created_at"] = format_timestamp(self.created_at)
        if self.updated_at is not None:
            out["updated_at"] = format_timestamp(self.updated_at)
        return out

    def expression(self, part: Part) -> str:
        return {
            Part.TRAFFIC: self.traffic,
            Part.IDENTITY: self.identity,
            Part.DEVICE_POSTURE: self.device_posture,
        }[part]

    @property
    def label(self) -> str:
        """How messages and traces name the rule."""
        return f"{self.name!r} (precedence {self.precedence}{', id ' + self.id if self.id else ''})"

    def compile(self, *, where: str | None = None, lists: ListLookup | None = None) -> CompiledRule:
        return CompiledRule.compile(self, where=where, lists=lists)


# --- the compiled form --------------------------------------------------------------------------

CONNECTION_PREFIXES: Final = ("net.sni.", "http.conn.", "identity.", "device_posture.")
PART_PREFIXES: Final = {Part.IDENTITY: "identity.", Part.DEVICE_POSTURE: "device_posture."}


def is_connection_field(name: str) -> bool:
    """Known at the TLS ClientHello, before any HTTP: SNI, addresses, identity and posture."""
    return name.startswith(CONNECTION_PREFIXES)


@dataclass(frozen=True, eq=False)
class CompiledRule:
    """A rule with its non-empty expressions compiled; ``matches(ctx)`` runs only callables."""

    rule: GatewayRule
    parts: tuple[tuple[Part, Expression], ...]
    fields: frozenset[str]
    check: Callable[[Mapping[str, object]], bool]

    @classmethod
    def compile(
        cls, rule: GatewayRule, *, where: str | None = None, lists: ListLookup | None = None
    ) -> CompiledRule:
        where = where or f"gateway rule {rule.name!r}"
        parts: list[tuple[Part, Expression]] = []
        for part in Part:
            source = rule.expression(part)
            if not source.strip():
                continue
            try:
                expression = compile_expression(source, lists=lists)
            except ExpressionError as e:
                raise FieldError(where, (part.value,), _expression_reason(e), expression_error=e) from None
            _check_part_fields(where, rule, part, expression)
            parts.append((part, expression))
        fields = frozenset().union(*(e.fields for _, e in parts)) if parts else frozenset[str]()
        return cls(rule, tuple(parts), fields, _conjunction([e for _, e in parts]))

    def uses_current_lists(self, lists: ListLookup | None) -> bool:
        """Compiled against the handles ``lists`` holds now (see ``Expression``)."""
        return all(e.uses_current_lists(lists) for _, e in self.parts)

    @property
    def list_ids(self) -> frozenset[str]:
        """The ids of the Gateway lists its expressions refer to."""
        return frozenset(i for _, e in self.parts for i in e.lists)

    @property
    def connection_level(self) -> bool:
        """Every field it reads is known at the ClientHello."""
        return all(is_connection_field(f) for f in self.fields)

    def matches(self, ctx: Mapping[str, object]) -> bool:
        return self.check(ctx)


def _expression_reason(error: ExpressionError) -> str:
    return f"{error.line}:{error.column}: {error.message}"


def _check_part_fields(where: str, rule: GatewayRule, part: Part, expression: Expression) -> None:
    path: Path = (part.value,)
    if part is Part.TRAFFIC:
        # Cloudflare's Gateway expression docs combine traffic and identity selectors in one
        # expression ("http.request.host == ... and identity.email matches ..."), so traffic
        # may read identity.*; posture stays in its own expression.
        misplaced = sorted(f for f in expression.fields if f.startswith(PART_PREFIXES[Part.DEVICE_POSTURE]))
        if misplaced:
            raise FieldError(
                where,
                path,
                f"field {misplaced[0]} belongs in the rule's device_posture expression, not traffic",
            )
    else:
        prefix = PART_PREFIXES[part]
        misplaced = sorted(f for f in expression.fields if not f.startswith(prefix))
        if misplaced:
            raise FieldError(
                where,
                path,
                f"field {misplaced[0]} does not belong here: {part.value} uses only {prefix}* fields",
            )
    if rule.action in INSPECTION_ACTIONS:
        late = sorted(f for f in expression.fields if not is_connection_field(f))
        if late:
            what = "Do Not Inspect" if rule.action is Action.OFF else "inspect"
            raise FieldError(
                where,
                path,
                f"action {rule.action.value!r} ({what}) is decided at the TLS ClientHello, before any HTTP is seen: "
                f"{late[0]} is not known then; use net.sni.host, http.conn.domains, http.conn.src_ip/dst_ip/dst_port, "
                "identity.* or device_posture.*",
            )


def _conjunction(expressions: Sequence[Expression]) -> Callable[[Mapping[str, object]], bool]:
    if not expressions:
        return lambda ctx: True
    if len(expressions) == 1:
        return expressions[0].evaluate
    evaluators = tuple(e.evaluate for e in expressions)
    if len(evaluators) == 2:
        first, second = evaluators
        return lambda ctx: first(ctx) and second(ctx)
    return lambda ctx: all(evaluate(ctx) for evaluate in evaluators)
