"""Parsing and writing of large texts (policy-file YAML, large JSON bodies) in a process of its own.

A thread takes the event loop's work off the loop but not off the interpreter: the YAML of 1,000
rules is ~2.5 s of pure-Python parsing that the admin thread runs in 1 ms turns against the loop
(every proxied request waits for the GIL once per turn), and its ~100,000 short-lived objects
trigger garbage collections that stop the whole process (a full one took 150-780 ms with the
proxy's heap). A :class:`ParseWorker` hands such work to ``python -m proxy.services.parse_worker``,
a long-lived child, and waits for the answer with the GIL released: the gateway's process only
pickles the input and unpickles the result (tens of milliseconds for a 1,000-rule PolicySet).

A request is ``(function, args)``: a module-level function (pickled by its name, so the child
imports it) and its arguments; the answer is ``("ok", value)``, ``("raise", exception)`` (the
function's exception) or ``("fallback", why)``; when the value or the exception does not pickle
there or unpickle here, the caller runs the function itself. Only pure functions go there:
nothing the child computes touches the store or the engines, which stay in the gateway.

Frames on the child's stdin and stdout: a 4-byte big-endian length, then a pickle. Only the
gateway and its own child write them. Calls are made from worker threads (the admin thread),
one at a time. If the child cannot start, dies or answers garbage, the call runs in the calling
thread instead (same result, the old cost), the failure is logged, and the next call starts a
new child; after ``MAX_FAILURES`` failures the worker stays in the thread for good. A call that
overruns its ``timeout`` stops the child and raises :class:`WorkerTimeout` (its caller has given
up on it by then; the next call starts a new child).
"""

from __future__ import annotations

import logging
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable
from typing import IO, Any, BinaryIO, Final

logger = logging.getLogger(__name__)

_LENGTH: Final = struct.Struct(">I")
MAX_FAILURES: Final = 3
MAX_FRAME: Final = 256 * 1024 * 1024


_in_child = False


def in_child() -> bool:
    """True in the parse worker's process (a function may choose a faster way there)."""
    return _in_child


class WorkerTimeout(Exception):
    """The child did not answer in time (it was stopped)."""


