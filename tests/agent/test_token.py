"""Enrollment tokens: what a good one yields, and one clear line for each kind of garbage."""

from __future__ import annotations

import base64

import pytest

from agent.errors import AgentError
from agent.token import parse_token
from tests.agent.agentlab import make_token

PIN = ":".join(["ab"] * 32)


def test_parse_token_yields_server_account_secret_and_pin() -> None:
    token = parse_token(make_token("https://gw.example:8443/", account="acc", secret="s3cret", pin=PIN))
    assert token.server == "https://gw.example:8443"
    assert token.account_id == "acc"
    assert token.secret == "s3cret"
    assert token.fingerprint == PIN.upper()


def test_parse_token_accepts_padding_spaces_and_a_bare_hex_pin() -> None:
    body = make_token("http://127.0.0.1:8081", pin=PIN.replace(":", ""))[5:]
    padded = "gwe1." + body + "=" * (-len(body) % 4)
    assert parse_token(f"  {padded}\n").fingerprint == PIN.upper()


def test_the_secret_never_shows_in_repr() -> None:
    token = parse_token(make_token("http://127.0.0.1:1", secret="do-not-print"))
    assert "do-not-print" not in repr(token)


def _raw(text: str) -> str:
    return "gwe1." + base64.urlsafe_b64encode(text.encode()).decode()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty enrollment token"),
        ("hello", "should start with 'gwe1.'"),
        ("gwe2.abcd", "should start with 'gwe1.'"),
        ("gwe1.!!!!", "not base64url-encoded JSON"),
        ("gwe1." + "QUJD", "not base64url-encoded JSON"),  # "ABC"
        (_raw("[1, 2]"), "does not hold a JSON object"),
        (_raw('{"a": "x", "s": "y"}'), "no server URL"),
        (_raw('{"u": "http://127.0.0.1:1", "s": "y"}'), "no account id"),
        (_raw('{"u": "http://127.0.0.1:1", "a": "x", "s": ""}'), "no secret"),
        (_raw('{"u": "ftp://host", "a": "x", "s": "y"}'), "invalid server URL"),
        (_raw('{"u": "https://u:p@host", "a": "x", "s": "y"}'), "user name or password"),
        (_raw('{"u": "https://host/path", "a": "x", "s": "y"}'), "only the scheme, host and port"),
        (_raw('{"u": "https://host:99999", "a": "x", "s": "y"}'), "bad port"),
        (_raw('{"u": "https://host", "a": "x", "s": "y", "f": "12:34"}'), "invalid certificate fingerprint"),
        (_raw('{"u": "https://host", "a": "x", "s": "y", "f": 7}'), "is not a string"),
        ("gwe1." + "A" * 9000, "too long"),
    ],
)
def test_parse_token_refuses_garbage_with_a_reason(text: str, message: str) -> None:
    with pytest.raises(AgentError, match=message):
        parse_token(text)
