"""The CA sync against real stores under a temporary --root: a real NSS database (certutil) and
the Debian system store (files + the real update-ca-certificates pointed at the root). Install
two CAs, remove one, roots added by hand never touched, refused certificates never installed,
missing stores reported, a failure midway keeps what was installed, records kept in the state
file."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from agent.locations import NssTools, parse_certutil_listing
from agent.state import AgentState, InstalledCertificate, TrustStoresConfig, load_state, save_state
from agent.trust import Ledger, build_stores, parse_root_certificates, sync_store, verify_root
from agent.trust_nss import NssStore
from agent.trust_store import StoreOptions, der_fingerprints, file_name_for, fp16, nickname_for
from agent.trust_system import DEBIAN, RHEL, SystemStore, detect_system_store, supports_root_options
from tests.agent.agentlab import import_into_nssdb, make_nssdb, need_nss
from tests.support.pki import Issued, fingerprint, issue_leaf, make_ca

HOME = Path("/home/ann")
ANCHORS = Path("usr/local/share/ca-certificates")
BUNDLE = Path("etc/ssl/certs/ca-certificates.crt")
UPDATE = shutil.which(
    "update-ca-certificates", path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
)


def listed(
    *cas: Issued, fingerprint_of: Issued | None = None, status: str = "available"
) -> list[dict[str, Any]]:
    return [
        {
            "id": f"cert-{i}",
            "fingerprint": fingerprint((fingerprint_of or ca).certificate),
            "certificate": ca.cert_pem(),
            "binding_status": status,
            "in_use": i == 0,
        }
        for i, ca in enumerate(cas)
    ]


def nss_listing(directory: Path) -> dict[str, str]:
    """nickname -> trust flags, from ``certutil -L``."""
    out = subprocess.run(
        ["certutil", "-L", "-d", f"sql:{directory}"], check=True, capture_output=True, text=True
    ).stdout
    return dict(parse_certutil_listing(out))


def nss_fingerprint(directory: Path, nickname: str) -> str:
    out = subprocess.run(["certutil", "-L", "-d", f"sql:{directory}", "-n", nickname, "-a"],
                         check=True, capture_output=True).stdout  # fmt: skip
    [found] = der_fingerprints(out)
    return found


def file_fingerprints(directory: Path) -> dict[str, str]:
    return {p.name: der_fingerprints(p.read_bytes())[0] for p in sorted(directory.glob("*.crt"))}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A --root with the Debian system store directory and the user's NSS database."""
    need_nss()
    base = tmp_path / "root"
    (base / ANCHORS).mkdir(parents=True)
    make_nssdb(base / "home/ann/.pki/nssdb")
    return base


def options(root: Path, **overrides: Any) -> StoreOptions:
    return StoreOptions(root=root, home=HOME, **overrides)


def sync_all(
    opts: StoreOptions, answer: list[dict[str, Any]], ledger: Ledger, **build: Any
) -> dict[str, Any]:
    roots = parse_root_certificates(answer)
    with ledger.locked():
        return {store.name: sync_store(store, roots, ledger) for store in build_stores(opts, **build)}


# --- what may be installed ------------------------------------------------------------------------


def _cert(*, ca: bool | None, key_cert_sign: bool | None) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "odd")])
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(datetime.now(UTC)).not_valid_after(datetime.now(UTC)))  # fmt: skip
    if ca is not None:
        builder = builder.add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    if key_cert_sign is not None:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
            key_agreement=False, key_cert_sign=key_cert_sign, crl_sign=False, encipher_only=False,
            decipher_only=False), critical=True)  # fmt: skip
    return Issued(builder.sign(key, hashes.SHA256()), key)


CA = make_ca("Gateway Root A")
OTHER = make_ca("Gateway Root B")


