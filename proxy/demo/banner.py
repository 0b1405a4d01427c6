"""What ``gateway demo`` prints once the lab is up: where everything is, the browser command,
the sites and what each shows, and how to flip the device's posture."""

from __future__ import annotations

import os
import shlex
import shutil

from proxy.demo.layout import LOOPBACK, LabOptions
from proxy.demo.origins import SITES

READY = "Gateway demo lab is ready"
BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def browser_program() -> str:
    return next((name for name in BROWSERS if shutil.which(name)), "chromium")


def browser_command(options: LabOptions, url: str) -> list[str]:
    """Chromium with the device's NSS database (its ``$HOME/.pki/nssdb``, which trusts the
    gateway's CA and the bank's) and a profile in the demo directory, through the local proxy."""
    layout = options.layout
    argv = [
        f"HOME={layout.home}",
        browser_program(),
        f"--user-data-dir={layout.browser_profile}",
        f"--proxy-server=http://{LOOPBACK}:{options.ports.local_proxy}",
        "--no-first-run",
        "--no-default-browser-check",
    ]
    if os.geteuid() == 0:
        argv.append("--no-sandbox")  # Chromium refuses to run as root with its sandbox
    return [*argv, url]


class Banner:
    def __init__(self, options: LabOptions, token: str) -> None:
        self.options = options
        self.token = token

    def site_url(self, host: str) -> str:
        return f"https://{host}:{self.options.ports.origins}/"

    def render(self) -> str:
        o, layout, ports = self.options, self.options.layout, self.options.ports
        root = layout.root.resolve()
        width = max(len(self.site_url(s.host)) for s in SITES)
        sites = "\n".join(f"  {self.site_url(s.host):<{width}}  {s.title}" for s in SITES)
        gone = "kept (--keep)" if o.keep else "removed"
        return f"""\
{READY} (everything in {root}; Ctrl-C stops it, and the directory is {gone})

  dashboard      http://{LOOPBACK}:{ports.admin}/
  admin token    {self.token}
                 (also in {layout.admin_token}; e.g. GATEWAY_ADMIN_TOKEN=$(cat {layout.admin_token}) \
{o.program} ca list --server http://{LOOPBACK}:{ports.admin})
  gateway proxy  {LOOPBACK}:{ports.proxy}  (answers only the lab's names: --hosts-only)
  local proxy    {LOOPBACK}:{ports.local_proxy}  (the demo device's agent: browse as the enrolled device)
  gateway CA     {layout.gateway_ca}
  policies       {layout.policies_dir / "demo.yaml"} (and demo-tests.yaml)
  logs           {layout.logs}

Open the browser (Chromium with the device's NSS database, through its local proxy):
  {shlex.join(browser_command(o, self.site_url("www.demo.test")))}

Sites:
{sites}

Flip the device's posture live (in another terminal); secure.demo.test follows at the next request:
  {o.program} demo posture fail --dir {root}    # the certificate leaves the NSS database: Access denied
  {o.program} demo posture pass --dir {root}    # it comes back: allowed again

With curl, as the device:
  curl -x http://{LOOPBACK}:{ports.local_proxy} --cacert {layout.gateway_ca} {self.site_url("www.demo.test")}
  curl -x http://{LOOPBACK}:{ports.local_proxy} --cacert {layout.lab_ca} {self.site_url("bank.demo.test")}
"""
