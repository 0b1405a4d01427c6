"""The serial number on macOS and Windows, from the platform's own tools (through ``agent.runner``).

- macOS: ``/usr/sbin/ioreg -rd1 -c IOPlatformExpertDevice``, the line
  ``"IOPlatformSerialNumber" = "C02XYZ123ABC"`` (what "About This Mac" shows);
- Windows: PowerShell ``(Get-CimInstance -ClassName Win32_BIOS).SerialNumber`` as a JSON string.

A placeholder the firmware leaves ("To Be Filled By O.E.M.", "Default string"), a tool that is
missing or fails, or output that does not parse gives ``""`` (enrollment then warns, as on Linux
without a serial number); ``--serial-number`` always wins.
"""

from __future__ import annotations

import json
import logging
import re

from agent.device import usable_serial
from agent.runner import Command, Runner, ToolFailed, ToolMissing
from agent.windows_powershell import PowerShellError, run_script

logger = logging.getLogger(__name__)

IOREG = "/usr/sbin/ioreg"
_IOREG_SERIAL = re.compile(r'^\s*"IOPlatformSerialNumber"\s*=\s*"([^"]*)"\s*$', re.MULTILINE)
_BIOS_SERIAL = (
    "  ConvertTo-Json -InputObject ([string](Get-CimInstance -ClassName Win32_BIOS).SerialNumber) -Compress"
)


def parse_ioreg(text: str) -> str:
    match = _IOREG_SERIAL.search(text)
    return match.group(1).strip() if match else ""


def parse_bios_serial(output: bytes) -> str:
    try:
        value = json.loads(output.decode("utf-8", errors="replace").lstrip("\ufeff").strip() or '""')
    except ValueError:
        return ""
    return value.strip() if isinstance(value, str) else ""


def platform_serial(system: str, runner: Runner) -> str:
    """This Mac's or Windows PC's serial number, or ``""`` (module docstring)."""
    if system == "mac":
        try:
            done = runner.run(Command((IOREG, "-rd1", "-c", "IOPlatformExpertDevice")))
        except (ToolMissing, ToolFailed) as e:
            logger.debug("serial number: %s", e)
            return ""
        value = parse_ioreg(done.text()) if done.returncode == 0 else ""
    elif system == "windows":
        try:
            value = parse_bios_serial(run_script(runner, _BIOS_SERIAL).stdout)
        except PowerShellError as e:
            logger.debug("serial number: %s", e)
            return ""
    else:
        return ""
    return value if value and usable_serial(value) else ""
