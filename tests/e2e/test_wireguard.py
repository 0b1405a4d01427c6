"""WireGuard device tunnels end to end (issue 16): the real `gateway run --wireguard-ports`, the
real `gateway agent wireguard`, Debian's userspace `wireguard-go` and `wg` in a client network
namespace, curl inside it, nginx as the origin.

The lab (module fixture): a network namespace for the client and a veth pair made here, with
addresses used only between them (10.214.N.0/30: .1 the root end, where the gateway's WireGuard
listeners bind, .2 the client's end). The client sends everything (a default route) through its
WireGuard interface; its curl asks for https://origin.test at VIRTUAL (10.214.N.9, also on the
root end, so no packet can leave the machine), and the gateway's lab hosts file maps VIRTUAL to
the origin on 127.0.0.1. The tunnel is configured from `gateway agent wireguard --format wg`
with `wg setconf` and `ip` (wg-quick needs resolvconf for DNS= in a namespace).

Two devices are enrolled: ANN holds the device certificate a posture rule asks for, BOB does
not. A Gateway rule blocks origin.test unless that rule passed. Every namespace, veth, interface
and wireguard-go process is removed afterwards, also when a test fails.

Needs root (network namespaces), /dev/net/tun, ip, wireguard-go, wg, curl and nginx:
scripts/install-test-deps installs the packages; without the capabilities the tests skip and say
why."""

from __future__ import annotations

import json
import os
import random
import re
import secrets
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.pki import issue_leaf, make_ca
from tests.support.wait import poll, wait_until

from . import netns, sdk, tools
from .device_lab import Agent, admin_cli
from .gateway_process import GatewayProcess, child_env
from .origin import HOST_NAMES, Origin, body_for

pytestmark = pytest.mark.e2e

WG_ENV = {"WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD": "1"}
ANN_SERIAL = f"E2E-ANN-{secrets.token_hex(4).upper()}"
BLOCK_REASON = "origin.test needs the device certificate (e2e WireGuard)."
CURL_SECONDS = 12
PORTS = 4  # device listeners: two devices and room


def _skip_reason() -> str | None:
    if os.geteuid() == 0 and not Path("/dev/net/tun").exists():
        return "no /dev/net/tun for wireguard-go"
    return netns.skip_reason("wireguard-go", "wg", "curl")


def _free_udp_range(host: str, count: int) -> int:
    """The first of ``count`` consecutive UDP ports free on ``host``."""
    for _ in range(200):
        first = random.randrange(40000, 60000 - count)
        sockets: list[socket.socket] = []
        try:
            for port in range(first, first + count):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sockets.append(s)
                s.bind((host, port))
            return first
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise AssertionError(f"no {count} consecutive free UDP ports on {host}")


