"""Enrollment: trade a one-time token for a device id and secret, and keep them in the state file."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from agent import device
from agent.addresses import local_addresses
from agent.errors import AgentError
from agent.state import AgentState, save_state
from agent.token import EnrollmentToken
from agent.transport import Transport

logger = logging.getLogger(__name__)

ENROLL_PATH = "/agent/enroll"


@dataclass(frozen=True)
class Enrollment:
    token: EnrollmentToken
    server: str  # the token's, unless given otherwise
    name: str
    email: str = ""
    serial_number: str = ""
    hostname: str = ""
    operating_system: str = ""  # linux, mac, windows (default: this system's)


def enroll(request: Enrollment, state_path: Path, *, timeout: float = 30.0) -> AgentState:
    transport = Transport(request.server, fingerprint=request.token.fingerprint, timeout=timeout)
    body = {
        "secret": request.token.secret,
        "name": request.name,
        "os": request.operating_system or device.operating_system(),
        "os_version": device.os_version(),
        "serial_number": request.serial_number,
        "hostname": request.hostname,
        "email": request.email,
        "addresses": local_addresses(),  # transparent mode knows the device by them
    }
    answer = transport.post(ENROLL_PATH, body)
    if not isinstance(answer, dict):
        raise AgentError("the server's answer to POST /agent/enroll is not an object")
    device_id, secret = answer.get("device_id"), answer.get("device_secret")
    account_id = answer.get("account_id") or request.token.account_id
    if not isinstance(device_id, str) or not device_id or not isinstance(secret, str) or not secret:
        raise AgentError("the server's answer to POST /agent/enroll lacks the device id or secret")
    if account_id != request.token.account_id:
        logger.warning("enrolled into account %s, the token named %s", account_id, request.token.account_id)
    state = AgentState(
        server=transport.server,
        fingerprint=request.token.fingerprint,
        account_id=str(account_id),
        device_id=device_id,
        device_secret=secret,
        name=request.name,
        email=request.email,
        serial_number=request.serial_number,
        hostname=request.hostname,
    )
    save_state(state_path, state)
    return state