@pytest.mark.parametrize(
    ("listed_fp", "pem", "reason"),
    [
        (fingerprint(CA.certificate), CA.cert_pem(), ""),
        (
            fingerprint(CA.certificate).lower().replace(":", ""),
            CA.cert_pem(),
            "",
        ),  # any spelling of the digest
        (
            fingerprint(OTHER.certificate),
            CA.cert_pem(),
            f"its SHA-256 fingerprint is {fingerprint(CA.certificate)}, not the listed {fingerprint(OTHER.certificate)}",
        ),
        ("AB:CD", CA.cert_pem(), "the listed fingerprint 'AB:CD' is not a SHA-256 fingerprint"),
        (fingerprint(CA.certificate), "", "no PEM certificate listed"),
        (
            fingerprint(CA.certificate),
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            "the PEM does not parse as a certificate",
        ),
        (
            fingerprint(CA.certificate),
            CA.cert_pem() + OTHER.cert_pem(),
            "the PEM holds 2 certificates, not one",
        ),
        (None, issue_leaf(CA, "leaf"), "not a CA: basicConstraints CA=false"),
        (None, _cert(ca=None, key_cert_sign=True), "not a CA: no basicConstraints extension"),
        (None, _cert(ca=True, key_cert_sign=None), "not a CA: no keyUsage extension (keyCertSign required)"),
        (None, _cert(ca=True, key_cert_sign=False), "not a CA: keyUsage lacks keyCertSign"),
    ],
    # named, not from the values: the CAs are made at import, so fingerprints and PEMs differ in
    # every process (pytest-xdist's workers must collect the same test ids)
    ids=[
        "listed",
        "listed-lowercase-no-colons",
        "another-fingerprint",
        "not-a-digest",
        "no-pem",
        "pem-not-a-certificate",
        "two-certificates",
        "leaf",
        "no-basic-constraints",
        "no-key-usage",
        "no-key-cert-sign",
    ],
)
def test_only_a_ca_matching_its_listed_fingerprint_may_be_installed(
    listed_fp: str | None, pem: Any, reason: str
) -> None:
    if isinstance(pem, Issued):  # the listed fingerprint is right; the certificate is no CA
        listed_fp, pem = fingerprint(pem.certificate), pem.cert_pem()
    assert listed_fp is not None
    cert, why = verify_root(listed_fp, pem)
    assert why.startswith(reason) if reason else why == ""
    assert (cert is None) == bool(reason)


def test_the_list_is_checked_entry_by_entry() -> None:
    leaf = issue_leaf(CA, "leaf")
    roots = parse_root_certificates(
        [*listed(CA), *listed(leaf), *listed(CA)]
    )  # the same root twice counts once
    assert [(r.fingerprint, r.accepted) for r in roots] == [
        (fingerprint(CA.certificate), True),
        (fingerprint(leaf.certificate), False),
    ]
    assert roots[0].in_use and roots[0].binding_status == "available"
    assert roots[1].refused == "not a CA: basicConstraints CA=false"
    with pytest.raises(Exception, match="is not a list of certificates"):
        parse_root_certificates({"nope": 1})


# --- install, remove, never touch others ----------------------------------------------------------


