"""How big an expression may be: settings, checked at compile time, never accidents at run time."""

from __future__ import annotations

import logging
from dataclasses import dataclass

logger = logging.getLogger(__name__)

# Nesting beyond this could come close to Python's default recursion limit (1000 frames) in
# the parser and the compiled closures; the setting may be lowered, not raised past it.
HARD_MAX_DEPTH = 128


@dataclass(frozen=True)
class Limits:
    """Compile-time limits for one expression.

    - ``max_depth``: levels of nesting; each ``(`` (grouping or a call such as ``any(``) and each
      bare ``not``/``!`` opens one. At most ``HARD_MAX_DEPTH``.
    - ``max_length``: characters of source.
    - ``max_regex_length``: characters of one ``matches`` pattern.
    - ``max_set_size``: items written in one ``{...}`` set (a range counts once).
    - ``regex_max_mem``: RE2's memory budget for one pattern, in bytes; a pattern whose compiled
      program does not fit is refused ("regex too large").
    """

    max_depth: int = 128
    max_length: int = 64 * 1024
    max_regex_length: int = 4096
    max_set_size: int = 10_000
    regex_max_mem: int = 1 << 20

    def __post_init__(self) -> None:
        if not 1 <= self.max_depth <= HARD_MAX_DEPTH:
            raise ValueError(f"max_depth must be between 1 and {HARD_MAX_DEPTH}")
        for name in ("max_length", "max_regex_length", "max_set_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive")
        if self.regex_max_mem < 1 << 12:
            raise ValueError("regex_max_mem must be at least 4096 bytes")
