"""Ingest of one agent report: refuse what is not about the device's rules, verify the rest,
store the verdicts, the posture log and the device's last sighting in one group transaction.

A report whose items name a rule that does not apply to the device (or name one twice) is
refused whole (400): nothing is stored but a posture-log entry per refused item. Otherwise every
item is stored, passed or failed (``posture_verify``). Nonces are marked used in the same
transaction that stores the passes they prove: of two reports racing with one nonce, the second
finds it used and is stored as failed. One nonce may prove several rules of one report (the
proof binds the rule id); it cannot serve another report.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from certs.keys import PublicKey
from policies.posture import PostureRule
from proxy.services.device_errors import Unauthenticated
from proxy.services.device_writer import Batch, GroupCommit
from proxy.services.errors import InvalidInput
from proxy.services.posture_nonces import NonceMinter
from proxy.services.posture_rules import RuleSet
from proxy.services.posture_verify import (
    CertificateChecks,
    NonceStatus,
    Proof,
    Report,
    Verdict,
    assess,
    decode_nonce,
    settle,
)
from proxy.services.proof_worker import ProofWorker, verify_items
from proxy.store import Device, Nonce, Outcome, PostureLogEntry, PostureResult, Store
from proxy.store.database import INTEGRITY_ERRORS

logger = logging.getLogger(__name__)

REPLAYED: Final = "nonce was already used (a replayed report)"


@dataclass(frozen=True)
class StoredOutcome:
    """What the server stored for one reported result (the agent's answer)."""

    rule_id: str
    success: bool
    verified: bool
    reason: str
    expires_at: datetime


class Ingest:
    def __init__(
        self,
        store: Store,
        writer: GroupCommit,
        minter: NonceMinter,
        stored: Callable[[str], None],
        proofs: ProofWorker | None = None,
    ) -> None:
        """``proofs``: the process that verifies signatures; None: verify them here."""
        self._store = store
        self._writer = writer
        self._minter = minter
        self._stored = stored  # after the commit, with the device id
        self.checks = CertificateChecks()
        self._batch = Batch("posture results", self._write_all)
        self._proofs = proofs
        self._keys: dict[bytes, PublicKey] = {}  # loaded keys, when verifying here

    async def submit(
        self,
        device: Device,
        rules: RuleSet,
        reports: Sequence[Report],
        ip: str,
        now: datetime,
        *,
        seen: bool = True,
        prune: bool = False,
    ) -> list[StoredOutcome]:
        """``seen``: also record the device's last sighting (address and time); ``prune``: also
        forget redeemed nonces that expired (they would be refused as stale anyway)."""
        applicable = {rule.id: rule for rule in rules.for_platform(device.os)}
        refused = _refusals(device, rules, applicable, reports)
        if refused:
            entries = [_refused_entry(device, rules, rule_id, why, now) for _, rule_id, why in refused]
            await self._writer.run(lambda store: store.posture_logs.add(entries))
            index, rule_id, why = refused[0]
            more = f" (and {len(refused) - 1} more)" if len(refused) > 1 else ""
            logger.warning("device %s: report refused: rule %r: %s", device.id, rule_id, why)
            raise InvalidInput(f"results[{index}].rule_id", f"{rule_id!r}: {why}{more}")
        nonces: dict[bytes, NonceStatus] = {}
        found: list[Verdict | Proof] = []
        for report in reports:
            rule = applicable[report.rule_id]
            nonce = self._nonce(report, device, nonces, now)
            signers = rules.signers.get(rule.certificate_id)
            found.append(assess(report, rule, device, signers, nonce, now=now, checks=self.checks))
        verdicts = await self._settle(found)
        write = _Write(device, verdicts, ip, now, seen, prune)
        try:
            final = await self._writer.add(self._batch, write)
        except INTEGRITY_ERRORS:  # the device was deleted while its report was checked
            raise Unauthenticated(f"device {device.id} was deleted: enroll again") from None
        self._stored(device.id)
        for verdict in final:
            log = logger.debug if verdict.success else logger.info
            log("device %s rule %s: %s (%s)", device.id, verdict.rule.id,
                "passed" if verdict.success else "failed", verdict.reason)  # fmt: skip
        return [StoredOutcome(v.rule.id, v.success, v.verified, v.reason, v.expires_at) for v in final]

    async def _settle(self, found: list[Verdict | Proof]) -> list[Verdict]:
        """Verify the signatures of the proofs (in the proof worker when there is one)."""
        proofs = [f for f in found if isinstance(f, Proof)]
        if not proofs:
            return [f for f in found if isinstance(f, Verdict)]
        if self._proofs is not None:
            problems = await self._proofs.verify([p.item for p in proofs])
        else:
            problems = verify_items([p.item for p in proofs], self._keys)
        settled = iter(settle(p, problem) for p, problem in zip(proofs, problems, strict=True))
        return [f if isinstance(f, Verdict) else next(settled) for f in found]

    def _write_all(self, store: Store, writes: list[_Write]) -> list[list[Verdict]]:
        """In the group transaction (the writer's thread), for every report queued at once:
        redeem the nonces (a replayed one fails its results), store the results, the posture log
        and the sightings, with one statement per table."""
        lifetime = self._minter.lifetime
        if any(write.prune for write in writes):
            store.nonces.delete_expired(writes[-1].now - lifetime)
        wanted = []
        for write in writes:
            for raw in dict.fromkeys(v.nonce for v in write.verdicts if v.nonce is not None):
                expires = NonceMinter.expires_at(raw)
                wanted.append(Nonce(raw, write.device.id, expires - lifetime, expires, used_at=write.now))
        claimed = store.nonces.claim_many(wanted)
        owner: dict[bytes, int] = {}  # of reports sharing a nonce, the first redeems it
        for index, write in enumerate(writes):
            for verdict in write.verdicts:
                if verdict.nonce in claimed:
                    owner.setdefault(verdict.nonce, index)
        finals = [
            [v if v.nonce is None or owner.get(v.nonce) == index else _replayed(v) for v in write.verdicts]
            for index, write in enumerate(writes)
        ]
        store.posture_results.save(
            _result(write.device, v, write.now)
            for write, final in zip(writes, finals, strict=False)
            for v in final
        )
        store.posture_logs.add(
            _entry(write.device, v, write.now)
            for write, final in zip(writes, finals, strict=False)
            for v in final
        )
        store.devices.seen_many((w.device.id, w.ip, w.now) for w in writes if w.seen)
        return finals

    def _nonce(
        self, report: Report, device: Device, seen: dict[bytes, NonceStatus], now: datetime
    ) -> NonceStatus | None:
        if not report.success:
            return None
        raw = decode_nonce(report.nonce)
        if raw is None:
            return None
        if raw not in seen:  # whether it was used is found when it is claimed (``_write``)
            seen[raw] = NonceStatus(self._minter.problem(raw, device.id, now))
        return seen[raw]


@dataclass(frozen=True)
class _Write:
    """One report's verdicts, waiting for the group transaction."""

    device: Device
    verdicts: list[Verdict]
    ip: str
    now: datetime
    seen: bool  # record the device's sighting
    prune: bool  # forget redeemed nonces that expired


def _replayed(verdict: Verdict) -> Verdict:
    return dataclasses.replace(
        verdict, success=False, verified=False, reason=REPLAYED, nonce=None, fingerprint="", cn=None
    )


def _refusals(
    device: Device, rules: RuleSet, applicable: dict[str, PostureRule], reports: Sequence[Report]
) -> list[tuple[int, str, str]]:
    refused = []
    seen: set[str] = set()
    for index, report in enumerate(reports):
        rule_id = report.rule_id
        if rule_id not in applicable:
            refused.append((index, rule_id, _not_assigned(device, rules.by_id.get(rule_id))))
        elif rule_id in seen:
            refused.append((index, rule_id, "reported twice in one request"))
        seen.add(rule_id)
    return refused


def _not_assigned(device: Device, rule: PostureRule | None) -> str:
    if rule is None:
        return "rule not assigned to this device: the account has no posture rule with this id"
    platforms = ", ".join(p.value for p in rule.match)
    return f"rule not assigned to this device: the rule matches {platforms}; this device is {device.os}"


def _refused_entry(device: Device, rules: RuleSet, rule_id: str, why: str, now: datetime) -> PostureLogEntry:
    rule = rules.by_id.get(rule_id)
    return PostureLogEntry(
        account_id=device.account_id, device_id=device.id, rule_id=rule_id[:128],
        rule_name=rule.name if rule else "", outcome=Outcome.REFUSED, verified=False,
        reason=why, at=now,
    )  # fmt: skip


def _result(device: Device, verdict: Verdict, now: datetime) -> PostureResult:
    return PostureResult(
        device_id=device.id, rule_id=verdict.rule.id, success=verdict.success,
        verified=verdict.verified, reason=verdict.reason,
        certificate_fingerprint=verdict.fingerprint, certificate_cn=verdict.cn, at=now,
        expires_at=verdict.expires_at,
    )  # fmt: skip


def _entry(device: Device, verdict: Verdict, now: datetime) -> PostureLogEntry:
    return PostureLogEntry(
        account_id=device.account_id, device_id=device.id, rule_id=verdict.rule.id,
        rule_name=verdict.rule.name,
        outcome=Outcome.PASSED if verdict.success else Outcome.FAILED,
        verified=verdict.verified, reason=verdict.reason, at=now,
        certificate_fingerprint=verdict.fingerprint, certificate_cn=verdict.cn,
        expires_at=verdict.expires_at,
    )  # fmt: skip