@pytest.mark.skipif(
    UPDATE is None or not supports_root_options(UPDATE), reason="needs Debian's update-ca-certificates"
)
def test_install_two_then_remove_one_leaving_hand_added_roots(root: Path) -> None:
    nssdb = root / "home/ann/.pki/nssdb"
    anchors = root / ANCHORS
    hand = make_ca("Corp Root (hand-added)")
    import_into_nssdb(nssdb, hand, "corp root", with_key=False)
    subprocess.run(["certutil", "-M", "-n", "corp root", "-t", "C,,", "-d", f"sql:{nssdb}"], check=True)
    (anchors / "corp-root.crt").write_text(hand.cert_pem())
    real_bundle = Path("/etc/ssl/certs/ca-certificates.crt")
    real_before = real_bundle.stat().st_mtime_ns if real_bundle.exists() else None
    a, b = make_ca("Gateway Root A"), make_ca("Gateway Root B")
    fa, fb = fingerprint(a.certificate), fingerprint(b.certificate)
    ledger = Ledger(None)

    reports = sync_all(options(root), listed(a, b), ledger)
    system, user = reports["system"], reports[f"nss:{nssdb}"]
    assert (system.added, user.added) == ([fa, fb], [fa, fb])
    assert (system.installed, user.installed) == ([fa, fb], [fa, fb])
    assert system.error == user.error == ""
    # certutil -L lists both, trusted as CAs for TLS, beside the hand-added root
    assert nss_listing(nssdb) == {"corp root": "C,,", nickname_for(fa): "C,,", nickname_for(fb): "C,,"}
    assert nss_fingerprint(nssdb, f"Gateway {fp16(fa)}") == fa
    # the system store: one 0644 PEM file each, and the bundle rebuilt under the root only
    assert file_fingerprints(anchors) == {
        "corp-root.crt": fingerprint(hand.certificate),
        file_name_for(fa): fa,
        file_name_for(fb): fb,
    }
    assert stat.S_IMODE((anchors / file_name_for(fa)).stat().st_mode) == 0o644
    assert not list(anchors.glob(".*"))  # no temporary left
    assert {fa, fb, fingerprint(hand.certificate)} <= set(der_fingerprints((root / BUNDLE).read_bytes()))
    assert (root / "etc/ssl/certs" / file_name_for(fa).replace(".crt", ".pem")).is_symlink()
    if real_before is not None:
        assert real_bundle.stat().st_mtime_ns == real_before  # the real system was not touched
    assert {(r.store.split(":")[0], r.fingerprint) for r in ledger.records()} == {
        ("system", fa), ("system", fb), ("nss", fa), ("nss", fb)}  # fmt: skip

    # the same list again: nothing to do
    again = sync_all(options(root), listed(a, b), ledger)
    assert all(not r.added and not r.removed and not r.errors for r in again.values() if not r.missing)

    # B is no longer listed: gone from both stores; A and the hand-added root stay
    reports = sync_all(options(root), listed(a), ledger)
    system, user = reports["system"], reports[f"nss:{nssdb}"]
    assert (system.removed, user.removed) == ([fb], [fb])
    assert (system.installed, user.installed) == ([fa], [fa])
    assert nss_listing(nssdb) == {"corp root": "C,,", nickname_for(fa): "C,,"}
    assert set(file_fingerprints(anchors)) == {"corp-root.crt", file_name_for(fa)}
    bundled = set(der_fingerprints((root / BUNDLE).read_bytes()))
    assert fb not in bundled and {fa, fingerprint(hand.certificate)} <= bundled
    assert not (root / "etc/ssl/certs" / file_name_for(fb).replace(".crt", ".pem")).exists()  # --fresh
    assert {r.fingerprint for r in ledger.records()} == {fa}

    # the server lists nothing: everything this agent installed goes, nothing else
    sync_all(options(root), [], ledger)
    assert nss_listing(nssdb) == {"corp root": "C,,"}
    assert list(file_fingerprints(anchors)) == ["corp-root.crt"]
    assert ledger.records() == []


def test_wrong_fingerprint_or_not_a_ca_is_never_installed(root: Path) -> None:
    nssdb = root / "home/ann/.pki/nssdb"
    good, spoofed = make_ca("Good"), make_ca("Spoofed")
    leaf = issue_leaf(good, "not a ca")
    answer = [*listed(good), *listed(spoofed, fingerprint_of=make_ca("Expected")), *listed(leaf)]
    reports = sync_all(options(root, system=True), answer, Ledger(None), which=lambda name: None)
    assert set(nss_listing(nssdb)) == {nickname_for(fingerprint(good.certificate))}
    assert list(file_fingerprints(root / ANCHORS)) == [file_name_for(fingerprint(good.certificate))]
    assert reports[f"nss:{nssdb}"].installed == [fingerprint(good.certificate)]


