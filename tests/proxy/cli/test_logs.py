"""``gateway logs requests|posture`` (and ``gateway posture logs``, its deprecated alias) against
the real admin API on loopback HTTP (the request log file, the device service and the app are the
real ones; the clock is the test's)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from proxy.cli import logs
from proxy.cli.main import main
from proxy.services.posture_verify import Report
from tests.support.devices import Lab
from tests.support.server import serving


def _line(minute: int, **fields: Any) -> dict[str, Any]:
    line: dict[str, Any] = {
        "time": f"2026-03-01T11:{minute:02d}:00.000Z",
        "node": "node-1",
        "mode": "regular",
        "device": None,
        "user": None,
        "method": "GET",
        "scheme": "https",
        "host": f"h{minute}.example.com",
        "path": "/",
        "action": "allow",
        "stage": "request",
        "rule_id": None,
        "rule": None,
        "status": 200,
        "bytes": 10,
        "ca_fingerprint": "AA:BB",
    }
    return {**line, **fields}


@dataclass
class Server:
    url: str
    lab: Lab
    log: Path

    async def run(self, *argv: str) -> int:
        return await asyncio.to_thread(
            main, ["logs", *argv, "--server", self.url, f"--token={self.lab.gateway.token}"]
        )

    def append(self, *lines: dict[str, Any]) -> None:
        with self.log.open("a") as f:
            f.writelines(json.dumps(line) + "\n" for line in lines)


@pytest.fixture
async def server(lab: Lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Server]:
    for name in ("GATEWAY_SERVER", "GATEWAY_ADMIN_TOKEN", "GATEWAY_ADMIN_CACERT"):
        monkeypatch.delenv(name, raising=False)
    log = tmp_path / "requests.jsonl"
    log.touch()
    deps = dataclasses.replace(lab.api(), request_log=log)
    async with serving(deps) as port:
        yield Server(f"http://127.0.0.1:{port}", lab, log)


def _stop_after(steps: list[Callable[[], None]], monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Replace --follow's sleep: each call runs the next step; after the last, Ctrl-C."""
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) > len(steps):
            raise KeyboardInterrupt
        steps[len(slept) - 1]()

    monkeypatch.setattr(logs, "_sleep", sleep)
    return slept


