"""A device's identity for the policies: its user and its posture now, and how long that holds.

For every rule that applies to the device (its ``match`` lists the device's platform, or none):

- the latest result passed (verified by the server) and has not expired: **passed**;
- the latest result failed, or passed but expired: **failed** (an expired result counts as
  failed, SPEC §5);
- no result yet: **neither**. A device that never reported is not said to fail a check it was
  never asked to run; policies that need the check write ``passed``, which it is not.

The identity only changes by itself when a pass expires, so it holds until the earliest expiry
of a current pass: a cache can keep it until then without any write telling it to drop it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from policies.facts import Identity, PostureNote, PostureState
from policies.posture import PostureRule
from proxy.store import Device, PostureResult

logger = logging.getLogger(__name__)

FOREVER: Final = datetime.max.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Posture:
    identity: Identity
    valid_until: datetime  # the earliest expiry of a current pass (FOREVER without one)


def is_current_pass(result: PostureResult, now: datetime) -> bool:
    return result.success and result.verified and result.expires_at > now


def posture_of(
    device: Device,
    rules: Iterable[PostureRule],
    results: Mapping[str, PostureResult],
    now: datetime,
) -> Posture:
    passed: list[str] = []
    failed: list[str] = []
    valid_until = FOREVER
    newest_pass: PostureResult | None = None
    notes: list[PostureNote] = []
    for rule in rules:
        result = results.get(rule.id)
        if result is None:
            notes.append(PostureNote(rule.id, rule.name, PostureState.NO_RESULT))
            continue
        if is_current_pass(result, now):
            passed.append(rule.id)
            valid_until = min(valid_until, result.expires_at)
            if newest_pass is None or result.at > newest_pass.at:
                newest_pass = result
            notes.append(PostureNote(rule.id, rule.name, PostureState.PASSED, result.reason))
        else:
            failed.append(rule.id)
            if result.success:
                expired = result.expires_at.strftime("%Y-%m-%dT%H:%M:%SZ")
                notes.append(
                    PostureNote(
                        rule.id, rule.name, PostureState.EXPIRED, f"its last pass expired at {expired}"
                    )
                )
            else:
                notes.append(PostureNote(rule.id, rule.name, PostureState.FAILED, result.reason))
    identity = Identity.of(
        email=device.email,
        device_id=device.id,
        passed=passed,
        failed=failed,
        verified_certificate_cn=_cn(newest_pass),
        notes=notes,
        account_id=device.account_id,
    )
    return Posture(identity, valid_until)


def _cn(result: PostureResult | None) -> str | None:
    if result is None:
        return None
    return result.certificate_cn if result.certificate_cn is not None else ""
