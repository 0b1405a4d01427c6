"""GET .../gateway/requests (our addition): the request log's tail, newest first, filtered."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from proxy.api import ApiDeps, create_app, requests_log
from tests.support.server import Client, Gateway, call


def _line(n: int, **fields: Any) -> dict[str, Any]:
    line: dict[str, Any] = {
        "time": f"2026-03-01T11:{n:02d}:00.000Z",
        "node": "node-1",
        "mode": "regular",
        "device": None,
        "user": None,
        "method": "GET",
        "scheme": "https",
        "host": f"h{n}.example.com",
        "path": "/",
        "action": "allow",
        "stage": "request",
        "rule_id": None,
        "status": 200,
        "bytes": 10,
        "ca_fingerprint": "AA:BB",
    }
    return {**line, **fields}


def _write(path: Path, lines: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return tmp_path / "requests.jsonl"


@pytest.fixture
def deps(gateway: Gateway, log: Path) -> ApiDeps:
    return dataclasses.replace(gateway.api(), request_log=log)


def _path(gateway: Gateway, query: str = "") -> str:
    return f"/client/v4/accounts/{gateway.account_id}/gateway/requests{query}"


async def test_newest_first_with_a_limit(client: Client, gateway: Gateway, log: Path) -> None:
    _write(log, [_line(n) for n in range(5)])
    reply = await call(client, "GET", _path(gateway, "?limit=3"), token=gateway.token)
    assert reply.status == 200
    assert [line["host"] for line in reply.result] == ["h4.example.com", "h3.example.com", "h2.example.com"]
    assert reply.body["result_info"]["count"] == 3


@pytest.mark.parametrize(
    ("query", "hosts"),
    [
        ("?device=d1", ["h2.example.com", "h1.example.com"]),
        ("?action=block", ["h3.example.com", "h1.example.com"]),
        ("?action=block&action=redirect", ["h4.example.com", "h3.example.com", "h1.example.com"]),
        ("?action=block,redirect", ["h4.example.com", "h3.example.com", "h1.example.com"]),
        ("?host=H3.EXAMPLE", ["h3.example.com"]),
        ("?since=2026-03-01T11:03:00Z", ["h4.example.com", "h3.example.com"]),
        ("?since=58m", ["h4.example.com", "h3.example.com", "h2.example.com"]),  # clock: 12:00
        ("?device=d1&action=block", ["h1.example.com"]),
    ],
)
async def test_filters(client: Client, gateway: Gateway, log: Path, query: str, hosts: list[str]) -> None:
    _write(
        log,
        [
            _line(0),
            _line(1, device="d1", action="block"),
            _line(2, device="d1"),
            _line(3, action="block"),
            _line(4, action="redirect"),
        ],
    )
    reply = await call(client, "GET", _path(gateway, query), token=gateway.token)
    assert [line["host"] for line in reply.result] == hosts


async def test_reads_the_rotated_file_and_skips_broken_lines(
    client: Client, gateway: Gateway, log: Path
) -> None:
    _write(log.with_name("requests.jsonl.1"), [_line(0), _line(1)])
    log.write_text(json.dumps(_line(2)) + "\n" + '{"cut": \n' + json.dumps(_line(3)) + "\n")
    reply = await call(client, "GET", _path(gateway), token=gateway.token)
    assert [line["host"] for line in reply.result] == [f"h{n}.example.com" for n in (3, 2, 1, 0)]


async def test_no_file_yet_is_an_empty_list(client: Client, gateway: Gateway) -> None:
    reply = await call(client, "GET", _path(gateway), token=gateway.token)
    assert reply.status == 200 and reply.result == []


def test_only_the_tail_is_read(log: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(log, [_line(n % 60) for n in range(200)])
    monkeypatch.setattr(requests_log, "TAIL_BYTES", 1000)
    lines = requests_log.read(log, requests_log.RequestQuery(limit=1000))
    assert 0 < len(lines) < 200 and lines[0] == _line(199 % 60)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("?limit=0", "limit: must be an integer from 1 to 1000, got 0"),
        ("?limit=x", "limit: must be an integer from 1 to 1000, got 'x'"),
        ("?since=yesterday", "since: must be an RFC 3339 time"),
        ("?since=2026-03-01T11:00:00", "since: must be an RFC 3339 time with a time zone"),
        ("?since=0001-01-01T00:00:00%2B01:00", "since: must be an RFC 3339 time with a time zone"),
        ("?host=" + "a" * 300, "host: at most 253 characters"),
    ],
)
async def test_bad_queries_name_the_field(client: Client, gateway: Gateway, query: str, message: str) -> None:
    reply = await call(client, "GET", _path(gateway, query), token=gateway.token)
    assert reply.status == 400 and reply.error.startswith(message)


async def test_needs_the_token(client: Client, gateway: Gateway) -> None:
    reply = await call(client, "GET", _path(gateway), token=None)
    assert reply.status == 401


async def test_without_a_log_it_is_404(gateway: Gateway) -> None:
    assert gateway.api().request_log is None
    async with TestClient(TestServer(create_app(gateway.api()))) as other:
        reply = await call(other, "GET", _path(gateway), token=gateway.token)
    assert reply.status == 404 and "no request log" in reply.error
