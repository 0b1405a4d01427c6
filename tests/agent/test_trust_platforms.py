"""CA installation on macOS and Windows, on Linux: the real sync (``agent.trust``) over the System
keychain and the Windows Root stores, fed with recorded ``security`` / PowerShell output
(``tests.agent.platform_tools``). Install, remove what this agent recorded only, a store the
agent may not write (not root, not elevated), output that does not parse, a missing tool, and
``--dry-run``. None of this has run on a real Mac or Windows machine (docs/agent.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent.host import Host
from agent.macos_security import SECURITY, SYSTEM_KEYCHAIN
from agent.output import format_plan
from agent.runner import Command, Completed, DryRunner
from agent.state import InstalledCertificate
from agent.trust import (
    DRY_RUN_SYSTEM,
    DryNssTools,
    Ledger,
    StoreReport,
    TrustSync,
    build_stores,
    parse_root_certificates,
    sync_store,
)
from agent.trust_macos import KeychainStore
from agent.trust_store import StoreOptions, fp16
from agent.trust_windows import WindowsRootStore
from agent.windows_powershell import decode_script
from tests.agent.agentlab import make_nssdb
from tests.agent.platform_tools import FakePowerShell, FakeSecurity, KeychainItem, StoreItem, sha1_of
from tests.agent.test_trust import listed, nss_listing
from tests.support.pki import fingerprint, make_ca

CA = make_ca("Gateway Root A")
OTHER = make_ca("Gateway Root B")
HAND = make_ca("Added By Hand")
KEYCHAIN = f"keychain:{SYSTEM_KEYCHAIN}"
MACHINE_ROOT, USER_ROOT = "windows:LocalMachine\\Root", "windows:CurrentUser\\Root"


def sync(stores: list[Any], answer: list[dict[str, Any]], ledger: Ledger) -> dict[str, StoreReport]:
    roots = parse_root_certificates(answer)
    with ledger.locked():
        return {store.name: sync_store(store, roots, ledger) for store in stores}


def subcommands(security: FakeSecurity) -> list[str]:
    return [c.argv[1] for c in security.calls]


# --- macOS ----------------------------------------------------------------------------------------


def test_recorded_keychain_install_two_then_remove_one_leaving_hand_added_roots() -> None:
    security = FakeSecurity({SYSTEM_KEYCHAIN: [KeychainItem(HAND, with_key=False)]},
                            trusted={SYSTEM_KEYCHAIN: [HAND.certificate]})  # fmt: skip
    ledger = Ledger(None)
    store = KeychainStore(security)
    report = sync([store], listed(CA, OTHER), ledger)[KEYCHAIN]
    assert report.errors == []
    assert report.added == report.installed == [fingerprint(CA.certificate), fingerprint(OTHER.certificate)]
    adds = [c for c in security.calls if c.argv[1] == "add-trusted-cert"]
    assert [c.argv[:7] for c in adds] == [
        (SECURITY, "add-trusted-cert", "-d", "-r", "trustRoot", "-k", SYSTEM_KEYCHAIN)
    ] * 2
    assert Path(adds[0].argv[7]).name == f"gateway-{fp16(fingerprint(CA.certificate)).lower()}.pem"
    assert not Path(adds[0].argv[7]).exists()  # the scratch file is gone
    assert [(r.store, r.name) for r in ledger.records()] == [
        (KEYCHAIN, sha1_of(CA.certificate)),
        (KEYCHAIN, sha1_of(OTHER.certificate)),
    ]

    # the server drops OTHER: only it goes, trust setting first, then the certificate
    security.calls.clear()
    report = sync([store], listed(CA), ledger)[KEYCHAIN]
    assert report.removed == [fingerprint(OTHER.certificate)] and report.errors == []
    assert report.installed == [fingerprint(CA.certificate)]
    assert subcommands(security) == ["find-certificate", "trust-settings-export", "find-certificate",
                                     "remove-trusted-cert", "delete-certificate",
                                     "find-certificate", "trust-settings-export"]  # fmt: skip
    delete = next(c for c in security.calls if c.argv[1] == "delete-certificate")
    assert delete.argv == (SECURITY, "delete-certificate", "-Z", sha1_of(OTHER.certificate), SYSTEM_KEYCHAIN)
    held = {sha1_of(i.issued.certificate) for i in security.keychains[SYSTEM_KEYCHAIN]}
    assert held == {sha1_of(HAND.certificate), sha1_of(CA.certificate)}  # the hand-added root stays
    assert [r.name for r in ledger.records()] == [sha1_of(CA.certificate)]


def test_recorded_keychain_not_root_is_reported_and_other_stores_still_synced(tmp_path: Path) -> None:
    nssdb = make_nssdb(tmp_path / "nssdb")
    security = FakeSecurity({SYSTEM_KEYCHAIN: []}, root=False)
    host = Host("mac", security, home=tmp_path)
    stores = build_stores(StoreOptions(nss_databases=(str(nssdb),)), host=host)
    assert [s.name for s in stores] == [KEYCHAIN, f"nss:{nssdb}"]
    ledger = Ledger(None)
    reports = sync(stores, listed(CA), ledger)
    keychain = reports[KEYCHAIN]
    assert keychain.installed == keychain.added == []
    (error,) = keychain.errors
    assert error.startswith(
        f"cannot install {fp16(fingerprint(CA.certificate))}: security add-trusted-cert failed for the keychain "
        f"{SYSTEM_KEYCHAIN}: SecTrustSettingsSetTrustSettings: The authorization was denied since no user "
        "interaction was possible. (not permitted for uid "
    )
    assert error.endswith("run `sudo gateway agent sync-ca`, or leave it out with --no-system)")
    assert keychain.trouble
    assert reports[f"nss:{nssdb}"].installed == [
        fingerprint(CA.certificate)
    ]  # the NSS database is synced anyway
    assert f"Gateway {fp16(fingerprint(CA.certificate))}" in nss_listing(nssdb)
    assert [r.store for r in ledger.records()] == [f"nss:{nssdb}"]  # nothing recorded for the keychain


def test_recorded_keychain_root_present_without_trust_is_left_alone() -> None:
    security = FakeSecurity({SYSTEM_KEYCHAIN: [KeychainItem(CA, with_key=False)]})
    report = sync([KeychainStore(security)], listed(CA), Ledger(None))[KEYCHAIN]
    assert report.errors == [
        f"{fp16(fingerprint(CA.certificate))}: already in {SYSTEM_KEYCHAIN} without trust as a root "
        "(put there by someone else): left as is"
    ]
    assert "add-trusted-cert" not in subcommands(security) and report.installed == []


@pytest.mark.parametrize(
    ("security", "error"),
    [
        (FakeSecurity(override={"find-certificate": Completed(0, b"SHA-1 hash: 12\n-----BEGIN CERTIFICATE-----\n")}),
         "cannot read `security find-certificate` output for the keychain /Library/Keychains/System.keychain: "
         "a certificate without its END line"),
        (FakeSecurity({SYSTEM_KEYCHAIN: []}, override={"trust-settings-export": Completed(
            1, b"", b"SecTrustSettingsCreateExternalRepresentation: Internal error\n")}),
         "security trust-settings-export failed for the keychain /Library/Keychains/System.keychain: "
         "SecTrustSettingsCreateExternalRepresentation: Internal error"),
        (FakeSecurity(installed=False),
         f"{SECURITY} is not on this system: the keychain {SYSTEM_KEYCHAIN} can be read only on macOS"),
    ],
)  # fmt: skip
def test_recorded_unreadable_keychain_output_or_no_tool_installs_nothing(
    security: FakeSecurity, error: str
) -> None:
    ledger = Ledger(None)
    report = sync([KeychainStore(security)], listed(CA), ledger)[KEYCHAIN]
    assert report.errors == [error] and report.installed == [] and ledger.records() == []
    assert "add-trusted-cert" not in subcommands(security)


# --- Windows --------------------------------------------------------------------------------------


def test_recorded_windows_root_stores_install_remove_and_a_hand_added_root_stays() -> None:
    shell = FakePowerShell({"LocalMachine\\Root": [StoreItem(HAND, has_key=False)]})
    host = Host("windows", shell)
    stores = build_stores(StoreOptions(user=True), host=host)
    assert [s.name for s in stores] == [MACHINE_ROOT, USER_ROOT]  # no NSS database on Windows
    ledger = Ledger(None)
    reports = sync(stores, listed(CA), ledger)
    assert reports[MACHINE_ROOT].installed == reports[USER_ROOT].installed == [fingerprint(CA.certificate)]
    assert reports[USER_ROOT].notes == [
        "Windows asks the user to confirm each root added to or removed from CurrentUser\\Root"
    ]
    adds = [decode_script(c) for c in shell.calls if c.changes]
    assert "X509Store ('Root', 'LocalMachine')" in adds[0] and "$s.Add($c)" in adds[0]
    assert [r.name for r in ledger.records()] == [sha1_of(CA.certificate)] * 2

    reports = sync(build_stores(StoreOptions(user=True), host=host), listed(OTHER), ledger)
    assert reports[MACHINE_ROOT].removed == [fingerprint(CA.certificate)]
    assert reports[MACHINE_ROOT].installed == [fingerprint(OTHER.certificate)]
    removes = [decode_script(c) for c in shell.calls if c.changes and "Remove" in decode_script(c)]
    assert len(removes) == 2 and f"'FindByThumbprint', '{sha1_of(CA.certificate)}'" in removes[0]
    machine = {sha1_of(i.issued.certificate) for i in shell.stores["LocalMachine\\Root"]}
    assert machine == {sha1_of(HAND.certificate), sha1_of(OTHER.certificate)}


def test_recorded_windows_not_elevated_names_the_store_and_the_user_store_is_still_synced() -> None:
    shell = FakePowerShell(elevated=False)
    ledger = Ledger(None)
    reports = sync(build_stores(StoreOptions(user=True), host=Host("windows", shell)), listed(CA), ledger)
    machine = reports[MACHINE_ROOT]
    assert machine.installed == [] and machine.added == []
    assert machine.errors == [
        f"cannot install {fp16(fingerprint(CA.certificate))}: PowerShell failed on Cert:\\LocalMachine\\Root: "
        'Exception calling "Open" with "1" argument(s): "Access is denied. " (the machine\'s Root store needs an '
        "elevated agent: run it as Administrator (or as a service under LocalSystem), or leave the machine store "
        "out with --no-system)"
    ]
    assert reports[USER_ROOT].installed == [fingerprint(CA.certificate)]
    assert [r.store for r in ledger.records()] == [USER_ROOT]


def test_recorded_windows_listing_that_does_not_parse_installs_nothing() -> None:
    shell = FakePowerShell(override={"list": Completed(0, b"WARNING: something\r\n")})
    ledger = Ledger(None)
    report = sync([WindowsRootStore("LocalMachine", shell)], listed(CA), ledger)[MACHINE_ROOT]
    assert report.errors == [
        "cannot read the listing of LocalMachine\\Root from PowerShell: not JSON (Expecting value: line 1 column 1 (char 0))"
    ]
    assert ledger.records() == [] and not any(c.changes for c in shell.calls)


def test_recorded_macos_and_windows_have_no_default_nss_stores(tmp_path: Path) -> None:
    assert [
        s.name for s in build_stores(StoreOptions(), host=Host("mac", FakeSecurity(), home=tmp_path))
    ] == [KEYCHAIN]
    assert [s.name for s in build_stores(StoreOptions(), host=Host("windows", FakePowerShell()))] == [
        MACHINE_ROOT
    ]
    assert build_stores(StoreOptions(system=False), host=Host("windows", FakePowerShell())) == []


def test_recorded_platform_system_store_is_reported_as_system_and_the_user_root_store_by_its_name() -> None:
    reports = sync(
        build_stores(StoreOptions(user=True), host=Host("windows", FakePowerShell())),
        listed(CA),
        Ledger(None),
    )
    assert [(r.reportable, r.wire()["store"]) for r in reports.values()] == [
        (True, "system"),
        (True, USER_ROOT),
    ]
    (keychain,) = sync(
        [KeychainStore(FakeSecurity({SYSTEM_KEYCHAIN: []}))], listed(CA), Ledger(None)
    ).values()
    assert keychain.store == KEYCHAIN and keychain.reportable and keychain.wire()["store"] == "system"


# --- dry run --------------------------------------------------------------------------------------


class Transport:
    """GET /agent/root_certificates answered; a POST would be a failure of the dry run."""

    def __init__(self, answer: list[dict[str, Any]]) -> None:
        self.answer = answer

    def get(self, path: str) -> Any:
        return self.answer

    def post(self, path: str, body: Any) -> Any:
        raise AssertionError(f"a dry run posted to {path}")


def test_recorded_dry_run_prints_the_commands_and_changes_nothing(tmp_path: Path) -> None:
    security = FakeSecurity({SYSTEM_KEYCHAIN: [KeychainItem(OTHER, with_key=False)]},
                            trusted={SYSTEM_KEYCHAIN: [OTHER.certificate]})  # fmt: skip
    planned: list[Command] = []
    host = Host("mac", DryRunner(security, planned), home=tmp_path)
    records = (InstalledCertificate(KEYCHAIN, fingerprint(OTHER.certificate), sha1_of(OTHER.certificate)),)
    ledger = Ledger(None, records)
    sync_ = TrustSync(Transport(listed(CA)), ledger, lambda: build_stores(StoreOptions(), host=host),  # type: ignore[arg-type]
                      planned=planned)  # fmt: skip
    report = sync_.run()
    assert report.server is None
    (store,) = report.stores
    assert store.planned[0].startswith(f"{SECURITY} add-trusted-cert -d -r trustRoot -k {SYSTEM_KEYCHAIN} ")
    assert store.planned[1].startswith(f"{SECURITY} remove-trusted-cert -d ")
    assert (
        store.planned[2] == f"{SECURITY} delete-certificate -Z {sha1_of(OTHER.certificate)} {SYSTEM_KEYCHAIN}"
    )
    assert len(store.planned) == 3
    assert {c.argv[1] for c in security.calls} <= {
        "find-certificate",
        "trust-settings-export",
    }  # only reads ran
    assert [sha1_of(i.issued.certificate) for i in security.keychains[SYSTEM_KEYCHAIN]] == [
        sha1_of(OTHER.certificate)
    ]
    text = format_plan(report)
    assert (
        text.splitlines()[0]
        == "dry run: no store was changed, nothing recorded, nothing reported to the server"
    )
    assert f"{KEYCHAIN}: +{fp16(fingerprint(CA.certificate))} -{fp16(fingerprint(OTHER.certificate))}" in text
    assert text.count("  would run: ") == 3


def test_recorded_dry_run_on_windows_shows_the_script_that_would_run() -> None:
    shell = FakePowerShell()
    planned: list[Command] = []
    host = Host("windows", DryRunner(shell, planned))
    report = TrustSync(Transport(listed(CA)), Ledger(None), lambda: build_stores(StoreOptions(), host=host),  # type: ignore[arg-type]
                       planned=planned).run()  # fmt: skip
    (store,) = report.stores
    (command,) = store.planned
    assert command.startswith(
        "powershell.exe -NoProfile -NonInteractive -ExecutionPolicy Bypass -EncodedCommand <this script>:"
    )
    assert "X509Store ('Root', 'LocalMachine')" in command and "$s.Add($c)" in command
    assert shell.stores.get("LocalMachine\\Root", []) == []


def test_dry_run_on_linux_shows_certutil_commands_and_leaves_the_database_unchanged(tmp_path: Path) -> None:
    nssdb = make_nssdb(tmp_path / "nssdb")
    planned: list[Command] = []
    options = StoreOptions(nss=False, nss_databases=(str(nssdb),))
    stores = lambda: build_stores(options, nss_tools=DryNssTools(planned), dry_run=True)  # noqa: E731
    report = TrustSync(Transport(listed(CA)), Ledger(None), stores, planned=planned).run()  # type: ignore[arg-type]
    system, nss = report.stores
    assert system.store == "system" and system.errors == [DRY_RUN_SYSTEM]
    (command,) = nss.planned
    assert command.startswith(f'certutil -A -n "Gateway {fp16(fingerprint(CA.certificate))}" -t C,, -i ')
    assert nss_listing(nssdb) == {}


def test_recorded_windows_refuses_nss_databases() -> None:
    (_machine, nss) = build_stores(
        StoreOptions(nss_databases=("C:/nssdb",)), host=Host("windows", FakePowerShell())
    )
    report = sync([nss], listed(CA), Ledger(None))["nss:C:/nssdb"]
    assert report.errors == [
        "NSS databases are not kept on Windows (certutil.exe there is Microsoft's, not NSS's)"
    ]
