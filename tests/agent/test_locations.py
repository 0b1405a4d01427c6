"""Locations: PEM paths (one file, two files, encrypted key, missing file) and a real NSS database
made with certutil, the client certificate and key imported with pk12util."""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from agent.locations import (
    KeyUnavailable,
    Locator,
    NssTools,
    parse_certutil_listing,
    same_public_key,
)
from tests.agent.agentlab import import_into_nssdb, make_nssdb
from tests.support.pki import Issued, issue_leaf


def _locator() -> Locator:
    return Locator(nss=NssTools(certutil="/nonexistent/certutil"))


def test_one_file_with_certificate_and_key(tmp_path: Path, ca: Issued) -> None:
    client = issue_leaf(ca, "laptop.corp")
    both = tmp_path / "client.pem"
    both.write_text(client.cert_pem() + client.key_pem())
    found = _locator().find([str(both)], ["sql:/nonexistent"])
    (candidate,) = found.candidates
    assert candidate.source == str(both)
    assert candidate.certificate == client.certificate
    assert same_public_key(client.certificate, candidate.private_key())
    assert [(p.source, p.reason) for p in found.problems] == [("nss:/nonexistent", "no NSS database here")]


def test_two_files_both_listed(tmp_path: Path, ca: Issued) -> None:
    client = issue_leaf(ca, "laptop.corp", key_type="rsa-2048")
    (tmp_path / "client.pem").write_text(client.cert_pem())
    (tmp_path / "client.key").write_text(client.key_pem())
    found = _locator().find(
        [str(tmp_path / "client.pem"), str(tmp_path / "client.key")], [str(tmp_path / "no-db")]
    )
    (candidate,) = found.candidates
    assert same_public_key(client.certificate, candidate.private_key())


def test_a_key_next_to_the_certificate_but_not_listed_is_not_read(tmp_path: Path, ca: Issued) -> None:
    client = issue_leaf(ca, "laptop.corp")
    (tmp_path / "client.pem").write_text(client.cert_pem())
    (tmp_path / "client.key").write_text(client.key_pem())
    (candidate,) = _locator().find([str(tmp_path / "client.pem")], [str(tmp_path)]).candidates
    with pytest.raises(KeyUnavailable, match="no private key for this certificate in the listed paths"):
        candidate.private_key()


def test_a_chain_file_yields_every_certificate_and_a_key_that_does_not_match_is_said(
    tmp_path: Path, ca: Issued
) -> None:
    client = issue_leaf(ca, "laptop.corp")
    other = issue_leaf(ca, "other.corp")
    chain = tmp_path / "chain.pem"
    chain.write_text(client.cert_pem() + ca.cert_pem() + other.key_pem())
    found = _locator().find([str(chain)], [str(tmp_path)])
    assert [c.source for c in found.candidates] == [f"{chain} #1", f"{chain} #2"]
    with pytest.raises(KeyUnavailable, match="no private key for this certificate in the listed paths"):
        found.candidates[0].private_key()


def test_an_encrypted_key_is_reported_not_used(tmp_path: Path, ca: Issued) -> None:
    client = issue_leaf(ca, "laptop.corp")
    (tmp_path / "client.pem").write_text(client.cert_pem())
    (tmp_path / "client.key").write_text(client.key_pem(password=b"hunter2"))
    found = _locator().find([str(tmp_path / "client.pem"), str(tmp_path / "client.key")], [str(tmp_path)])
    (candidate,) = found.candidates
    with pytest.raises(
        KeyUnavailable,
        match=r"no usable private key: .*client.key: private key is encrypted: the agent cannot read keys protected by a passphrase",
    ):
        candidate.private_key()
    assert any(p.source.endswith("client.key") and "encrypted" in p.reason for p in found.problems)


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda p: None, "no such file"),
        (lambda p: p.mkdir(), "a directory, not a PEM file"),
        (lambda p: p.write_text("hello"), "no PEM certificate or private key in it"),
        (
            lambda p: p.write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
            "PEM block 1 (CERTIFICATE) is not a valid X.509 certificate",
        ),
    ],
)
def test_unusable_files_are_problems_with_a_reason(
    tmp_path: Path, make: Callable[[Path], object], reason: str
) -> None:
    path = tmp_path / "client.pem"
    make(path)
    found = _locator().find([str(path)], [str(tmp_path)])
    assert found.candidates == ()
    assert (str(path), reason) in [(p.source, p.reason) for p in found.problems]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_an_unreadable_file_is_a_problem(tmp_path: Path, ca: Issued) -> None:
    path = tmp_path / "client.pem"
    path.write_text(issue_leaf(ca, "x").cert_pem())
    path.chmod(0)
    found = _locator().find([str(path)], [str(tmp_path)])
    assert found.problems[0].reason == "cannot read: permission denied"


def test_a_relative_path_and_an_unknown_store_are_problems(tmp_path: Path) -> None:
    found = _locator().find(["certs/client.pem"], ["keychain"])
    reasons = {p.source: p.reason for p in found.problems}
    assert reasons["certs/client.pem"] == "not an absolute path: location paths must be absolute"
    assert reasons["nss:keychain"] == 'not an NSS database: use "system", "user" or an absolute directory'


