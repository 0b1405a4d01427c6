"""Request bodies, validated once at the edge with messages that name the field."""

from __future__ import annotations

import json
import json.scanner
import logging
import pickle
from collections.abc import Collection, Mapping
from typing import Any

from aiohttp import web

from proxy.api.errors import INVALID_JSON, ApiError, invalid_field
from proxy.api.offload import offload_of, offloaded
from proxy.json_types import type_name
from proxy.services.parse_worker import in_child

logger = logging.getLogger(__name__)

# No body of the API nests deeper than a handful of levels (an Access policy's rule objects are
# the deepest, at five); 32 leaves room and keeps every later walk (copies, comparisons) cheap.
MAX_DEPTH = 32
# Bodies up to this size are parsed on the loop (well under a millisecond); larger ones in the
# admin's child process (``proxy.services.parse_worker``).
INLINE_BYTES = 16 * 1024


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_DECODER = json.JSONDecoder(parse_constant=_no_constants)
_INTERRUPTIBLE = json.JSONDecoder(parse_constant=_no_constants)
_INTERRUPTIBLE.scan_once = json.scanner.py_make_scanner(_INTERRUPTIBLE)  # type: ignore[attr-defined]


async def read_object(request: web.Request) -> dict[str, Any]:
    """The JSON object in the body; an empty body (as the SDK sends on POST/DELETE) is ``{}``.

    Too large a body raises aiohttp's HTTPRequestEntityTooLarge (the middleware makes it a 413).
    A body past ``INLINE_BYTES`` is parsed and checked in the admin's child process (``offload``):
    a 1 MiB body takes up to a fifth of a second, which the proxy's requests must not wait for.
    """
    raw = await request.read()
    if len(raw) > INLINE_BYTES:
        parsed = await offloaded(
            request, lambda ticket: _joined(offload_of(request).child_call(_parse_large, raw))
        )
        if isinstance(parsed, tuple):
            raise ApiError(*parsed)
        return parsed
    return parse_object(raw)


def _parse_large(raw: bytes) -> dict[str, Any] | tuple[int, int, str]:
    """``parse_object`` of a large body, run in the offload's child process (the C scanner: the
    loop's process is not held) or, if the child is unavailable, in the admin thread (the
    interruptible one); an ApiError comes back as its status, code and message. Long lists of
    plain values come back in pieces (:func:`_joined` puts them together in the admin thread)."""
    try:
        return _pieces(parse_object(raw, interruptible=not in_child()))
    except ApiError as e:
        return (e.status, e.code, e.message)


# Values per pickled piece of a long list: unpickling one holds the interpreter well under a
# millisecond, where the 130,000 strings of a 1 MiB body held it 10-30 ms at once.
PIECE = 4096


class _Pieces:
    """A long list of plain values (strings, numbers...), as pickles of ``PIECE`` of them."""

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = pieces


def _pieces[T](value: T) -> T:
    """In the child: the value with every list longer than ``PIECE`` made of plain values
    replaced by its :class:`_Pieces` (in place; the value is the child's own)."""
    pending: list[Any] = [value]
    while pending:
        item = pending.pop()
        children: list[tuple[Any, Any]] = []
        if isinstance(item, dict):
            children = list(item.items())
        elif isinstance(item, list):
            children = list(enumerate(item))
        for key, child in children:
            if (
                isinstance(child, list)
                and len(child) > PIECE
                and not any(isinstance(v, dict | list) for v in child)
            ):
                item[key] = _Pieces(
                    [
                        pickle.dumps(child[at : at + PIECE], pickle.HIGHEST_PROTOCOL)
                        for at in range(0, len(child), PIECE)
                    ]
                )
            elif isinstance(child, dict | list):
                pending.append(child)
    return value


def _joined[T](value: T) -> T:
    """In the admin thread: :func:`_pieces` undone, a piece at a time."""
    pending: list[Any] = [value]
    while pending:
        item = pending.pop()
        children: list[tuple[Any, Any]] = []
        if isinstance(item, dict):
            children = list(item.items())
        elif isinstance(item, list):
            children = list(enumerate(item))
        for key, child in children:
            if isinstance(child, _Pieces):
                joined: list[Any] = []
                for piece in child.pieces:
                    joined.extend(pickle.loads(piece))
                item[key] = joined
            elif isinstance(child, dict | list):
                pending.append(child)
    return value


