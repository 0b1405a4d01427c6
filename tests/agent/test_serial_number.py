"""The serial number on macOS and Windows from recorded ``ioreg`` and PowerShell output (not run
on a real Mac or Windows machine)."""

from __future__ import annotations

from agent.runner import Command, Completed, ToolMissing
from agent.serial_number import IOREG, parse_bios_serial, parse_ioreg, platform_serial
from agent.windows_powershell import decode_script

IOREG_OUTPUT = """+-o J314sAP  <class IOPlatformExpertDevice, id 0x100000220, registered, matched, active, busy 0 (3 ms), retain 31>
  {
    "IOPolledInterface" = "AppleARMWatchdogTimerHibernateHandler is not serializable"
    "model" = <"MacBookPro18,3">
    "IOPlatformUUID" = "5E3F1B2A-0000-5C7D-9E8F-1A2B3C4D5E6F"
    "IOPlatformSerialNumber" = "C02XYZ123ABC"
    "manufacturer" = <"Apple Inc.">
  }
"""


class Recorded:
    def __init__(self, answer: Completed | None) -> None:
        self.answer = answer
        self.calls: list[Command] = []

    def run(self, command: Command) -> Completed:
        self.calls.append(command)
        if self.answer is None:
            raise ToolMissing(f"{command.argv[0]} is not installed on this system")
        return self.answer


def test_recorded_ioreg_output_gives_the_mac_serial_number() -> None:
    assert parse_ioreg(IOREG_OUTPUT) == "C02XYZ123ABC"
    runner = Recorded(Completed(0, IOREG_OUTPUT.encode()))
    assert platform_serial("mac", runner) == "C02XYZ123ABC"
    assert runner.calls[0].argv == (IOREG, "-rd1", "-c", "IOPlatformExpertDevice")
    assert parse_ioreg("garbage") == ""


def test_recorded_bios_serial_from_powershell_and_placeholders_are_not_serials() -> None:
    runner = Recorded(Completed(0, b'"5CD1234XYZ "\r\n'))
    assert platform_serial("windows", runner) == "5CD1234XYZ"
    assert "Win32_BIOS" in decode_script(runner.calls[0])
    assert platform_serial("windows", Recorded(Completed(0, b'"To Be Filled By O.E.M."'))) == ""
    assert parse_bios_serial(b'\xef\xbb\xbf"ABC"') == "ABC" and parse_bios_serial(b"{") == ""


def test_recorded_missing_tool_or_failure_gives_no_serial_number() -> None:
    assert platform_serial("mac", Recorded(None)) == ""
    assert platform_serial("windows", Recorded(None)) == ""
    assert (
        platform_serial("windows", Recorded(Completed(1, b"", b"gateway-agent-error: Access denied\r\n")))
        == ""
    )
    assert platform_serial("mac", Recorded(Completed(1, b"", b"ioreg: error\n"))) == ""
    assert platform_serial("linux", Recorded(None)) == ""
