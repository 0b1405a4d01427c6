"""The agent's local proxy and the PAC files end to end (issue 16, points 4 and 5): the real
`gateway run`, the real `gateway agent enroll / report / proxy` processes, headless Chromium
(trusting the gateway's CA through its NSS database) and curl, nginx as the origin.

Setup (one gateway for the module): a device signing CA and a posture rule on the agent user's
NSS database (made with the SDK), an Access application on `app.origin.test` that requires that
rule to pass, the agent enrolled, and `gateway agent proxy` on a free loopback port. Chromium is
given only `--proxy-server=http://127.0.0.1:LOCAL` (no credentials: it could not take any)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.pki import issue_leaf, make_ca
from tests.support.wait import poll, wait_until

from . import chromium, curl, sdk, tools
from .device_lab import Agent, admin_cli, delete_from_nssdb, import_into_nssdb, make_nssdb
from .gateway_process import GatewayProcess, child_env
from .origin import Origin, body_for

pytestmark = pytest.mark.e2e

APP_HOST = "app.origin.test"
NSS_NICKNAME = "e2e local proxy device"
START_TIMEOUT = 15.0


@dataclass
class LocalProxyLab:
    gw: GatewayProcess
    origin: Origin
    base: Path
    gateway_ca: Path
    agent: Agent
    account: str
    rule_id: str
    nssdb: Path
    nss_client: object
    port: int
    proc: subprocess.Popen[bytes] | None = None

    def start_proxy(self) -> None:
        env = child_env({"HOME": str(self.agent.home)})
        env.pop("XDG_CONFIG_HOME", None)
        log = (self.base / "local-proxy.stderr").open("ab")
        out = (self.base / "local-proxy.stdout").open("ab")
        self.proc = subprocess.Popen(
            [tools.venv_program("gateway"), "agent", "proxy", "--state", str(self.agent.state),
             "--listen", f"127.0.0.1:{self.port}", "--upstream", f"127.0.0.1:{self.gw.proxy_port}"],
            stdin=subprocess.DEVNULL, stdout=out, stderr=log, env=env, start_new_session=True,
        )  # fmt: skip
        log.close()
        out.close()
        assert tools.wait_for_port(self.port, timeout=START_TIMEOUT, proc=self.proc), self.stderr()

    def stop_proxy(self) -> int | None:
        assert self.proc is not None
        return tools.stop(self.proc, timeout=10)

    def stderr(self) -> str:
        return tools.tail(self.base / "local-proxy.stderr")

    def report(self) -> str:
        ran = self.agent.run("report")
        assert ran.returncode in (0, 3), (ran.returncode, ran.stdout.decode(), ran.stderr.decode())
        return ran.stdout.decode()

    def via_local(self, url: str, *args: str) -> curl.CurlResult:
        return curl.via_proxy(self.port, url, cacert=self.gateway_ca, args=args)


@pytest.fixture(scope="module")
def lab(
    tmp_path_factory: pytest.TempPathFactory, origin: Origin, hosts_file: Path
) -> Iterator[LocalProxyLab]:
    base = tmp_path_factory.mktemp("local-proxy")
    gw = GatewayProcess(
        data_dir=base / "data", log_dir=base / "logs", upstream_ca=origin.ca_path, hosts=hosts_file
    )
    with gw.serving():
        made = _setup(gw, origin, base)
        made.start_proxy()
        try:
            yield made
        finally:
            if made.proc is not None and made.proc.poll() is None:
                made.stop_proxy()
            if made.proc is not None:
                tools.kill_group(made.proc)


def _setup(gw: GatewayProcess, origin: Origin, base: Path) -> LocalProxyLab:
    gateway_ca = base / "gateway-ca.pem"
    gateway_ca.write_text(gw.ca_pem())
    signing_ca = make_ca("e2e Local Proxy Device CA", key_identifiers=True)
    nss_client = issue_leaf(signing_ca, "local-proxy-device.corp", authority_key_identifier=True)
    home = base / "home"
    nssdb = make_nssdb(home / ".pki" / "nssdb")
    import_into_nssdb(nssdb, nss_client, NSS_NICKNAME)
    with sdk.client(gw) as c:
        account = sdk.account_id(c)
        upload = c.mtls_certificates.create(
            account_id=account, ca=True, certificates=signing_ca.cert_pem(), name="e2e local proxy CA"
        )
        assert upload is not None and upload.id
        rule = c.zero_trust.devices.posture.create(
            account_id=account, name="e2e local proxy NSS certificate", type="client_certificate_v2",
            schedule="1m", expiration="10m", match=[{"platform": "linux"}],
            input={  # type: ignore[arg-type]  # locations is a plain dict here
                "certificate_id": upload.id, "cn": "local-proxy-device.corp",
                "operating_system": "linux", "check_private_key": True,
                "locations": {"trust_stores": ["user"]},
            },
        )  # fmt: skip
        assert rule is not None and rule.id
        policy = c.zero_trust.access.policies.create(
            account_id=account, name="e2e managed devices", decision="allow",
            include=[{"everyone": {}}], require=[{"device_posture": {"integration_uid": rule.id}}],
        )  # fmt: skip
        assert policy is not None and policy.id
        app = c.zero_trust.access.applications.create(
            account_id=account, type="self_hosted", name="e2e local proxy app", domain=APP_HOST,
            policies=[policy.id],
        )  # fmt: skip
        assert app is not None and app.id
    token = admin_cli(gw, "device", "token", "--email", "ann@example.com", "--ttl", "10m")
    assert token.returncode == 0, token.stderr.decode()
    agent = Agent(state=base / "agent" / "state.json", home=home)
    enrolled = agent.run("enroll", "--token", token.stdout.decode().strip(), "--serial-number", "E2E-LP")
    assert enrolled.returncode == 0, enrolled.stderr.decode()
    return LocalProxyLab(
        gw=gw, origin=origin, base=base, gateway_ca=gateway_ca, agent=agent, account=account,
        rule_id=rule.id, nssdb=nssdb, nss_client=nss_client, port=tools.free_port(),
    )  # fmt: skip


def _page(dom: str, load: chromium.PageLoad) -> str:
    return f"DOM: {dom[:1200]!r}\nnet errors: {load.net_errors}\nstderr: {load.stderr[-600:]}"


def test_chromium_through_the_local_proxy_is_the_device(lab: LocalProxyLab, tmp_path: Path) -> None:
    url = lab.origin.url(APP_HOST, "/through-the-local-proxy")
    home = chromium.make_home(tmp_path / "browser", lab.gateway_ca)
    assert "pass (verified)" in lab.report()
    allowed = chromium.load(url, proxy_port=lab.port, home=home)
    assert body_for(APP_HOST) in allowed.dom, _page(allowed.dom, allowed)
    assert lab.agent.device_secret not in (lab.base / "local-proxy.stderr").read_text()
    assert f"CONNECT {APP_HOST} 200" in lab.stderr(), lab.stderr()

    # Without the local proxy's credentials (straight to the gateway) the same page is denied.
    anonymous = curl.via_proxy(lab.gw.proxy_port, url, cacert=lab.gateway_ca)
    assert anonymous.status == 403 and anonymous.body.startswith("Access denied"), anonymous.body[:300]

    # The device's certificate goes; after the agent reports, the browser gets the denial.
    delete_from_nssdb(lab.nssdb, NSS_NICKNAME)
    try:
        assert "fail" in lab.report()
        denied = poll(
            lambda: chromium.load(url, proxy_port=lab.port, home=home),
            lambda page: "Access denied" in page.dom,
            5,
            interval=0.5,
        )
        assert "Access denied" in denied.dom, _page(denied.dom, denied)
        assert body_for(APP_HOST) not in denied.dom
    finally:
        delete_from_nssdb(lab.nssdb, NSS_NICKNAME, missing_ok=True)
        import_into_nssdb(lab.nssdb, lab.nss_client, NSS_NICKNAME)  # type: ignore[arg-type]
    assert "pass (verified)" in lab.report()


@pytest.mark.parametrize("served_by", ["gateway", "local proxy"])
def test_chromium_with_a_pac_url_reaches_the_page_through_the_proxy(
    lab: LocalProxyLab, tmp_path: Path, served_by: str
) -> None:
    pac_url = (
        f"{lab.gw.admin_url}/proxy.pac?from=e2e"
        if served_by == "gateway"
        else f"http://127.0.0.1:{lab.port}/proxy.pac"
    )
    path = f"/pac-{served_by.replace(' ', '-')}"
    home = chromium.make_home(tmp_path / "browser", lab.gateway_ca)
    # origin.test has no address outside the gateway's --hosts file: the page loads only through it
    page = chromium.load(lab.origin.url("origin.test", path), pac_url=pac_url, home=home)
    assert body_for("origin.test") in page.dom, _page(page.dom, page)
    requests = lab.gw.data_dir / "requests.jsonl"

    def logged() -> bool:  # the request log is written in batches (every 0.5 s)
        log = requests.read_text() if requests.exists() else ""
        return f'"path": "{path}"' in log or f'"path":"{path}"' in log

    assert wait_until(logged, 10), requests.read_text()[-1500:]


def test_local_proxy_with_the_gateway_stopped_answers_502_then_recovers(lab: LocalProxyLab) -> None:
    url = lab.origin.url("origin.test", "/restart")
    assert lab.via_local(url).status == 200
    lab.gw.stop()
    try:
        started = time.monotonic()
        plain = lab.via_local(lab.origin.http_url("origin.test", "/down"))
        assert time.monotonic() - started < 5, "answered at once, not a hang"
        assert plain.status == 502, (plain.status, plain.body[:300])
        assert f"gateway at 127.0.0.1:{lab.gw.proxy_port}" in plain.body, plain.body
        tunnel = lab.via_local(url)
        assert tunnel.connect_status == 502, (tunnel.connect_status, tunnel.stderr)
        assert lab.proc is not None and lab.proc.poll() is None, "the local proxy keeps running"
    finally:
        lab.gw.start()
    again = lab.via_local(url)
    assert again.status == 200 and body_for("origin.test") in again.body, (again.status, again.body[:300])
    assert f"gateway at 127.0.0.1:{lab.gw.proxy_port} cannot be reached" in lab.stderr()


def test_sigterm_stops_the_local_proxy_with_exit_0(lab: LocalProxyLab) -> None:
    assert lab.stop_proxy() == 0, lab.stderr()
    lab.start_proxy()
    assert lab.via_local(lab.origin.url("origin.test", "/after-restart")).status == 200