class ParseWorker:
    """``worker.call(function, *args, timeout=...)``: ``function(*args)`` computed in the child."""

    def __init__(self, module: str = __name__) -> None:
        self._module = module
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._failures = 0
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self.calls = 0  # answered by the child (tests, benchmarks)
        self.fallbacks = 0  # run in the calling thread instead

    @property
    def broken(self) -> bool:
        return self._failures >= MAX_FAILURES

    def call[T](self, function: Callable[..., T], *args: Any, timeout: float) -> T:
        """``function(*args)``, in the child if it can be; raises what the function raises,
        ``WorkerTimeout`` past ``timeout`` seconds (``Offload.run_in_child`` makes it a 503)."""
        if self.broken:
            return self._here(function, args)
        try:
            request = pickle.dumps((function, args), protocol=pickle.HIGHEST_PROTOCOL)
        except (pickle.PicklingError, TypeError, AttributeError) as e:
            logger.debug(
                "parse worker: %s not sent to the child (%s)", getattr(function, "__name__", function), e
            )
            return self._here(function, args)
        with self._lock:
            try:
                payload = self._round_trip(request, timeout)
            except WorkerTimeout:
                self._stop()
                raise
            except (OSError, EOFError, ValueError) as e:
                self._failed(e)
                return self._here(function, args)
        try:
            kind, value = pickle.loads(payload)
        except Exception as e:  # noqa: BLE001 -- a value that does not unpickle here: compute it here
            logger.debug("parse worker: the answer does not unpickle (%s: %s)", type(e).__name__, e)
            return self._here(function, args)
        if kind == "ok":
            self.calls += 1
            return value  # type: ignore[no-any-return]
        if kind == "raise" and isinstance(value, Exception):
            self.calls += 1
            raise value
        return self._here(function, args)  # "fallback": what it made does not pickle

    def close(self) -> None:
        """Stop the child (it exits when its stdin closes); a later call starts a new one."""
        with self._lock:
            self._stop()

    def _here[T](self, function: Callable[..., T], args: tuple[Any, ...]) -> T:
        self.fallbacks += 1
        return function(*args)

    def _round_trip(self, request: bytes, timeout: float) -> bytes:
        deadline = time.monotonic() + timeout
        process = self._child()
        assert process.stdin is not None and process.stdout is not None
        process.stdin.write(_LENGTH.pack(len(request)) + request)
        process.stdin.flush()
        (length,) = _LENGTH.unpack(_read_exactly(process.stdout, _LENGTH.size, deadline))
        if length > MAX_FRAME:
            raise ValueError(f"the parse worker sent a frame of {length} bytes")
        return _read_exactly(process.stdout, length, deadline)

    def _child(self) -> subprocess.Popen[bytes]:
        if self._process is not None and self._process.poll() is None:
            return self._process
        if self._process is not None:
            status = self._process.returncode
            self._stop()
            raise EOFError(f"the parse worker exited with status {status}")
        self._process = subprocess.Popen(
            [sys.executable, "-m", self._module],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0, close_fds=True,
        )  # fmt: skip
        # a worker dropped without close() (a service nobody closed) still stops its child
        self._finalizer = weakref.finalize(self, _stop_process, self._process)
        logger.info("parse worker started (pid %d)", self._process.pid)
        return self._process

    def _stop(self) -> None:
        process, self._process = self._process, None
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        if process is not None:
            _stop_process(process)

    def _failed(self, error: BaseException) -> None:
        self._stop()
        self._failures += 1
        how = "in the admin thread from now on" if self.broken else "this call in the admin thread"
        logger.error("parse worker failed (%s: %s): parsing %s", type(error).__name__, error, how)


def _stop_process(process: subprocess.Popen[bytes]) -> None:
    """Close the child's stdin (it exits when it ends), wait for it, close its stdout."""
    assert process.stdin is not None and process.stdout is not None
    try:
        process.stdin.close()
        process.wait(timeout=2)
    except (OSError, subprocess.TimeoutExpired):
        process.kill()
        process.wait()
    process.stdout.close()


def _read_exactly(stream: IO[bytes], size: int, deadline: float) -> bytes:
    """``size`` bytes from the pipe, WorkerTimeout past ``deadline``, EOFError if it closes."""
    chunks: list[bytes] = []
    left = size
    fd = stream.fileno()
    while left:
        wait = deadline - time.monotonic()
        if wait <= 0 or not select.select([fd], [], [], wait)[0]:
            raise WorkerTimeout("the parse worker did not answer in time (it was stopped)")
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            raise EOFError("the parse worker closed its output")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _answer(request: bytes) -> bytes:
    function, args = pickle.loads(request)
    try:
        answer: tuple[str, Any] = ("ok", function(*args))
    except Exception as e:  # noqa: BLE001 -- the function's own error, for the caller to raise
        answer = ("raise", e)
    try:
        payload = pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as e:  # noqa: BLE001 -- the caller computes it itself
        payload = pickle.dumps(("fallback", f"{type(e).__name__}: {e}"), protocol=pickle.HIGHEST_PROTOCOL)
    return payload


def serve(source: BinaryIO, sink: BinaryIO) -> None:
    """The child: answer requests until ``source`` ends."""
    global _in_child
    _in_child = True
    while True:
        head = source.read(_LENGTH.size)
        if len(head) < _LENGTH.size:
            return
        (length,) = _LENGTH.unpack(head)
        payload = _answer(source.read(length))
        sink.write(_LENGTH.pack(len(payload)) + payload)
        sink.flush()


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C is the gateway's to handle: it closes stdin
    frames = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    sys.stdout = sys.stderr  # whatever the functions print must not mix with the frames
    os.dup2(sys.stderr.fileno(), 1)
    serve(sys.stdin.buffer, frames)
