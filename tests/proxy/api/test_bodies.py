"""Request bodies: the edge's checks, and the scan that lets plain bodies skip the walk."""

from __future__ import annotations

import json

import pytest

from proxy.api.bodies import MAX_DEPTH, _plainly_acceptable, parse_object
from proxy.api.errors import ApiError


def _nested(levels: int) -> dict[str, object]:
    value: object = 1
    for _ in range(levels - 1):
        value = [value]
    return {"a": value}


@pytest.mark.parametrize(
    ("raw", "refusal"),
    [
        (b'{"a": "\\ud800"}', "lone surrogate"),
        (b'{"a": ["x", {"b": "\\udfff tail"}]}', "lone surrogate"),
        (json.dumps(_nested(MAX_DEPTH + 1)).encode(), "nested too deeply"),
    ],
)
def test_what_the_walk_refuses_is_never_plainly_acceptable(raw: bytes, refusal: str) -> None:
    assert not _plainly_acceptable(raw)
    with pytest.raises(ApiError, match=refusal):
        parse_object(raw)


@pytest.mark.parametrize(
    "raw",
    [
        json.dumps(_nested(MAX_DEPTH)).encode(),  # at the limit
        '{"a": "café ☕"}'.encode(),  # UTF-8 text holds no lone surrogate
        b'{"a": "\\u00e9\\ud83d\\ude00"}',  # escapes: walked, and fine
        b'{"a": "\\\\ud800"}',  # an escaped backslash: walked, and fine
    ],
)
def test_acceptable_bodies_pass_with_or_without_the_walk(raw: bytes) -> None:
    assert parse_object(raw) == json.loads(raw)


def test_an_agent_report_skips_the_walk() -> None:
    report = {"results": [{"rule_id": "r", "success": True, "certificate": "-----BEGIN..."}] * 4}
    assert _plainly_acceptable(json.dumps(report).encode())
