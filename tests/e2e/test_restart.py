"""Process restarts: state survives SIGTERM + start on the same data dir, keys are sealed at rest
in private files, and an admin token made on first start is printed exactly once."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest

from tests.support.pki import make_ca
from tests.support.wait import wait_until

from . import sdk
from .conftest import GatewayFactory
from .gateway_process import GatewayProcess
from .origin import Origin, body_for
from .pki import describe, issued_by, load_pem
from .tunnel import client_context, fetch

pytestmark = pytest.mark.e2e

P256_PKCS8_DER_PREFIX = bytes.fromhex(
    "308187020100301306072a8648ce3d020106082a8648ce3d030107046d306b0201010420"
)
P256_SEC1_DER_PREFIX = bytes.fromhex("30770201010420")


def _snapshot(gw: GatewayProcess) -> list[tuple[str, str, bool, str, str]]:
    with sdk.client(gw) as c:
        account = sdk.account_id(c)
        return sorted(
            (x.id, x.binding_status, x.in_use, x.fingerprint, x.type)
            for x in sdk.certificates(c, account).values()
        )


def _signing_ca(gw: GatewayProcess, origin: Origin, ca_path: Path) -> None:
    got = fetch(gw.proxy_port, "origin.test", origin.port, client_context(ca_path))
    assert got.status == 200 and body_for("origin.test") in got.body
    assert issued_by(got.leaf, load_pem(ca_path.read_text())), describe(got.leaf)


def test_restart_keeps_certificates_and_signer(
    gateway_factory: GatewayFactory, origin: Origin, tmp_path: Path
) -> None:
    gw = gateway_factory()
    gw.start()
    first_ca = load_pem(gw.ca_pem())
    byo = make_ca("e2e Restart BYO Root", key_identifiers=True)  # a key we know, to look for on disk
    with sdk.client(gw) as c:
        account = sdk.account_id(c)
        second = sdk.generate_available(c, account)
        sdk.turn_on(c, account, second.id)
        uploaded = c.mtls_certificates.create(
            account_id=account,
            ca=True,
            name="restart byo",
            certificates=byo.cert_pem(),
            private_key=byo.key_pem(),
        )
        assert uploaded is not None and uploaded.id
        uploaded_id = uploaded.id
        c.zero_trust.gateway.certificates.activate(uploaded_id, account_id=account)
        sdk.wait_binding_status(c, account, uploaded_id, "available")
    in_use_path = tmp_path / "in-use.pem"
    in_use_path.write_text(gw.ca_pem())
    assert load_pem(in_use_path.read_text()) == load_pem(second.certificate) != first_ca
    _signing_ca(gw, origin, in_use_path)
    before = _snapshot(gw)
    assert len(before) == 3 and [row[0] for row in before if row[2]] == [second.id]

    gw.stop()  # SIGTERM, exit 0
    gw.start()  # same data dir, same token, same ports
    assert _snapshot(gw) == before
    assert load_pem(gw.ca_pem()) == load_pem(second.certificate)
    _signing_ca(gw, origin, in_use_path)
    gw.stop()

    # The token from GATEWAY_ADMIN_TOKEN is never echoed, on stdout or in the log.
    assert gw.token
    for start in (1, 2):
        assert gw.token not in gw.stdout(start) + gw.stderr_path(start).read_text(), start

    # At rest, after two runs: no private key in plaintext in any file (store, WAL, key file) ...
    secrets = {
        "PEM private key": b"PRIVATE KEY",
        "uploaded key (PKCS#8 DER)": byo.key_der(),
        "uploaded key (raw scalar)": byo.key.private_numbers().private_value.to_bytes(32, "big"),
        # DER headers of any unencrypted P-256 key (the generated CAs' too), PKCS#8 and SEC1.
        "a P-256 PKCS#8 DER key": P256_PKCS8_DER_PREFIX,
        "a P-256 SEC1 DER key": P256_SEC1_DER_PREFIX,
    }
    files = [p for p in gw.data_dir.rglob("*") if p.is_file()]
    assert files, "data dir is empty"
    for path in files:
        data = path.read_bytes()
        for what, needle in secrets.items():
            assert needle not in data, f"{what} in plaintext in {path.relative_to(gw.data_dir)}"
    # ... and every file private to its owner.
    loose = {
        str(p.relative_to(gw.data_dir)): oct(stat.S_IMODE(p.stat().st_mode))
        for p in files
        if stat.S_IMODE(p.stat().st_mode) & 0o077
    }
    assert not loose, f"files readable by group/others (want 0600): {loose}"
    data_dir_mode = stat.S_IMODE(gw.data_dir.stat().st_mode)
    assert not data_dir_mode & 0o077, f"data dir is {oct(data_dir_mode)}, want 0700"


def _working_tokens(gw: GatewayProcess, stdout: str) -> list[str]:
    lines = [line for line in stdout.splitlines() if "token" in line.lower()]
    candidates = {m for line in lines for m in re.findall(r"[A-Za-z0-9_\-.~+/=]{20,}", line)}
    working = []
    for candidate in sorted(candidates):
        with gw.api(token=candidate) as api:
            if api.get("/accounts").status_code == 200:
                working.append(candidate)
    return working


def test_first_start_prints_admin_token_once(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory(token=None)  # GATEWAY_ADMIN_TOKEN unset
    gw.start()
    # The banner may trail /healthz a little.
    working = wait_until(lambda: _working_tokens(gw, gw.stdout(1)), 5, interval=0.2)
    assert len(working) == 1, f"no working admin token on first start's stdout:\n{gw.stdout(1)[-2000:]}"
    token = working[0]
    with gw.api(token=None) as api:
        assert api.get("/accounts").status_code == 401
    with gw.api(token=token + "x") as api:
        assert api.get("/accounts").status_code == 401
    gw.stop()
    assert gw.stdout(1).count(token) == 1, "the token was printed more than once"
    assert token not in gw.stderr_path(1).read_text(), "the admin token is in the log (stderr)"

    gw.start()  # second start on the same data dir, still without GATEWAY_ADMIN_TOKEN
    with gw.api(token=token) as api:
        response = api.get("/accounts")
    assert response.status_code == 200, "the first start's token stopped working"
    gw.stop()
    second = gw.stdout(2)
    assert token not in second, "the second start printed the admin token again"
    assert token not in gw.stderr_path(2).read_text(), "the admin token is in the log (stderr)"
