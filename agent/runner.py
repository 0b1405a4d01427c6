"""Running the platform's own tools (``security`` on macOS, PowerShell on Windows): one seam.

Every command the macOS and Windows stores run is a :class:`Command`: the argument vector, what
an administrator reads in a dry run (``display``), whether it changes the system (``changes``),
and its standard input. A :class:`Runner` runs it and gives back a :class:`Completed`; tests feed
recorded outputs through the same interface, so the parsing and the decisions they check are the
ones a real Mac or Windows machine goes through.

- :class:`SubprocessRunner` runs the command without a terminal and with a timeout; a program
  that is not installed raises :class:`ToolMissing`, one that cannot be started or does not
  finish raises :class:`ToolFailed` (both carry a message to show);
- :class:`DryRunner` runs what only reads and answers what changes with a success it does not
  perform, keeping those commands, in order, for ``sync-ca --dry-run`` to print.
"""

from __future__ import annotations

import logging
import subprocess
from dataclasses import dataclass, field
from typing import Protocol

logger = logging.getLogger(__name__)

TOOL_TIMEOUT = 60.0


@dataclass(frozen=True)
class Command:
    argv: tuple[str, ...]
    display: str = ""  # what a person reviews; the argv joined when empty
    changes: bool = False  # installs or removes something (not run by a dry run)
    stdin: bytes = b""

    def shown(self) -> str:
        return self.display or " ".join(_quote(a) for a in self.argv)


@dataclass(frozen=True)
class Completed:
    returncode: int
    stdout: bytes = b""
    stderr: bytes = b""

    def text(self) -> str:
        """Standard output as text (UTF-8; a byte that is not is replaced, never fatal)."""
        return self.stdout.decode("utf-8", errors="replace")

    def last_error_line(self) -> str:
        """The last non-blank line of standard error (where the tools put the cause), else the
        exit status."""
        lines = [line.strip() for line in self.stderr.decode("utf-8", errors="replace").splitlines()]
        lines = [line for line in lines if line]
        return lines[-1] if lines else f"exit status {self.returncode}"


class ToolMissing(Exception):
    """The program is not on this system; the message names it."""


class ToolFailed(Exception):
    """The program could not be started or did not finish; the message says why."""


class Runner(Protocol):
    def run(self, command: Command) -> Completed: ...


class SubprocessRunner:
    def __init__(self, timeout: float = TOOL_TIMEOUT) -> None:
        self.timeout = timeout

    def run(self, command: Command) -> Completed:
        logger.debug("running %s", command.argv[0])  # never the whole line: it may carry a password
        try:
            done = subprocess.run(
                list(command.argv),
                input=command.stdin,
                capture_output=True,
                timeout=self.timeout,
                check=False,
            )
        except FileNotFoundError:
            raise ToolMissing(f"{command.argv[0]} is not installed on this system") from None
        except subprocess.TimeoutExpired:
            raise ToolFailed(f"{command.argv[0]} did not finish within {self.timeout:g} s") from None
        except OSError as e:
            raise ToolFailed(f"cannot run {command.argv[0]}: {e.strerror or e}") from None
        return Completed(done.returncode, done.stdout, done.stderr)


@dataclass
class DryRunner:
    """Reads through ``runner``; every command that changes something is kept, not run."""

    runner: Runner
    planned: list[Command] = field(default_factory=list)

    def run(self, command: Command) -> Completed:
        if command.changes:
            self.planned.append(command)
            return Completed(0)
        return self.runner.run(command)


def _quote(argument: str) -> str:
    if argument and all(c.isalnum() or c in "-_./:=@,+%\\" for c in argument):
        return argument
    return '"' + argument.replace('"', '\\"') + '"'