def test_a_root_already_present_under_another_name_is_left_as_it_is(root: Path) -> None:
    nssdb = root / "home/ann/.pki/nssdb"
    trusted, untrusted = make_ca("Trusted by hand"), make_ca("Present without trust")
    import_into_nssdb(nssdb, trusted, "hand trusted", with_key=False)
    subprocess.run(["certutil", "-M", "-n", "hand trusted", "-t", "C,,", "-d", f"sql:{nssdb}"], check=True)
    import_into_nssdb(nssdb, untrusted, "hand untrusted", with_key=False)  # trust ",,"
    ledger = Ledger(None)
    report = sync_all(options(root, system=False), listed(trusted, untrusted), ledger)[f"nss:{nssdb}"]
    # certutil -A would have kept the nickname and overwritten the trust: never called
    assert nss_listing(nssdb) == {"hand trusted": "C,,", "hand untrusted": ",,"}
    assert report.installed == [fingerprint(trusted.certificate)]
    assert report.added == [] and ledger.records() == []
    assert report.error == (f"{fp16(fingerprint(untrusted.certificate))}: already in the database as 'hand untrusted' "
                            "without trust for TLS servers (C): left as is")  # fmt: skip
    # no longer listed: still not removed (never recorded)
    sync_all(options(root, system=False), [], ledger)
    assert set(nss_listing(nssdb)) == {"hand trusted", "hand untrusted"}


def test_our_own_entry_that_lost_its_trust_gets_it_back(root: Path) -> None:
    nssdb = root / "home/ann/.pki/nssdb"
    ca = make_ca()
    ledger = Ledger(None)
    sync_all(options(root, system=False), listed(ca), ledger)
    nick = nickname_for(fingerprint(ca.certificate))
    subprocess.run(["certutil", "-M", "-n", nick, "-t", ",,", "-d", f"sql:{nssdb}"], check=True)
    report = sync_all(options(root, system=False), listed(ca), ledger)[f"nss:{nssdb}"]
    assert nss_listing(nssdb) == {nick: "C,,"} and report.installed == [fingerprint(ca.certificate)]


def test_a_recorded_name_that_now_holds_another_certificate_is_not_removed(root: Path) -> None:
    anchors = root / ANCHORS
    ca, other = make_ca(), make_ca("Someone else's")
    ledger = Ledger(None)
    opts = options(root, nss=False)
    sync_all(opts, listed(ca), ledger, which=lambda name: None)
    path = anchors / file_name_for(fingerprint(ca.certificate))
    path.write_text(other.cert_pem())  # replaced by someone
    report = sync_all(opts, [], ledger, which=lambda name: None)["system"]
    assert path.read_text() == other.cert_pem()
    assert report.removed == [] and ledger.records() == []
    assert report.notes == [f"{path} now holds another certificate: left as is, no longer recorded"]


def test_a_missing_or_unusable_store_is_reported_not_fatal(root: Path) -> None:
    ca = make_ca()
    plain = root / "srv/not-a-db"  # /srv/not-a-db under the root
    plain.mkdir(parents=True)
    (plain / "file").write_text("x")
    opts = options(root, nss_databases=("/opt/app/nssdb", "/srv/not-a-db", "relative/db"))
    reports = sync_all(opts, listed(ca), Ledger(None), which=lambda name: None)
    user = reports[f"nss:{root}/home/ann/.pki/nssdb"]
    assert user.installed == [fingerprint(ca.certificate)]  # the others do not stop it
    missing = reports[f"nss:{root}/opt/app/nssdb"]
    assert (missing.error, missing.trouble) == ("no NSS database here", True)  # configured: it counts
    default = reports[f"nss:{root}/etc/pki/nssdb"]
    assert (default.error, default.missing, default.trouble) == (
        "no NSS database here",
        True,
        False,
    )  # a default one: normal
    assert (
        reports[f"nss:{plain}"].error == "no cert9.db: not an NSS sql database"
    )  # --root prefixes configured paths too
    assert (
        reports["nss:relative/db"].error
        == "not an absolute directory: configure NSS databases by absolute path"
    )
    # shown, but not sent: the server takes "system" and "nss:/absolute" only
    assert [name for name, r in reports.items() if not r.reportable] == ["nss:relative/db"]
    # the system store without its tool: the file is written, and the missing rebuild is said
    assert reports["system"].installed == [fingerprint(ca.certificate)]
    assert reports["system"].error.startswith("update-ca-certificates is not installed: the files in")


