"""agent/addresses.py: the device's own addresses, without loopback and link-local ones."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

from agent import addresses

IP_JSON = [
    {"ifname": "lo", "addr_info": [{"local": "127.0.0.1"}, {"local": "::1"}]},
    {
        "ifname": "eth0",
        "addr_info": [{"local": "10.213.0.2"}, {"local": "fe80::1"}, {"local": "2001:db8::2"}],
    },
    {"ifname": "eth1", "addr_info": [{"local": "10.213.0.2"}]},
]


def test_ip_json_is_read_and_filtered(monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
        assert argv[1:] == ["-j", "address", "show"]
        return subprocess.CompletedProcess(argv, 0, json.dumps(IP_JSON).encode(), b"")

    monkeypatch.setattr(addresses.shutil, "which", lambda name: "/usr/sbin/ip")
    monkeypatch.setattr(addresses.subprocess, "run", fake_run)
    assert addresses.local_addresses() == ["10.213.0.2", "2001:db8::2"]


def test_without_ip_the_host_names_addresses_are_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(addresses.shutil, "which", lambda name: None)
    monkeypatch.setattr(
        addresses.socket,
        "getaddrinfo",
        lambda *a, **k: [(0, 0, 0, "", ("192.0.2.7", 0)), (0, 0, 0, "", ("127.0.1.1", 0))],
    )
    assert addresses.local_addresses() == ["192.0.2.7"]
