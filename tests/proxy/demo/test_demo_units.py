"""The demo lab's small modules: ports, the directory, policies, PKI and origins' SNI, the banner."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

import pytest

from proxy.cli.main import main
from proxy.demo import policies
from proxy.demo.banner import Banner, browser_command
from proxy.demo.layout import MARKER, DemoState, LabOptions, Layout, LayoutError, Ports
from proxy.demo.origins import SITE_NAMES, tls_context
from proxy.demo.pki import LabPki, write_leaf

REPO = Path(__file__).resolve().parents[3]


def test_ports_are_four_from_the_base() -> None:
    ports = Ports(18080)
    assert (ports.proxy, ports.admin, ports.origins, ports.local_proxy) == (18080, 18081, 18082, 18083)
    with pytest.raises(LayoutError, match="--port-base 80: expected 1024-65532"):
        Ports(80)


def _held_port_pair() -> tuple[socket.socket, socket.socket]:
    """A base port held so that only a server-style probe may share it, and the next port listening.

    Other tests run alongside and take ports of their own: the base is held (bound with
    SO_REUSEADDR, not listening, which ``check_free``'s probe may share) so none of them can take it.
    """
    for _ in range(50):
        base = socket.socket()
        base.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        base.bind(("127.0.0.1", 0))
        busy = socket.socket()
        try:
            busy.bind(("127.0.0.1", base.getsockname()[1] + 1))
        except OSError:
            base.close()
            busy.close()
            continue
        busy.listen()
        return base, busy
    raise AssertionError("no two neighbouring loopback ports were free in 50 tries")


def test_a_busy_port_is_one_clear_line() -> None:
    base, busy = _held_port_pair()
    with base, busy:
        port = busy.getsockname()[1]
        with pytest.raises(LayoutError, match=rf"port {port} \(admin API\) on 127.0.0.1 is in use"):
            Ports(port - 1).check_free()


def test_directory_is_made_emptied_and_removed(tmp_path: Path) -> None:
    layout = Layout(tmp_path / "lab")
    assert layout.prepare() is True and (layout.root / MARKER).exists()
    (layout.logs / "old.log").write_text("x")
    assert layout.prepare() is False and not (layout.logs / "old.log").exists()  # a former demo's: wiped
    layout.remove(made=True)
    assert not layout.root.exists()


def test_a_foreign_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(LayoutError, match="not empty and not a demo directory"):
        Layout(tmp_path).prepare()
    assert (tmp_path / "notes.txt").exists()


def test_an_existing_empty_directory_is_kept_but_emptied(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    assert layout.prepare() is False
    layout.remove(made=False)
    assert tmp_path.exists() and list(tmp_path.iterdir()) == []


def test_posture_without_a_running_lab_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "posture", "fail", "--dir", str(tmp_path)]) == 1
    assert "no demo lab runs here" in capsys.readouterr().err
    with pytest.raises(LayoutError, match="no demo lab runs here"):
        DemoState.load(Layout(tmp_path))


def test_the_policies_are_the_examples_and_their_tests_pass(tmp_path: Path) -> None:
    assert (REPO / "policies/examples/demo/demo.yaml").read_text() == policies.POLICIES
    assert (REPO / "policies/examples/demo/demo-tests.yaml").read_text() == policies.TESTS
    policy_file = policies.write(tmp_path)
    assert main(["policy", "test", str(policy_file), str(tmp_path / "demo-tests.yaml")]) == 0


def test_origins_answer_each_name_with_its_own_certificate(tmp_path: Path) -> None:
    pki = LabPki.generate()
    files = {name: write_leaf(leaf, tmp_path, name) for name, leaf in pki.origin_leaves(SITE_NAMES).items()}
    server_context = tls_context(files)
    client_context = ssl.create_default_context(cadata=pki.origin_ca.certificate_pem())
    for name in SITE_NAMES:
        client, server = ssl.MemoryBIO(), ssl.MemoryBIO()
        c = client_context.wrap_bio(client, server, server_hostname=name)
        s = server_context.wrap_bio(server, client, server_side=True)
        for _ in range(10):
            for side in (c, s):
                try:
                    side.do_handshake()
                except ssl.SSLWantReadError:
                    pass
        cert = c.getpeercert()
        assert cert is not None and ("DNS", name) in cert["subjectAltName"]


def test_client_certificate_is_signed_by_the_device_ca() -> None:
    pki = LabPki.generate()
    client = pki.client_certificate("demo-laptop.demo.test")
    client.certificate.verify_directly_issued_by(pki.device_ca.certificate)
    assert client.pkcs12("demo laptop", b"pw")


def test_banner_prints_the_browser_command_and_the_dashboard(tmp_path: Path) -> None:
    options = LabOptions(Layout(tmp_path), Ports(18080))
    text = Banner(options, "TOKEN").render()
    assert "http://127.0.0.1:18081/" in text and "TOKEN" in text
    command = browser_command(options, "https://www.demo.test:18082/")
    assert command[0] == f"HOME={tmp_path / 'device' / 'home'}"
    assert f"--user-data-dir={tmp_path / 'browser'}" in command
    assert "--proxy-server=http://127.0.0.1:18083" in command
    assert "demo posture fail --dir" in text
