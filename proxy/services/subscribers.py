"""Who wants to hear of a service's committed changes: callbacks, each called in turn."""

from __future__ import annotations

import logging
from collections.abc import Callable

logger = logging.getLogger(__name__)

type Callback = Callable[[], None]


class Subscribers:
    """The callbacks of one service. ``what`` names the change in the log line of a failure
    (``"certificate change"`` logs ``certificate change subscriber ... failed``)."""

    def __init__(self, what: str) -> None:
        self._what = what
        self._callbacks: list[Callback] = []

    def add(self, callback: Callback) -> None:
        self._callbacks.append(callback)

    def notify(self) -> None:
        """Call every callback, in the order they were added. One that raises is logged with
        its traceback and the others are still called: a broken subscriber must not hide the
        change from the rest. Callbacks added while notifying are called from the next change."""
        for callback in list(self._callbacks):
            try:
                callback()
            except Exception:
                logger.exception("%s subscriber %r failed", self._what, callback)
