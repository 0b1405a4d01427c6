"""CA rotation end to end (issue 12, docs/rotation.md): the real `gateway run`, the real
`gateway agent run --root DIR` of two enrolled devices (each keeps a PEM bundle under DIR,
ROOT/etc/ssl/certs/ca-certificates.crt, and an NSS database that headless Chromium reads as its
own), and `gateway ca rotate` / `gateway ca rotation` as processes.

1. The new CA is turned on only after both agents installed it (bob's agent is stopped until
   ann's has, and the rotation waits for him); curl trusting only its own agent's bundle, in a
   loop for each device through the whole rotation, never sees a certificate error and sees
   both CAs; Chromium on ann's agent-written NSS database loads before the rotation, after the
   switch and after the old CA is retired.
2. A device that never installs the new CA holds the rotation at the deadline and is named; a
   restart of the gateway in the middle resumes it; bad input and a second rotation are
   refused by the CLI with one line; `continue` then turns the new CA on."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.wait import poll, wait_until

from . import curl, tools
from .device_lab import Agent, admin_cli, make_nssdb
from .gateway_process import GatewayProcess, child_env
from .origin import Origin
from .pki import load_pem
from .test_ca_sync import chromium_loads

pytestmark = pytest.mark.e2e

SCALE = "0.02"  # the agent syncs its CAs every 60 s x 0.02 = 1.2 s
WAIT = 60.0


@dataclass
class Device:
    """One enrolled device: its agent's state, home and --root, and the agent process."""

    name: str
    base: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def home(self) -> Path:
        return self.base / "home"

    @property
    def root(self) -> Path:
        return self.base / "root"

    @property
    def agent(self) -> Agent:
        return Agent(state=self.base / "state.json", home=self.home)

    @property
    def browser_home(self) -> Path:
        """~/.pki/nssdb under --root is ROOT/$HOME/.pki/nssdb: Chromium gets HOME=ROOT/$HOME."""
        return self.root / self.home.relative_to("/")

    @property
    def bundle(self) -> Path:
        """What `update-ca-certificates` (run by the agent under --root) rebuilds."""
        return self.root / "etc/ssl/certs/ca-certificates.crt"

    def start(self) -> None:
        self.starts += 1
        env = child_env({"HOME": str(self.home)})
        env.pop("XDG_CONFIG_HOME", None)
        log = self.base / f"agent-{self.starts}.log"
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [tools.venv_program("gateway"), "agent", "run", "--root", str(self.root),
                 "--interval-scale", SCALE, "--state", str(self.base / "state.json"), "-v"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
                start_new_session=True,
            )  # fmt: skip

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            tools.stop(self.proc, sig=signal.SIGTERM, timeout=15)
        self.proc = None

    def log(self) -> str:
        return tools.tail(self.base / f"agent-{self.starts}.log", 30) if self.starts else ""


def enroll(gw: GatewayProcess, tmp_path: Path, name: str) -> Device:
    device = Device(name, tmp_path / name)
    device.home.mkdir(parents=True)
    (device.root / "usr/local/share/ca-certificates").mkdir(parents=True)  # Debian's anchors
    make_nssdb(device.browser_home / ".pki" / "nssdb")
    made = admin_cli(gw, "device", "token", "--email", f"{name}@example.com", "--ttl", "10m")
    assert made.returncode == 0, made.stderr.decode()
    enrolled = device.agent.run(
        "enroll", "--token", made.stdout.decode().strip(), "--serial-number", f"E2E-{name}", "--name", name
    )
    assert enrolled.returncode == 0, enrolled.stderr.decode()
    return device


@pytest.fixture
def devices(gateway: GatewayProcess, tmp_path: Path) -> Iterator[tuple[Device, Device]]:
    ann, bob = enroll(gateway, tmp_path, "ann"), enroll(gateway, tmp_path, "bob")
    try:
        yield ann, bob
    finally:
        ann.stop()
        bob.stop()


