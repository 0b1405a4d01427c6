"""The proof worker: signatures checked in a child process, batched, and never passed unchecked
when the child is gone."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
from collections.abc import AsyncIterator

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from certs.proof import PROOF_FAILED, proof_message, sign_proof
from proxy.services.proof_worker import Item, ProofWorker, verify_items
from tests.support.devices import make_lab
from tests.support.server import Gateway


def _der(key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _item(key: ec.EllipticCurvePrivateKey, rule: str = "rule-1", *, forged: bool = False) -> Item:
    message = proof_message(nonce=b"n" * 32, device_id="device-1", rule_id=rule)
    signed = proof_message(nonce=b"n" * 32, device_id="device-1", rule_id="other") if forged else message
    return _der(key), message, sign_proof(key, signed)


@pytest.fixture
async def worker() -> AsyncIterator[ProofWorker]:
    worker = ProofWorker()
    yield worker
    await worker.close()


async def test_the_child_verifies_and_refuses(worker: ProofWorker) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    ed_key = ed25519.Ed25519PrivateKey.generate()
    items = [
        _item(key),
        _item(key, forged=True),
        (_der(ed_key), b"m", ed_key.sign(b"m")),
        (b"not a key", b"m", b"s"),
    ]
    answers = await worker.verify(items)
    assert answers[0] is None and answers[1] == PROOF_FAILED
    assert answers[2] is not None and "Ed25519" in answers[2]
    assert answers[3] is not None and answers[3].startswith(
        "proof of possession failed: the certificate's key cannot be read"
    )
    assert answers == verify_items(items)  # the same answers as in this process
    assert worker.batches == 1


async def test_concurrent_reports_share_round_trips(worker: ProofWorker) -> None:
    keys = [ec.generate_private_key(ec.SECP256R1()) for _ in range(20)]
    answers = await asyncio.gather(*(worker.verify([_item(k), _item(k, forged=True)]) for k in keys))
    assert answers == [[None, PROOF_FAILED]] * 20
    assert worker.batches < 20


async def test_a_dead_child_means_verifying_here(
    worker: ProofWorker, caplog: pytest.LogCaptureFixture
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    assert await worker.verify([_item(key)]) == [None]
    assert worker._process is not None
    worker._process.kill()
    await worker._process.wait()
    with caplog.at_level(logging.ERROR, logger="proxy.services.proof_worker"):
        assert await worker.verify([_item(key), _item(key, forged=True)]) == [None, PROOF_FAILED]
        assert await worker.verify([_item(key, forged=True)]) == [PROOF_FAILED]
    (record,) = caplog.records
    assert "verifying proofs in the gateway's process from now on" in record.getMessage()


async def test_device_service_with_the_worker_verifies_reports(gateway: Gateway) -> None:
    lab = make_lab(gateway, proof_worker=True)
    try:
        device, _ = lab.enroll()
        good = await lab.passing(device, *lab.ca.issue(lab.now))
        cert, key = lab.ca.issue(lab.now)
        forged = await lab.passing(device, cert, key)
        other = ec.generate_private_key(ec.SECP256R1())
        forged = dataclasses.replace(forged, signature=(await lab.passing(device, cert, other)).signature)
        (passed,) = await lab.service.submit(device, [good], "h")
        assert (passed.success, passed.verified) == (True, True)
        (failed,) = await lab.service.submit(device, [forged], "h")
        assert (failed.success, failed.verified, failed.reason) == (False, False, PROOF_FAILED)
        assert lab.service.proofs is not None and lab.service.proofs.batches == 2
    finally:
        await lab.service.aclose()


async def test_a_child_that_does_not_answer_is_stopped(
    worker: ProofWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    assert await worker.verify([_item(key)]) == [None]
    process = worker._process
    assert process is not None
    process.send_signal(signal.SIGSTOP)  # alive, but silent
    monkeypatch.setattr("proxy.services.proof_worker.ANSWER_TIMEOUT", 0.5)
    assert await worker.verify([_item(key, forged=True), _item(key)]) == [PROOF_FAILED, None]
    assert await asyncio.wait_for(process.wait(), 5) == -signal.SIGKILL
