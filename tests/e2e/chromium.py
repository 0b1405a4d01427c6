"""Headless Debian Chromium through the proxy, trusting what an NSS database (made with certutil
under a private HOME) says; returns the DOM and the network errors from Chromium's net-log."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from . import tools

# Chromium abandons every load in flight when this machine's network interfaces change, which
# other tests do (network namespaces, veth pairs, WireGuard tunnels): such a load says nothing
# about the gateway, so it is made again.
NETWORK_CHANGED = "ERR_NETWORK_CHANGED"
NETWORK_CHANGED_ATTEMPTS = 3


@dataclass(frozen=True)
class PageLoad:
    dom: str
    net_errors: set[str]
    stderr: str


def make_home(home: Path, trusted_ca: Path | None) -> Path:
    """HOME with an NSS DB at ~/.pki/nssdb; `trusted_ca` (PEM) added as a trusted TLS root."""
    certutil = tools.require("certutil")
    db = home / ".pki" / "nssdb"
    db.mkdir(parents=True, exist_ok=True)
    tools.run([certutil, "-N", "-d", f"sql:{db}", "--empty-password"], check=True)
    if trusted_ca is not None:
        tools.run(
            [
                certutil,
                "-d",
                f"sql:{db}",
                "-A",
                "-t",
                "C,,",
                "-n",
                "gateway e2e CA",
                "-i",
                str(trusted_ca),
            ],
            check=True,
        )
        listing = tools.run([certutil, "-d", f"sql:{db}", "-L"], check=True).stdout.decode()
        assert "gateway e2e CA" in listing, listing
    return home


def load(
    url: str,
    *,
    proxy_port: int | None = None,
    pac_url: str | None = None,
    home: Path,
    timeout: float = 60,
    screenshot: Path | None = None,
    window_size: tuple[int, int] = (800, 600),
) -> PageLoad:
    """`chromium --dump-dom url` through the proxy at `proxy_port` (or the one the PAC file at
    `pac_url` names); on a certificate error the DOM is empty and the reason is in the net-log.
    With `screenshot`, the same load also writes a PNG there."""
    if (proxy_port is None) == (pac_url is None):
        raise ValueError("chromium.load: give exactly one of proxy_port and pac_url")
    chromium = tools.require("chromium")
    netlog = home / "netlog.json"
    profile = home / "profile"
    profile.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env["HOME"] = str(home)
    argv = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        *(
            [f"--proxy-pac-url={pac_url}"]
            if pac_url is not None
            else [f"--proxy-server=http://127.0.0.1:{proxy_port}", "--proxy-bypass-list=<-loopback>"]
        ),
        f"--log-net-log={netlog}",
        f"--window-size={window_size[0]},{window_size[1]}",
        *([f"--screenshot={screenshot}"] if screenshot is not None else []),
        "--dump-dom",
        url,
    ]
    for _ in range(NETWORK_CHANGED_ATTEMPTS):
        netlog.unlink(missing_ok=True)
        result = tools.run(argv, timeout=timeout, env=env)
        page = PageLoad(
            dom=result.stdout.decode(errors="replace"),
            net_errors=_net_errors(netlog),
            stderr=result.stderr.decode(errors="replace"),
        )
        if NETWORK_CHANGED not in page.net_errors:
            break
    return page


def _net_errors(netlog: Path) -> set[str]:
    if not netlog.exists():
        return set()
    text = netlog.read_text(errors="replace").rstrip()
    # Chromium may leave the log unterminated if it is killed; close it so json can read it.
    if not text.endswith("}"):
        text = text.rstrip(",") + "]}"
    data = json.loads(text)
    names = {code: name for name, code in data["constants"]["netError"].items()}
    found = set()
    for event in data.get("events", []):
        code = event.get("params", {}).get("net_error", 0)
        if isinstance(code, int) and code < 0:
            name = names.get(code, str(code))
            found.add(name if name.startswith("ERR_") else f"ERR_{name}")
    return found