@dataclass
class ClientNamespace(netns.VethNamespace):
    """The client's namespace with a WireGuard interface (wireguard-go)."""

    interface: str = ""  # unique: wireguard-go's control sockets are shared across namespaces
    wg_proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def create(cls) -> ClientNamespace:
        return cls.make("gwwg", "10.214", interface=f"gwg{secrets.token_hex(3)}")

    def set_up(self) -> None:
        super().set_up()
        self.wg_proc = subprocess.Popen(
            ["ip", "netns", "exec", self.name, "wireguard-go", "-f", self.interface],
            env=child_env(WG_ENV),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

        def interface_made() -> bool:
            assert self.wg_proc is not None
            assert self.wg_proc.poll() is None, f"wireguard-go exited {self.wg_proc.returncode}"
            return netns.ip("-n", self.name, "link", "show", self.interface, check=False).returncode == 0

        assert wait_until(interface_made, 10), "wireguard-go made no interface within 10 s"

    def configure(self, wg_conf: str, address: str, directory: Path) -> None:
        """``wg setconf`` with this configuration (format wg), then the address and routes."""
        conf = directory / f"{self.interface}.conf"
        conf.write_text(wg_conf)
        conf.chmod(0o600)
        tools.run(["ip", "netns", "exec", self.name, "wg", "setconf", self.interface, str(conf)], check=True)
        netns.ip("-n", self.name, "address", "flush", "dev", self.interface)
        netns.ip("-n", self.name, "address", "add", address, "dev", self.interface)
        netns.ip("-n", self.name, "link", "set", self.interface, "up")
        netns.ip("-n", self.name, "route", "replace", "default", "dev", self.interface)

    def curl(
        self, url: str, *, cacert: Path, resolve: str, max_time: int = CURL_SECONDS
    ) -> tuple[int, str, str]:
        """(HTTP status or 0, body, stderr) of curl in the namespace."""
        result = tools.run(
            ["ip", "netns", "exec", self.name, "curl", "-sS", "--max-time", str(max_time),
             "--cacert", str(cacert), "--resolve", resolve, "-w", "\n%{http_code}", url],
            timeout=max_time + 10, env=child_env(),
        )  # fmt: skip
        body, _, code = result.stdout.decode(errors="replace").rpartition("\n")
        return int(code or 0), body, result.stderr.decode(errors="replace")

    def tear_down(self) -> None:
        if self.wg_proc is not None:
            tools.kill_group(self.wg_proc)
            self.wg_proc.wait(10)
        super().tear_down()
        Path(f"/var/run/wireguard/{self.interface}.sock").unlink(missing_ok=True)


@dataclass
class WireGuardLab:
    gw: GatewayProcess
    origin: Origin
    ns: ClientNamespace
    base: Path
    gateway_ca: Path
    ann: Agent
    bob: Agent
    first_port: int
    pem_key: Path

    def config(self, agent: Agent) -> tuple[str, str]:
        """``gateway agent wireguard --format wg`` and the device's address (from --format wg-quick)."""
        wg = agent.run("wireguard", "--format", "wg")
        assert wg.returncode == 0, wg.stderr.decode()
        quick = agent.run("wireguard")
        assert quick.returncode == 0, quick.stderr.decode()
        address = re.search(r"^Address = (\S+)$", quick.stdout.decode(), re.M)
        assert address, quick.stdout.decode()
        return wg.stdout.decode(), address.group(1)

    def use(self, agent: Agent, *, endpoint_port: int | None = None, address: str | None = None) -> None:
        conf, own = self.config(agent)
        if endpoint_port is not None:
            conf = re.sub(r"^Endpoint = (\S+):\d+$", rf"Endpoint = \g<1>:{endpoint_port}", conf, flags=re.M)
        self.ns.configure(conf, address or own, self.base)

    def curl(self, **kwargs: int) -> tuple[int, str, str]:
        port = self.origin.port
        return self.ns.curl(
            f"https://origin.test:{port}/",
            cacert=self.gateway_ca,
            resolve=f"origin.test:{port}:{self.ns.virtual}",
            **kwargs,
        )

    def log_lines(self) -> list[dict[str, object]]:
        path = self.gw.data_dir / "requests.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def wait_logged(self, count: int, timeout: float = 5) -> list[dict[str, object]]:
        return poll(
            lambda: self.log_lines() if (self.gw.data_dir / "requests.jsonl").exists() else [],
            lambda lines: len(lines) >= count,
            timeout,
        )

    def port_of(self, agent: Agent) -> int:
        conf, _ = self.config(agent)
        found = re.search(r"^Endpoint = \S+:(\d+)$", conf, re.M)
        assert found, conf
        return int(found.group(1))


@pytest.fixture(scope="module")
def lab(origin: Origin, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WireGuardLab]:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    base = tmp_path_factory.mktemp("wireguard")
    ns = ClientNamespace.create()
    try:
        hosts = base / "hosts"
        # The client's VIRTUAL address of origin.test is the origin on loopback, for the gateway.
        hosts.write_text("127.0.0.1 " + " ".join(HOST_NAMES) + f" {ns.virtual}\n")
        first = _free_udp_range(ns.root_address, PORTS)
        gw = GatewayProcess(
            data_dir=base / "data",
            log_dir=base / "logs",
            upstream_ca=origin.ca_path,
            hosts=hosts,
            extra_args=["--wireguard-ports", f"{ns.root_address}:{first}-{first + PORTS - 1}"],
        )
        with gw.serving():
            yield _setup(gw, origin, ns, base, first)
    finally:
        ns.tear_down()


def _setup(gw: GatewayProcess, origin: Origin, ns: ClientNamespace, base: Path, first: int) -> WireGuardLab:
    gateway_ca = base / "gateway-ca.pem"
    gateway_ca.write_text(gw.ca_pem())
    signing_ca = make_ca("e2e WireGuard Device Signing CA", key_identifiers=True)
    device_dir = base / "device"
    device_dir.mkdir(mode=0o700)
    # CN ${serial_number}.corp: ann's serial number; bob, on the same machine, finds the same
    # files, and fails on the CN.
    ann_cert = issue_leaf(signing_ca, f"{ANN_SERIAL}.corp", authority_key_identifier=True)
    pem_cert, pem_key = ann_cert.write(device_dir, "client")
    with sdk.client(gw) as c:
        account = sdk.account_id(c)
        upload = c.mtls_certificates.create(
            account_id=account, ca=True, certificates=signing_ca.cert_pem(), name="e2e wg device CA"
        )
        assert upload is not None and upload.id
        rule = c.zero_trust.devices.posture.create(
            account_id=account, name="e2e wg device certificate", type="client_certificate_v2",
            schedule="1m", expiration="10m", match=[{"platform": "linux"}],
            input={  # type: ignore[arg-type]
                "certificate_id": upload.id, "cn": "${serial_number}.corp", "extended_key_usage": ["clientAuth"],
                "check_private_key": True, "operating_system": "linux",
                "locations": {"paths": [str(pem_cert), str(pem_key)]},
            },
        )  # fmt: skip
        assert rule is not None and rule.id
        blocked = c.zero_trust.gateway.rules.create(
            account_id=account, name="e2e wg: origin.test needs the device certificate", action="block",
            precedence=100, filters=["http"], traffic='http.request.host == "origin.test"',
            device_posture=f'not(any(device_posture.checks.passed[*] in {{"{rule.id}"}}))',
            rule_settings={"block_page_enabled": True, "block_reason": BLOCK_REASON},
        )  # fmt: skip
        assert blocked is not None and blocked.id

    def enroll(name: str) -> Agent:
        made = admin_cli(gw, "device", "token", "--email", f"{name}@example.com", "--ttl", "10m")
        assert made.returncode == 0, made.stderr.decode()
        agent = Agent(state=base / name / "state.json", home=base / name / "home")
        agent.home.mkdir(parents=True)
        serial = ANN_SERIAL if name == "ann" else f"E2E-{secrets.token_hex(4).upper()}"
        token = made.stdout.decode().strip()
        done = agent.run("enroll", "--token", token, "--name", name, "--serial-number", serial)
        assert done.returncode == 0, done.stderr.decode()
        return agent

    ann, bob = enroll("ann"), enroll("bob")
    assert ann.run("report").returncode == 0
    assert bob.run("report").returncode == 3  # the certificate's CN is not his
    return WireGuardLab(gw, origin, ns, base, gateway_ca, ann, bob, first, pem_key)


def test_configs_from_the_agent_and_the_admin_cli(lab: WireGuardLab) -> None:
    quick = lab.ann.run("wireguard")
    assert quick.returncode == 0, quick.stderr.decode()
    text = quick.stdout.decode()
    assert re.fullmatch(
        r"\[Interface\]\nPrivateKey = \S{44}\nAddress = 100\.\d+\.\d+\.\d+/32\n\n"
        r"\[Peer\]\nPublicKey = \S{44}\nEndpoint = [\d.]+:\d+\nAllowedIPs = 0\.0\.0\.0/0\n",
        text,
    ), text
    assert "DNS" not in text
    assert f"Endpoint = {lab.ns.root_address}:" in text
    wg = lab.ann.run("wireguard", "--format", "wg", "--allowed-ips", "10.0.0.0/8,192.168.1.0/24")
    assert (
        "Address" not in wg.stdout.decode()
        and "AllowedIPs = 10.0.0.0/8, 192.168.1.0/24" in wg.stdout.decode()
    )
    admin = admin_cli(lab.gw, "device", "wireguard", "ann")
    assert admin.returncode == 0, admin.stderr.decode()
    assert admin.stdout.decode() == text  # the same tunnel, the same keys
    bob = lab.bob.run("wireguard").stdout.decode()
    assert bob.split("Endpoint")[1] != text.split("Endpoint")[1], "each device has its own port"
    # no private key in the gateway's log, nor on its stdout
    private = re.search(r"PrivateKey = (\S+)", text)
    assert private and private.group(1) not in lab.gw.stderr_path().read_text()
    assert private.group(1) not in lab.gw.stdout()


def test_curl_through_the_tunnel_is_inspected_and_identified(lab: WireGuardLab) -> None:
    lab.use(lab.ann)
    before = len(lab.wait_logged(0, timeout=0))
    status, body, err = lab.curl()
    assert status == 200, (status, err, lab.gw.stderr_tail())
    assert body_for("origin.test") in body
    logged = lab.wait_logged(before + 1)[before:]
    assert logged and logged[-1]["device"] == lab.ann.device_id, logged
    assert logged[-1]["host"] == "origin.test"


def test_a_posture_failure_blocks_the_device(lab: WireGuardLab) -> None:
    lab.use(lab.bob)  # bob reported a failure
    status, body, _ = lab.curl()
    assert status == 403 and BLOCK_REASON in body, (status, body)
    # ann loses her certificate's key and reports: blocked in her tunnel too
    hidden = lab.pem_key.with_suffix(".away")
    lab.pem_key.rename(hidden)
    try:
        assert lab.ann.run("report").returncode != 0
        lab.use(lab.ann)
        status, body, _ = lab.curl()
        assert status == 403 and BLOCK_REASON in body, (status, body)
    finally:
        hidden.rename(lab.pem_key)
        assert lab.ann.run("report").returncode == 0
    status, _, _ = lab.curl()
    assert status == 200


def test_another_devices_key_cannot_claim_the_first_devices_tunnel(lab: WireGuardLab) -> None:
    ann_port = lab.port_of(lab.ann)
    _, ann_address = lab.config(lab.ann)
    before = len(lab.wait_logged(0, timeout=0))
    # bob's key at ann's listener: no handshake, nothing reaches the proxy
    lab.use(lab.bob, endpoint_port=ann_port)
    status, _, _ = lab.curl(max_time=6)
    assert status == 0
    assert len(lab.wait_logged(0, timeout=1)) == before, "nothing was proxied for bob at ann's port"
    assert "Failed to process a WireGuard handshake packet" in lab.gw.stderr_path().read_text()
    # bob's tunnel claiming ann's address: still bob (his listener), and the gateway says so
    lab.use(lab.bob, address=ann_address)
    status, body, _ = lab.curl()
    assert status == 403 and BLOCK_REASON in body, (status, body)  # bob's posture, not ann's
    logged = lab.wait_logged(before + 1)[before:]
    assert logged and logged[-1]["device"] == lab.bob.device_id, logged
    stderr = lab.gw.stderr_path().read_text()
    assert (
        f"device {lab.bob.device_id} sent from {ann_address.split('/')[0]}, not its tunnel address" in stderr
    )
    # and ann's tunnel still works
    lab.use(lab.ann)
    status, _, _ = lab.curl()
    assert status == 200


def _listening(port: int) -> bool:
    """Whether a UDP socket is bound to `port` (`ss -Huln`)."""
    listed = subprocess.run(["ss", "-Huln", f"sport = :{port}"], capture_output=True, text=True).stdout
    return f":{port}" in listed


def test_a_new_and_a_deleted_device_take_effect_without_a_restart(lab: WireGuardLab) -> None:
    made = admin_cli(lab.gw, "device", "token", "--email", "cy@example.com", "--ttl", "10m")
    cy = Agent(state=lab.base / "cy" / "state.json", home=lab.base / "cy" / "home")
    cy.home.mkdir(parents=True)
    assert cy.run("enroll", "--token", made.stdout.decode().strip(), "--name", "cy").returncode == 0
    port = lab.port_of(cy)
    assert wait_until(lambda: _listening(port), 5), f"no listener on UDP port {port}"
    lab.use(cy)
    status, body, _ = lab.curl()
    assert status == 403, (status, body)  # cy has not reported: no pass
    deleted = admin_cli(lab.gw, "device", "delete", cy.device_id)
    assert deleted.returncode == 0, deleted.stderr.decode()
    assert wait_until(lambda: not _listening(port), 5), "the deleted device's listener is gone"
    assert not (lab.gw.data_dir / "wireguard" / f"{cy.device_id}.conf").exists()
    status, _, _ = lab.curl(max_time=5)
    assert status == 0
    conf_dir = lab.gw.data_dir / "wireguard"
    assert {p.stat().st_mode & 0o777 for p in conf_dir.iterdir()} == {0o600}


def test_a_device_of_another_account_gets_that_accounts_ca_and_rules(lab: WireGuardLab) -> None:
    """Issue 12: a WireGuard peer's account signs its leaves and decides its requests; the first
    account's rule (origin.test needs the device certificate) is not the other account's."""
    made = admin_cli(lab.gw, "account", "create", "e2e WireGuard branch")
    assert made.returncode == 0, made.stderr.decode()
    account = made.stdout.decode().strip()
    token = admin_cli(lab.gw, "device", "token", "--account", account, "--email", "dee@example.com")
    assert token.returncode == 0, token.stderr.decode()
    dee = Agent(state=lab.base / "dee" / "state.json", home=lab.base / "dee" / "home")
    dee.home.mkdir(parents=True)
    assert dee.run("enroll", "--token", token.stdout.decode().strip(), "--name", "dee").returncode == 0
    with lab.gw.api() as api:
        (ca,) = [
            c for c in api.get(f"/accounts/{account}/gateway/certificates").json()["result"] if c["in_use"]
        ]
    branch_ca = lab.base / "branch-ca.pem"
    branch_ca.write_text(ca["certificate"])
    port = lab.port_of(dee)
    assert wait_until(lambda: _listening(port), 5), f"no listener on UDP port {port}"
    lab.use(dee)
    url, resolve = (
        f"https://origin.test:{lab.origin.port}/",
        f"origin.test:{lab.origin.port}:{lab.ns.virtual}",
    )
    status, body, err = lab.ns.curl(url, cacert=branch_ca, resolve=resolve)  # trusting Branch's CA alone
    assert status == 200 and body_for("origin.test") in body, (status, err, lab.gw.stderr_tail())
    status, _, err = lab.ns.curl(url, cacert=lab.gateway_ca, resolve=resolve)  # the first account's CA
    assert status == 0 and "certificate" in err, err
    assert admin_cli(lab.gw, "device", "delete", "--account", account, dee.device_id).returncode == 0
    assert admin_cli(lab.gw, "account", "delete", account).returncode == 0
    lab.use(lab.ann)
    status, _, _ = lab.curl()
    assert status == 200
