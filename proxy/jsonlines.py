"""An append-only JSON-lines file for per-request records: cheap on the request path.

A request only appends a string to a list; the lines reach the file at most ``flush_interval``
later (and at stop), in one write. The file is rotated once it passes ``max_bytes``
(``requests.jsonl`` → ``requests.jsonl.1`` → ... up to ``backups``). Files are 0600.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import BinaryIO

logger = logging.getLogger(__name__)


class JsonLinesFile:
    def __init__(
        self,
        path: Path,
        *,
        max_bytes: int = 16 << 20,
        backups: int = 5,
        flush_interval: float = 0.5,
        max_pending: int = 5000,
    ) -> None:
        self.path = path
        self._max_bytes = max_bytes
        self._backups = backups
        self._flush_interval = flush_interval
        self._max_pending = max_pending
        self._pending: list[str] = []
        self._file = self._open()
        self._size = self._file.tell()
        self._task: asyncio.Task[None] | None = None

    def _open(self) -> BinaryIO:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        return os.fdopen(fd, "ab")

    def write(self, line: str) -> None:
        self._pending.append(line)
        if len(self._pending) >= self._max_pending:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        data = ("\n".join(self._pending) + "\n").encode()
        self._pending.clear()
        try:
            self._file.write(data)
            self._file.flush()
        except OSError as e:
            logger.error("cannot write the request log %s: %s", self.path, e)
            return
        self._size += len(data)
        if self._size >= self._max_bytes:
            self._rotate()

    def _rotate(self) -> None:
        self._file.close()
        for n in range(self._backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{n}")
            if older.exists():
                older.replace(self.path.with_name(f"{self.path.name}.{n + 1}"))
        if self._backups > 0:
            self.path.replace(self.path.with_name(f"{self.path.name}.1"))
        else:
            self.path.unlink()
        self._file = self._open()
        self._size = 0

    def start(self) -> None:
        """Flush on a timer from the running event loop."""
        self._task = asyncio.get_running_loop().create_task(self._flush_regularly())

    async def _flush_regularly(self) -> None:
        while True:
            await asyncio.sleep(self._flush_interval)
            self.flush()

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self.flush()
        self._file.close()