def parse_object(raw: bytes, *, interruptible: bool = False) -> dict[str, Any]:
    """``read_object``'s parsing and checks, on bytes. ``interruptible``: with the json module's
    pure-Python scanner, several times slower, but a thread running it gives the interpreter
    back to the event loop every switch interval; the C scanner holds it for the whole body
    (30 ms for 1 MiB), which a thread cannot hide."""
    if not raw.strip():
        return {}
    decoder = _INTERRUPTIBLE if interruptible else _DECODER
    try:
        value = decoder.decode(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ApiError(400, INVALID_JSON, "request body is not UTF-8 text") from None
    except ValueError as e:
        raise ApiError(400, INVALID_JSON, f"request body is not valid JSON: {e}") from None
    except RecursionError:
        raise ApiError(400, INVALID_JSON, "request body is nested too deeply") from None
    if not isinstance(value, dict):
        raise ApiError(400, INVALID_JSON, f"request body must be a JSON object, got {type_name(value)}")
    if not _plainly_acceptable(raw):
        check_json_value(value)
    return value


def _plainly_acceptable(raw: bytes) -> bool:
    """True when the text alone shows that :func:`check_json_value` would pass what it parsed
    to: no ``\\u`` escape (strict UTF-8 text decodes to no lone surrogate, so only an escape
    makes one) and at most ``MAX_DEPTH`` brackets (each level of nesting opens one). Two scans
    in C, where the walk cost twice the parsing of an agent's report."""
    return b"\\u" not in raw and raw.count(b"{") + raw.count(b"[") <= MAX_DEPTH


def check_json_value(value: object) -> None:
    """Refuse what parsed as JSON but cannot be handled: nesting past ``MAX_DEPTH`` (a deep copy
    or comparison would recurse past Python's limit) and ``"\\ud800"``, valid JSON but no text
    (it could be neither stored nor sent back). One walk, no recursion."""
    pending: list[tuple[object, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict | list) and depth > MAX_DEPTH:
            raise ApiError(
                400, INVALID_JSON, f"request body is nested too deeply: at most {MAX_DEPTH} levels accepted"
            )
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise ApiError(
                    400,
                    INVALID_JSON,
                    "request body holds a lone surrogate escape (such as "
                    "\\ud800): strings must be valid Unicode text",
                ) from None
        elif isinstance(item, dict):
            pending.extend((key, depth) for key in item)
            pending.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            pending.extend((child, depth + 1) for child in item)


def reject_unknown(body: Mapping[str, Any], known: Collection[str]) -> None:
    for key in body:
        if key not in known:
            raise invalid_field(key, f"unknown field (accepted: {', '.join(sorted(known))})")


def optional_int(body: Mapping[str, Any], field: str, *, default: int, low: int, high: int) -> int:
    if field not in body or body[field] is None:
        return default
    value = body[field]
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise invalid_field(field, f"must be an integer, got {type_name(value)}")
    if not low <= value <= high:
        raise invalid_field(field, f"must be between {low} and {high}, got {value}")
    return int(value)


def optional_str(body: Mapping[str, Any], field: str, *, default: str | None = None) -> str | None:
    value = body.get(field)
    if value is None:
        return default
    if not isinstance(value, str):
        raise invalid_field(field, f"must be a string, got {type_name(value)}")
    return value


def required_str(body: Mapping[str, Any], field: str) -> str:
    if field not in body or body[field] is None:
        raise invalid_field(field, "required")
    value = optional_str(body, field)
    assert value is not None
    if not value.strip():
        raise invalid_field(field, "must not be empty")
    return value


def choice(body: Mapping[str, Any], field: str, choices: Collection[str], *, default: str) -> str:
    value = optional_str(body, field, default=default)
    assert value is not None
    if value not in choices:
        raise invalid_field(field, f"must be one of {', '.join(choices)}, got {value!r}")
    return value
