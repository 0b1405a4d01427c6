"""Transparent mode end to end (issue 16): the real `gateway run --mode transparent@...`, the
rules `gateway transparent rules` prints applied with `nft`, curl in a client network namespace
with no proxy setting, nginx as the origin.

The lab (module fixture): a network namespace for the client and a veth pair made here, with
addresses used only between them (10.213.N.0/30: .1 the root end, where the transparent listener
binds, .2 the client's end) and VIRTUAL (10.213.N.9, also on the root end, reached on-link: no
default route, so no packet can leave the pair). The client's curl asks for
https://origin.test:PORT at VIRTUAL; the nftables REDIRECT rule (only: from the client's address,
on the root end of the veth, to PORT) hands the connection to the listener on .1 (REDIRECT
delivers to the receiving interface's own address); the gateway reads the original destination
(VIRTUAL:PORT) from the socket, and its lab hosts file maps VIRTUAL to the origin on 127.0.0.1.

The device agent runs inside the namespace too: it enrolls over the veth (the admin API listens
with TLS, the token pins its certificate) and registers the client's address, so the request
log names that device. Every namespace, veth and nftables table is removed afterwards, also when
a test fails.

Needs root (network namespaces), ip, nft, curl and nginx: scripts/install-test-deps installs
the packages; without the capabilities the tests skip and say why."""

from __future__ import annotations

import json
import secrets
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from cloudflare import Cloudflare
from cryptography import x509

from tests.support.wait import wait_until

from . import netns, sdk
from .gateway_process import GatewayProcess, child_env, gateway_command
from .origin import HOST_NAMES, Origin, body_for
from .pki import load_pems

pytestmark = pytest.mark.e2e

BLOCKED = "blocked.origin.test"
PASSTHROUGH = "pass.origin.test"
BLOCK_REASON = "blocked in transparent mode (e2e)"
CURL_SECONDS = 12
LOAD_BEFORE_SWAP = 1.5  # seconds of requests before the hot swap ...
LOAD_AFTER_SWAP = 2.0  # ... and after it
_MARK = "\n--e2e-write-out--\n"


def _skip_reason() -> str | None:
    reason = netns.skip_reason("nft", "curl")
    if reason is not None:
        return reason
    table = f"gwprobe{secrets.token_hex(3)}"
    nft = subprocess.run(["nft", "add", "table", "inet", table], capture_output=True)
    if nft.returncode != 0:
        return f"cannot add an nftables table: {nft.stderr.decode().strip()}"
    subprocess.run(["nft", "delete", "table", "inet", table], capture_output=True)
    return None


def _run(*argv: str, check: bool = True, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    result = subprocess.run(list(argv), capture_output=True, timeout=30, input=stdin)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(argv)}: {result.stderr.decode().strip()}")
    return result


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@contextmanager
def _sdk(gw: GatewayProcess) -> Iterator[Cloudflare]:
    """The official SDK against the admin API, trusting its own (self-signed) certificate."""
    assert gw.token
    with Cloudflare(
        base_url=gw.api_base, api_token=gw.token, max_retries=0, timeout=15,
        http_client=httpx.Client(trust_env=False, verify=gw.verify()),
    ) as c:  # fmt: skip
        yield c


@dataclass(frozen=True)
class Fetched:
    returncode: int
    status: int
    body: str
    certs: list[x509.Certificate]
    stderr: str


