"""Gateway in stock mitmdump (SPEC §9: "Addons also load in stock `mitmdump -s`"):
`mitmdump -s proxy/mitmdump_script.py`, pointed at a data dir that `gateway run` created, signs
with that store's in-use CA."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from . import curl, tools
from .conftest import GatewayFactory
from .gateway_process import GatewayProcess, child_env
from .origin import Origin, body_for
from .pki import describe, issued_by, load_pem

pytestmark = pytest.mark.e2e

SCRIPT = tools.REPO / "proxy" / "mitmdump_script.py"
RESOLVER = Path(__file__).with_name("resolve_hosts.py")


def test_stock_mitmdump_signs_with_store_in_use_ca(
    gateway_factory: GatewayFactory, origin: Origin, hosts_file: Path, tmp_path: Path
) -> None:
    gw = gateway_factory()
    gw.start()  # runs beside mitmdump: two nodes of one store
    ca_path = tmp_path / "in-use.pem"
    ca_path.write_text(gw.ca_pem())

    port = tools.free_port()
    confdir = tmp_path / "mitmproxy-confdir"  # mitmproxy's own CA would land here: must not sign
    argv = [
        tools.venv_program("mitmdump"),
        "--listen-host", "127.0.0.1",
        "--listen-port", str(port),
        "--set", f"confdir={confdir}",
        "-s", str(SCRIPT),
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
        assert _mitmdump_nodes(gw) == [True], "mitmdump is not a live node of the store"
    finally:
        code = tools.stop(proc, timeout=15)
    assert code is not None, f"mitmdump ignored SIGTERM:\n{tools.tail(log)}"
    assert _mitmdump_nodes(gw) == [], "mitmdump stopped but did not leave the store's node list"
    gw.stop()


def _mitmdump_nodes(gw: GatewayProcess) -> list[bool]:
    """Whether each mitmdump node the gateway's store lists is live."""
    with gw.api() as api:
        account = api.get("/accounts").json()["result"][0]["id"]
        nodes = api.get(f"/accounts/{account}/gateway/nodes").json()["result"]
    return [node["live"] for node in nodes if node["name"].startswith("mitmdump ")]
