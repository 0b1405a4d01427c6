"""`gateway logs requests|posture` against a real `gateway run` whose admin API serves TLS
(`--admin-tls auto`, trusted with `--cacert DATA_DIR/admin-tls.crt`): requests made through the
proxy come back as lines, filtered, as JSON, and as they happen with `--follow`."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.wait import wait_until

from . import curl, tools
from .conftest import GatewayFactory
from .gateway_process import GatewayProcess, child_env, gateway_command
from .origin import Origin

pytestmark = pytest.mark.e2e


def _admin(gw: GatewayProcess) -> list[str]:
    return ["--server", gw.admin_url, "--cacert", str(gw.admin_cert)]


def _logs(gw: GatewayProcess, *args: str) -> tuple[int, str, str]:
    result = tools.run(
        [gateway_command(), "logs", *args, *_admin(gw)],
        env=child_env({"GATEWAY_ADMIN_TOKEN": gw.token or ""}),
    )
    return result.returncode, result.stdout.decode(), result.stderr.decode()


def test_logs_requests_and_posture_from_a_running_gateway(
    gateway_factory: GatewayFactory, origin: Origin, ca_file: Callable[[GatewayProcess], Path]
) -> None:
    gw = gateway_factory(admin_tls=True)
    with gw.serving():
        ca = ca_file(gw)
        tag = uuid.uuid4().hex[:10]
        first = curl.via_proxy(gw.proxy_port, origin.url("origin.test", f"/logs-{tag}/first"), cacert=ca)
        assert first.status == 200, first.stderr

        def logged() -> list[dict[str, object]]:
            code, out, err = _logs(gw, "requests", "--json", "--host", "origin.test")
            assert code == 0, err
            return [
                line
                for line in map(json.loads, out.splitlines())
                if str(line["path"]).startswith(f"/logs-{tag}")
            ]

        (line,) = wait_until(logged, 15)
        assert (line["host"], line["path"], line["action"], line["status"]) == (
            "origin.test", f"/logs-{tag}/first", "allow", 200,
        )  # fmt: skip
        code, out, err = _logs(gw, "requests", "--since", "10m", "--host", "origin.test")
        assert code == 0, err
        (readable,) = [x for x in out.splitlines() if f"/logs-{tag}/first" in x]
        assert f"  -  allow     origin.test/logs-{tag}/first  rule=-  200" in readable, readable
        code, out, err = _logs(gw, "requests", "--action", "block", "--host", "origin.test")
        assert (code, out) == (0, ""), err

        # --follow prints what happens next, until Ctrl-C (exit 0)
        seen: list[bytes] = []
        with subprocess.Popen(
            [gateway_command(), "logs", "requests", "--follow", "--interval", "0.2", "--json", "--limit", "1",
             "--host", "origin.test", *_admin(gw)],
            env=child_env({"GATEWAY_ADMIN_TOKEN": gw.token or ""}),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
        ) as follow:  # fmt: skip
            lines, errors = follow.stdout, follow.stderr
            assert lines is not None and errors is not None
            reader = threading.Thread(target=lambda: seen.extend(iter(lines.readline, b"")), daemon=True)
            reader.start()
            try:
                wait_until(lambda: any(f"/logs-{tag}/first".encode() in x for x in seen), 15)
                second = curl.via_proxy(
                    gw.proxy_port, origin.url("origin.test", f"/logs-{tag}/second"), cacert=ca
                )
                assert second.status == 200, second.stderr
                wait_until(lambda: any(f"/logs-{tag}/second".encode() in x for x in seen), 15)
            finally:
                follow.send_signal(signal.SIGINT)
                assert follow.wait(15) == 0, errors.read().decode()
                reader.join(5)
        paths = [json.loads(x)["path"] for x in seen]
        assert paths == [f"/logs-{tag}/first", f"/logs-{tag}/second"], paths

        # no device reported: the posture log is empty, and says nothing
        code, out, err = _logs(gw, "posture", "--since", "1h")
        assert (code, out, err) == (0, "", "")
        # the wrong token: one line on stderr
        result = tools.run(
            [gateway_command(), "logs", "posture", *_admin(gw)],
            env=child_env({"GATEWAY_ADMIN_TOKEN": "nope"}),
        )
        assert result.returncode != 0 and result.stderr.decode().startswith(
            "gateway: error: the admin token was refused"
        )