@dataclass
class ClientNamespace(netns.VethNamespace):
    """The client's namespace, and the REDIRECT rule for it."""

    table: str = ""  # the nftables table holding the redirect rule
    rules_applied: bool = False

    @classmethod
    def create(cls) -> ClientNamespace:
        return cls.make("gwtp", "10.213", table=f"gwtp{secrets.token_hex(3)}")

    def set_up(self) -> None:
        super().set_up()
        netns.ip("-n", self.name, "route", "add", f"{self.virtual}/32", "dev", self.veth_client)

    def apply_rules(self, listener_port: int, origin_port: int) -> str:
        """What `gateway transparent rules` prints for this pair, applied with `nft -f -`."""
        printed = _run(
            gateway_command(), "transparent", "rules", "--port", str(listener_port),
            "--source", f"{self.client_address}/32", "--interface", self.veth_root,
            "--dport", str(origin_port), "--table", self.table, "--format", "nft",
        ).stdout  # fmt: skip
        self.rules_applied = True
        _run("nft", "-f", "-", stdin=printed)
        return printed.decode()

    def curl(self, host: str, port: int, *, cacert: Path, address: str | None = None) -> Fetched:
        """curl https://HOST:PORT/ in the namespace, no proxy, HOST resolved to VIRTUAL."""
        result = self.exec(
            "curl", "-sS", "--noproxy", "*", "--max-time", str(CURL_SECONDS), "--cacert", str(cacert),
            "--resolve", f"{host}:{port}:{address or self.virtual}",
            "-w", _MARK + "%{http_code}\n%{certs}", f"https://{host}:{port}/",
            timeout=CURL_SECONDS + 10,
        )  # fmt: skip
        out = result.stdout.decode(errors="replace")
        body, _, written = out.partition(_MARK)
        code, _, certs = written.partition("\n")
        return Fetched(
            result.returncode,
            int(code.strip() or 0),
            body,
            load_pems(certs) if "BEGIN CERTIFICATE" in certs else [],
            result.stderr.decode(errors="replace"),
        )

    def tear_down(self) -> None:
        if self.rules_applied:
            _run("nft", "delete", "table", "inet", self.table, check=False)
        super().tear_down()


@dataclass
class TransparentLab:
    gw: GatewayProcess
    origin: Origin
    ns: ClientNamespace
    base: Path
    gateway_ca: Path
    listener_port: int
    device_id: str
    rules: str
    account: str = ""
    block_rule_id: str = ""
    seen: list[str] = field(default_factory=list)

    def curl(self, host: str = "origin.test", *, cacert: Path | None = None) -> Fetched:
        return self.ns.curl(host, self.origin.port, cacert=cacert or self.gateway_ca)

    def log_lines(self) -> list[dict[str, object]]:
        path = self.gw.data_dir / "requests.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def logged(self, host: str, timeout: float = 5) -> dict[str, object]:
        lines = wait_until(lambda: [line for line in self.log_lines() if line.get("host") == host], timeout)
        assert lines, f"no request log line for {host}: {self.log_lines()[-3:]}"
        return lines[-1]


@pytest.fixture(scope="module")
def lab(origin: Origin, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TransparentLab]:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    base = tmp_path_factory.mktemp("transparent")
    ns = ClientNamespace.create()
    try:
        hosts = base / "hosts"
        # The client's VIRTUAL address of origin.test is the origin on loopback, for the gateway.
        hosts.write_text("127.0.0.1 " + " ".join(HOST_NAMES) + f" {ns.virtual}\n")
        listener_port = _free_port(ns.root_address)
        gw = GatewayProcess(
            data_dir=base / "data",
            log_dir=base / "logs",
            upstream_ca=origin.ca_path,
            hosts=hosts,
            # The agent in the namespace enrolls over the veth: the admin API listens with TLS.
            admin_host="0.0.0.0",
            admin_tls=True,
        )
        gw.extra_args = [
            "--mode", f"transparent@{ns.root_address}:{listener_port}",
            "--public-url", f"https://{ns.root_address}:{gw.admin_port}",
        ]  # fmt: skip
        rules = ns.apply_rules(listener_port, origin.port)
        with gw.serving():
            yield _setup(gw, origin, ns, base, listener_port, rules)
    finally:
        ns.tear_down()


def _setup(
    gw: GatewayProcess, origin: Origin, ns: ClientNamespace, base: Path, listener_port: int, rules: str
) -> TransparentLab:
    gateway_ca = base / "gateway-ca.pem"
    gateway_ca.write_text(gw.ca_pem())
    with _sdk(gw) as c:
        account = sdk.account_id(c)
        blocked = c.zero_trust.gateway.rules.create(
            account_id=account, name="e2e transparent: block", action="block", precedence=100,
            filters=["http"], traffic=f'http.request.host == "{BLOCKED}"',
            rule_settings={"block_page_enabled": True, "block_reason": BLOCK_REASON},
        )  # fmt: skip
        assert blocked is not None and blocked.id
        passthrough = c.zero_trust.gateway.rules.create(
            account_id=account, name="e2e transparent: do not inspect", action="off", precedence=200,
            filters=["http"], traffic=f'net.sni.host == "{PASSTHROUGH}"',
        )  # fmt: skip
        assert passthrough is not None and passthrough.id
    with httpx.Client(verify=gw.verify(), trust_env=False, timeout=15) as admin:
        made = admin.post(
            f"{gw.api_base}/accounts/{account}/devices/enrollment_tokens",
            json={"email": "tess@example.com", "expires_in": "10m"},
            headers={"Authorization": f"Bearer {gw.token}"},
        )
        assert made.status_code == 200, made.text
        token = made.json()["result"]["token"]
    state = base / "agent" / "state.json"
    state.parent.mkdir(mode=0o700)
    enrolled = ns.exec(
        gateway_command(), "agent", "enroll", "--token", token, "--name", "tess-laptop", "--state", str(state),
        env=child_env({"HOME": str(state.parent)}),
    )  # fmt: skip
    assert enrolled.returncode == 0, enrolled.stderr.decode()
    device_id = str(json.loads(state.read_text())["device_id"])
    return TransparentLab(
        gw, origin, ns, base, gateway_ca, listener_port, device_id, rules, account, blocked.id
    )


