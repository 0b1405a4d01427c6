"""``gateway agent wireguard``: this device's WireGuard tunnel configuration, from the server.

The server gives every enrolled device a tunnel of its own (a port, an address and a key pair
for each end); the agent fetches this device's configuration with its device credentials and
prints it for ``wg-quick`` (or ``wg setconf``), or writes it to a 0600 file. It holds the
device's private key: never logged.
"""

from __future__ import annotations

import logging
import os
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.errors import AgentError
from agent.transport import Transport

logger = logging.getLogger(__name__)

PATH = "/agent/wireguard"
FORMATS = ("wg-quick", "wg")


@dataclass(frozen=True)
class TunnelConfig:
    text: str = field(repr=False)  # the configuration file, private key included
    address: str  # this device's tunnel address, "100.96.0.2/32"
    endpoint: str  # the gateway's HOST:PORT for this device
    public_key: str  # the gateway's end


def fetch(
    transport: Transport, *, format: str = "wg-quick", allowed_ips: str | None = None, dns: str | None = None
) -> TunnelConfig:
    query = {k: v for k, v in (("format", format), ("allowed_ips", allowed_ips), ("dns", dns)) if v}
    answer: Any = transport.get(f"{PATH}?{urllib.parse.urlencode(query)}")
    try:
        return TunnelConfig(
            text=str(answer["config"]),
            address=str(answer["address"]),
            endpoint=str(answer["endpoint"]),
            public_key=str(answer["public_key"]),
        )
    except (KeyError, TypeError):
        raise AgentError(f"the server at {transport.server} gave an unexpected WireGuard answer") from None


def write_private(path: Path, text: str) -> None:
    """``text`` into ``path``, readable by its owner only (0600, also when it existed)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        if hasattr(os, "fchmod"):  # not on Windows, where the folder's ACL decides
            os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(text)
    except OSError as e:
        raise AgentError(f"--output {path}: cannot write: {e.strerror}") from None