def test_missing_certutil_is_a_reason_not_a_crash(tmp_path: Path) -> None:
    db = make_nssdb(tmp_path / "nssdb")
    found = _locator().find([], [str(db)])
    assert [p.reason for p in found.problems] == [
        "/nonexistent/certutil is not installed (Debian: apt install libnss3-tools)"
    ]


def test_system_and_user_databases_and_where_they_are(tmp_path: Path) -> None:
    locator = Locator(home=tmp_path)
    assert str(locator.nss_directory("system")) == "/etc/pki/nssdb"
    assert locator.nss_directory("user") == tmp_path / ".pki" / "nssdb"
    assert locator.nss_directory("sql:/srv/db") == Path("/srv/db")
    assert locator.nss_directory("~/.pki/nssdb") == tmp_path / ".pki" / "nssdb"
    elsewhere = Locator(system_nssdb=tmp_path / "etc-nssdb")
    assert elsewhere.nss_directory("/etc/pki/nssdb") == tmp_path / "etc-nssdb"
    found = elsewhere.find([], ["/etc/pki/nssdb"])
    assert [(p.source, p.reason) for p in found.problems] == [
        (f"nss:{tmp_path}/etc-nssdb", "no NSS database here")
    ]


def test_parse_certutil_listing() -> None:
    text = (
        "\nCertificate Nickname                                         Trust Attributes\n"
        "                                                             SSL,S/MIME,JAR/XPI\n\n"
        "my client                                                    u,u,u\n"
        "the CA                                                       C,,  \n"
        "Ann's key (corp)                                             ,,   \n"
    )
    assert parse_certutil_listing(text) == [
        ("my client", "u,u,u"),
        ("the CA", "C,,"),
        ("Ann's key (corp)", ",,"),
    ]


def test_real_nss_database_lists_certificates_and_exports_the_key(tmp_path: Path, ca: Issued) -> None:
    db = make_nssdb(tmp_path / "nssdb")
    client = issue_leaf(ca, "laptop.corp", key_type="rsa-2048")
    bare = issue_leaf(ca, "no-key.corp")
    import_into_nssdb(db, client, "corp device")
    import_into_nssdb(db, bare, "cert only", with_key=False)
    locator = Locator()
    found = locator.find([], [f"sql:{db}"])
    assert found.problems == ()
    by_source = {c.source: c for c in found.candidates}
    assert set(by_source) == {f"nss:{db}/corp device", f"nss:{db}/cert only"}
    assert by_source[f"nss:{db}/corp device"].certificate == client.certificate
    key = by_source[f"nss:{db}/corp device"].private_key()
    assert same_public_key(client.certificate, key)
    with pytest.raises(KeyUnavailable, match=f"the NSS database {db} holds no private key for 'cert only'"):
        by_source[f"nss:{db}/cert only"].private_key()
    # nothing of the export is left on disk, and the same database is read once per round
    assert locator.find([], [str(db)]).candidates == found.candidates


def test_a_password_protected_nss_database_is_a_reason(tmp_path: Path, ca: Issued) -> None:
    db = make_nssdb(tmp_path / "plain")  # skips without NSS tools
    locked = tmp_path / "locked"
    locked.mkdir()
    (tmp_path / "pw").write_text("dbpassword")
    subprocess.run(
        ["certutil", "-N", "-d", f"sql:{locked}", "-f", str(tmp_path / "pw")], check=True, capture_output=True
    )
    client = issue_leaf(ca, "laptop.corp")
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.serialization import pkcs12

    bundle = tmp_path / "c.p12"
    bundle.write_bytes(
        pkcs12.serialize_key_and_certificates(
            b"c", client.key, client.certificate, None, serialization.BestAvailableEncryption(b"x")
        )
    )
    subprocess.run(
        ["pk12util", "-i", str(bundle), "-d", f"sql:{locked}", "-W", "x", "-k", str(tmp_path / "pw")],
        check=True,
        capture_output=True,
    )
    (candidate,) = Locator().find([], [str(locked)]).candidates
    with pytest.raises(KeyUnavailable, match="protected by a password"):
        candidate.private_key()
    assert db.is_dir()


def test_the_key_export_leaves_no_files_behind(
    tmp_path: Path, ca: Issued, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = make_nssdb(tmp_path / "nssdb")
    import_into_nssdb(db, issue_leaf(ca, "laptop.corp"), "corp device")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    seen_modes: list[int] = []
    real_run = NssTools.run

    def spy(self: NssTools, argv: Sequence[str]) -> subprocess.CompletedProcess[bytes]:
        if "pk12util" in argv[0]:
            seen_modes.append(stat.S_IMODE(Path(argv[2]).parent.stat().st_mode))
            assert "-W" not in argv  # the export password is never on a command line
        return real_run(self, argv)

    monkeypatch.setattr(NssTools, "run", spy)
    (candidate,) = Locator().find([], [str(db)]).candidates
    candidate.private_key()
    assert seen_modes == [0o700]
    assert list(scratch.iterdir()) == []
