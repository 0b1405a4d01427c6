"""``gateway agent ...`` end to end against the stand-in server: enroll, check (table, exit
status), report, run (rounds, SIGTERM), and one-line errors without tracebacks."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from proxy.cli.main import main
from tests.agent.agent_standin import StandIn, serving
from tests.agent.agentlab import make_token, rule_api, wire_rule
from tests.support.pki import Issued, issue_leaf

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def device(tmp_path: Path, ca: Issued, monkeypatch: pytest.MonkeyPatch) -> tuple[StandIn, Path]:
    """A stand-in with two rules over one PEM file: one passes, one fails."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # ~/.pki/nssdb: absent
    client = issue_leaf(ca, f"{os.uname().nodename}.corp")
    pem = tmp_path / "client.pem"
    pem.write_text(client.cert_pem() + client.key_pem())
    standin = StandIn(rules=[
        wire_rule(rule_api("r-pass", name="corp cert", paths=(str(pem),)), ca),
        wire_rule(rule_api("r-fail", name="serial cert", cn="${serial_number}.corp", paths=(str(pem),)), ca),
    ])  # fmt: skip
    return standin, pem


def _enroll(url: str, standin: StandIn, state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    token = make_token(url, secret=standin.enroll_secret)
    assert main(["agent", "enroll", "--token", token, "--state", str(state), "--serial-number", "SN-9",
                 "--email", "ann@example.com"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert out.startswith("enrolled as device ") and f"state saved to {state} (0600)" in out


def test_enroll_check_report(
    tmp_path: Path, device: tuple[StandIn, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    standin, pem = device
    state = tmp_path / "state.json"
    with serving(standin.app) as server:
        _enroll(server.url, standin, state, capsys)
        assert stat.S_IMODE(state.stat().st_mode) == 0o600
        # a second enrollment needs --force
        assert main(["agent", "enroll", "--token", make_token(server.url), "--state", str(state)]) == 1
        assert "already enrolled" in capsys.readouterr().err

        assert main(["agent", "check", "--state", str(state)]) == 3
        out = capsys.readouterr().out
        host = os.uname().nodename
        assert out.splitlines()[0].split() == ["RULE", "OUTCOME", "CERTIFICATE", "OR", "REASON"]
        assert f"corp cert    pass     {pem} (CN {host}.corp)" in out
        assert f"serial cert  fail     CN '{host}.corp' does not match 'SN-9.corp'" in out
        assert (
            f"rejected for serial cert:\n  {pem} (CN {host}.corp): CN '{host}.corp' does not match 'SN-9.corp'"
            in out
        )
        assert standin.stored == []  # check reports nothing

        assert main(["agent", "report", "--state", str(state)]) == 3  # as check: a rule failed
        out = capsys.readouterr().out
        assert out.splitlines() == [
            "RULE         STORED           PASS EXPIRES          REASON",
            "corp cert    pass (verified)  2099-01-01T00:00:00Z",
            f"serial cert  fail                                   CN '{host}.corp' does not match 'SN-9.corp'",
        ]
    assert [(s["rule_id"], s["success"], s["verified"]) for s in standin.stored] == [
        ("r-pass", True, True), ("r-fail", False, False)
    ]  # fmt: skip


def test_run_reports_each_round(
    tmp_path: Path, device: tuple[StandIn, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    standin, pem = device
    state = tmp_path / "state.json"
    with serving(standin.app) as server:
        _enroll(server.url, standin, state, capsys)
        started = time.monotonic()
        assert (
            main(["agent", "run", "--state", str(state), "--interval-scale", "0.001", "--max-rounds", "3"])
            == 0
        )
        assert time.monotonic() - started < 10
        lines = capsys.readouterr().out.splitlines()
        assert len([line for line in lines if "corp cert: pass (verified)" in line]) == 3
        pem.unlink()  # the certificate is gone: the next round fails
        assert main(["agent", "run", "--state", str(state), "--once"]) == 0
        assert f"corp cert: fail: no certificate found ({pem}: no such file)" in capsys.readouterr().out
    assert [s["success"] for s in standin.stored if s["rule_id"] == "r-pass"] == [True, True, True, False]


def test_json_output(
    tmp_path: Path, device: tuple[StandIn, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    standin, pem = device
    state = tmp_path / "state.json"
    with serving(standin.app) as server:
        _enroll(server.url, standin, state, capsys)
        main(["agent", "check", "--json", "--state", str(state)])
        checks = json.loads(capsys.readouterr().out)
        main(["agent", "report", "--json", "--state", str(state)])
        stored = json.loads(capsys.readouterr().out)
    assert [(c["rule_id"], c["passed"], c["certificate"], c["private_key"]) for c in checks] == [
        ("r-pass", True, str(pem), True), ("r-fail", False, None, False)
    ]  # fmt: skip
    assert stored[0] == {"rule_id": "r-pass", "success": True, "verified": True, "reason": "",
                         "expires_at": "2099-01-01T00:00:00Z"}  # fmt: skip


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["agent", "check", "--state", "{tmp}/none.json"], "no state file at {tmp}/none.json: enroll first"),
        (["agent", "enroll", "--state", "{tmp}/s.json", "--token", "nonsense"], "not an enrollment token"),
        (
            ["agent", "enroll", "--state", "{tmp}/s.json"],
            "no enrollment token: pass --token TOKEN or set GATEWAY_ENROLL_TOKEN",
        ),
        (
            ["agent", "enroll", "--state", "{tmp}/s.json", "--token", make_token("http://10.1.2.3:8081")],
            "refusing plain HTTP to http://10.1.2.3:8081",
        ),
        (
            ["agent", "enroll", "--state", "{tmp}/s.json", "--token", make_token("http://127.0.0.1:1")],
            "cannot reach the server at http://127.0.0.1:1: connection refused",
        ),
    ],
)
def test_errors_are_one_line(
    tmp_path: Path,
    argv: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("GATEWAY_ENROLL_TOKEN", raising=False)
    assert main([a.replace("{tmp}", str(tmp_path)) for a in argv]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("gateway: error: ")
    assert message.replace("{tmp}", str(tmp_path)) in err


def test_every_agent_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("enroll", "check", "report", "sync-ca", "run", "credentials"):
        with pytest.raises(SystemExit) as done:
            main(["agent", command, "--help"])
        assert done.value.code == 0
        out = capsys.readouterr().out
        assert "--state FILE" in out and "example:" in out


def test_run_stops_cleanly_on_sigterm(
    tmp_path: Path, device: tuple[StandIn, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    standin, _ = device
    state = tmp_path / "state.json"
    with serving(standin.app) as server:
        _enroll(server.url, standin, state, capsys)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        process = subprocess.Popen(
            [sys.executable, "-m", "proxy.cli.main", "agent", "run", "--state", str(state)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT,
        )  # fmt: skip
        try:
            assert process.stdout is not None
            first = process.stdout.readline().decode()  # the first round is reported at once
            assert "corp cert: pass (verified)" in first
            process.send_signal(signal.SIGTERM)
            _out, err = process.communicate(timeout=30)  # a CA sync in progress finishes first
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        assert process.returncode == 0, err.decode()
        assert b"Traceback" not in err


def test_credentials_prints_the_device_id_and_secret_for_the_proxy(
    tmp_path: Path,
    device: tuple[StandIn, Path],
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    import base64
    import json
    import logging

    from agent.state import load_state

    caplog.set_level(logging.DEBUG)
    standin, _ = device
    state = tmp_path / "state.json"
    with serving(standin.app) as server:
        _enroll(server.url, standin, state, capsys)
    saved = load_state(state)
    device_id, secret = saved.device_id, saved.device_secret

    def credentials(*more: str) -> str:
        assert main(["agent", "credentials", "--state", str(state), "-v", *more]) == 0
        return capsys.readouterr().out

    assert credentials() == f"{device_id}:{secret}\n"  # curl --proxy-user
    header = credentials("--format", "header")
    assert header.startswith("Proxy-Authorization: Basic ")
    assert base64.b64decode(header.split()[-1]).decode() == f"{device_id}:{secret}"
    assert (
        credentials("--format", "url") == f"http://{device_id}:{secret}@127.0.0.1:8080\n"
    )  # the server's host
    assert (
        credentials("--format", "url", "--proxy", "gw.example:3128")
        == f"http://{device_id}:{secret}@gw.example:3128\n"
    )
    assert json.loads(credentials("--format", "json", "--proxy", "[::1]:8080")) == {
        "device_id": device_id,
        "device_secret": secret,
        "proxy_authorization": header.removeprefix("Proxy-Authorization: ").strip(),
        "proxy_url": f"http://{device_id}:{secret}@[::1]:8080",
    }
    assert all(secret not in record.getMessage() for record in caplog.records)  # printed, never logged

    assert main(["agent", "credentials", "--state", str(state), "--proxy", "gw.example"]) == 1
    assert capsys.readouterr().err == (
        "gateway: error: --proxy gw.example: give the proxy as HOST:PORT (for example 127.0.0.1:8080)\n"
    )
    state.chmod(0o644)  # only the state file's owner may read the secret
    assert main(["agent", "credentials", "--state", str(state)]) == 1
    out, err = capsys.readouterr()
    assert out == "" and "others may read it" in err and secret not in err


def test_gateway_agent_is_a_program_of_its_own(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from agent.cli import main as agent_main

    missing = tmp_path / "none.json"
    assert agent_main(["check", "--state", str(missing)]) == 1
    err = capsys.readouterr().err
    assert (
        err
        == f"gateway-agent: error: no state file at {missing}: enroll first with `gateway agent enroll --token T`\n"
    )
    with pytest.raises(SystemExit) as done:
        agent_main(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: gateway-agent [-h] COMMAND") and "  gateway-agent enroll --token" in out
