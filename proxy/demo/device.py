"""The demo device: a throwaway NSS database in the demo directory holding the demo laptop's
client certificate (and, for the browser, the roots it trusts), the real agent enrolled with
its state there, and the posture flip the trainer does live: the certificate out of the
database or back in, then ``gateway agent report`` at once."""

from __future__ import annotations

import logging
import subprocess
from dataclasses import dataclass

from proxy.demo import children
from proxy.demo.layout import Layout
from proxy.demo.nss import NssDatabase
from proxy.demo.pki import ClientCertificate, new_password

logger = logging.getLogger(__name__)

NICKNAME = "demo laptop"
COMMON_NAME = "demo-laptop.demo.test"
EMAIL = "trainer@demo.test"
SERIAL_NUMBER = "DEMO-LAPTOP-1"
REPORT_OK = (0, 3)  # 3: a rule failed, which is what `posture fail` is for


def posture_rule(certificate_id: str) -> dict[str, object]:
    """The client_certificate_v2 rule on the device's NSS database (the user's ``~/.pki/nssdb``)."""
    return {
        "name": "Demo laptop client certificate",
        "description": "The demo laptop holds its certificate from the Gateway Demo Device CA (gateway demo)",
        "type": "client_certificate_v2",
        "schedule": "1m",
        "expiration": "10m",
        "match": [{"platform": "linux"}],
        "input": {
            "certificate_id": certificate_id,
            "cn": COMMON_NAME,
            "operating_system": "linux",
            "check_private_key": True,
            "extended_key_usage": ["clientAuth"],
            "locations": {"trust_stores": ["user"]},
        },
    }


@dataclass(frozen=True)
class DemoDevice:
    layout: Layout

    @property
    def env(self) -> dict[str, str]:
        return children.environment(home=self.layout.home, tmp=self.layout.tmp)

    @property
    def nssdb(self) -> NssDatabase:
        return NssDatabase(self.layout.nssdb, self.env)

    def _agent(self, command: str, *args: str) -> list[str]:
        return children.gateway("agent", command, "--state", str(self.layout.agent_state), *args)

    @property
    def store_options(self) -> tuple[str, ...]:
        """Only the demo's NSS database: never the system store or anyone's own databases."""
        return ("--no-system", "--no-nss", "--nss-db", str(self.layout.nssdb))

    # -- set-up ----------------------------------------------------------------------------------
    def make_database(self, client: ClientCertificate) -> None:
        """The empty-password database with the client certificate and its key; the PKCS#12
        bundle stays in the directory for ``posture pass``."""
        self.nssdb.create()
        password = new_password()
        self.layout.client_p12.touch(mode=0o600)
        self.layout.client_p12.write_bytes(client.pkcs12(NICKNAME, password))
        self.layout.client_p12_password.touch(mode=0o600)
        self.layout.client_p12_password.write_bytes(password + b"\n")
        self.restore_certificate()

    def enroll(self, token: str) -> None:
        argv = self._agent(
            "enroll", "--name", "demo-laptop", "--email", EMAIL, "--serial-number", SERIAL_NUMBER
        )
        env = {**self.env, "GATEWAY_ENROLL_TOKEN": token}  # never on a command line
        children.run(argv, env=env)

    def sync_ca(self) -> None:
        """The gateway's CAs into the demo's NSS database, as the agent keeps them (the browser's trust)."""
        children.run(self._agent("sync-ca", *self.store_options), env=self.env, ok=(0,))

    def run_argv(self) -> list[str]:
        return self._agent("run", *self.store_options)

    def proxy_argv(self, listen: str, upstream: str) -> list[str]:
        return self._agent("proxy", "--listen", listen, "--upstream", upstream)

    # -- posture ------------------------------------------------------------------------------------
    def remove_certificate(self) -> bool:
        return self.nssdb.delete(NICKNAME)

    def restore_certificate(self) -> bool:
        if self.nssdb.has(NICKNAME):
            return False
        self.nssdb.import_pkcs12(self.layout.client_p12, self.layout.client_p12_password)
        return True

    def report(self) -> subprocess.CompletedProcess[str]:
        return children.run(self._agent("report"), env=self.env, ok=REPORT_OK)

    def set_posture(self, passing: bool) -> str:
        """The certificate in (pass) or out (fail), then one report; what the agent printed."""
        changed = self.restore_certificate() if passing else self.remove_certificate()
        logger.info(
            "demo device: certificate %s", ("restored" if passing else "removed") if changed else "unchanged"
        )
        return self.report().stdout