async def test_requests_are_one_readable_line_each_oldest_first(
    server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    server.append(
        _line(1),
        _line(
            2, host="blocked.demo.test", path="/x", action="block", rule_id="r-1", rule="Block gambling",
            status=403, reason="No gambling",
        ),
        _line(
            3, device="dev-1", host="secure.demo.test", action="block", stage="access", status=403,
            reason="Access application 'Secure' denies this request: posture check 'Cert' failed: no certificate.",
        ),
    )  # fmt: skip
    assert await server.run("requests") == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out.splitlines() == [
        "2026-03-01T11:01:00.000Z  -  allow     h1.example.com/  rule=-  200",
        "2026-03-01T11:02:00.000Z  -  block     blocked.demo.test/x  rule=Block gambling  403  (No gambling)",
        "2026-03-01T11:03:00.000Z  dev-1  block     secure.demo.test/  rule=-  403  "
        "(Access application 'Secure' denies this request: posture check 'Cert' failed: no certificate.)",
    ]


async def test_requests_filters_limit_and_json(server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    lines = [
        _line(1, device="dev-1"),
        _line(2, device="dev-2", action="block", status=403),
        _line(3, device="dev-1", action="block", status=403, host="casino.example"),
        _line(4, device="dev-1", action="redirect", status=307),
        _line(5, device="dev-1"),
    ]
    server.append(*lines)
    assert (
        await server.run(
            "requests", "--device", "dev-1", "--action", "block", "--action", "redirect", "--json"
        )
        == 0
    )
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert printed == [lines[2], lines[3]]
    assert await server.run("requests", "--host", "CASINO", "--json") == 0
    assert [json.loads(x) for x in capsys.readouterr().out.splitlines()] == [lines[2]]
    assert await server.run("requests", "--limit", "2", "--json") == 0
    assert [json.loads(x)["time"] for x in capsys.readouterr().out.splitlines()] == [
        lines[3]["time"], lines[4]["time"],
    ]  # fmt: skip
    assert await server.run("requests", "--since", "2026-03-01T11:04:00Z", "--json") == 0
    assert [json.loads(x) for x in capsys.readouterr().out.splitlines()] == lines[3:]


async def test_requests_follow_prints_each_new_line_once(
    server: Server, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    server.append(_line(1))
    same_instant = _line(2, host="second.example.com")
    slept = _stop_after(
        [
            lambda: server.append(_line(2)),
            lambda: server.append(same_instant),  # the same millisecond as the last one printed
            lambda: None,  # nothing new: nothing printed
            lambda: server.append(_line(3, action="block", status=403)),
        ],
        monkeypatch,
    )
    assert await server.run("requests", "--follow", "--interval", "0.5", "--json") == 0  # Ctrl-C: 0
    printed = [(x["time"][14:16], x["host"]) for x in map(json.loads, capsys.readouterr().out.splitlines())]
    assert printed == [
        ("01", "h1.example.com"), ("02", "h2.example.com"), ("02", "second.example.com"), ("03", "h3.example.com"),
    ]  # fmt: skip
    assert slept == [0.5] * 5


async def _fail(lab: Lab, device: Any, reason: str) -> None:
    await lab.service.submit(device, [Report(rule_id=lab.rule_id, success=False, reason=reason)], "127.0.0.1")


async def test_posture_log_lines_filters_and_follow(
    server: Server, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    lab = server.lab
    first, _ = lab.enroll(hostname="first")
    second, _ = lab.enroll(hostname="second")
    await _fail(lab, first, "no certificate found")
    lab.gateway.clock.advance(minutes=1)
    cert, key = lab.ca.issue(lab.now, cn="second.corp")
    await lab.service.submit(second, [await lab.passing(second, cert, key)], "127.0.0.1")

    assert await server.run("posture") == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2, out
    assert out[0] == "2026-03-01T12:00:00Z  first  failed   rule=corp certificate  no certificate found"
    assert out[1].startswith("2026-03-01T12:01:00Z  second  passed   rule=corp certificate  verified")

    assert await server.run("posture", "--outcome", "failed", "--json") == 0
    (only,) = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert (only["device_id"], only["outcome"], only["reason"]) == (
        first.id,
        "failed",
        "no certificate found",
    )
    assert await server.run("posture", "--device", second.id, "--json") == 0
    assert [json.loads(x)["device_id"] for x in capsys.readouterr().out.splitlines()] == [second.id]

    loop = asyncio.get_running_loop()

    def report_again() -> None:
        asyncio.run_coroutine_threadsafe(_fail(lab, second, "certificate removed"), loop).result(10)

    _stop_after([report_again, lambda: None], monkeypatch)
    assert await server.run("posture", "--follow", "--device", second.id) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[1].endswith(
        "second  failed   rule=corp certificate  certificate removed"
    ), lines


async def test_posture_devices_and_rules_by_name_or_prefix(
    server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    lab = server.lab
    first, _ = lab.enroll(hostname="first")
    second, _ = lab.enroll(hostname="second")
    await _fail(lab, first, "no certificate found")
    await _fail(lab, second, "expired")
    for wanted in ("first", first.id[:8], first.id.upper()):
        assert await server.run("posture", "--device", wanted, "--json") == 0
        assert [json.loads(x)["device_id"] for x in capsys.readouterr().out.splitlines()] == [first.id]
    assert await server.run("posture", "--rule", "corp certificate", "--limit", "1") == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert line.endswith("second  failed   rule=corp certificate  expired"), line
    assert await server.run("posture", "--rule", lab.rule_id, "--device", "second") == 0
    assert len(capsys.readouterr().out.splitlines()) == 1
    assert await server.run("posture", "--rule", "nope") == 1
    assert "no posture rule with id or name 'nope'" in capsys.readouterr().err
    assert await server.run("posture", "--device", "nothing") == 1
    assert "no device with id, id prefix or name 'nothing'" in capsys.readouterr().err


async def test_posture_logs_is_a_deprecated_alias_of_logs_posture(
    server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    lab = server.lab
    first, _ = lab.enroll(hostname="first")
    await _fail(lab, first, "no certificate found")
    options = [
        "--device",
        "first",
        "--outcome",
        "failed",
        "--server",
        server.url,
        f"--token={lab.gateway.token}",
    ]
    assert await asyncio.to_thread(main, ["logs", "posture", *options]) == 0
    documented = capsys.readouterr()
    assert await asyncio.to_thread(main, ["posture", "logs", *options]) == 0
    alias = capsys.readouterr()
    assert alias.out == documented.out and documented.out.count("\n") == 1, alias.out
    assert documented.err == ""
    assert alias.err == logs.DEPRECATED_POSTURE_LOGS + "\n"
    assert "use `gateway logs posture`" in alias.err


def test_posture_logs_help_points_at_logs_posture(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["posture", "logs", "--help"])
    out = capsys.readouterr().out
    assert "Deprecated: runs `gateway logs posture`" in out and "--outcome" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("requests", "--since", "yesterday"), "since: must be an RFC 3339 time"),
        (("posture", "--since", "yesterday"), "since: must be an RFC 3339 time"),
    ],
)
async def test_bad_filters_are_one_line_on_stderr(
    server: Server, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], message: str
) -> None:
    assert await server.run(*argv) != 0
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("gateway: error: ") and message in err and err.count("\n") == 1, err


def test_limit_and_action_are_checked_by_the_parser(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["logs", "requests", "--limit", "0"])
    assert "must be an integer from 1 to 1000, got 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["logs", "requests", "--action", "deny"])
    assert "invalid choice: 'deny'" in capsys.readouterr().err