class Api:
    def __init__(self, gw: GatewayProcess) -> None:
        self.gw = gw
        with gw.api() as c:
            self.account = c.get("/accounts").json()["result"][0]["id"]

    def get(self, suffix: str) -> Any:
        with self.gw.api() as c:
            reply = c.get(f"/accounts/{self.account}{suffix}")
        assert reply.status_code == 200, reply.text
        return reply.json()["result"]

    def rotation(self) -> dict[str, Any]:
        result = self.get("/gateway/certificates/rotations/current")
        assert isinstance(result, dict)
        return result

    def certificate(self, cert_id: str) -> dict[str, Any]:
        result = self.get(f"/gateway/certificates/{cert_id}")
        assert isinstance(result, dict)
        return result

    def in_use(self) -> str:
        return str(next(c["id"] for c in self.get("/gateway/certificates") if c["in_use"]))


def wait_rotation(
    api: Api, until: Callable[[dict[str, Any]], bool], what: str, timeout: float = WAIT
) -> dict[str, Any]:
    seen: dict[str, Any] = poll(api.rotation, until, timeout, interval=0.2)
    assert until(seen), f"rotation never {what}: {seen}"
    return seen


@dataclass
class CurlLoop:
    """curl through the proxy, trusting only the agent-written bundle, again and again."""

    gw: GatewayProcess
    origin: Origin
    bundle: Path
    host: str
    results: list[tuple[int, int, str, str]] = field(default_factory=list)  # code, status, issuer, stderr
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> CurlLoop:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(30)

    def _run(self) -> None:
        while not self._stop.is_set():
            got = curl.via_proxy(
                self.gw.proxy_port, self.origin.url(self.host), cacert=self.bundle, timeout=20
            )
            issuer = got.certs[0].issuer.rfc4514_string() if got.certs else ""
            self.results.append((got.returncode, got.status, issuer, got.stderr.strip()[-300:]))
            self._stop.wait(0.2)

    def failures(self) -> list[tuple[int, int, str, str]]:
        return [r for r in self.results if r[0] != 0 or r[1] != 200]

    def issuers(self) -> list[str]:
        """The CAs that signed the leaves, in the order first seen."""
        return list(dict.fromkeys(r[2] for r in self.results))


def has_installed(api: Api, cert_id: str, count: int) -> bool:
    return bool(api.certificate(cert_id)["gateway_devices"]["installed"] >= count)


def test_a_rotation_waits_for_both_agents_and_no_client_sees_a_certificate_error(
    gateway: GatewayProcess, origin: Origin, devices: tuple[Device, Device]
) -> None:
    gw, (ann, bob) = gateway, devices
    api = Api(gw)
    old_id = api.in_use()
    old_subject = load_pem(api.certificate(old_id)["certificate"]).subject.rfc4514_string()
    ann.start()
    bob.start()
    assert wait_until(lambda: has_installed(api, old_id, 2), WAIT), (ann.log(), bob.log())
    chromium_loads(gw, origin, ann.browser_home, "before.origin.test")

    with CurlLoop(gw, origin, ann.bundle, "ann.origin.test") as ann_curl, \
            CurlLoop(gw, origin, bob.bundle, "bob.origin.test") as bob_curl:  # fmt: skip
        bob.stop()  # bob's agent is off until ann's has installed the new CA
        started = admin_cli(gw, "ca", "rotate", "--deadline", "5m", "--grace", "4s")
        assert started.returncode == 0, started.stderr.decode()
        assert "started" in started.stdout.decode()
        rotation = api.rotation()
        new_id = rotation["new_certificate_id"]
        assert rotation["old_certificate_id"] == old_id

        # ann's agent installs it; bob's does not run: the rotation waits, the old CA stays on
        rotation = wait_rotation(api, lambda r: r["coverage"]["installed"] == 1, "saw ann install it")
        assert rotation["step"] == "install" and rotation["coverage"]["reporting"] == 2, rotation
        assert [m["name"] for m in rotation["coverage"]["missing"]] == ["bob"], rotation
        held_on = time.monotonic() + 3  # three of ann's syncs: still waiting, still the old CA
        while time.monotonic() < held_on:
            assert api.rotation()["step"] == "install" and api.in_use() == old_id
            time.sleep(0.3)

        bob.start()
        rotation = wait_rotation(api, lambda r: r["step"] != "install", "switched after bob installed it")
        assert api.in_use() == new_id
        switch = next(s for s in rotation["steps"] if s["step"] == "grace")
        assert "2 of 2 reporting devices have it installed" in switch["message"], rotation["steps"]
        chromium_loads(gw, origin, ann.browser_home, "after-switch.origin.test")

        rotation = wait_rotation(api, lambda r: r["state"] == "completed", "completed")
        assert api.certificate(old_id)["binding_status"] == "inactive"
        assert [s["step"] for s in rotation["steps"]] == ["deploy", "install", "grace", "retire", "done"]
        # a few more requests with the bundles as the agents leave them (the old CA removed)
        count = len(ann_curl.results)
        assert wait_until(lambda: len(ann_curl.results) > count + 3, WAIT)

    new_subject = load_pem(api.certificate(new_id)["certificate"]).subject.rfc4514_string()
    for loop in (ann_curl, bob_curl):
        assert not loop.failures(), (loop.host, loop.failures()[:5], ann.log(), bob.log())
        assert loop.issuers() == [old_subject, new_subject], (loop.host, loop.issuers())
    chromium_loads(gw, origin, ann.browser_home, "after-retire.origin.test")


