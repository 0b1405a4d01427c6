"""The server verifies every pass itself: each bad report is stored as failed with the reason and
logged, or refused (400) and logged; never a pass."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import secrets
from collections.abc import Awaitable, Callable
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from certs.proof import PROOF_FAILED, proof_message, sign_proof
from proxy.services.device_errors import Unauthenticated
from proxy.services.errors import InvalidInput
from proxy.services.posture_verify import NO_PROOF, Report
from proxy.store import LogQuery, Outcome
from tests.support.devices import HOSTNAME, DeviceCa, Lab, pem, rule_body

BadReport = Callable[[Lab], Awaitable[Report]]


async def _other_ca(lab: Lab) -> Report:
    other = DeviceCa.generate(lab.now, name="Device CA")  # same name, another key
    device = _device(lab)
    return await lab.passing(device, *other.issue(lab.now))


async def _expired(lab: Lab) -> Report:
    cert, key = lab.ca.issue(lab.now, valid_from=timedelta(days=-30), valid_for=timedelta(days=29))
    return await lab.passing(_device(lab), cert, key)


async def _not_yet_valid(lab: Lab) -> Report:
    cert, key = lab.ca.issue(lab.now, valid_from=timedelta(days=1))
    return await lab.passing(_device(lab), cert, key)


async def _wrong_cn(lab: Lab) -> Report:
    return await lab.passing(_device(lab), *lab.ca.issue(lab.now, cn="someone-else.corp"))


async def _missing_eku(lab: Lab) -> Report:
    return await lab.passing(_device(lab), *lab.ca.issue(lab.now, ekus=("emailProtection",)))


async def _key_mismatch(lab: Lab) -> Report:
    cert, _ = lab.ca.issue(lab.now)
    return await lab.passing(_device(lab), cert, ec.generate_private_key(ec.SECP256R1()))


async def _signing_ca_itself(lab: Lab) -> Report:
    return await lab.passing(_device(lab), lab.ca.certificate, lab.ca.key)


async def _stale_nonce(lab: Lab) -> Report:
    device = _device(lab)
    report = await lab.passing(device, *lab.ca.issue(lab.now))
    lab.gateway.clock.advance(minutes=2)
    return report


async def _replayed_nonce(lab: Lab) -> Report:
    device = _device(lab)
    report = await lab.passing(device, *lab.ca.issue(lab.now))
    (first,) = await lab.service.submit(device, [report], "127.0.0.1")
    assert first.success
    return report


async def _nonce_of_another_device(lab: Lab) -> Report:
    other, _ = lab.enroll(hostname="other-host")
    nonce = (await lab.service.issue_nonce(other, "127.0.0.1")).nonce
    return await lab.passing(_device(lab), *lab.ca.issue(lab.now), nonce=nonce)


async def _nonce_never_issued(lab: Lab) -> Report:
    return await lab.passing(_device(lab), *lab.ca.issue(lab.now), nonce=secrets.token_bytes(32))


async def _proof_for_another_rule(lab: Lab) -> Report:
    device = _device(lab)
    cert, key = lab.ca.issue(lab.now)
    report = await lab.passing(device, cert, key)
    nonce = base64.b64decode(report.nonce or "")
    forged = sign_proof(key, proof_message(nonce=nonce, device_id=device.id, rule_id="other-rule"))
    return dataclasses.replace(report, signature=base64.b64encode(forged).decode())


async def _proof_for_another_device(lab: Lab) -> Report:
    device = _device(lab)
    cert, key = lab.ca.issue(lab.now)
    report = await lab.passing(device, cert, key)
    nonce = base64.b64decode(report.nonce or "")
    forged = sign_proof(key, proof_message(nonce=nonce, device_id="someone", rule_id=lab.rule_id))
    return dataclasses.replace(report, signature=base64.b64encode(forged).decode())


async def _no_proof(lab: Lab) -> Report:
    report = await lab.passing(_device(lab), *lab.ca.issue(lab.now))
    return dataclasses.replace(report, signature=None, reason="no key found")


async def _nonce_not_base64(lab: Lab) -> Report:
    report = await lab.passing(_device(lab), *lab.ca.issue(lab.now))
    return dataclasses.replace(report, nonce="%%% not base64 %%%")


async def _signature_not_base64(lab: Lab) -> Report:
    report = await lab.passing(_device(lab), *lab.ca.issue(lab.now))
    return dataclasses.replace(report, signature="***")


async def _garbage_certificate(lab: Lab) -> Report:
    report = await lab.passing(_device(lab), *lab.ca.issue(lab.now))
    return dataclasses.replace(
        report, certificate="-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    )


async def _two_certificates(lab: Lab) -> Report:
    cert, key = lab.ca.issue(lab.now)
    report = await lab.passing(_device(lab), cert, key)
    return dataclasses.replace(report, certificate=pem(cert) + pem(lab.ca.certificate))


def _device(lab: Lab):  # type: ignore[no-untyped-def]
    """The device under test: the first one enrolled (enrolled on first use)."""
    devices = [d for d in lab.gateway.store.devices.list(lab.account) if d.hostname == HOSTNAME]
    return devices[0] if devices else lab.enroll()[0]


CASES = [
    (_other_ca, "certificate: names CN=Device CA as its issuer, but its signature does not verify"),
    (_expired, "certificate: expired on"),
    (_not_yet_valid, "certificate: not yet valid"),
    (_wrong_cn, "certificate: CN 'someone-else.corp' does not match 'laptop-7.corp'"),
    (_missing_eku, "certificate: missing extended key usage clientAuth (it has emailProtection)"),
    (_key_mismatch, PROOF_FAILED),
    (_signing_ca_itself, "certificate: is the signing certificate CN=Device CA itself"),
    (_stale_nonce, "nonce is stale: it expired at 2026-03-01T12:02:00Z"),
    (_replayed_nonce, "nonce was already used (a replayed report)"),
    (_nonce_of_another_device, "nonce was not issued to this device by this server (another device's"),
    (_nonce_never_issued, "nonce was not issued to this device by this server"),
    (_proof_for_another_rule, PROOF_FAILED),
    (_proof_for_another_device, PROOF_FAILED),
    (_no_proof, f"{NO_PROOF} (the agent said: no key found)"),
    (_nonce_not_base64, "nonce is not base64"),
    (_signature_not_base64, "signature is not base64"),
    (_garbage_certificate, "certificate: could not parse the certificate PEM"),
    (_two_certificates, "certificate: expected one PEM certificate, got 2"),
]


@pytest.mark.parametrize(("make", "reason"), CASES, ids=[c[0].__name__.strip("_") for c in CASES])
async def test_bad_pass_is_stored_as_failed_with_the_reason(lab: Lab, make: BadReport, reason: str) -> None:
    report = await make(lab)
    device = _device(lab)
    (stored,) = await lab.service.submit(device, [report], "127.0.0.1")
    assert not stored.success and not stored.verified
    assert stored.reason.startswith(reason), stored.reason
    identity = lab.service.identity(device.id)
    assert lab.rule_id not in identity.posture_passed and identity.posture_failed == (lab.rule_id,)
    assert identity.verified_certificate_cn is None
    latest, _ = lab.service.logs(LogQuery(lab.account, device_id=device.id), offset=0, limit=1)
    assert latest[0].outcome is Outcome.FAILED and not latest[0].verified
    assert latest[0].reason == stored.reason and latest[0].rule_id == lab.rule_id


async def test_template_the_device_cannot_fill_fails(lab: Lab) -> None:
    device, _ = lab.enroll(hostname="", name="no-hostname")
    lab.service.create_rule(lab.account, rule_body(lab.ca_id))
    (stored,) = await lab.service.submit(device, [await lab.passing(device, *lab.ca.issue(lab.now))], "h")
    assert not stored.success and "the device reported no host name" in stored.reason


async def test_rule_not_assigned_is_refused_and_logged(lab: Lab) -> None:
    mac_only = lab.service.create_rule(lab.account, rule_body(lab.ca_id, match=[{"platform": "mac"}]))
    device, _ = lab.enroll()
    good = Report(rule_id=lab.rule_id, success=False, reason="x")
    for rule_id, message in (
        (mac_only.id, "the rule matches mac; this device is linux"),
        ("no-such-rule", "the account has no posture rule with this id"),
    ):
        bad = Report(rule_id=rule_id, success=True)
        with pytest.raises(
            InvalidInput,
            match=f"results\\[1\\].rule_id: '{rule_id}': rule not assigned to this device: {message}",
        ):
            await lab.service.submit(device, [good, bad], "h")
    entries, total = lab.service.logs(LogQuery(lab.account, device_id=device.id), offset=0, limit=10)
    assert total == 2 and {e.outcome for e in entries} == {Outcome.REFUSED}
    assert entries[0].rule_id == "no-such-rule" and entries[1].rule_name == mac_only.name
    assert lab.gateway.store.posture_results.for_device(device.id) == []  # nothing stored


async def test_a_rule_twice_in_one_report_is_refused(lab: Lab) -> None:
    device, _ = lab.enroll()
    report = Report(rule_id=lab.rule_id, success=False, reason="x")
    with pytest.raises(InvalidInput, match="reported twice in one request"):
        await lab.service.submit(device, [report, report], "h")


async def test_racing_reports_with_one_nonce_pass_once(lab: Lab) -> None:
    device, _ = lab.enroll()
    report = await lab.passing(device, *lab.ca.issue(lab.now))
    first, second = await asyncio.gather(
        lab.service.submit(device, [report], "h"), lab.service.submit(device, [report], "h")
    )
    outcomes = sorted([first[0].success, second[0].success])
    assert outcomes == [False, True]
    assert "already used" in (first[0] if not first[0].success else second[0]).reason


async def test_one_nonce_may_prove_several_rules_of_one_report(lab: Lab) -> None:
    second = lab.service.create_rule(lab.account, rule_body(lab.ca_id, name="second"))
    device, _ = lab.enroll()
    cert, key = lab.ca.issue(lab.now)
    nonce = (await lab.service.issue_nonce(device, "h")).nonce
    reports = [await lab.passing(device, cert, key, rule_id=r, nonce=nonce) for r in (lab.rule_id, second.id)]
    stored = await lab.service.submit(device, reports, "h")
    assert [s.success for s in stored] == [True, True]
    again = await lab.service.submit(device, [reports[0]], "h")
    assert not again[0].success and "already used" in again[0].reason


async def test_pass_stores_what_was_verified(lab: Lab) -> None:
    device, _ = lab.enroll()
    cert, key = lab.ca.issue(lab.now)
    await lab.service.submit(device, [await lab.passing(device, cert, key)], "10.2.2.2")
    (result,) = lab.gateway.store.posture_results.for_device(device.id)
    assert result.success and result.verified and result.certificate_cn == "laptop-7.corp"
    assert len(result.certificate_fingerprint) == 95 and result.expires_at == lab.now + timedelta(minutes=10)
    (entry,), _ = lab.service.logs(LogQuery(lab.account), offset=0, limit=1)
    assert entry.outcome is Outcome.PASSED and entry.verified
    assert entry.certificate_fingerprint == result.certificate_fingerprint
    assert lab.gateway.store.devices.get(device.id).ip == "10.2.2.2"  # type: ignore[union-attr]


async def test_redeemed_nonces_are_kept_until_they_expire(lab: Lab) -> None:
    device, _ = lab.enroll()
    cert, key = lab.ca.issue(lab.now)
    first = await lab.passing(device, cert, key)
    await lab.service.submit(device, [first], "h")
    redeemed = base64.b64decode(first.nonce or "")
    assert lab.gateway.store.nonces.get(redeemed) is not None
    lab.gateway.clock.advance(minutes=5)
    await lab.service.submit(device, [await lab.passing(device, cert, key)], "h")
    assert lab.gateway.store.nonces.get(redeemed) is None  # expired: refused as stale anyway
    (again,) = await lab.service.submit(device, [first], "h")
    assert again.reason.startswith("nonce is stale")


async def test_nonces_need_no_write_and_expire_in_two_minutes(lab: Lab) -> None:
    device, _ = lab.enroll()
    await lab.service.issue_nonce(device, "h")  # the first sighting is written
    commits = lab.service.writer.commits
    issued = await lab.service.issue_nonce(device, "h")
    assert lab.service.writer.commits == commits
    assert len(issued.nonce) == 32 and issued.expires_at == lab.now + timedelta(minutes=2)
    assert len({(await lab.service.issue_nonce(device, "h")).nonce for _ in range(50)}) == 50


async def test_a_certificate_checked_before_is_checked_for_validity_again(lab: Lab) -> None:
    device, _ = lab.enroll()
    cert, key = lab.ca.issue(lab.now, valid_from=timedelta(days=-1), valid_for=timedelta(days=1, minutes=20))
    (first,) = await lab.service.submit(device, [await lab.passing(device, cert, key)], "h")
    (second,) = await lab.service.submit(device, [await lab.passing(device, cert, key)], "h")
    assert first.success and second.success  # the second one from the cache
    lab.gateway.clock.advance(minutes=20)
    (later,) = await lab.service.submit(device, [await lab.passing(device, cert, key)], "h")
    assert not later.success and later.reason.startswith("certificate: expired on")


async def test_a_passing_certificate_does_not_pass_for_another_device(lab: Lab) -> None:
    device, _ = lab.enroll()
    cert, key = lab.ca.issue(lab.now)
    (first,) = await lab.service.submit(device, [await lab.passing(device, cert, key)], "h")
    other, _ = lab.enroll(hostname="other")  # its CN template fills to other.corp
    (second,) = await lab.service.submit(other, [await lab.passing(other, cert, key)], "h")
    assert first.success and not second.success
    assert "CN 'laptop-7.corp' does not match 'other.corp'" in second.reason


async def test_a_device_deleted_while_reporting_is_refused_not_a_500(lab: Lab) -> None:
    device, _ = lab.enroll()
    report = await lab.passing(device, *lab.ca.issue(lab.now))
    lab.service.delete_device(lab.account, device.id)
    with pytest.raises(Unauthenticated, match="was deleted: enroll again"):
        await lab.service.submit(device, [report], "h")
