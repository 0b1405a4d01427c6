"""A real `gateway node` process on a gateway's data directory: start it, wait for its health
endpoint, stop it with SIGTERM (exit 0 expected) or kill -9 it."""

from __future__ import annotations

import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.wait import wait_until

from . import tools
from .gateway_process import GatewayProcess, child_env, gateway_command

START_TIMEOUT = 60.0


@dataclass
class NodeProcess:
    gateway: GatewayProcess  # the admin plane whose store it joins
    name: str
    extra_args: list[str] = field(default_factory=list)
    proxy_port: int = field(default_factory=tools.free_port)
    health_port: int = field(default_factory=tools.free_port)
    proc: subprocess.Popen[bytes] | None = None

    def argv(self) -> list[str]:
        gw = self.gateway
        return [
            gateway_command(), "node",
            "--data-dir", str(gw.data_dir),
            "--proxy-listen", f"127.0.0.1:{self.proxy_port}",
            "--health-listen", f"127.0.0.1:{self.health_port}",
            "--upstream-ca", str(gw.upstream_ca),
            "--hosts", str(gw.hosts),
            "--hosts-only",
            "--public-url", gw.admin_url,
            *self.extra_args,
        ]  # fmt: skip

    @property
    def stderr_path(self) -> Path:
        return self.gateway.log_dir / f"{self.name}.stderr"

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    def spawn(self) -> subprocess.Popen[bytes]:
        with self.stderr_path.open("ab") as err:
            self.proc = subprocess.Popen(
                self.argv(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                env=child_env(),
                start_new_session=True,
            )
        return self.proc

    def start(self) -> None:
        proc = self.spawn()

        def healthy() -> bool:
            if proc.poll() is not None:
                pytest.fail(
                    f"{self.name} exited {proc.returncode}\n{tools.tail(self.stderr_path)}", pytrace=False
                )
            try:
                return self.health().get("in_use") is not None
            except httpx.HTTPError:
                return False

        if not wait_until(healthy, START_TIMEOUT, interval=0.1):
            self.kill()
            pytest.fail(f"{self.name}: no /healthz in {START_TIMEOUT} s\n{tools.tail(self.stderr_path)}")

    def health(self) -> dict[str, Any]:
        with httpx.Client(trust_env=False, timeout=2) as client:
            response = client.get(f"http://127.0.0.1:{self.health_port}/healthz")
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    def stop(self) -> None:
        assert self.proc is not None
        code = tools.stop(self.proc, sig=signal.SIGTERM, timeout=20)
        assert code == 0, f"{self.name} on SIGTERM: {code}\n{tools.tail(self.stderr_path)}"

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            tools.kill_group(self.proc)
            self.proc.wait(10)
