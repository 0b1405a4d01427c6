"""One enrolled agent: its state, its transport, and the check and report steps the CLI and the
loop share."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from agent import device
from agent.checks import AgentRule, Device, Finder, RuleCheck, check_rules
from agent.locations import Locator
from agent.report import Stored, fetch_rules, report
from agent.state import AgentState
from agent.transport import Credentials, Transport
from certs.clock import utcnow

logger = logging.getLogger(__name__)


@dataclass
class AgentSession:
    state: AgentState
    timeout: float = 30.0
    locator_factory: Callable[[], Finder] = Locator
    clock: Callable[[], datetime] = utcnow
    transport: Transport = field(init=False)

    def __post_init__(self) -> None:
        self.transport = Transport(
            self.state.server,
            fingerprint=self.state.fingerprint,
            credentials=Credentials(self.state.device_id, self.state.device_secret),
            timeout=self.timeout,
        )

    def device(self) -> Device:
        """The enrolled host name and serial number: the server fills the templates with them."""
        return Device(self.state.hostname or device.hostname(), self.state.serial_number)

    def hostname_warning(self) -> str:
        now = device.hostname()
        if self.state.hostname and now != self.state.hostname:
            return (
                f"the host name is {now!r} now but {self.state.hostname!r} at enrollment: "
                "${hostname} is filled with the enrolled one (enroll again to change it)"
            )
        return ""

    def fetch_rules(self) -> list[AgentRule]:
        return fetch_rules(self.transport)

    def check(self, rules: Sequence[AgentRule]) -> list[RuleCheck]:
        return check_rules(rules, self.device(), locator=self.locator_factory(), clock=self.clock)

    def report(self, checks: Sequence[RuleCheck]) -> list[Stored]:
        return report(checks, self.transport, device_id=self.state.device_id)
