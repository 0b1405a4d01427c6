"""The real `gateway run` process on loopback ports: start it, wait for /healthz, fetch its CA,
stop it with SIGTERM (exit 0 expected) and start it again on the same data directory.

With `admin_tls=True` it runs with `--admin-tls auto` (and may listen on `admin_host`, such as
0.0.0.0); the tests still talk to it on 127.0.0.1 only, over https, trusting the certificate it
made for itself (`admin_cert`, DATA_DIR/admin-tls.crt).

`GATEWAY_E2E_COMMAND` (a path) replaces `.venv/bin/gateway`, e.g. to test an installed build."""

from __future__ import annotations

import os
import secrets
import signal
import ssl
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.support.wait import wait_until

from . import tools

HEALTH_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0
BANNER_END = "Stop with Ctrl-C."  # the last line of the banner `gateway run` prints once it serves
_ENV_DROPPED = ("GATEWAY_ADMIN_TOKEN", "GATEWAY_MASTER_KEY")


def new_token() -> str:
    return secrets.token_urlsafe(32)


def gateway_command() -> str:
    return os.environ.get("GATEWAY_E2E_COMMAND") or tools.venv_program("gateway")


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The test's environment without proxy settings or gateway secrets, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy") and k not in _ENV_DROPPED}
    env.update(extra or {})
    return env