def test_the_printed_rules_are_explained_and_narrow(lab: TransparentLab) -> None:
    rule_lines = [
        line.strip() for line in lab.rules.splitlines() if line.strip() and not line.strip().startswith("#")
    ]
    assert (
        f'iifname "{lab.ns.veth_root}" ip saddr {lab.ns.client_address}/32 tcp dport {{ {lab.origin.port} }} '
        f"redirect to :{lab.listener_port}"
    ) in rule_lines
    assert sum(1 for line in lab.rules.splitlines() if line.strip().startswith("#")) >= 4
    banner = lab.gw.stdout()
    assert f"transparent  {lab.ns.root_address}:{lab.listener_port}" in banner, banner
    assert f"gateway transparent rules --port {lab.listener_port}" in banner


def test_curl_without_a_proxy_gets_the_origin_through_an_inspected_leaf(lab: TransparentLab) -> None:
    fetched = lab.curl()  # trusting only the gateway's CA
    assert fetched.returncode == 0, fetched.stderr
    assert fetched.status == 200 and body_for("origin.test") in fetched.body, fetched.body[:300]
    leaf = fetched.certs[0]
    gateway_ca = load_pems(lab.gateway_ca.read_text())[0]
    assert leaf.issuer == gateway_ca.subject, leaf.issuer
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "origin.test" in names.get_values_for_type(x509.DNSName)  # the SNI names the leaf


def test_the_device_registered_for_the_clients_address_is_in_the_log(lab: TransparentLab) -> None:
    fetched = lab.curl()
    assert fetched.status == 200, fetched.stderr
    line = lab.logged("origin.test")
    assert line["mode"] == "transparent", line
    assert line["src_ip"] == lab.ns.client_address, line
    assert line["device"] == lab.device_id, line
    assert line["user"] == "tess@example.com", line


def test_a_blocked_host_gets_the_block_page(lab: TransparentLab) -> None:
    fetched = lab.curl(BLOCKED)
    assert fetched.status == 403, (fetched.status, fetched.stderr)
    assert BLOCK_REASON in fetched.body, fetched.body[:300]
    line = lab.logged(BLOCKED)
    assert line["action"] == "block" and line["mode"] == "transparent", line


def test_a_do_not_inspect_host_gets_the_origins_own_certificate(lab: TransparentLab) -> None:
    fetched = lab.curl(PASSTHROUGH, cacert=lab.origin.ca_path)  # trusting only the origin's CA
    assert fetched.returncode == 0, fetched.stderr
    assert fetched.status == 200 and body_for(PASSTHROUGH) in fetched.body
    served = lab.origin.site_certs["*.origin.test"].certificate
    assert fetched.certs[0] == served  # the origin's own leaf, passed through
    refused = lab.curl(PASSTHROUGH)  # the gateway's CA does not vouch for the origin's leaf
    assert refused.returncode != 0


def test_a_hot_swap_mid_run_fails_no_request(lab: TransparentLab, tmp_path: Path) -> None:
    with _sdk(lab.gw) as c:
        new = sdk.generate_available(c, lab.account)
        bundle = tmp_path / "both-cas.pem"
        bundle.write_text(lab.gw.ca_pem() + new.certificate)
        results: list[Fetched] = []
        stop = threading.Event()

        def load() -> None:
            while not stop.is_set() and len(results) < 200:
                results.append(lab.ns.curl("origin.test", lab.origin.port, cacert=bundle))

        worker = threading.Thread(target=load, daemon=True)
        worker.start()
        try:
            time.sleep(LOAD_BEFORE_SWAP)  # real time on purpose: the load builds up before the swap
            before = len(results)
            sdk.turn_on(c, lab.account, new.id)
            time.sleep(LOAD_AFTER_SWAP)  # real time on purpose: the load goes on across the swap
        finally:
            stop.set()
            worker.join(CURL_SECONDS + 15)
    failed = [r for r in results if r.returncode != 0 or r.status != 200]
    assert not failed, f"{len(failed)} of {len(results)} failed, e.g. {failed[0].stderr or failed[0].status}"
    assert before >= 2 and len(results) - before >= 2, (before, len(results))
    new_ca = load_pems(new.certificate)[0]
    assert results[-1].certs[0].issuer == new_ca.subject  # the last ones were signed by the new CA
    lab.gateway_ca.write_text(bundle.read_text())  # the tests after this one trust both


