"""Cloudflare API v4 envelopes, timestamps and list paging."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from proxy.api.errors import invalid_field

logger = logging.getLogger(__name__)

JSON = "application/json"


def timestamp(moment: datetime) -> str:
    """RFC 3339 UTC with ``Z``; fractional seconds only when there are some."""
    utc = moment.astimezone(UTC).replace(tzinfo=None)
    return utc.isoformat(timespec="microseconds" if utc.microsecond else "seconds") + "Z"


def messages(texts: Sequence[str], *, code: int = 0) -> list[dict[str, Any]]:
    return [{"code": code, "message": text} for text in texts]


def _dumps(body: Mapping[str, Any]) -> str:
    return json.dumps(body, ensure_ascii=False, allow_nan=False)


def ok(result: Any, *, notes: Sequence[str] = (), status: int = 200) -> web.Response:
    body = {"success": True, "errors": [], "messages": messages(notes), "result": result}
    return web.Response(status=status, text=_dumps(body), content_type=JSON)


def failure(status: int, code: int, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    body = {
        "success": False,
        "errors": [{"code": code, "message": message}],
        "messages": [],
        "result": None,
    }
    return web.Response(status=status, text=_dumps(body), content_type=JSON, headers=headers)


# Far past any real list, and small enough that (page - 1) * per_page fits every database's
# 64-bit integers (an offset past them was a 500 from the store).
MAX_PAGE = 1_000_000


@dataclass(frozen=True)
class Paging:
    """``page``/``per_page`` of a list request, validated here for every list endpoint."""

    page: int
    per_page: int

    @classmethod
    def from_query(cls, request: web.Request, *, default: int, maximum: int) -> Paging:
        return cls(
            page=_positive(request, "page", 1, MAX_PAGE),
            per_page=_positive(request, "per_page", default, maximum),
        )

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.per_page


def _positive(request: web.Request, name: str, default: int, maximum: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        number = float(raw)
    except ValueError:
        raise invalid_field(name, f"must be a positive integer, got {raw!r}") from None
    if not number.is_integer() or number < 1:
        raise invalid_field(name, f"must be a positive integer, got {raw!r}")
    if number > maximum:
        raise invalid_field(name, f"must be at most {maximum}, got {raw}")
    return int(number)


def ok_list(items: Sequence[Any], paging: Paging, *, notes: Sequence[str] = ()) -> web.Response:
    """One page of ``items`` (``[]`` past the end, so SDK iteration stops) with ``result_info``."""
    page = list(items[paging.offset : paging.offset + paging.per_page])
    body = {
        "success": True,
        "errors": [],
        "messages": messages(notes),
        "result": page,
        "result_info": {
            "page": paging.page,
            "per_page": paging.per_page,
            "count": len(page),
            "total_count": len(items),
            "total_pages": max(1, math.ceil(len(items) / paging.per_page)),
        },
    }
    return web.Response(text=_dumps(body), content_type=JSON)


def ok_all(items: Sequence[Any], *, notes: Sequence[str] = ()) -> web.Response:
    """Every item on one page: Cloudflare's single-page lists (gateway rules and certificates,
    mTLS certificates, devices, posture rules), which the SDK reads once (``SinglePage``).
    ``page``/``per_page`` are ignored there, as Cloudflare ignores them: a page cap would make
    the SDK silently see only the first items."""
    return ok_list(items, Paging(page=1, per_page=max(1, len(items))), notes=notes)
