"""mitmproxy's ``Context.fork`` without the connection it throws away.

Every protocol layer of a connection gets its own copy of the layer context (``Context.fork``:
same client, options and server, its own copy of the layer stack), six to ten per intercepted
HTTPS request. Stock ``fork`` builds the copy with ``Context(client, options)``, whose
``__init__`` makes a new ``Server`` (a fresh uuid4 from ``os.urandom``, and each of its ~25 fields
set through ``Server.__setattr__``) that ``fork`` replaces with the parent's server on the next
line: about 2 % of the gateway's samples per new-host connection under py-spy (1-2 % end to end,
at the edge of what the bench resolves: docs/performance.md, "Seventh pass").

``install()`` replaces ``fork`` with one that sets the same four attributes on a new ``Context``
without calling ``__init__``. The fork is the same object stock makes, less that throwaway server.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final

from mitmproxy.proxy import context

logger = logging.getLogger(__name__)

__all__ = ["STOCK_FORK", "fork", "install"]

STOCK_FORK: Final[Callable[[context.Context], context.Context]] = context.Context.fork


def fork(self: context.Context) -> context.Context:
    """What stock ``Context.fork`` returns: the same client, options and server, a copy of the
    layer stack."""
    ret: context.Context = object.__new__(context.Context)
    ret.client = self.client
    ret.options = self.options
    ret.server = self.server
    ret.layers = self.layers.copy()
    return ret


def install() -> None:
    """From now on, layer contexts of this process fork without a throwaway server."""
    if context.Context.fork is not fork:
        context.Context.fork = fork  # type: ignore[method-assign]
        logger.debug("mitmproxy's layer contexts fork without a throwaway server")
