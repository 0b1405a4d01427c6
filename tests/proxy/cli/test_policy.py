"""``gateway policy lint | test | explain`` end to end through ``proxy.cli.main.main``."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from proxy.cli.main import main

EXAMPLES = Path(__file__).resolve().parents[3] / "policies" / "examples"
POSTURE = "6f1c2a3b-4d5e-4f60-8a71-92b3c4d5e6f7"

RULES = """\
gateway_rules:
  - name: block gambling
    precedence: 10
    action: block
    traffic: any(http.request.domains[*] == "casino.example")
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("argv", [["policy"], ["policy", "lint"], ["policy", "test"], ["policy", "explain"]])
def test_help(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main([*argv, "--help"])
    assert caught.value.code == 0
    out = capsys.readouterr().out
    assert "usage: gateway policy" in out and "example" in out


# --- lint -------------------------------------------------------------------------------------------


def test_lint_clean(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "policy", "lint", str(EXAMPLES))
    assert (code, err) == (0, "")
    assert out == "ok: 10 gateway rules, 3 Access applications, 5 Access policies, 32 tests\n"


def test_lint_prints_every_problem_with_a_caret(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "bad.yaml",
        """\
        gateway_rules:
          - name: a
            precedence: 1
            action: block
            traffic: http.request.hots == "a.example"
          - name: b
            precedence: ten
            action: block
        """,
    )
    code, out, err = run(capsys, "policy", "lint", str(path))
    assert code == 1 and out == ""
    assert err.splitlines() == [
        f"{path}:5:14: gateway_rules[0] 'a': traffic: unknown field 'http.request.hots' (did you mean http.request.host?)",
        '        traffic: http.request.hots == "a.example"',
        "                 ^",
        f"{path}:7:17: gateway_rules[1] 'b': precedence: must be an integer, got 'ten'",
        "        precedence: ten",
        "                    ^",
        "gateway: error: 2 problems in the policy files",
    ]


def test_lint_checks_files_together(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    first = write(tmp_path, "a.yaml", RULES)
    second = write(tmp_path, "b.yaml", RULES.replace("block gambling", "again"))
    code, _, err = run(capsys, "policy", "lint", str(first), str(second))
    assert code == 1
    assert err.splitlines()[0] == (
        f"{second}:2:5: gateway rules 'block gambling' and 'again' both have precedence 10; give each enabled rule its own"
    )


def test_lint_missing_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = run(capsys, "policy", "lint", str(tmp_path / "nope.yaml"))
    assert (code, out) == (1, "")
    assert err == f"gateway: error: no such file: {tmp_path / 'nope.yaml'}\n"


# --- test -------------------------------------------------------------------------------------------


def test_examples_pass(capsys: pytest.CaptureFixture[str]) -> None:
    files = sorted(str(p) for p in EXAMPLES.glob("*.yaml"))
    code, out, err = run(capsys, "policy", "test", *files)
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert all(line.startswith("PASS ") for line in lines[:-1])
    assert lines[-1] == "32 passed, 0 failed"


def test_failures_print_the_trace_and_exit_1(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "p.yaml",
        RULES
        + """\
tests:
  - name: gambling is blocked
    request: {url: "https://www.casino.example/"}
    expect: {action: block, rule: block gambling}
  - name: wrongly expected
    request: {url: "https://casino.example/"}
    expect: {action: allow}
""",
    )
    code, out, err = run(capsys, "policy", "test", str(path))
    assert (code, err) == (1, "")
    assert out.startswith(
        "PASS gambling is blocked\nFAIL wrongly expected: expected action allow, got block\n"
    )
    assert "[10] 'block gambling' (block): MATCH" in out
    assert out.endswith("result: block by rule 'block gambling' (precedence 10)\n1 passed, 1 failed\n")


def test_no_test_cases(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, "policy", "test", str(write(tmp_path, "p.yaml", RULES)))
    assert code == 1 and err == "gateway: error: the files hold no test cases (add a tests: list)\n"


def test_test_refuses_broken_files(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = run(capsys, "policy", "test", str(write(tmp_path, "p.yaml", "[1]\n")))
    assert code == 1 and out == ""
    assert err.splitlines()[-1] == "gateway: error: 1 problem in the policy files"


# --- explain ----------------------------------------------------------------------------------------


def test_explain_a_blocked_upload(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(
        capsys,
        "policy",
        "explain",
        str(EXAMPLES),
        "--url",
        "https://files.example.net/upload",
        "--method",
        "post",
        "--email",
        "ana@example.com",
        "--src-ip",
        "10.1.2.3",
    )
    assert (code, err) == (0, "")
    assert out.startswith(
        "request: POST https://files.example.net/upload from 10.1.2.3 (ana@example.com; posture passed none, failed none)\n"
    )
    assert "[100] 'Block gambling' (block): skipped, applies only to" in out
    assert "[200] 'Block uploads to file sharing from unmanaged devices' (block): MATCH" in out
    assert "    device_posture holds:" in out
    assert out.rstrip().endswith(
        "result: block by rule 'Block uploads to file sharing from unmanaged devices' (precedence 200, id 0c1d6a52-59d1-4c39-9a5b-3e0f1a2b3c20)"
    )


def test_explain_shows_the_access_decision(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys,
        "policy",
        "explain",
        str(EXAMPLES),
        "--url",
        "https://intranet.example.com/",
        "--email",
        "ana@example.com",
        "--group",
        "engineering",
        "--passed",
        POSTURE,
    )
    assert code == 0
    assert (
        "Access:\n  Access application 'Intranet' (intranet.example.com) covers intranet.example.com" in out
    )
    assert (
        "policy 'Employees on managed devices' (allow, id 5a0e8c1f-0000-4000-8000-000000000001): MATCH" in out
    )
    assert out.rstrip().endswith(
        "Access allow by 'Employees on managed devices' (allow, id 5a0e8c1f-0000-4000-8000-000000000001)"
    )


def test_explain_do_not_inspect(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "policy", "explain", str(EXAMPLES), "--url", "https://www.mybank.example/")
    assert code == 0
    assert "at the TLS ClientHello (SNI www.mybank.example):" in out and "HTTP request:" not in out
    assert out.rstrip().endswith(
        "result: do not inspect by rule 'Do not inspect online banking' (precedence 10, id 0c1d6a52-59d1-4c39-9a5b-3e0f1a2b3c02)"
    )


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["--url", "intranet.example.com"],
            "URL must start with http:// or https://, got 'intranet.example.com'",
        ),
        (
            ["--url", "https://a.example/", "--src-ip", "10.0.0"],
            "'10.0.0' does not appear to be an IPv4 or IPv6 address",
        ),
    ],
)
def test_explain_bad_input_is_one_line(
    capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    code, out, err = run(capsys, "policy", "explain", str(EXAMPLES), *extra)
    assert (code, out) == (1, "")
    assert err == f"gateway: error: {message}\n"
