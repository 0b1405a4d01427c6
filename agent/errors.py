"""The one exception the agent raises; the CLI turns it into one line on stderr."""

from __future__ import annotations


class AgentError(Exception):
    """Something the agent cannot do, said in one line; ``status`` is the server's HTTP status if any."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status
