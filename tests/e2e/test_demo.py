"""`gateway demo` end to end (issue 10, points 1 and 5): the real command as a process, its
banner, curl through the device's local proxy (www allowed, blocked blocked, secure allowed,
denied after `posture fail`, allowed after `posture pass`, bank with its own certificate, a
name outside the lab refused), headless Chromium with the printed command's flags, then SIGINT:
every child gone and the directory emptied; a second run in the same directory works."""

from __future__ import annotations

import os
import random
import re
import shlex
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from . import curl, tools
from .gateway_process import child_env

pytestmark = pytest.mark.e2e

BANNER_TIMEOUT = 90.0


@dataclass
class Demo:
    proc: subprocess.Popen[bytes]
    directory: Path
    base: int
    banner: str

    def url(self, host: str, path: str = "/") -> str:
        return f"https://{host}.demo.test:{self.base + 2}{path}"

    def get(self, host: str, cacert: Path | None = None) -> curl.CurlResult:
        return curl.via_proxy(
            self.base + 3, self.url(host), cacert=cacert or self.directory / "gateway-ca.pem"
        )

    def posture(self, outcome: str) -> subprocess.CompletedProcess[bytes]:
        return tools.run(
            [tools.venv_program("gateway"), "demo", "posture", outcome, "--dir", str(self.directory)],
            env=child_env(), timeout=60,
        )  # fmt: skip

    def children(self) -> list[int]:
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                except OSError:
                    continue
                if str(self.directory) in cmdline and int(entry.name) != self.proc.pid:
                    found.append(int(entry.name))
        return found


def start_demo(directory: Path, base: int) -> Demo:
    out = directory.parent / f"{directory.name}-{base}.out"
    with out.open("wb") as stdout:
        proc = subprocess.Popen(
            [tools.venv_program("gateway"), "demo", "--dir", str(directory), "--port-base", str(base)],
            stdin=subprocess.DEVNULL, stdout=stdout, stderr=subprocess.STDOUT, env=child_env(),
            start_new_session=True,
        )  # fmt: skip
    deadline = time.monotonic() + BANNER_TIMEOUT
    while time.monotonic() < deadline:
        text = out.read_text(errors="replace")
        if "With curl, as the device:" in text and text.rstrip().endswith(
            ".demo.test:" + str(base + 2) + "/"
        ):
            return Demo(proc, directory, base, text)
        if proc.poll() is not None:
            pytest.fail(f"gateway demo exited {proc.returncode}:\n{tools.tail(text)}")
        time.sleep(0.2)
    tools.kill_group(proc)
    pytest.fail(f"no banner within {BANNER_TIMEOUT} s:\n{tools.tail(out)}")


def stop_demo(demo: Demo) -> int | None:
    return tools.stop(demo.proc, sig=signal.SIGINT, timeout=30)


def _ephemeral_low() -> int:
    """The lowest port the kernel picks for outgoing connections (and for bind to port 0)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _bindable(port: int) -> bool:
    """Free as `gateway demo` checks it: bind on loopback with SO_REUSEADDR (TIME_WAIT is free)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_base() -> int:
    """Four free ports in a row below the ephemeral range: no client socket of this run (nor of
    a parallel test process) is given one of them as its source port while the demo is down
    between its two starts, as happens to ports handed out by bind(0)."""
    high = max(_ephemeral_low(), 12000) - 4
    for _ in range(200):
        base = random.randrange(10000, high)
        if all(_bindable(base + i) for i in range(4)):
            return base
    raise RuntimeError("no four free ports in a row")


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Demo]:
    running = start_demo(tmp_path / "lab", free_base())
    try:
        yield running
    finally:
        if running.proc.poll() is None:
            stop_demo(running)
        tools.kill_group(running.proc)


def test_demo_lab_from_banner_to_ctrl_c(demo: Demo, tmp_path: Path) -> None:
    assert f"http://127.0.0.1:{demo.base + 1}/" in demo.banner
    assert "admin token" in demo.banner
    www = demo.get("www")
    assert www.status == 200 and "www.demo.test: Allowed" in www.body, (
        www.status,
        www.stderr,
        www.body[:300],
    )
    assert "Gateway Demo Origins CA" not in www.certs[0].issuer.rfc4514_string()  # inspected
    blocked = demo.get("blocked")
    assert blocked.status == 403 and "Block blocked.demo.test" in blocked.body, blocked.body[:300]
    bank = demo.get("bank", cacert=demo.directory / "lab" / "lab-ca.pem")
    assert bank.status == 200 and "Not inspected" in bank.body, (bank.status, bank.stderr)
    assert "Gateway Demo Origins CA" in bank.certs[0].issuer.rfc4514_string()  # the bank's own
    outside = curl.via_proxy(
        demo.base + 3, "https://clients2.google.com/", cacert=demo.directory / "gateway-ca.pem"
    )
    assert outside.connect_status == 502, (outside.connect_status, outside.stderr)

    assert demo.get("secure").status == 200
    failed = demo.posture("fail")
    assert failed.returncode == 0 and b"fail" in failed.stdout, failed.stderr.decode()
    denied = demo.get("secure")
    assert denied.status == 403 and "Access denied" in denied.body, denied.body[:300]
    # ... and the page says why: the certificate is gone, in the failing check's own words
    assert "no verified client certificate" in denied.body, denied.body[:1500]
    assert "posture check" in denied.body and "failed" in denied.body, denied.body[:1500]
    passed = demo.posture("pass")
    assert passed.returncode == 0 and b"pass (verified)" in passed.stdout, passed.stderr.decode()
    again = demo.get("secure")
    assert again.status == 200 and "Access granted" in again.body, again.body[:300]

    _chromium_with_the_printed_flags(demo, tmp_path)

    assert demo.children(), "the lab's children run"
    assert stop_demo(demo) == 0
    deadline = time.monotonic() + 5
    while demo.children() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert demo.children() == []
    assert not demo.directory.exists(), "a --dir the demo made is removed"

    second = start_demo(demo.directory, demo.base)  # the same directory and ports: a clean start
    try:
        assert second.get("www").status == 200
    finally:
        assert stop_demo(second) == 0


def _chromium_with_the_printed_flags(demo: Demo, tmp_path: Path) -> None:
    line = next(line for line in demo.banner.splitlines() if "--proxy-server=" in line)
    printed = shlex.split(line)
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    while "=" in printed[0] and not printed[0].startswith("-"):
        key, _, value = printed.pop(0).partition("=")
        env[key] = value
    assert re.fullmatch(r"chromium(-browser)?|google-chrome", Path(printed[0]).name), printed
    url = printed[-1]
    assert url == demo.url("www")
    flags = [f for f in printed[1:-1] if f != "--no-sandbox"]
    argv = [tools.require("chromium"), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            *flags, "--dump-dom", url]  # fmt: skip
    page = tools.run(argv, env=env, timeout=60)
    assert "www.demo.test: Allowed" in page.stdout.decode(errors="replace"), page.stderr.decode()[-800:]