def test_a_device_that_never_installs_it_holds_the_rotation_across_a_restart(
    gateway: GatewayProcess, devices: tuple[Device, Device]
) -> None:
    gw, (ann, bob) = gateway, devices
    api = Api(gw)
    old_id = api.in_use()
    synced = bob.agent.run("sync-ca", "--root", str(bob.root), "--json")  # once, and never again
    assert synced.returncode == 0, synced.stderr.decode()
    ann.start()
    assert wait_until(lambda: has_installed(api, old_id, 2), WAIT), ann.log()

    for bad, said in (
        (("--deadline=-5m",), "deadline: "),
        (("--deadline", "2020-01-01T00:00:00Z"), "is not in the future"),
        (("--coverage", "150"), "coverage: must be a whole percentage from 0 to 100"),
        (("--grace=-1h",), "grace: must not be negative"),
    ):
        refused = admin_cli(gw, "ca", "rotate", *bad)
        err = refused.stderr.decode()
        assert refused.returncode == 1 and said in err and "(HTTP 400)" in err, (bad, err)
        assert len(err.strip().splitlines()) == 1, err

    started = admin_cli(gw, "ca", "rotate", "--deadline", "20s", "--grace", "10m")
    assert started.returncode == 0, started.stderr.decode()
    new_id = api.rotation()["new_certificate_id"]
    again = admin_cli(gw, "ca", "rotate")
    assert again.returncode == 1 and "one rotation at a time" in again.stderr.decode(), again.stderr
    wait_rotation(api, lambda r: r["coverage"]["installed"] == 1, "saw ann install it")

    gw.restart()  # in the middle: the driver of the new process picks it up
    rotation = api.rotation()
    assert (rotation["state"], rotation["step"]) == ("running", "install"), rotation
    rotation = wait_rotation(api, lambda r: r["state"] == "held", "held at the deadline")
    bob_id = bob.agent.device_id
    assert f"bob ({bob_id})" in rotation["message"] and "ann" not in rotation["message"], rotation
    assert rotation["coverage"]["missing"] == [{"device_id": bob_id, "name": "bob"}]
    assert api.in_use() == old_id

    shown = admin_cli(gw, "ca", "rotation")
    text = shown.stdout.decode()
    assert shown.returncode == 0 and "held, step install" in text and f"bob ({bob_id})" in text, text
    watched = admin_cli(gw, "ca", "rotation", "--watch")
    assert watched.returncode == 1 and "is held" in watched.stderr.decode(), watched.stderr

    moved = admin_cli(gw, "ca", "rotation", "continue")
    assert moved.returncode == 0, moved.stderr.decode()
    wait_rotation(api, lambda r: r["step"] in ("grace", "retire", "done"), "switched after continue")
    assert api.in_use() == new_id
    cancel = admin_cli(gw, "ca", "rotation", "cancel")
    assert cancel.returncode == 1 and "start a new rotation" in cancel.stderr.decode(), cancel.stderr
