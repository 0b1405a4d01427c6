"""The state file's default place on each platform (``agent.state_path``, pure, so every branch
runs on Linux)."""

from __future__ import annotations

from pathlib import PurePosixPath, PureWindowsPath

import pytest

from agent.state_path import is_machine_account, state_path_for

HOME = PurePosixPath("/Users/ann")


@pytest.mark.parametrize(
    ("system", "env", "machine", "expected"),
    [
        ("linux", {}, False, "/Users/ann/.config/gateway-agent/state.json"),
        ("linux", {"XDG_CONFIG_HOME": "/cfg"}, False, "/cfg/gateway-agent/state.json"),
        ("mac", {}, False, "/Users/ann/Library/Application Support/gateway-agent/state.json"),
        ("mac", {}, True, "/Library/Application Support/gateway-agent/state.json"),
    ],
)
def test_posix_places(system: str, env: dict[str, str], machine: bool, expected: str) -> None:
    assert str(state_path_for(system, env, HOME, machine=machine)) == expected


def test_windows_places() -> None:
    env = {"LOCALAPPDATA": "C:\\Users\\ann\\AppData\\Local", "PROGRAMDATA": "D:\\ProgramData"}
    home = PureWindowsPath("C:\\Users\\ann")
    assert state_path_for("windows", env, home, machine=False) == PureWindowsPath(
        "C:\\Users\\ann\\AppData\\Local\\gateway-agent\\state.json"
    )
    assert state_path_for("windows", env, home, machine=True) == PureWindowsPath(
        "D:\\ProgramData\\gateway-agent\\state.json"
    )
    assert state_path_for("windows", {}, home, machine=False) == PureWindowsPath(
        "C:\\Users\\ann\\AppData\\Local\\gateway-agent\\state.json"
    )
    assert state_path_for("windows", {}, home, machine=True) == PureWindowsPath(
        "C:\\ProgramData\\gateway-agent\\state.json"
    )


def test_the_machine_account_is_localsystem_on_windows_and_never_on_linux() -> None:
    assert is_machine_account("windows", {"USERPROFILE": "C:\\Windows\\system32\\config\\systemprofile"})
    assert not is_machine_account("windows", {"USERPROFILE": "C:\\Users\\ann"})
    assert not is_machine_account("linux", {"USERPROFILE": "systemprofile"})
