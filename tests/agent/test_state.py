"""The state file: 0600 in a 0700 directory, atomic, refused when others may read it."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from agent.errors import AgentError
from agent.state import AgentState, default_state_path, load_state, save_state

STATE = AgentState(
    server="https://gw.example:8443",
    fingerprint=":".join(["AB"] * 32),
    account_id="a" * 32,
    device_id="dev-1",
    device_secret="very-secret",
    name="laptop",
    email="ann@example.com",
)


def test_state_is_written_0600_in_a_0700_directory_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "gateway-agent" / "state.json"
    old = os.umask(0o022)
    try:
        save_state(path, STATE)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert load_state(path) == STATE
    assert [p.name for p in path.parent.iterdir()] == ["state.json"]  # no temporary left behind


def test_saving_again_replaces_the_file_and_keeps_0600(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    save_state(path, STATE)
    newer = AgentState(**{**STATE.__dict__, "device_id": "dev-2", "serial_number": "SN1"})
    save_state(path, newer)
    assert load_state(path) == newer
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_state_file_others_may_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    save_state(path, STATE)
    path.chmod(0o644)
    with pytest.raises(AgentError, match=r"others may read it \(mode 0644\): run `chmod 600"):
        load_state(path)


def test_missing_and_damaged_state_files_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(AgentError, match="no state file at .*: enroll first"):
        load_state(tmp_path / "nope.json")
    damaged = tmp_path / "damaged.json"
    damaged.write_text("{not json")
    damaged.chmod(0o600)
    with pytest.raises(AgentError, match="is not JSON: enroll again"):
        load_state(damaged)
    partial = tmp_path / "partial.json"
    partial.write_text('{"version": 1, "server": "http://127.0.0.1:1"}')
    partial.chmod(0o600)
    with pytest.raises(AgentError, match="lacks .device_id."):
        load_state(partial)


def test_a_symlinked_state_file_is_not_followed(tmp_path: Path) -> None:
    real = tmp_path / "real.json"
    save_state(real, STATE)
    link = tmp_path / "link.json"
    link.symlink_to(real)
    with pytest.raises(AgentError, match="cannot read the state file"):
        load_state(link)


def test_the_secret_never_shows_in_repr() -> None:
    assert "very-secret" not in repr(STATE)


def test_default_path_follows_xdg_config_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert default_state_path() == tmp_path / "gateway-agent" / "state.json"
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_state_path() == tmp_path / "home" / ".config" / "gateway-agent" / "state.json"