def test_no_system_store_at_all_is_reported(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    store = detect_system_store(StoreOptions(root=tmp_path / "empty"), which=lambda name: None)
    report = sync_store(store, parse_root_certificates(listed(CA)), Ledger(None))
    assert report.error.startswith("no system trust store found") and report.trouble


def test_rhel_anchors_under_root_are_written_and_the_refresh_skipped_with_a_note(tmp_path: Path) -> None:
    anchors = tmp_path / "etc/pki/ca-trust/source/anchors"
    anchors.mkdir(parents=True)
    calls: list[Sequence[str]] = []

    def runner(argv: Sequence[str]) -> subprocess.CompletedProcess[bytes]:
        calls.append(argv)
        return subprocess.CompletedProcess(list(argv), 0, b"", b"")

    store = detect_system_store(
        StoreOptions(root=tmp_path), which=lambda name: f"/usr/bin/{name}", runner=runner
    )
    assert isinstance(store, SystemStore) and store.flavor is RHEL
    report = sync_store(store, parse_root_certificates(listed(CA)), Ledger(None))
    assert calls == []  # update-ca-trust cannot be pointed at a root: not run
    assert report.installed == [fingerprint(CA.certificate)] and report.error == ""
    assert report.notes == [
        f"update-ca-trust was not run: it cannot be pointed at --root {tmp_path}; installed means present in {anchors}"
    ]


def test_an_update_ca_certificates_without_path_options_is_not_run_under_root(
    root: Path, tmp_path: Path
) -> None:
    old = tmp_path / "update-ca-certificates"
    old.write_text('#!/bin/sh\necho "$0: [--verbose] [--fresh]"\ntouch /tmp/should-not-run\nexit 1\n')
    old.chmod(0o755)
    store = detect_system_store(options(root), which=lambda name: str(old))
    assert store.flavor is DEBIAN and not store.refreshable
    report = sync_store(store, parse_root_certificates(listed(CA)), Ledger(None))
    assert report.installed == [fingerprint(CA.certificate)] and report.error == ""
    assert report.notes[0].startswith(
        f"update-ca-certificates was not run: it cannot be pointed at --root {root}"
    )


def test_a_failing_refresh_is_reported_and_the_bundle_decides(root: Path, tmp_path: Path) -> None:
    broken = tmp_path / "update-ca-certificates"
    broken.write_text("#!/bin/sh\n# --certsconf --certsdir --localcertsdir --etccertsdir --hooksdir\n"
                      "echo 'E: cannot rehash' >&2\nexit 1\n")  # fmt: skip
    broken.chmod(0o755)
    report = sync_all(options(root, nss=False), listed(CA), Ledger(None), which=lambda name: str(broken))[
        "system"
    ]
    assert report.added == [fingerprint(CA.certificate)]  # the file is there ...
    assert report.installed == []  # ... but not in the bundle programs read
    assert report.error == "update-ca-certificates failed: E: cannot rehash"


# --- failures midway, records ---------------------------------------------------------------------


class FailingTools(NssTools):
    """certutil that fails on a chosen operation (as a full disk or a lock would)."""

    def __init__(self, fail: tuple[str, str]) -> None:
        super().__init__()
        self.fail = fail

    def run(self, argv: Sequence[str]) -> subprocess.CompletedProcess[bytes]:
        operation, nickname = argv[1], argv[argv.index("-n") + 1] if "-n" in argv else ""
        if (operation, nickname) == self.fail:
            return subprocess.CompletedProcess(
                list(argv), 255, b"", b"certutil: SEC_ERROR_IO: An I/O error occurred\n"
            )
        return super().run(argv)


def test_a_failure_midway_keeps_what_was_installed_before(root: Path, tmp_path: Path) -> None:
    nssdb = root / "home/ann/.pki/nssdb"
    a, b, c = make_ca("A"), make_ca("B"), make_ca("C")
    fa, fb, fc = (fingerprint(x.certificate) for x in (a, b, c))
    state_path = tmp_path / "state.json"
    save_state(state_path, AgentState("http://127.0.0.1:1", "", "acc", "dev", "secret", "laptop"))
    ledger = Ledger(state_path)
    opts = options(root, system=False)
    sync_all(opts, listed(a), ledger)

    # B fails to install, C installs; A stays
    report = sync_all(opts, listed(a, b, c), ledger, nss_tools=FailingTools(("-A", nickname_for(fb))))[
        f"nss:{nssdb}"
    ]
    assert (
        report.error
        == f"cannot install {fp16(fb)}: certutil -A failed: certutil: SEC_ERROR_IO: An I/O error occurred"
    )
    assert (report.added, report.installed) == ([fc], [fa, fc])
    assert set(nss_listing(nssdb)) == {nickname_for(fa), nickname_for(fc)}
    assert [r.fingerprint for r in load_state(state_path).trust_installed] == [
        fa,
        fc,
    ]  # recorded only after success

    # A is delisted but cannot be removed: it stays, and so does its record (tried again next time)
    report = sync_all(opts, listed(b, c), ledger, nss_tools=FailingTools(("-D", nickname_for(fa))))[
        f"nss:{nssdb}"
    ]
    assert report.error.startswith(f"cannot remove {fp16(fa)}: certutil -D failed")
    assert (report.added, report.installed) == ([fb], [fb, fc, fa])  # what is really there, A included
    assert {r.fingerprint for r in load_state(state_path).trust_installed} == {fa, fb, fc}
    report = sync_all(opts, listed(b, c), Ledger(state_path))[f"nss:{nssdb}"]
    assert report.removed == [fa] and set(nss_listing(nssdb)) == {nickname_for(fb), nickname_for(fc)}
    saved = load_state(state_path).trust_installed
    assert {r.fingerprint for r in saved} == {fb, fc}
    assert all(
        r == InstalledCertificate(f"nss:{nssdb}", r.fingerprint, nickname_for(r.fingerprint)) for r in saved
    )
    assert stat.S_IMODE(state_path.stat().st_mode) == 0o600


def test_a_database_with_a_password_is_reported_and_left_clean(tmp_path: Path) -> None:
    need_nss()
    nssdb = tmp_path / "db"
    nssdb.mkdir()
    (tmp_path / "pw").write_text("secret\n")
    subprocess.run(
        ["certutil", "-N", "-d", f"sql:{nssdb}", "-f", str(tmp_path / "pw")], check=True, capture_output=True
    )
    store = NssStore(nssdb, tools=NssTools(timeout=20))
    report = sync_store(store, parse_root_certificates(listed(CA)), Ledger(None))
    assert report.error == (f"cannot install {fp16(fingerprint(CA.certificate))}: the NSS database is protected by a "
                            "password: the agent changes only databases with an empty one")  # fmt: skip
    assert nss_listing(nssdb) == {}  # the certificate certutil added without trust was taken back


def test_records_are_kept_in_the_state_file_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    state = AgentState("http://127.0.0.1:1", "", "acc", "dev", "secret", "laptop",
                       trust_stores=TrustStoresConfig(system=False, nss=True, nss_databases=("/opt/db",)),
                       trust_installed=(InstalledCertificate("nss:/x", "AB", "Gateway AB"),))  # fmt: skip
    save_state(path, state)
    assert load_state(path) == state
    # two ledgers on the same file (sync-ca beside run): neither loses the other's records
    first, second = Ledger(path), Ledger(path)
    with first.locked():
        first.add(InstalledCertificate("nss:/x", "CD", "Gateway CD"))
    with second.locked():
        second.add(InstalledCertificate("system:/y", "EF", "/y/gateway-ef.crt"))
    assert [r.fingerprint for r in load_state(path).trust_installed] == ["AB", "CD", "EF"]


def test_a_state_file_without_trust_fields_reads_as_defaults(tmp_path: Path) -> None:
    import json

    path = tmp_path / "state.json"
    save_state(path, AgentState("http://127.0.0.1:1", "", "acc", "dev", "secret", "laptop"))
    data = json.loads(path.read_text())
    del data["trust_stores"], data["trust_installed"]
    path.write_text(json.dumps(data))
    loaded = load_state(path)
    assert loaded.trust_stores == TrustStoresConfig() and loaded.trust_installed == ()
    data["trust_stores"] = {"system": "yes"}
    path.write_text(json.dumps(data))
    with pytest.raises(Exception, match='bad "trust_stores"'):
        load_state(path)
