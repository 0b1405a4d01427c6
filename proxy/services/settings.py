"""Gateway configuration settings: validation at the edge, defaults, PUT and PATCH semantics.

The settings are stored as JSON without ``certificate``: which certificate is on is kept in
one place only, the certificates' ``in_use`` flag, and rendered back into the settings.
"""

from __future__ import annotations

import copy
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from policies.pac import MAX_EXCLUSIONS, PacError, PacFile
from proxy.json_types import type_name
from proxy.services.errors import InvalidInput
from proxy.services.rotation_input import check_setting as check_rotation_setting

logger = logging.getLogger(__name__)

NIL_UUID = "00000000-0000-0000-0000-000000000000"

OBJECT_SETTINGS = frozenset({
    "activity_log", "antivirus", "block_page", "body_scanning", "browser_isolation",
    "certificate", "certificate_rotation", "custom_certificate", "extended_email_matching", "fips", "host_selector",
    "inspection", "pac_file", "protocol_detection", "sandbox", "tls_decrypt",
})  # fmt: skip
INTEGER_SETTINGS = frozenset({"max_ttl_secs"})
KNOWN_SETTINGS = OBJECT_SETTINGS | INTEGER_SETTINGS

DEFAULT_SETTINGS: dict[str, Any] = {"tls_decrypt": {"enabled": True}}

NIL_CERTIFICATE_REFUSED = (
    "no certificate cannot be chosen: at Cloudflare the nil UUID (or null) selects Cloudflare's "
    "own root CA, which a self-hosted gateway does not have: "
    "with no certificate in use nothing could sign inspected connections. Turn on another "
    "available certificate instead (or set tls_decrypt.enabled to false to stop inspecting)"
)


@dataclass(frozen=True)
class SettingsChange:
    """Validated settings from a request: everything but the certificate, and its id apart."""

    settings: dict[str, Any]
    certificate_id: str | None


def parse_settings(value: object, *, partial: bool) -> SettingsChange:
    """Check ``settings`` from a PUT (``partial=False``) or PATCH body; InvalidInput names the key.

    In a PATCH a ``null`` value removes that key (back to its default).
    """
    if not isinstance(value, Mapping):
        raise InvalidInput("settings", f"must be an object, got {type_name(value)}")
    settings: dict[str, Any] = {}
    certificate_id: str | None = None
    for key, item in value.items():
        field = f"settings.{key}"
        if key not in KNOWN_SETTINGS:
            raise InvalidInput(field, f"unknown setting (known: {', '.join(sorted(KNOWN_SETTINGS))})")
        if key == "certificate":
            certificate_id = _certificate_id(item)
        elif item is None and partial:
            settings[key] = None
        elif key in INTEGER_SETTINGS:
            if isinstance(item, bool) or not isinstance(item, int) or item < 0:
                raise InvalidInput(field, f"must be a non-negative integer, got {type_name(item)}")
            settings[key] = item
        elif not isinstance(item, Mapping):
            raise InvalidInput(field, f"must be an object, got {type_name(item)}")
        else:
            settings[key] = copy.deepcopy(dict(item))
    _check_tls_decrypt(settings.get("tls_decrypt"))
    _check_pac_file(settings.get("pac_file"))
    if settings.get("certificate_rotation") is not None:
        check_rotation_setting(settings["certificate_rotation"])  # our own (issue 12)
    return SettingsChange(settings, certificate_id)


def _check_tls_decrypt(tls_decrypt: object) -> None:
    if not isinstance(tls_decrypt, Mapping) or "enabled" not in tls_decrypt:
        return
    if not isinstance(tls_decrypt["enabled"], bool):
        raise InvalidInput(
            "settings.tls_decrypt.enabled",
            f"must be true or false, got {type_name(tls_decrypt['enabled'])}",
        )


def _check_pac_file(pac_file: object) -> None:
    """Our own setting (Cloudflare uploads whole PAC files instead): ``{"exclude": [host, pattern,
    IPv4 network, ...]}``, the hosts ``GET /proxy.pac`` sends around the proxy."""
    if not isinstance(pac_file, Mapping):
        return
    unknown = set(pac_file) - {"exclude"}
    if unknown:
        raise InvalidInput(f"settings.pac_file.{sorted(unknown)[0]}", "unknown field (known: exclude)")
    exclude = pac_file.get("exclude", [])
    if not isinstance(exclude, list) or not all(isinstance(e, str) for e in exclude):
        raise InvalidInput(
            "settings.pac_file.exclude", f"must be a list of strings, got {type_name(exclude)}"
        )
    if len(exclude) > MAX_EXCLUSIONS:
        raise InvalidInput(
            "settings.pac_file.exclude", f"at most {MAX_EXCLUSIONS} entries, got {len(exclude)}"
        )
    for index, entry in enumerate(exclude):
        try:
            PacFile.exclusion(entry)
        except PacError as e:
            raise InvalidInput(f"settings.pac_file.exclude[{index}]", str(e)) from None


def pac_exclusions(stored: Mapping[str, Any]) -> tuple[str, ...]:
    """The configured ``pac_file.exclude`` entries (checked when they were saved)."""
    pac_file = stored.get("pac_file")
    exclude = pac_file.get("exclude") if isinstance(pac_file, Mapping) else None
    return tuple(e for e in exclude if isinstance(e, str)) if isinstance(exclude, list) else ()


def _certificate_id(certificate: object) -> str:
    field = "settings.certificate.id"
    if certificate is None:
        raise InvalidInput("settings.certificate", NIL_CERTIFICATE_REFUSED)
    if not isinstance(certificate, Mapping):
        raise InvalidInput(
            "settings.certificate", f"must be an object with an id, got {type_name(certificate)}"
        )
    cert_id = certificate.get("id")
    if not isinstance(cert_id, str):
        raise InvalidInput(field, f"required: a certificate UUID string, got {type_name(cert_id)}")
    try:
        parsed = uuid.UUID(cert_id)
    except ValueError:
        raise InvalidInput(field, f"{cert_id!r} is not a UUID") from None
    if parsed.int == 0:
        raise InvalidInput(field, NIL_CERTIFICATE_REFUSED)
    return str(parsed)


def merged(stored: Mapping[str, Any], change: SettingsChange) -> dict[str, Any]:
    """PATCH: each top-level key given replaces the stored one; ``null`` removes it."""
    result = copy.deepcopy(dict(stored))
    for key, item in change.settings.items():
        if item is None:
            result.pop(key, None)
        else:
            result[key] = item
    return with_defaults(result)


def replaced(change: SettingsChange) -> dict[str, Any]:
    """PUT: the settings given, with defaults for what they leave out."""
    return with_defaults({k: v for k, v in change.settings.items() if v is not None})


def with_defaults(settings: Mapping[str, Any]) -> dict[str, Any]:
    result = copy.deepcopy(dict(settings))
    tls_decrypt = dict(result.get("tls_decrypt") or {})
    tls_decrypt.setdefault("enabled", True)
    result["tls_decrypt"] = tls_decrypt
    result.pop("certificate", None)
    return result


def rendered(stored: Mapping[str, Any], in_use_id: str | None) -> dict[str, Any]:
    """The settings as the API shows them: stored ones plus ``certificate.id`` of the one in use."""
    result = with_defaults(stored)
    if in_use_id is not None:
        result["certificate"] = {"id": in_use_id}
    return dict(sorted(result.items()))


def tls_decrypt_enabled(stored: Mapping[str, Any]) -> bool:
    return bool(with_defaults(stored)["tls_decrypt"]["enabled"])