@dataclass
class GatewayProcess:
    data_dir: Path
    log_dir: Path
    upstream_ca: Path
    hosts: Path
    token: str | None = field(default_factory=new_token)  # None: GATEWAY_ADMIN_TOKEN unset
    proxy_port: int = field(default_factory=tools.free_port)
    admin_port: int = field(default_factory=tools.free_port)
    extra_args: list[str] = field(default_factory=list)
    admin_host: str = "127.0.0.1"  # where it listens; the tests connect to 127.0.0.1 regardless
    admin_tls: bool = False  # --admin-tls auto
    # --hosts-only: names outside the lab's hosts file are refused, never resolved, so a browser's
    # background requests (Chromium's time and update checks) never leave this machine. Modes whose
    # destinations are addresses (transparent, WireGuard) turn it off.
    hosts_only: bool = True
    workers: int = 1  # --workers: 1 keeps one process (the suite's speed); tests of workers set more
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    # --- addresses --------------------------------------------------------------------------
    @property
    def admin_url(self) -> str:
        return f"{'https' if self.admin_tls else 'http'}://127.0.0.1:{self.admin_port}"

    @property
    def admin_cert(self) -> Path:
        """The admin API's own certificate (`--admin-tls auto`), its clients' trust anchor."""
        return self.data_dir / "admin-tls.crt"

    def verify(self) -> ssl.SSLContext | bool:
        """httpx's `verify` for the admin API: its own certificate alone when it serves TLS."""
        if not self.admin_tls:
            return True
        return ssl.create_default_context(cafile=str(self.admin_cert))

    @property
    def api_base(self) -> str:
        return f"{self.admin_url}/client/v4"

    @property
    def proxy_url(self) -> str:
        return f"http://127.0.0.1:{self.proxy_port}"

    def argv(self) -> list[str]:
        return [
            gateway_command(),
            "run",
            "--data-dir", str(self.data_dir),
            "--proxy-listen", f"127.0.0.1:{self.proxy_port}",
            "--admin-listen", f"{self.admin_host}:{self.admin_port}",
            *(["--admin-tls", "auto"] if self.admin_tls else []),
            "--upstream-ca", str(self.upstream_ca),
            "--hosts", str(self.hosts),
            *(["--hosts-only"] if self.hosts_only else []),
            "--workers", str(self.workers),
            *self.extra_args,
        ]  # fmt: skip

    # --- logs -------------------------------------------------------------------------------
    def stdout_path(self, start: int | None = None) -> Path:
        return self.log_dir / f"gateway-{start or self.starts}.stdout"

    def stderr_path(self, start: int | None = None) -> Path:
        return self.log_dir / f"gateway-{start or self.starts}.stderr"

    def stdout(self, start: int | None = None) -> str:
        path = self.stdout_path(start)
        return path.read_text(errors="replace") if path.exists() else ""

    def stderr_tail(self, lines: int = 40) -> str:
        return tools.tail(self.stderr_path(), lines)

    # --- lifecycle --------------------------------------------------------------------------
    def start(self, *, timeout: float = HEALTH_TIMEOUT) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        env = child_env({"GATEWAY_ADMIN_TOKEN": self.token} if self.token else {})
        with self.stdout_path().open("wb") as out, self.stderr_path().open("wb") as err:
            self.proc = subprocess.Popen(
                self.argv(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=env,
                start_new_session=True,
            )
        self._wait_healthy(timeout)

    def _wait_healthy(self, timeout: float) -> None:
        """Until /healthz answers 200 and the start-up banner is out."""
        proc = self.proc
        assert proc is not None
        last = "no answer"

        def healthy() -> bool:
            nonlocal last
            if proc.poll() is not None:
                pytest.fail(
                    f"gateway exited with {proc.returncode} before /healthz answered\n"
                    f"argv: {' '.join(self.argv())}\n--- stderr tail ---\n{self.stderr_tail()}",
                    pytrace=False,
                )
            if self.admin_tls and not self.admin_cert.exists():
                last = f"no {self.admin_cert} yet"
                return False
            try:
                with httpx.Client(trust_env=False, timeout=2, verify=self.verify()) as client:
                    response = client.get(f"{self.admin_url}/healthz")
                if response.status_code == 200 and BANNER_END in self.stdout():
                    return True  # the banner comes a moment after the admin API answers
                last = f"HTTP {response.status_code}" + (
                    "" if BANNER_END in self.stdout() else ", no banner yet"
                )
            except httpx.HTTPError as e:
                last = repr(e)
            return False

        if wait_until(healthy, timeout, interval=0.1):
            return
        tools.kill_group(proc)
        proc.wait(10)
        pytest.fail(
            f"gateway /healthz not 200 within {timeout} s (last: {last})\n"
            f"argv: {' '.join(self.argv())}\n--- stderr tail ---\n{self.stderr_tail()}",
            pytrace=False,
        )

    def stop(self) -> None:
        """SIGTERM; the process must exit 0 within STOP_TIMEOUT."""
        assert self.proc is not None, "not started"
        started = time.monotonic()
        code = tools.stop(self.proc, sig=signal.SIGTERM, timeout=STOP_TIMEOUT)
        if code != 0:
            what = f"exited {code}" if code is not None else f"still running after {STOP_TIMEOUT} s (killed)"
            pytest.fail(
                f"gateway on SIGTERM {what}, expected exit 0 "
                f"(after {time.monotonic() - started:.1f} s)\n"
                f"--- stderr tail ---\n{self.stderr_tail()}",
                pytrace=False,
            )

    def restart(self) -> None:
        self.stop()
        self.start()

    @contextmanager
    def serving(self) -> Iterator[GatewayProcess]:
        """Started for the ``with`` block; then SIGTERM (exit 0 asserted) if it still runs, and
        killed whatever happened, so that nothing is left behind."""
        self.start()
        try:
            yield self
        finally:
            try:
                if self.running:
                    self.stop()
            finally:
                self.kill()

    def kill(self) -> None:
        """Cleanup only: make sure nothing is left running."""
        if self.proc is not None and self.proc.poll() is None:
            tools.kill_group(self.proc)
            self.proc.wait(10)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # --- talking to it ----------------------------------------------------------------------
    def ca_pem(self) -> str:
        """The in-use CA as the gateway publishes it."""
        with httpx.Client(trust_env=False, timeout=10, verify=self.verify()) as client:
            response = client.get(f"{self.admin_url}/pki/ca.pem")
        assert response.status_code == 200, f"/pki/ca.pem: {response.status_code} {response.text[:300]}"
        assert "BEGIN CERTIFICATE" in response.text, response.text[:300]
        return response.text

    def api(self, *, token: str | None = "default", timeout: float = 15) -> httpx.Client:
        """An httpx client on the admin API (`/client/v4`), with this gateway's token by default."""
        use = self.token if token == "default" else token
        headers = {"Authorization": f"Bearer {use}"} if use else {}
        return httpx.Client(
            base_url=self.api_base, headers=headers, trust_env=False, timeout=timeout,
            verify=self.verify(),
        )  # fmt: skip
