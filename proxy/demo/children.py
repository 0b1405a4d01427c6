"""The lab's child processes: each in a session of its own (a Ctrl-C in the terminal reaches only
the demo, which stops them in order), its output in a log file, stopped with SIGTERM and killed
with its whole process group when it does not stop in time. Short commands run with a time limit."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

STOP_TIMEOUT = 5.0
COMMAND_TIMEOUT = 60.0


class ChildError(Exception):
    """A child failed; the message names it and quotes the end of its output."""


def gateway(*args: str) -> list[str]:
    """The ``gateway`` command of this very installation (whatever is on PATH)."""
    return [sys.executable, "-m", "proxy.cli.main", *args]


def environment(*, home: Path, tmp: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without proxies, gateway settings or config homes of the user,
    with ``HOME`` and ``TMPDIR`` inside the demo directory: a child writes nothing outside it."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.lower().endswith("_proxy") and not k.startswith(("GATEWAY_", "XDG_"))
    }
    env.update(HOME=str(home), TMPDIR=str(tmp), PYTHONDONTWRITEBYTECODE="1")
    env.update(extra or {})
    return env


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, lines: int = 15) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM, then SIGKILL to its process group after ``timeout``; its exit status, None if killed."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                logger.warning("%s (pid %d) did not stop within %.0f s: killed", self.name, self.pid, timeout)
                kill_group(self.pid)
                self.proc.wait(timeout)
                return None
        kill_group(self.pid)  # whatever it started and left behind
        return self.proc.returncode


def start(name: str, argv: Sequence[str], *, env: Mapping[str, str], logs: Path) -> Child:
    log = logs / f"{name}.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            env=dict(env), start_new_session=True,
        )  # fmt: skip
    logger.info("started %s (pid %d): %s", name, proc.pid, " ".join(argv))
    return Child(name, proc, log)


def run(
    argv: Sequence[str], *, env: Mapping[str, str], timeout: float = COMMAND_TIMEOUT, ok: Sequence[int] = (0,)
) -> subprocess.CompletedProcess[str]:
    """A short command; ChildError when it exits otherwise than ``ok`` or outlives ``timeout``."""
    try:
        done = subprocess.run(
            list(argv), env=dict(env), capture_output=True, text=True, timeout=timeout,
            stdin=subprocess.DEVNULL, start_new_session=True, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        raise ChildError(f"{_short(argv)} did not finish within {timeout:.0f} s") from None
    except OSError as e:
        raise ChildError(f"{_short(argv)}: {e.strerror or e}") from None
    if done.returncode not in ok:
        output = (done.stderr.strip() or done.stdout.strip()).splitlines()[-5:]
        raise ChildError(f"{_short(argv)} exited {done.returncode}: " + " / ".join(output))
    return done


def kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def kill_leftovers(pids: Sequence[int], marker: str) -> list[int]:
    """Kill the process groups of ``pids`` still running a command line that names ``marker``
    (the demo directory): what a demo killed with SIGKILL left behind."""
    killed = []
    for pid in pids:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline:
            kill_group(pid)
            killed.append(pid)
    return killed


def _short(argv: Sequence[str]) -> str:
    if list(argv[:3]) == gateway()[:3]:
        return "gateway " + " ".join(argv[3:5])
    return " ".join(Path(argv[0]).name.split()[:1] + list(argv[1:2]))
