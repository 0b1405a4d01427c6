"""What starts a rotation, checked once at the edge (issue 12): the request body of
``POST .../gateway/certificates/rotations`` and the automatic rotation setting
``settings.certificate_rotation`` of the Gateway configuration. Every refusal names the field.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from certs.authority import DEFAULT_VALIDITY_DAYS, MAX_VALIDITY_DAYS, KeyType
from proxy.json_types import type_name
from proxy.services.errors import InvalidInput
from proxy.services.rotation import OnDeadline, check_plan

logger = logging.getLogger(__name__)

DEFAULT_COVERAGE: Final = 100
DEFAULT_DEADLINE: Final = timedelta(days=7)
DEFAULT_GRACE: Final = timedelta(days=1)
MAX_SPAN: Final = timedelta(days=3650)
REQUEST_FIELDS: Final = frozenset(
    {"coverage", "deadline", "grace", "on_deadline", "upload_id", "validity_period_days", "key_type"}
)
SETTING: Final = "certificate_rotation"
SETTING_FIELDS: Final = frozenset({"auto_rotate_days_before_expiry", "coverage", "grace", "on_deadline"})
MAX_DAYS_BEFORE_EXPIRY: Final = 3650

_SPAN = re.compile(r"(-?)((?:\d{1,12}[smhdw])+)")
_SPAN_PART = re.compile(r"(\d{1,12})([smhdw])")
_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_SPAN_HINT = 'a duration such as "30s", "10m", "12h", "7d" or "1d12h"'


@dataclass(frozen=True)
class RotationRequest:
    coverage: int
    deadline: datetime
    grace: timedelta
    on_deadline: OnDeadline
    upload_id: str | None = None
    validity_period_days: int = DEFAULT_VALIDITY_DAYS
    key_type: KeyType = KeyType.EC_P256


def parse_span(value: object, field: str) -> timedelta:
    """``"30s"``, ``"10m"``, ``"12h"``, ``"7d"``, ``"2w"``, ``"1d12h"``; a leading ``-`` makes it
    negative (so that the caller can say why that is wrong)."""
    if not isinstance(value, str):
        raise InvalidInput(field, f"must be {_SPAN_HINT}, got {type_name(value)}")
    match = _SPAN.fullmatch(value.strip())
    if not match:
        raise InvalidInput(field, f"must be {_SPAN_HINT}, got {value[:100]!r}")
    seconds = sum(int(n) * _UNITS[unit] for n, unit in _SPAN_PART.findall(match.group(2)))
    if seconds > MAX_SPAN.total_seconds():
        raise InvalidInput(field, f"must be at most {MAX_SPAN.days} days, got {value[:100]!r}")
    return timedelta(seconds=-seconds if match.group(1) else seconds)


def parse_deadline(value: object, now: datetime, field: str = "deadline") -> datetime:
    """A span from now (``"7d"``) or an RFC 3339 time (``"2026-12-24T00:00:00Z"``)."""
    if isinstance(value, str) and "T" in value.upper():
        try:
            moment = datetime.fromisoformat(value.strip().replace("z", "Z"))
        except ValueError:
            raise InvalidInput(field, f"{value[:100]!r} is not an RFC 3339 time") from None
        if moment.tzinfo is None:
            raise InvalidInput(field, f"{value[:100]!r} has no time zone: end it with Z or +HH:MM")
        return moment.astimezone(UTC)
    return now + parse_span(value, field)


def format_span(value: timedelta) -> str:
    """The largest whole unit: ``"7d"``, ``"12h"``, ``"90m"``, ``"45s"``."""
    seconds = int(value.total_seconds())
    for unit in ("d", "h", "m"):
        if seconds and seconds % _UNITS[unit] == 0:
            return f"{seconds // _UNITS[unit]}{unit}"
    return f"{seconds}s"


def parse_request(body: Mapping[str, Any], now: datetime) -> RotationRequest:
    for key in body:
        if key not in REQUEST_FIELDS:
            raise InvalidInput(key, f"unknown field (accepted: {', '.join(sorted(REQUEST_FIELDS))})")
    deadline = parse_deadline(body["deadline"], now) if "deadline" in body else now + DEFAULT_DEADLINE
    grace = parse_span(body["grace"], "grace") if "grace" in body else DEFAULT_GRACE
    coverage = check_plan(body.get("coverage", DEFAULT_COVERAGE), deadline, grace, now)
    return RotationRequest(
        coverage=coverage,
        deadline=deadline,
        grace=grace,
        on_deadline=_on_deadline(body.get("on_deadline", OnDeadline.HOLD.value), "on_deadline"),
        upload_id=_upload_id(body.get("upload_id")),
        validity_period_days=_days(body.get("validity_period_days", DEFAULT_VALIDITY_DAYS)),
        key_type=_key_type(body.get("key_type", KeyType.EC_P256.value)),
    )


def _on_deadline(value: object, field: str) -> OnDeadline:
    accepted = ", ".join(o.value for o in OnDeadline)
    if not isinstance(value, str) or value not in {o.value for o in OnDeadline}:
        raise InvalidInput(field, f"must be one of {accepted}, got {value!r}"[:300])
    return OnDeadline(value)


def _upload_id(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput(
            "upload_id", f"must be the id (UUID) of an mTLS upload with its key, got {type_name(value)}"
        )
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise InvalidInput("upload_id", f"{value[:100]!r} is not a UUID") from None


def _days(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_VALIDITY_DAYS:
        raise InvalidInput(
            "validity_period_days", f"must be an integer from 1 to {MAX_VALIDITY_DAYS}, got {value!r}"[:300]
        )
    return value


def _key_type(value: object) -> KeyType:
    accepted = [k.value for k in KeyType]
    if not isinstance(value, str) or value not in accepted:
        raise InvalidInput("key_type", f"must be one of {', '.join(accepted)}, got {value!r}"[:300])
    return KeyType(value)


# --- the automatic rotation setting ---------------------------------------------------------------


@dataclass(frozen=True)
class AutoRotation:
    """``settings.certificate_rotation``: a rotation starts ``days_before_expiry`` days before the
    in-use CA expires (0: off). Its deadline is halfway from its start to that expiry."""

    days_before_expiry: int = 0
    coverage: int = DEFAULT_COVERAGE
    grace: timedelta = DEFAULT_GRACE
    on_deadline: OnDeadline = OnDeadline.PROCEED  # an expiring CA breaks every device anyway

    @property
    def enabled(self) -> bool:
        return self.days_before_expiry > 0


def check_setting(value: object) -> None:
    """Validate ``settings.certificate_rotation`` as saved (InvalidInput naming the key)."""
    auto_rotation(value, strict=True)


def auto_rotation(value: object, *, strict: bool = False) -> AutoRotation:
    """The setting as stored; a value that does not parse is off (``strict``: InvalidInput)."""
    where = f"settings.{SETTING}"
    try:
        if value is None:
            return AutoRotation()
        if not isinstance(value, Mapping):
            raise InvalidInput(where, f"must be an object, got {type_name(value)}")
        for key in value:
            if key not in SETTING_FIELDS:
                raise InvalidInput(
                    f"{where}.{key}", f"unknown field (accepted: {', '.join(sorted(SETTING_FIELDS))})"
                )
        days = value.get("auto_rotate_days_before_expiry", 0)
        if days is None:
            days = 0
        if isinstance(days, bool) or not isinstance(days, int) or not 0 <= days <= MAX_DAYS_BEFORE_EXPIRY:
            raise InvalidInput(
                f"{where}.auto_rotate_days_before_expiry",
                f"must be a whole number of days from 0 (off) to {MAX_DAYS_BEFORE_EXPIRY}, got {days!r}"[
                    :300
                ],
            )
        coverage = value.get("coverage", DEFAULT_COVERAGE)
        if isinstance(coverage, bool) or not isinstance(coverage, int) or not 0 <= coverage <= 100:
            raise InvalidInput(
                f"{where}.coverage", f"must be a whole percentage from 0 to 100, got {coverage!r}"[:300]
            )
        grace = parse_span(value["grace"], f"{where}.grace") if "grace" in value else DEFAULT_GRACE
        if grace < timedelta(0):
            raise InvalidInput(f"{where}.grace", "must not be negative")
        on_deadline = _on_deadline(value.get("on_deadline", OnDeadline.PROCEED.value), f"{where}.on_deadline")
    except InvalidInput:
        if strict:
            raise
        logger.warning("ignoring an invalid %s setting: automatic rotation is off", where)
        return AutoRotation()
    return AutoRotation(days, coverage, grace, on_deadline)