def test_a_connection_that_was_not_redirected_gets_a_clear_answer(lab: TransparentLab) -> None:
    """Straight to the listener, by address (no SNI): it has no destination. The gateway closes it
    at once (mitmproxy's transparent layer closes a client whose upstream connection failed, before
    any TLS or HTTP answer could carry a page), the log says why, and the gateway does not connect
    to itself."""
    started = time.monotonic()
    result = lab.ns.exec(
        "curl", "-sS", "--noproxy", "*", "--max-time", str(CURL_SECONDS), "-k",
        f"https://{lab.ns.root_address}:{lab.listener_port}/", timeout=CURL_SECONDS + 10,
    )  # fmt: skip
    answer = result.stdout.decode(errors="replace") + result.stderr.decode(errors="replace")
    assert result.returncode == 35 and time.monotonic() - started < CURL_SECONDS / 2, (
        answer
    )  # closed, no hang
    explained = f"transparent client {lab.ns.client_address}: "
    assert wait_until(lambda: explained in lab.gw.stderr_tail(200), 5), lab.gw.stderr_tail(40)
    assert "is this listener itself (not redirected" in lab.gw.stderr_tail(200)
    assert lab.curl().status == 200  # and everything else still works


def test_an_address_bound_to_another_accounts_device_gets_that_accounts_ca_and_rules(
    lab: TransparentLab,
) -> None:
    """Issue 12: in transparent mode the source address names the device, and the device's
    account signs the leaf and decides the request (the first account's block rule is not the
    other account's)."""
    with lab.gw.api() as api:
        made = api.post("/accounts", json={"name": "e2e transparent branch"})
        assert made.status_code == 200, made.text
        account = made.json()["result"]["id"]
        token = api.post(f"/accounts/{account}/devices/enrollment_tokens", json={"email": "bo@example.com"})
        assert token.status_code == 200, token.text
        state = lab.base / "branch-agent" / "state.json"
        state.parent.mkdir(mode=0o700)
        enrolled = subprocess.run(
            [gateway_command(), "agent", "enroll", "--token", token.json()["result"]["token"], "--name",
             "branch-laptop", "--state", str(state)],
            env=child_env({"HOME": str(state.parent)}), capture_output=True, timeout=60,
        )  # fmt: skip
        assert enrolled.returncode == 0, enrolled.stderr.decode()
        device = str(json.loads(state.read_text())["device_id"])
        (ca,) = [
            c for c in api.get(f"/accounts/{account}/gateway/certificates").json()["result"] if c["in_use"]
        ]
        branch_ca = lab.base / "branch-ca.pem"
        branch_ca.write_text(ca["certificate"])
        addresses = f"/accounts/{account}/devices/{device}/addresses"
        bound = api.put(addresses, json={"network": f"{lab.ns.client_address}/32"})  # the admin's word wins
        assert bound.status_code == 200, bound.text
        try:
            fetched = lab.curl(cacert=branch_ca)  # trusting the other account's CA alone
            assert fetched.status == 200 and body_for("origin.test") in fetched.body, fetched.stderr
            assert fetched.certs[0].issuer == load_pems(ca["certificate"])[0].subject
            assert lab.curl(BLOCKED, cacert=branch_ca).status == 200  # the first account's rule
            assert wait_until(
                lambda: [
                    x for x in lab.log_lines() if x.get("host") == BLOCKED and x.get("device") == device
                ],
                5,
            ), lab.log_lines()[-2:]
        finally:
            api.request("DELETE", addresses, params={"network": f"{lab.ns.client_address}/32"})
            api.delete(f"/accounts/{account}/devices/{device}")
            api.delete(f"/accounts/{account}")
    assert lab.curl(BLOCKED).status == 403  # the address is tess's again: the first account's rule
