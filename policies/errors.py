"""The policy library's errors: one base class, and the expression error that points at the spot."""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)

# A rendered source line longer than this is cut to a window around the caret.
_MAX_SHOWN = 100


class PolicyError(Exception):
    """Base class of every error the policies library raises on bad input."""


class ExpressionError(PolicyError):
    """A rule expression that cannot be compiled: what is wrong, where, and what would be accepted.

    ``line`` and ``column`` are 1-based and count characters (not bytes) of ``source``;
    ``offset`` is the 0-based character offset of the same spot.
    """

    def __init__(
        self,
        message: str,
        *,
        source: str,
        offset: int,
        expected: tuple[str, ...] = (),
    ) -> None:
        offset = max(0, min(offset, len(source)))
        self.message = message
        self.source = source
        self.offset = offset
        self.line, self.column = position(source, offset)
        self.expected = expected
        super().__init__(str(self))

    def __str__(self) -> str:
        return f"line {self.line}, column {self.column}: {self.message}"

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild, (self.message, self.source, self.offset, self.expected))

    def source_line(self) -> str:
        """The line of ``source`` that holds the error, without its newline."""
        return self.source.split("\n")[self.line - 1]

    def render(self, path: str | None = None, *, origin: tuple[int, int] | None = None) -> str:
        """``path:L:C: message``, the source line, and a caret under the column.

        ``origin`` is the (line, column) where the expression starts inside ``path`` (for an
        expression embedded in a YAML file): positions are then reported in the file's terms.
        Without ``path`` the first line reads ``line L, column C: message``.
        """
        line, column = self.line, self.column
        if origin is not None:
            line = origin[0] + self.line - 1
            column = origin[1] + self.column - 1 if self.line == 1 else self.column
        head = f"{path}:{line}:{column}: " if path else f"line {line}, column {column}: "
        text, caret = _window(self.source_line(), self.column - 1)
        pad = "".join("\t" if ch == "\t" else " " for ch in text[:caret])
        return f"{head}{self.message}\n    {text}\n    {pad}^"


def position(source: str, offset: int) -> tuple[int, int]:
    """The 1-based (line, column) of a character offset."""
    line = source.count("\n", 0, offset) + 1
    return line, offset - (source.rfind("\n", 0, offset) + 1) + 1


def _window(text: str, index: int) -> tuple[str, int]:
    """Cut a long line to at most ``_MAX_SHOWN`` characters around ``index``."""
    if len(text) <= _MAX_SHOWN:
        return text, index
    start = max(0, min(index - _MAX_SHOWN // 2, len(text) - _MAX_SHOWN))
    end = start + _MAX_SHOWN
    shown = text[start:end]
    caret = index - start
    if start > 0:
        shown, caret = "…" + shown, caret + 1
    if end < len(text):
        shown += "…"
    return shown, caret


def _rebuild(message: str, source: str, offset: int, expected: tuple[str, ...]) -> ExpressionError:
    return ExpressionError(message, source=source, offset=offset, expected=expected)
