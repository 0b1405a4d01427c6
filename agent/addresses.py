"""The device's own IP addresses, which the agent registers with the server (at enrollment and
with each report): in transparent mode the gateway knows a device by its source address.

``ip -j address`` where iproute2 is installed (Linux), else what the host name resolves to.
Loopback, link-local, multicast and unspecified addresses are left out: they never reach a
gateway as a source.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import shutil
import socket
import subprocess
from typing import Any

from agent.errors import AgentError
from agent.transport import Transport

logger = logging.getLogger(__name__)

ADDRESSES_PATH = "/agent/addresses"
MAX_ADDRESSES = 64


def local_addresses() -> list[str]:
    """This machine's addresses that could be a connection's source, in the order found."""
    found = _from_ip_command()
    if found is None:
        found = _from_host_name()
    kept: list[str] = []
    for text in found:
        try:
            address = ipaddress.ip_address(text.partition("%")[0])
        except ValueError:
            continue
        if address.is_loopback or address.is_link_local or address.is_multicast or address.is_unspecified:
            continue
        if str(address) not in kept:
            kept.append(str(address))
    return kept[:MAX_ADDRESSES]


def _from_ip_command() -> list[str] | None:
    ip = shutil.which("ip")
    if ip is None:
        return None
    try:
        result = subprocess.run([ip, "-j", "address", "show"], capture_output=True, timeout=5, check=True)
        interfaces: Any = json.loads(result.stdout or b"[]")
    except (OSError, subprocess.SubprocessError, ValueError) as e:
        logger.debug("ip -j address show failed (%s): using the host name's addresses", e)
        return None
    return [
        str(info.get("local"))
        for interface in interfaces
        if isinstance(interface, dict)
        for info in interface.get("addr_info", [])
        if isinstance(info, dict) and info.get("local")
    ]


def _from_host_name() -> list[str]:
    try:
        infos = socket.getaddrinfo(socket.gethostname(), None, proto=socket.IPPROTO_TCP)
    except OSError:
        return []
    return [str(info[4][0]) for info in infos]


def register(transport: Transport) -> list[str]:
    """Send the addresses (``PUT /agent/addresses``); the ones the server kept. A refusal is
    logged, not raised: the posture report that follows matters more."""
    try:
        answer = transport.put(ADDRESSES_PATH, {"addresses": local_addresses()})
    except AgentError as e:
        logger.warning("could not register this device's addresses: %s", e)
        return []
    kept = answer.get("addresses") if isinstance(answer, dict) else None
    addresses = [str(a) for a in kept] if isinstance(kept, list) else []
    logger.info("registered addresses: %s", ", ".join(addresses) or "none")
    return addresses
