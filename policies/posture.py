"""Device posture rules: the model in Cloudflare's API shape (SPEC §5 and §7) and its validation.

A :class:`PostureRule` is a value: ``from_api`` validates a JSON/YAML mapping field by field
and ``to_api`` gives Cloudflare's response shape back (``from_api(r.to_api()) == r``). This
gateway checks client certificates only: ``client_certificate`` (v1: ``certificate_id`` and
``cn``) and ``client_certificate_v2``; Cloudflare's other posture types are refused with a
message that says so.

Durations (``schedule``, ``expiration``) are Cloudflare's strings: a number and a unit, ``s``,
``m``, ``h`` or ``d``, optionally combined (``"1h30m"``). ``schedule`` defaults to ``5m`` and may
not be under ``1m`` (Cloudflare's minimum); ``expiration`` defaults to ``10m`` when absent or
``""`` (at Cloudflare ``""`` means "valid until overwritten"; here a result always expires).
``to_api`` writes the largest whole unit (``90m`` stays ``90m``, ``60m`` becomes ``1h``).

Trust stores on Linux are NSS databases, read with NSS ``certutil``: ``system`` is
``/etc/pki/nssdb`` (the database Cloudflare's Linux client reads) and ``user`` is the agent
user's ``~/.pki/nssdb``; see :data:`NSS_DATABASES`. On Windows and macOS the names are
Cloudflare's (machine / user certificate stores, the system keychain); this gateway's agent
reads the Linux ones.

This module is pure: it knows templates as text. Callers fill them in and build
``certs.client_check.ClientCertRequirements`` from :attr:`PostureRule.cn_template`,
:attr:`PostureRule.san_templates`, :attr:`PostureRule.extended_key_usage` and
:attr:`PostureRule.check_private_key`.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from typing import Final

from policies.rules import ApiReader, FieldError, Path

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_EXPIRATION",
    "DEFAULT_SCHEDULE",
    "MIN_SCHEDULE",
    "NSS_DATABASES",
    "ClientCertificateInput",
    "ExtendedKeyUsage",
    "Locations",
    "OperatingSystem",
    "Platform",
    "PostureRule",
    "PostureType",
    "TrustStore",
    "format_duration",
    "parse_duration",
]

DEFAULT_SCHEDULE: Final = timedelta(minutes=5)
MIN_SCHEDULE: Final = timedelta(minutes=1)
DEFAULT_EXPIRATION: Final = timedelta(minutes=10)
MAX_DURATION: Final = timedelta(days=365)
MAX_TEMPLATE_CHARS: Final = 255
MAX_LIST_ITEMS: Final = 64
MAX_PATH_CHARS: Final = 4096


class PostureType(StrEnum):
    """The posture rule types this gateway checks."""

    CLIENT_CERTIFICATE = "client_certificate"
    CLIENT_CERTIFICATE_V2 = "client_certificate_v2"


# Cloudflare's other types: known, so that they are refused as unsupported rather than unknown.
OTHER_CLOUDFLARE_TYPES: Final = frozenset(
    {
        "file", "application", "tanium", "gateway", "warp", "disk_encryption", "serial_number",
        "sentinelone", "carbonblack", "firewall", "os_version", "domain_joined", "antivirus",
        "unique_client_id", "kolide", "tanium_s2s", "crowdstrike_s2s", "intune",
        "workspace_one", "sentinelone_s2s", "custom_s2s",
    }
)  # fmt: skip


class Platform(StrEnum):
    """``match[].platform``: the device platforms a rule applies to (none listed: all)."""

    WINDOWS = "windows"
    MAC = "mac"
    LINUX = "linux"
    ANDROID = "android"
    IOS = "ios"
    CHROMEOS = "chromeos"


class OperatingSystem(StrEnum):
    """``input.operating_system`` of a ``client_certificate_v2`` rule."""

    LINUX = "linux"
    WINDOWS = "windows"
    MAC = "mac"


class ExtendedKeyUsage(StrEnum):
    """``input.extended_key_usage`` values (OIDs 1.3.6.1.5.5.7.3.2 and 1.3.6.1.5.5.7.3.4)."""

    CLIENT_AUTH = "clientAuth"
    EMAIL_PROTECTION = "emailProtection"


class TrustStore(StrEnum):
    """``input.locations.trust_stores`` values (accepted in any case, kept lower case)."""

    SYSTEM = "system"
    USER = "user"


NSS_DATABASES: Final[Mapping[TrustStore, str]] = {
    TrustStore.SYSTEM: "/etc/pki/nssdb",
    TrustStore.USER: "~/.pki/nssdb",
}
"""Where each trust store is on Linux (NSS ``sql:`` databases; ``~`` is the agent user's home)."""


# --- durations ----------------------------------------------------------------------------------

_DURATION = re.compile(r"(?:\d{1,12}[smhd])+")
_DURATION_PART = re.compile(r"(\d{1,12})([smhd])")
_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> timedelta:
    """``"5m"`` → 5 minutes; ``"1h30m"``, ``"30s"``, ``"1d"``. ValueError saying what is accepted."""
    compact = text.strip()
    if not _DURATION.fullmatch(compact):
        raise ValueError(f'must be a duration such as "30s", "5m", "1h" or "1h30m", got {text!r}')
    seconds = sum(int(n) * _UNITS[unit] for n, unit in _DURATION_PART.findall(compact))
    if seconds > MAX_DURATION.total_seconds():  # before timedelta(), which overflows
        raise ValueError(f"must be at most {format_duration(MAX_DURATION)}, got {text!r}")
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    """The largest whole unit up to hours: ``"1h"``, ``"90m"``, ``"45s"`` (``"24h"``, not
    ``"1d"``: every Cloudflare client reads hours)."""
    seconds = int(value.total_seconds())
    for unit in ("h", "m"):
        if seconds % _UNITS[unit] == 0 and seconds:
            return f"{seconds // _UNITS[unit]}{unit}"
    return f"{seconds}s"


# --- the model ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Locations:
    """Where the agent looks: PEM files (``paths``, absolute) and trust stores."""

    paths: tuple[str, ...] = ()
    trust_stores: tuple[TrustStore, ...] = ()

    @classmethod
    def from_api(cls, value: object, *, where: str, path: Path) -> Locations:
        reader = ApiReader(value, where=where, path=path)
        paths = _unique_strings(reader, "paths")
        for index, item in enumerate(paths):
            problem = _path_problem(item)
            if problem:
                raise FieldError(where, (*path, "paths", index), problem)
        stores: list[TrustStore] = []
        names = ", ".join(s.value for s in TrustStore)
        for index, item in enumerate(_unique_strings(reader, "trust_stores", casefold=True)):
            store = next((s for s in TrustStore if s.value == item.lower()), None)
            if store is None:
                raise FieldError(
                    where,
                    (*path, "trust_stores", index),
                    f"unknown trust store {item!r} (one of: {names})",
                )
            stores.append(store)
        reader.finish()
        return cls(paths, tuple(stores))

    def to_api(self) -> dict[str, object]:
        return {"paths": list(self.paths), "trust_stores": [s.value for s in self.trust_stores]}

    def nss_databases(self) -> tuple[str, ...]:
        """The NSS databases to read on Linux: the system one always (Cloudflare's Linux
        default), the user's when listed. ``~`` is left for the caller to expand."""
        wanted = (TrustStore.SYSTEM, *self.trust_stores)
        return tuple(NSS_DATABASES[s] for s in TrustStore if s in wanted)


@dataclass(frozen=True)
class ClientCertificateInput:
    """``input`` of a client-certificate rule. ``cn`` and ``subject_alternative_names`` are
    templates (``${hostname}``, ``${serial_number}``); ``cn`` None means the CN is not checked.
    v1 rules carry only ``certificate_id`` and ``cn``; ``operating_system`` is None there."""

    certificate_id: str
    cn: str | None = None
    check_private_key: bool = False
    operating_system: OperatingSystem | None = None
    extended_key_usage: tuple[ExtendedKeyUsage, ...] = ()
    locations: Locations = field(default_factory=Locations)
    subject_alternative_names: tuple[str, ...] = ()

    @classmethod
    def from_api(
        cls, value: object, *, where: str, kind: PostureType, path: Path = ("input",)
    ) -> ClientCertificateInput:
        reader = ApiReader(value, where=where, path=path)
        if kind is PostureType.CLIENT_CERTIFICATE:
            for key in reader.mapping:
                if key not in ("certificate_id", "cn"):
                    reader.fail(
                        f"unknown key {key!r}: client_certificate takes only certificate_id and "
                        "cn (use type client_certificate_v2 for the other checks)",
                        str(key),
                        on_key=True,
                    )
        certificate_id = _certificate_id(reader)
        if kind is PostureType.CLIENT_CERTIFICATE:
            if not reader.has("cn") or not str(reader.mapping.get("cn")).strip():
                reader.fail(
                    "required: client_certificate needs a cn (use type client_certificate_v2 "
                    "to check a certificate without a common name)",
                    "cn",
                )
            cn = _template(reader, "cn")
            reader.finish()
            return cls(certificate_id=certificate_id, cn=cn)
        cn = _template(reader, "cn")
        check_private_key = _required_boolean(reader, "check_private_key")
        operating_system = reader.choice("operating_system", OperatingSystem)
        usages: list[ExtendedKeyUsage] = []
        known = ", ".join(u.value for u in ExtendedKeyUsage)
        for index, item in enumerate(_unique_strings(reader, "extended_key_usage")):
            usage = next((u for u in ExtendedKeyUsage if u.value == item), None)
            if usage is None:
                raise FieldError(
                    where,
                    (*path, "extended_key_usage", index),
                    f"unknown extended key usage {item!r} (one of: {known})",
                )
            usages.append(usage)
        locations_value = reader.raw("locations", None)
        locations = (
            Locations()
            if locations_value is None
            else Locations.from_api(locations_value, where=where, path=(*path, "locations"))
        )
        sans = _unique_strings(reader, "subject_alternative_names")
        for index, san in enumerate(sans):
            problem = _template_problem(san)
            if problem:
                raise FieldError(where, (*path, "subject_alternative_names", index), problem)
        reader.finish()
        return cls(
            certificate_id=certificate_id,
            cn=cn,
            check_private_key=check_private_key,
            operating_system=operating_system,
            extended_key_usage=tuple(usages),
            locations=locations,
            subject_alternative_names=sans,
        )

    def to_api(self, kind: PostureType) -> dict[str, object]:
        if kind is PostureType.CLIENT_CERTIFICATE:
            return {"certificate_id": self.certificate_id, "cn": self.cn or ""}
        out: dict[str, object] = {
            "certificate_id": self.certificate_id,
            "check_private_key": self.check_private_key,
            "operating_system": self.operating_system.value if self.operating_system else "",
        }
        if self.cn:
            out["cn"] = self.cn
        if self.extended_key_usage:
            out["extended_key_usage"] = [u.value for u in self.extended_key_usage]
        if self.locations != Locations():
            out["locations"] = self.locations.to_api()
        if self.subject_alternative_names:
            out["subject_alternative_names"] = list(self.subject_alternative_names)
        return out


@dataclass(frozen=True, kw_only=True)
class PostureRule:
    """One device posture rule, as the API and the YAML files spell it (keyword construction)."""

    id: str = ""
    name: str
    description: str = ""
    type: PostureType
    schedule: timedelta = DEFAULT_SCHEDULE
    expiration: timedelta = DEFAULT_EXPIRATION
    match: tuple[Platform, ...] = ()
    input: ClientCertificateInput

    def __post_init__(self) -> None:
        """A rule built in code holds what ``from_api`` would demand (ValueError otherwise)."""
        if self.type is PostureType.CLIENT_CERTIFICATE:
            if not self.input.cn:
                raise ValueError("a client_certificate rule needs input.cn")
            if self.input != ClientCertificateInput(self.input.certificate_id, self.input.cn):
                raise ValueError("a client_certificate rule takes only input.certificate_id and input.cn")
        elif self.input.operating_system is None:
            raise ValueError("a client_certificate_v2 rule needs input.operating_system")
        if self.schedule < MIN_SCHEDULE or self.expiration <= timedelta(0):
            raise ValueError("schedule must be at least 1 minute and expiration longer than 0")

    @classmethod
    def from_api(cls, value: object, *, where: str) -> PostureRule:
        """Validate a rule mapping; FieldError names the field and what would be accepted."""
        name_value = value.get("name") if isinstance(value, Mapping) else None
        if isinstance(name_value, str) and name_value.strip():
            where = f"{where} {name_value.strip()!r}"
        reader = ApiReader(value, where=where, ignored=("enabled",))
        name = reader.string("name", non_empty=True)
        kind = _posture_type(reader)
        schedule = _duration(reader, "schedule", DEFAULT_SCHEDULE)
        if schedule < MIN_SCHEDULE:
            reader.fail(
                f"must be at least 1m (Cloudflare's minimum), got {reader.mapping['schedule']!r}",
                "schedule",
            )
        expiration = _duration(reader, "expiration", DEFAULT_EXPIRATION)
        if expiration <= timedelta(0):
            reader.fail("must be longer than 0s (leave it out for 10m)", "expiration")
        rule = cls(
            id=reader.string("id", ""),
            name=name.strip(),
            description=reader.string("description", ""),
            type=kind,
            schedule=schedule,
            expiration=expiration,
            match=_match(reader),
            input=ClientCertificateInput.from_api(reader.raw("input"), where=where, kind=kind),
        )
        reader.finish()
        return rule

    def to_api(self) -> dict[str, object]:
        """Cloudflare's response shape: ``{id, name, description, type, schedule, expiration,
        input, match, enabled}`` (``enabled`` is always true; ``id`` only once assigned)."""
        out: dict[str, object] = {}
        if self.id:
            out["id"] = self.id
        out["name"] = self.name
        out["description"] = self.description
        out["type"] = self.type.value
        out["schedule"] = format_duration(self.schedule)
        out["expiration"] = format_duration(self.expiration)
        out["input"] = self.input.to_api(self.type)
        out["match"] = [{"platform": p.value} for p in self.match]
        out["enabled"] = True
        return out

    # What a caller needs to build certs.client_check.ClientCertRequirements.

    @property
    def certificate_id(self) -> str:
        return self.input.certificate_id

    @property
    def cn_template(self) -> str | None:
        return self.input.cn

    @property
    def san_templates(self) -> tuple[str, ...]:
        return self.input.subject_alternative_names

    @property
    def extended_key_usage(self) -> tuple[str, ...]:
        return tuple(u.value for u in self.input.extended_key_usage)

    @property
    def check_private_key(self) -> bool:
        return self.input.check_private_key

    def applies_to(self, platform: Platform | str) -> bool:
        """True when the rule's ``match`` lists the platform, or lists none."""
        return not self.match or any(p.value == platform for p in self.match)


# --- field readers ------------------------------------------------------------------------------


def _required_boolean(reader: ApiReader, key: str) -> bool:
    value = reader.raw(key)
    if not isinstance(value, bool):
        reader.fail(f"must be true or false, got {value!r}", key)
    return value


def _posture_type(reader: ApiReader) -> PostureType:
    value = reader.raw("type")
    supported = ", ".join(t.value for t in PostureType)
    if isinstance(value, str):
        for kind in PostureType:
            if kind.value == value:
                return kind
        if value in OTHER_CLOUDFLARE_TYPES:
            reader.fail(f"{value!r} is not supported by this gateway (supported: {supported})", "type")
    shown = repr(value) if isinstance(value, (str, int, float)) else "a non-string value"
    reader.fail(f"unknown type {shown} (one of: {supported})", "type")


def _duration(reader: ApiReader, key: str, default: timedelta) -> timedelta:
    value = reader.raw(key, "")
    if not isinstance(value, str):
        reader.fail(f'must be a duration string such as "5m", got {value!r}', key)
    if not value.strip():
        return default
    try:
        return parse_duration(value)
    except ValueError as e:
        reader.fail(str(e), key)


def _match(reader: ApiReader) -> tuple[Platform, ...]:
    platforms: list[Platform] = []
    for index, item in enumerate(reader.sequence("match", default=())):
        sub = ApiReader(item, where=reader.where, path=("match", index))
        platform = sub.choice("platform", Platform)
        sub.finish()
        if platform in platforms:
            sub.fail(f"{platform.value!r} is listed twice", "platform")
        platforms.append(platform)
    return tuple(platforms)


def _certificate_id(reader: ApiReader) -> str:
    text = reader.string("certificate_id", non_empty=True).strip()
    try:
        parsed = uuid.UUID(text)
    except ValueError:
        parsed = None
    if parsed is None or str(parsed) != text.lower():
        reader.fail(
            "must be the UUID of an uploaded mTLS certificate, such as "
            f"2458ce5a-0c35-4c7f-82c7-8e9487d3ff60, got {text!r}",
            "certificate_id",
        )
    return str(parsed)


_VARIABLE = re.compile(r"\$\{([^}]*)\}")


def _template_problem(text: str) -> str | None:
    if not text.strip():
        return "must not be empty"
    if len(text) > MAX_TEMPLATE_CHARS:
        return f"is {len(text)} characters: at most {MAX_TEMPLATE_CHARS}"
    for match in _VARIABLE.finditer(text):
        if match.group(1) not in ("hostname", "serial_number"):
            return (
                f"unknown variable ${{{match.group(1)}}} in {text!r}: only ${{hostname}} and "
                "${serial_number} are filled in"
            )
    if "${" in _VARIABLE.sub("", text):
        return f"unterminated variable in {text!r}: write ${{hostname}} or ${{serial_number}}"
    return None


def _template(reader: ApiReader, key: str) -> str | None:
    text = reader.string(key, "")
    if not text.strip():
        return None
    problem = _template_problem(text)
    if problem:
        reader.fail(problem, key)
    return text


def _unique_strings(reader: ApiReader, key: str, *, casefold: bool = False) -> tuple[str, ...]:
    items = reader.strings(key)
    if len(items) > MAX_LIST_ITEMS:
        reader.fail(f"has {len(items)} entries: at most {MAX_LIST_ITEMS}", key)
    seen: set[str] = set()
    for index, item in enumerate(items):
        folded = item.lower() if casefold else item
        if folded in seen:
            raise FieldError(reader.where, (*reader.path, key, index), f"{item!r} is listed twice")
        seen.add(folded)
    return items


def _path_problem(path: str) -> str | None:
    if not path.strip():
        return "must not be empty"
    if "\x00" in path:
        return "must not contain a NUL character"
    if len(path) > MAX_PATH_CHARS:
        return f"is {len(path)} characters: at most {MAX_PATH_CHARS}"
    if not (path.startswith("/") or re.match(r"[A-Za-z]:[\\/]", path)):
        return f"must be an absolute path such as /etc/pki/client.pem, got {path!r}"
    return None
