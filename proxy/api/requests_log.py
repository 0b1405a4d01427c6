"""Our addition: the proxy's request log (``DATA_DIR/requests.jsonl``), read-only, newest first.

The file is the one the proxy appends to (``proxy/jsonlines.py``); this endpoint reads only its
tail: the newest ``TAIL_BYTES`` across ``requests.jsonl`` and, when that is short (just rotated),
``requests.jsonl.1``. It answers the dashboard's live log and quick questions; the whole history
stays in the files."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from policies.posture import parse_duration
from proxy.api.envelope import messages
from proxy.api.errors import NOT_FOUND, ApiError, invalid_field
from proxy.api.state import deps_of

logger = logging.getLogger(__name__)

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
TAIL_BYTES = 4 << 20  # how far back the endpoint reads, across the current and the rotated file
MAX_FILTER_CHARS = 253


@dataclass(frozen=True)
class RequestQuery:
    """What a caller asks of the log; empty filters match everything."""

    device: str = ""  # the line's device id, exactly
    actions: frozenset[str] = frozenset()  # allow, block, ...
    host: str = ""  # part of the host, case-insensitive
    since: datetime | None = None
    limit: int = DEFAULT_LIMIT

    def matches(self, line: dict[str, Any]) -> bool:
        if self.device and line.get("device") != self.device:
            return False
        if self.actions and line.get("action") not in self.actions:
            return False
        if self.host and self.host not in str(line.get("host") or "").lower():
            return False
        if self.since is not None:
            moment = _parse_time(line.get("time"))
            if moment is None or moment < self.since:
                return False
        return True


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def _tail_lines(path: Path, budget: int) -> tuple[list[bytes], int]:
    """The whole lines among the last ``budget`` bytes of ``path``, oldest first, and the bytes
    read. A missing file has none."""
    try:
        with path.open("rb") as f:
            size = f.seek(0, os.SEEK_END)
            start = max(0, size - budget)
            f.seek(start)
            data = f.read(size - start)
    except FileNotFoundError:
        return [], 0
    lines = data.split(b"\n")
    if start > 0:
        lines = lines[1:]  # the first one is cut
    return [line for line in lines if line.strip()], len(data)


def newest(path: Path, query: RequestQuery) -> Iterator[dict[str, Any]]:
    """The log's lines that match ``query``, newest first, from the newest ``TAIL_BYTES``."""
    budget = TAIL_BYTES
    for file in (path, path.with_name(f"{path.name}.1")):
        lines, read = _tail_lines(file, budget)
        for raw in reversed(lines):
            try:
                line = json.loads(raw)
            except ValueError:
                continue  # a line cut by a crash; the next ones are whole
            if isinstance(line, dict) and query.matches(line):
                yield line
        budget -= read
        if budget <= 0:
            return


def read(path: Path, query: RequestQuery) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for line in newest(path, query):
        found.append(line)
        if len(found) >= query.limit:
            break
    return found


def query_of(request: web.Request, now: datetime) -> RequestQuery:
    """The query string, validated: ``device``, ``action`` (repeated or commas), ``host``,
    ``since`` (RFC 3339 or a duration such as ``10m``), ``limit`` (1-1000)."""
    return RequestQuery(
        device=_text(request, "device"),
        actions=frozenset(
            part.strip()
            for value in request.query.getall("action", [])
            for part in value.split(",")
            if part.strip()
        ),
        host=_text(request, "host").lower(),
        since=_since(request.query.get("since", ""), now),
        limit=_limit(request.query.get("limit", "")),
    )


def _text(request: web.Request, name: str) -> str:
    value = request.query.get(name, "").strip()
    if len(value) > MAX_FILTER_CHARS:
        raise invalid_field(name, f"at most {MAX_FILTER_CHARS} characters")
    return value


def _since(raw: str, now: datetime) -> datetime | None:
    text = raw.strip()
    if not text:
        return None
    try:
        return now - parse_duration(text)
    except ValueError:
        pass
    moment = _parse_time(text)
    try:
        if moment is not None:
            return moment.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00:00+01:00 is before the first UTC moment
        pass
    raise invalid_field(
        "since", f'must be an RFC 3339 time with a time zone, or a duration such as "10m", got {raw!r}'
    )


def _limit(raw: str) -> int:
    if not raw.strip():
        return DEFAULT_LIMIT
    try:
        value = int(raw)
    except ValueError:
        raise invalid_field("limit", f"must be an integer from 1 to {MAX_LIMIT}, got {raw!r}") from None
    if not 1 <= value <= MAX_LIMIT:
        raise invalid_field("limit", f"must be an integer from 1 to {MAX_LIMIT}, got {value}")
    return value


async def list_requests(request: web.Request) -> web.Response:
    """``GET .../gateway/requests``: the newest request log lines that match, newest first."""
    deps = deps_of(request)
    if deps.request_log is None:
        raise ApiError(404, NOT_FOUND, "this admin server has no request log")
    query = query_of(request, deps.clock())
    lines = await asyncio.to_thread(read, deps.request_log, query)
    body = {
        "success": True,
        "errors": [],
        "messages": messages(()),
        "result": lines,
        "result_info": {
            "page": 1,
            "per_page": query.limit,
            "count": len(lines),
            "total_count": len(lines),
            "total_pages": 1,
        },
    }
    return web.json_response(body)
