"""Which platform the agent runs on, and how it reaches that platform's tools: one seam.

``current_host()`` says ``linux``, ``mac`` or ``windows`` (Cloudflare's names; any other system
is treated as Linux) and gives the runner of the platform's tools (``agent.runner``). The CLI asks
once; everything platform-specific takes the host from there: where certificates are found
(``finder``), which trust stores exist (``agent.trust.build_stores``), what enrollment says the
OS is. Tests swap in a host with a recorded runner to be a Mac or a Windows machine on Linux.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from agent import device
from agent.checks import Finder
from agent.locations import Locator
from agent.runner import Runner, SubprocessRunner

logger = logging.getLogger(__name__)

SYSTEMS = ("linux", "mac", "windows")


@dataclass(frozen=True)
class Host:
    system: str  # linux, mac, windows
    runner: Runner = field(default_factory=SubprocessRunner)
    home: Path | None = None  # the user's home (default: Path.home())


def current_host() -> Host:
    system = device.operating_system()
    return Host(system if system in SYSTEMS else "linux")


def finder(host: Host) -> Finder:
    """A fresh finder of candidates for one round of checks."""
    if host.system == "mac":
        from agent.stores_macos import MacLocator

        return MacLocator(host.runner, home=host.home)
    if host.system == "windows":
        from agent.stores_windows import WindowsLocator

        return WindowsLocator(host.runner, home=host.home)
    return Locator(home=host.home)
