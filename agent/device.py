"""What the agent says about this device: host name, serial number, operating system.

The serial number is, in order: ``--serial-number`` given at enrollment; the firmware's
``/sys/class/dmi/id/product_serial`` when readable (usually only by root) and not a placeholder
such as "To Be Filled By O.E.M."; else ``/etc/machine-id`` (every systemd machine has one). The
value found at enrollment is kept in the state file and used from then on, because the server
fills ``${serial_number}`` with what it was told at enrollment.
"""

from __future__ import annotations

import logging
import platform
import socket
from pathlib import Path

logger = logging.getLogger(__name__)

PRODUCT_SERIAL = Path("/sys/class/dmi/id/product_serial")
MACHINE_ID = Path("/etc/machine-id")
_PLACEHOLDERS = {
    "", "0", "none", "n/a", "na", "default string", "not specified", "not applicable",
    "system serial number", "to be filled by o.e.m.", "to be filled by oem", "0123456789",
}  # fmt: skip


def hostname() -> str:
    return socket.gethostname()


def serial_number(*, product_serial: Path = PRODUCT_SERIAL, machine_id: Path = MACHINE_ID) -> str:
    """The firmware serial number if readable and real, else the machine id, else ``""``."""
    for path in (product_serial, machine_id):
        try:
            value = path.read_text(encoding="utf-8", errors="replace").strip()
        except OSError as e:
            logger.debug("serial number: cannot read %s: %s", path, e.strerror or e)
            continue
        if usable_serial(value):
            logger.debug("serial number from %s", path)
            return value
    return ""


def usable_serial(value: str) -> bool:
    """A real serial number: not a firmware placeholder, one line, at most 128 characters."""
    return value.lower() not in _PLACEHOLDERS and "\n" not in value and len(value) <= 128


def operating_system() -> str:
    """Cloudflare's platform name for this system: ``linux``, ``mac`` or ``windows``."""
    system = platform.system().lower()
    return {"darwin": "mac"}.get(system, system)


def os_version() -> str:
    """The kernel release on Linux (what Cloudflare's os_version checks compare); the macOS
    version (``14.5``) on a Mac; the build (``10.0.22631``) on Windows."""
    system = platform.system()
    if system == "Darwin":
        return platform.mac_ver()[0] or platform.release()
    if system == "Windows":
        return platform.version()
    return platform.release()
