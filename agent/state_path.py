"""Where the agent keeps its state file by default, per platform (the platform's usual place).

============  ===========================================================================
Linux         ``$XDG_CONFIG_HOME/gateway-agent/state.json``, else ``~/.config/gateway-agent/...``
macOS         ``~/Library/Application Support/gateway-agent/state.json``; for root (a launchd
              daemon for the whole machine) ``/Library/Application Support/gateway-agent/...``
Windows       ``%LOCALAPPDATA%\\gateway-agent\\state.json``; for LocalSystem (a service for the
              whole machine) ``%PROGRAMDATA%\\gateway-agent\\state.json``
============  ===========================================================================

:func:`state_path_for` is pure (platform, environment, home, whether this is the machine's own
account) so that every branch is tested on Linux; :func:`default_state_path` fills it in.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path, PurePath, PureWindowsPath

from agent import device

logger = logging.getLogger(__name__)

DIRECTORY = "gateway-agent"
FILE = "state.json"


def state_path_for(system: str, env: Mapping[str, str], home: PurePath, *, machine: bool) -> PurePath:
    if system == "mac":
        base = PurePath("/Library") if machine else home / "Library"
        return base / "Application Support" / DIRECTORY / FILE
    if system == "windows":
        if machine:
            base = PureWindowsPath(env.get("PROGRAMDATA") or "C:\\ProgramData")
        else:
            base = PureWindowsPath(
                env.get("LOCALAPPDATA") or str(PureWindowsPath(str(home), "AppData", "Local"))
            )
        return base / DIRECTORY / FILE
    return PurePath(env.get("XDG_CONFIG_HOME") or str(home / ".config")) / DIRECTORY / FILE


def is_machine_account(system: str, env: Mapping[str, str]) -> bool:
    """root on macOS; LocalSystem on Windows (its profile is ``...\\system32\\config\\systemprofile``)."""
    if system == "mac":
        return hasattr(os, "geteuid") and os.geteuid() == 0
    if system == "windows":
        return "systemprofile" in env.get("USERPROFILE", "").lower()
    return False


def default_state_path() -> Path:
    system = device.operating_system()
    return Path(
        state_path_for(system, os.environ, Path.home(), machine=is_machine_account(system, os.environ))
    )
