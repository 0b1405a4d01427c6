"""What ``gateway agent`` prints: the tables of ``check``, ``report`` and ``sync-ca``, the lines of
``run``, and the JSON of ``check --json``."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from cryptography import x509

from agent.checks import RuleCheck
from agent.report import Stored
from agent.trust import SyncReport
from agent.trust_store import fp16
from certs.client_check import common_name

logger = logging.getLogger(__name__)


def outcome(entry: Stored) -> str:
    if entry.success and entry.verified:
        return "pass (verified)"
    return "pass (not verified)" if entry.success else "fail"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns two spaces apart; the last column is not padded."""
    everything = [tuple(header), *[tuple(r) for r in rows]]
    widths = [max(len(row[i]) for row in everything) for i in range(len(header) - 1)]
    return "\n".join(
        "  ".join([*(cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=True)), row[-1]]).rstrip()
        for row in everything
    )


def format_checks(checks: Sequence[RuleCheck]) -> str:
    rows = []
    for check in checks:
        if check.passed and check.candidate is not None:
            cn = _cn(check.certificate)
            detail = check.candidate.source + (f" (CN {cn})" if cn else "")
            if check.key is None:
                detail += f"; cannot prove it: {check.key_problem}"
        else:
            detail = check.reason
        rows.append((check.name, "pass" if check.passed else "fail", detail))
    lines = [table(("RULE", "OUTCOME", "CERTIFICATE OR REASON"), rows)]
    for check in checks:
        if check.rejected:
            lines.append("")
            lines.append(f"rejected for {check.name}:")
            for item in check.rejected:
                what = item.source + (f" (CN {item.cn})" if item.cn else "")
                lines.append(f"  {what}: {item.reason}")
    return "\n".join(lines)


def format_stored(stored: Sequence[Stored], names: dict[str, str]) -> str:
    rows = [
        (names.get(s.rule_id, s.rule_id), outcome(s), s.expires_at if s.success else "", s.reason)
        for s in stored
    ]
    return table(("RULE", "STORED", "PASS EXPIRES", "REASON"), rows)


def _cn(cert: x509.Certificate | None) -> str | None:
    return common_name(cert) if cert is not None else None


def check_json(check: RuleCheck) -> dict[str, Any]:
    return {
        "rule_id": check.rule_id,
        "name": check.name,
        "passed": check.passed,
        "reason": check.reason,
        "certificate": check.candidate.source if check.candidate else None,
        "cn": _cn(check.certificate),
        "private_key": check.key is not None,
        "rejected": [{"source": r.source, "cn": r.cn, "reason": r.reason} for r in check.rejected],
    }


def _short(fingerprint: str) -> str:
    return fp16(fingerprint) or "-"


def sync_changes(report: SyncReport) -> list[str]:
    """One line per store that changed: ``STORE: +FP16 -FP16``."""
    lines = []
    for store in report.stores:
        changes = [f"+{_short(fp)}" for fp in store.added] + [f"-{_short(fp)}" for fp in store.removed]
        if changes:
            lines.append(f"{store.store}: {' '.join(changes)}")
    return lines


def format_sync(report: SyncReport) -> str:
    rows = []
    for cert in report.certificates:
        status = ", ".join([cert.binding_status or "?", *(["in use"] if cert.in_use else [])])
        rows.append(
            (cert.id, _short(cert.fingerprint), status, "ok" if cert.accepted else f"refused: {cert.refused}")
        )
    lines = [table(("CERTIFICATE", "FINGERPRINT", "STATUS", "CHECK"), rows) if rows
             else "the server lists no root certificate"]  # fmt: skip
    store_rows = []
    for store in report.stores:
        installed = " ".join(_short(fp) for fp in store.installed) or ("-" if store.errors else "none")
        changes = " ".join(
            [f"+{_short(fp)}" for fp in store.added] + [f"-{_short(fp)}" for fp in store.removed]
        )
        store_rows.append((store.store, installed, changes, store.error))
    lines += ["", table(("STORE", "INSTALLED", "CHANGES", "ERROR"), store_rows)]
    notes = [f"note: {store.store}: {note}" for store in report.stores for note in store.notes]
    if notes:
        lines += ["", *notes]
    if report.server is not None:
        stores, held = report.server.get("stores"), report.server.get("installed")
        if stores is not None and held is not None:
            lines += ["", f"reported to the server: {stores} stores, {held} installed"]
        else:
            lines += ["", "reported to the server"]
    return "\n".join(lines)


def format_plan(report: SyncReport) -> str:
    """``sync-ca --dry-run``: per store, the commands that would run, and its problems."""
    lines = ["dry run: no store was changed, nothing recorded, nothing reported to the server", ""]
    for cert in report.certificates:
        if not cert.accepted:
            lines.append(
                f"root {cert.id} ({_short(cert.fingerprint)}) would not be installed: {cert.refused}"
            )
    for store in report.stores:
        changes = [f"+{_short(fp)}" for fp in store.added] + [f"-{_short(fp)}" for fp in store.removed]
        lines.append(f"{store.store}: " + (" ".join(changes) if changes else "nothing to change"))
        lines += [f"  would run: {line}" for command in store.planned for line in _indent(command)]
        lines += [f"  problem: {error}" for error in store.errors if not (store.missing and store.optional)]
        lines += [f"  note: {note}" for note in store.notes]
    return "\n".join(lines)


def _indent(command: str) -> list[str]:
    first, *rest = command.splitlines() or [""]
    return [first, *(f"           {line}" for line in rest)]
