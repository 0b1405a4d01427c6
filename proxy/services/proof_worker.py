"""Proof-of-possession signatures verified in a process of their own, off the event loop.

Checking one ECDSA P-256 signature takes ~100 µs and ``cryptography`` holds the GIL meanwhile, so
in the gateway's process every proof is time the proxy and the admin API cannot use. A
:class:`ProofWorker` runs ``python -m proxy.services.proof_worker`` as a child and hands it the
proofs of every report that arrives while the previous batch is being checked: one round trip
per batch, however many devices report at once. The child knows nothing but
``certs.proof.verify_proof_with``: it gets (public key DER, message, signature) triples and
answers, for each, None or the reason it failed.

Frames on the child's stdin and stdout: a 4-byte big-endian length, then a pickle of a list
(a batch of triples one way, of answers the other). Only the gateway and its own child write
them. If the child dies, cannot start or does not answer a batch within 10 s, the worker logs it
once and verifies in the gateway's process from then on: a proof is never passed unchecked.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import signal
import struct
import sys
from collections.abc import Sequence
from typing import BinaryIO, Final

from cryptography.hazmat.primitives import serialization

from certs.errors import CertError
from certs.keys import PublicKey, check_public_key
from certs.proof import verify_proof_with

logger = logging.getLogger(__name__)

Item = tuple[bytes, bytes, bytes]  # SubjectPublicKeyInfo DER, message, signature
_LENGTH: Final = struct.Struct(">I")
_MAX_KEYS: Final = 10_000
ANSWER_TIMEOUT: Final = 10.0  # seconds for a batch; a worker that takes longer is stopped


def verify_items(items: Sequence[Item], keys: dict[bytes, PublicKey] | None = None) -> list[str | None]:
    """For each triple: None when the signature verifies, else why not. ``keys``: loaded keys
    by DER, kept between calls."""
    keys = {} if keys is None else keys
    answers: list[str | None] = []
    for der, message, signature in items:
        try:
            key = keys.get(der)
            if key is None:
                key = check_public_key(serialization.load_der_public_key(der))
                if len(keys) >= _MAX_KEYS:
                    keys.clear()
                keys[der] = key
            verify_proof_with(key, message, signature)
            answers.append(None)
        except CertError as e:
            answers.append(str(e))
        except (ValueError, TypeError) as e:  # a key DER the parent should never send
            answers.append(f"proof of possession failed: the certificate's key cannot be read ({e})")
    return answers


class ProofWorker:
    """Batches proofs to one child process; :meth:`verify` answers as :func:`verify_items`."""

    def __init__(self) -> None:
        self._process: asyncio.subprocess.Process | None = None
        self._pending: list[tuple[list[Item], asyncio.Future[list[str | None]]]] = []
        self._drainer: asyncio.Task[None] | None = None  # held, so the task is not collected
        self._broken = False
        self._keys: dict[bytes, PublicKey] = {}  # for verifying here when the child is gone
        self.batches = 0  # round trips to the child (for the benchmark and tests)

    async def verify(self, items: list[Item]) -> list[str | None]:
        if not items:
            return []
        if self._broken:
            return verify_items(items, self._keys)
        future: asyncio.Future[list[str | None]] = asyncio.get_running_loop().create_future()
        self._pending.append((items, future))
        if self._drainer is None:
            self._drainer = asyncio.get_running_loop().create_task(self._drain())
        return await future

    async def close(self) -> None:
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        assert process.stdin is not None
        process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), timeout=5)
        except TimeoutError:
            process.kill()
            await process.wait()

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                items = [item for items, _ in batch for item in items]
                try:
                    answers = await self._round_trip(items)
                except Exception as e:  # noqa: BLE001 -- whatever broke, the proofs are checked here
                    self._fail(e)
                    answers = verify_items(items, self._keys)
                at = 0
                for own, future in batch:
                    if not future.done():
                        future.set_result(answers[at : at + len(own)])
                    at += len(own)
        finally:
            self._drainer = None

    async def _round_trip(self, items: list[Item]) -> list[str | None]:
        process = await self._child()
        assert process.stdin is not None and process.stdout is not None
        payload = pickle.dumps(items, protocol=pickle.HIGHEST_PROTOCOL)
        process.stdin.write(_LENGTH.pack(len(payload)) + payload)
        await process.stdin.drain()
        try:
            async with asyncio.timeout(ANSWER_TIMEOUT):
                (length,) = _LENGTH.unpack(await process.stdout.readexactly(_LENGTH.size))
                answers = pickle.loads(await process.stdout.readexactly(length))
        except TimeoutError:
            process.kill()
            raise TimeoutError(f"no answer within {ANSWER_TIMEOUT:g} s (the worker was stopped)") from None
        if not isinstance(answers, list) or len(answers) != len(items):
            raise ValueError("the proof worker answered with something else than one answer per proof")
        self.batches += 1
        return answers

    async def _child(self) -> asyncio.subprocess.Process:
        if self._process is not None and self._process.returncode is None:
            return self._process
        if self._process is not None:
            raise EOFError(f"the proof worker exited with status {self._process.returncode}")
        self._process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "proxy.services.proof_worker",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        logger.info("proof worker started (pid %d)", self._process.pid)
        return self._process

    def _fail(self, error: BaseException) -> None:
        self._broken = True
        logger.error(
            "proof worker failed (%s: %s): verifying proofs in the gateway's process from now on",
            type(error).__name__, error,
        )  # fmt: skip


def serve(source: BinaryIO, sink: BinaryIO) -> None:
    """The child: answer batches until ``source`` ends."""
    keys: dict[bytes, PublicKey] = {}
    while True:
        head = source.read(_LENGTH.size)
        if len(head) < _LENGTH.size:
            return
        (length,) = _LENGTH.unpack(head)
        items = pickle.loads(source.read(length))
        payload = pickle.dumps(verify_items(items, keys), protocol=pickle.HIGHEST_PROTOCOL)
        sink.write(_LENGTH.pack(len(payload)) + payload)
        sink.flush()


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C is the gateway's to handle: it closes stdin
    serve(sys.stdin.buffer, sys.stdout.buffer)
