"""The event loop every gateway process runs on: uvloop where it is installed, else asyncio's.

uvloop (libuv, in C) runs the same asyncio programs with less CPU per callback, socket event and
write than asyncio's selector loop, which is a large share of a proxied connection's cost
(docs/performance.md, "Cheaper handshakes"). Nothing in the gateway depends on which loop runs:
``GATEWAY_EVENT_LOOP=asyncio`` picks asyncio's own, e.g. to rule the loop out when chasing a bug.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from proxy.config import ConfigError

logger = logging.getLogger(__name__)

__all__ = ["ENV", "loop_factory", "loop_name", "run"]

ENV = "GATEWAY_EVENT_LOOP"
_CHOICES = ("uvloop", "asyncio")


def loop_name(environ: Mapping[str, str] | None = None) -> str:
    """``uvloop`` or ``asyncio``: the loop ``run`` uses with this environment."""
    wanted = (environ if environ is not None else os.environ).get(ENV, "").strip().lower()
    if wanted and wanted not in _CHOICES:
        raise ConfigError(f"{ENV}={wanted!r}: expected one of {', '.join(_CHOICES)}")
    if wanted == "asyncio":
        return "asyncio"
    try:
        import uvloop  # noqa: F401
    except ImportError:
        if wanted == "uvloop":
            raise ConfigError(f"{ENV}=uvloop: uvloop is not installed (pip install uvloop)") from None
        return "asyncio"
    return "uvloop"


def loop_factory(environ: Mapping[str, str] | None = None) -> Callable[[], asyncio.AbstractEventLoop]:
    """A new-loop function for ``asyncio.run(..., loop_factory=...)``."""
    if loop_name(environ) == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return asyncio.new_event_loop


def run[T](main: Coroutine[Any, Any, T], environ: Mapping[str, str] | None = None) -> T:
    """``asyncio.run(main)`` on the chosen loop."""
    try:
        factory = loop_factory(environ)
    except ConfigError:
        main.close()  # never awaited: say nothing more than the error itself
        raise
    logger.info("event loop: %s", loop_name(environ))
    return asyncio.run(main, loop_factory=factory)
