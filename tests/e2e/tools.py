"""External programs the e2e suite drives: finding them, running them with a time limit,
stopping the long-running ones, and free loopback ports."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.support.wait import wait_until

REPO = Path(__file__).resolve().parents[2]
INSTALL_HINT = "run scripts/install-test-deps (as root) to install the e2e test tools"


def require(name: str) -> str:
    """Path of a system program the tests need; FAIL (not skip) when it is missing."""
    found = shutil.which(name) or next(
        (str(p) for p in (Path("/usr/sbin") / name, Path("/usr/bin") / name) if p.exists()), None
    )
    if found is None:
        pytest.fail(f"{name!r} is not installed: {INSTALL_HINT}", pytrace=False)
    return found


def venv_program(name: str) -> str:
    """A console script installed next to the interpreter running the tests (.venv/bin/NAME)."""
    for candidate in (Path(sys.executable).parent / name, REPO / ".venv" / "bin" / name):
        if candidate.exists():
            return str(candidate)
    pytest.fail(f"{name!r} not found next to {sys.executable}: run scripts/bootstrap test", pytrace=False)


def run(
    argv: Sequence[str],
    *,
    timeout: float = 30,
    env: dict[str, str] | None = None,
    input: bytes | None = None,
    check: bool = False,
) -> subprocess.CompletedProcess[bytes]:
    """Run a short-lived program; its own process group is killed if it outlives `timeout`."""
    proc = subprocess.Popen(
        list(argv),
        stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        out, err = proc.communicate()
        pytest.fail(
            f"{argv[0]} did not finish within {timeout} s\n--- stderr tail ---\n{tail(err)}",
            pytrace=False,
        )
    result = subprocess.CompletedProcess(list(argv), proc.returncode, out, err)
    if check and result.returncode != 0:
        pytest.fail(
            f"{' '.join(argv)} exited {result.returncode}\n--- stderr tail ---\n{tail(err)}",
            pytrace=False,
        )
    return result


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process group that `proc` leads (it was started with start_new_session)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def stop(proc: subprocess.Popen[bytes], *, sig: int = signal.SIGTERM, timeout: float = 15) -> int | None:
    """Send `sig`; return the exit code, or None after a SIGKILL when it did not stop in time."""
    if proc.poll() is not None:
        return proc.returncode
    proc.send_signal(sig)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        proc.wait(10)
        return None


def tail(data: bytes | str | Path, lines: int = 40) -> str:
    if isinstance(data, Path):
        data = data.read_bytes() if data.exists() else b""
    text = data.decode(errors="replace") if isinstance(data, bytes) else data
    return "\n".join(text.splitlines()[-lines:])


_handed_out: set[int] = set()


def free_port() -> int:
    """A loopback TCP port nothing listens on, never the same one twice in a session."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise RuntimeError("no free loopback port after 50 tries")


def wait_for_port(port: int, *, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> bool:
    """True once something accepts on 127.0.0.1:port; False on timeout or when `proc` exits."""

    def accepts() -> str:
        if proc is not None and proc.poll() is not None:
            return "exited"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return "accepts"
        except OSError:
            return ""

    return wait_until(accepts, timeout) == "accepts"
