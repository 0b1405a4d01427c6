"""The addon in stock mitmdump (SPEC §9: "Addons also load in stock `mitmdump -s`"): pointed at a
data dir that `gateway run` created, it signs with that store's in-use CA."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from . import curl, tools
from .conftest import GatewayFactory
from .gateway_process import child_env
from .origin import Origin, body_for
from .pki import describe, issued_by, load_pem

pytestmark = pytest.mark.e2e

ADDON = tools.REPO / "addons" / "gateway.py"
RESOLVER = Path(__file__).with_name("resolve_hosts.py")


def test_stock_mitmdump_signs_with_store_in_use_ca(
    gateway_factory: GatewayFactory, origin: Origin, hosts_file: Path, tmp_path: Path
) -> None:
    gw = gateway_factory()
    gw.start()
    ca_path = tmp_path / "in-use.pem"
    ca_path.write_text(gw.ca_pem())
    gw.stop()

    port = tools.free_port()
    confdir = tmp_path / "mitmproxy-confdir"  # mitmproxy's own CA would land here: must not sign
    argv = [
        tools.venv_program("mitmdump"),
        "--listen-host", "127.0.0.1",
        "--listen-port", str(port),
        "--set", f"confdir={confdir}",
        "-s", str(ADDON),
        "--set", f"gateway_data_dir={gw.data_dir}",
        "--set", f"ssl_verify_upstream_trusted_ca={origin.ca_path}",
        "-s", str(RESOLVER),
        "--set", f"e2e_hosts={hosts_file}",
    ]  # fmt: skip
    log = tmp_path / "mitmdump.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            env=child_env(), start_new_session=True,
        )  # fmt: skip
    try:
        if not tools.wait_for_port(port, timeout=30, proc=proc):
            pytest.fail(f"mitmdump did not listen (exit {proc.poll()}):\n{tools.tail(log)}", pytrace=False)
        result = curl.via_proxy(port, origin.url("origin.test"), cacert=ca_path)
        assert result.returncode == 0, f"{result.stderr}\n--- mitmdump ---\n{tools.tail(log)}"
        assert result.status == 200 and body_for("origin.test") in result.body
        leaf = result.certs[0]
        assert issued_by(leaf, load_pem(ca_path.read_text())), describe(leaf)
    finally:
        code = tools.stop(proc, timeout=15)
    assert code is not None, f"mitmdump ignored SIGTERM:\n{tools.tail(log)}"
