"""The server half of CA installation by the agent (issue 5), at the service: which root CAs a
device is given, full trust store reports (validated, replacing the last one, written through the
group commit), each certificate's coverage among devices that reported in the last 7 days (an
injected clock moves through the window), and the warning for turning a certificate on."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from proxy.services import accounts
from proxy.services.device_trust import (
    REPORTING_WINDOW,
    TRUST_WARNING,
    DeviceTrustService,
    missing_message,
    parse_report,
)
from proxy.services.devices import Unauthenticated
from proxy.services.errors import InvalidInput, NotFound
from proxy.store import Coverage, Device, TrustStoreEntry
from proxy.store.database import INTEGRITY_ERRORS
from tests.support.devices import Lab
from tests.support.server import Gateway

FP_A = ":".join(["AA"] * 32)
FP_B = ":".join(["0B"] * 32)
NSS = "nss:/home/ann/.pki/nssdb"


@pytest.fixture
def trust(lab: Lab) -> DeviceTrustService:
    """Writes go through the devices' group commit (its own connection, as in production)."""
    gateway = lab.gateway
    return DeviceTrustService(gateway.store, gateway.service, gateway.clock, writer=lab.service.writer)


def entry(store: str, *installed: str, error: str = "") -> TrustStoreEntry:
    return TrustStoreEntry(store, tuple(installed), error)


def fp_of(gateway: Gateway, cert_id: str) -> str:
    return gateway.service.get(gateway.account_id, cert_id).fingerprint


# --- the report's shape -------------------------------------------------------------------------


def test_a_report_is_normalized() -> None:
    body = {"stores": [
        {"store": "system", "installed": [FP_A.lower(), FP_A, FP_B.lower()], "error": ""},
        {"store": NSS, "installed": []},
        {"store": "nss:/etc/pki/nssdb", "installed": [], "error": "no NSS database here"},
        {"store": "windows:CurrentUser\\Root", "installed": [FP_B]},
    ]}  # fmt: skip
    assert parse_report(body) == [
        entry("system", FP_A, FP_B),  # upper case, each once, in order
        entry(NSS),  # error defaults to ""
        entry("nss:/etc/pki/nssdb", error="no NSS database here"),
        entry("windows:CurrentUser\\Root", FP_B),  # the Windows user's Root store (agent --user)
    ]
    assert parse_report({"stores": []}) == []  # every store switched off: still a report


LONG = "x" * 1001


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({}, "stores", "required: an array of {store, installed, error}, one per trust store"),
        ({"stores": {}}, "stores", "must be an array of stores, got an object"),
        ({"stores": [], "extra": 1}, "extra", "unknown field (accepted: stores)"),
        ({"stores": [{"store": "system", "installed": []}] * 65}, "stores", "at most 64 stores per report, got 65"),
        ({"stores": ["system"]}, "stores[0]", "must be an object {store, installed, error}, got a string"),
        ({"stores": [{"installed": []}]}, "stores[0].store",
         "required: \"system\", \"nss:\" followed by the NSS database's absolute path, or \"windows:CurrentUser\\Root\""),
        ({"stores": [{"store": 7, "installed": []}]}, "stores[0].store",
         "must be \"system\", \"nss:\" followed by the NSS database's absolute path, or \"windows:CurrentUser\\Root\", got a number"),
        ({"stores": [{"store": "nss:relative/db", "installed": []}]}, "stores[0].store",
         "must be \"system\", \"nss:\" followed by the NSS database's absolute path, or \"windows:CurrentUser\\Root\", got 'nss:relative/db'"),
        ({"stores": [{"store": "nss:/", "installed": []}]}, "stores[0].store",
         "must be \"system\", \"nss:\" followed by the NSS database's absolute path, or \"windows:CurrentUser\\Root\", got 'nss:/'"),
        ({"stores": [{"store": "System", "installed": []}]}, "stores[0].store",
         "must be \"system\", \"nss:\" followed by the NSS database's absolute path, or \"windows:CurrentUser\\Root\", got 'System'"),
        ({"stores": [{"store": "windows:LocalMachine\\Root", "installed": []}]}, "stores[0].store",
         "must be \"system\", \"nss:\" followed by the NSS database's absolute path, or \"windows:CurrentUser\\Root\", got 'windows:LocalMachine\\\\Root'"),
        ({"stores": [{"store": "nss:/a\nb", "installed": []}]}, "stores[0].store", "holds control characters"),
        ({"stores": [{"store": "nss:/" + "d" * 4096, "installed": []}]}, "stores[0].store",
         "at most 4096 characters, got 4101"),
        ({"stores": [{"store": "system", "installed": []}, {"store": "system", "installed": []}]},
         "stores[1].store", "'system' is listed twice: name each store once"),
        ({"stores": [{"store": "system"}]}, "stores[0].installed",
         "required: the SHA-256 fingerprints the store trusts ([] for none)"),
        ({"stores": [{"store": "system", "installed": FP_A}]}, "stores[0].installed",
         "must be an array of SHA-256 fingerprints, got a string"),
        ({"stores": [{"store": "system", "installed": [FP_A] * 257}]}, "stores[0].installed",
         "at most 256 fingerprints per store, got 257"),
        ({"stores": [{"store": "system", "installed": [FP_A, FP_A.replace(":", "")]}]}, "stores[0].installed[1]",
         f"must be a SHA-256 fingerprint as 32 colon-separated hex bytes, got {FP_A.replace(':', '')!r}"),
        ({"stores": [{"store": "system", "installed": [FP_A[:-3]]}]}, "stores[0].installed[0]",
         f"must be a SHA-256 fingerprint as 32 colon-separated hex bytes, got {FP_A[:-3]!r}"),
        ({"stores": [{"store": "system", "installed": [FP_A + "\n"]}]}, "stores[0].installed[0]",
         f"must be a SHA-256 fingerprint as 32 colon-separated hex bytes, got {FP_A + chr(10)!r}"),
        ({"stores": [{"store": "system", "installed": [None]}]}, "stores[0].installed[0]",
         "must be a SHA-256 fingerprint as 32 colon-separated hex bytes, got null"),
        ({"stores": [{"store": "system", "installed": [], "error": None}]}, "stores[0].error",
         "must be a string (\"\" for none), got null"),
        ({"stores": [{"store": "system", "installed": [], "error": LONG}]}, "stores[0].error",
         "at most 1000 characters, got 1001"),
        ({"stores": [{"store": "system", "installed": [], "trusted": []}]}, "stores[0].trusted",
         "unknown field (accepted: error, installed, store)"),
    ],
)  # fmt: skip
def test_a_bad_report_names_the_field(body: dict[str, Any], field: str, message: str) -> None:
    with pytest.raises(InvalidInput) as e:
        parse_report(body)
    assert e.value.field == field
    assert str(e.value) == f"{field}: {message}"


def test_the_schema_checks_the_store_name_and_fingerprint_again(lab: Lab) -> None:
    device, _ = lab.enroll()
    reports = lab.gateway.store.trust_reports
    for bad in (entry("nss:relative"), entry("system", "AA:BB"), entry("windows:LocalMachine\\Root")):
        with pytest.raises(INTEGRITY_ERRORS):
            reports.replace(device.id, [bad], lab.now)
    assert reports.for_device(device.id) is None  # each attempt rolled back whole


# --- what the agent is given --------------------------------------------------------------------


def test_root_certificates_are_the_available_and_pending_ones(lab: Lab, trust: DeviceTrustService) -> None:
    gateway = lab.gateway
    service, account = gateway.service, gateway.account_id
    device, _ = lab.enroll()
    assert [(r.id, r.in_use) for r in trust.root_certificates(device)] == [(gateway.initial_ca_id, True)]

    inactive = service.generate(account)
    service.register_node("node-1", "node one")  # a live node: activation waits for it
    pending = service.generate(account)
    service.activate(account, pending.id)
    listed = {
        r.id: r.binding_status.value if r.binding_status else None for r in trust.root_certificates(device)
    }
    assert listed == {gateway.initial_ca_id: "available", pending.id: "pending_deployment"}
    assert inactive.id not in listed

    # the node loads it: available; then deactivated: no longer listed (the agent removes it)
    service.node_loaded(
        "node-1",
        account,
        {pending.id: pending.fingerprint, gateway.initial_ca_id: fp_of(gateway, gateway.initial_ca_id)},
    )
    assert {r.id for r in trust.root_certificates(device)} == {gateway.initial_ca_id, pending.id}
    service.deactivate(account, pending.id)
    assert [r.id for r in trust.root_certificates(device)] == [gateway.initial_ca_id]

    # another account's certificates are not this device's business
    other = accounts.create_account(gateway.store, "other", gateway.clock)
    service.install_initial_ca(other.id)
    assert [r.id for r in trust.root_certificates(device)] == [gateway.initial_ca_id]


# --- reports, coverage and the window -----------------------------------------------------------


async def test_a_report_replaces_the_last_one(lab: Lab, trust: DeviceTrustService) -> None:
    device, _ = lab.enroll()
    assert trust.device_report(device) is None
    stored = await trust.report(device, [entry("system", FP_A, FP_B), entry(NSS, FP_A)])
    assert (stored.stores, stored.installed) == (2, 3)
    report = trust.device_report(device)
    assert report is not None and report.reported_at == lab.now
    assert report.stores == (entry("system", FP_B, FP_A), entry(NSS, FP_A))

    lab.gateway.clock.advance(minutes=5)
    await trust.report(device, [entry(NSS, error="certutil: SEC_ERROR_READ_ONLY")])
    report = trust.device_report(device)
    assert report is not None and report.reported_at == lab.now
    assert report.stores == (entry(NSS, error="certutil: SEC_ERROR_READ_ONLY"),)

    await trust.report(device, [])  # every store off: a report with nothing in it
    report = trust.device_report(device)
    assert report is not None and report.stores == ()


async def test_coverage_counts_devices_that_reported_within_seven_days(
    lab: Lab, trust: DeviceTrustService
) -> None:
    gateway, clock = lab.gateway, lab.gateway.clock
    first = gateway.service.get(gateway.account_id, gateway.initial_ca_id)
    fp = first.fingerprint
    ann, _ = lab.enroll(hostname="ann-laptop")
    bob, _ = lab.enroll(hostname="bob-laptop")
    lab.enroll(hostname="never-reports")
    assert trust.coverage(first) == Coverage(installed=0, reporting=0)

    await trust.report(ann, [entry("system"), entry(NSS, fp.lower())])  # in one store of two: installed
    assert trust.coverage(first) == Coverage(installed=1, reporting=1)
    clock.advance(days=3)
    await trust.report(bob, [entry("system", FP_A)])
    coverage = trust.coverage(first)
    assert (coverage.installed, coverage.missing, coverage.reporting) == (1, 1, 2)

    # ann's report turns 7 days old: still counted at the edge, not a moment after
    clock.advance(days=4)
    assert trust.coverage(first) == Coverage(installed=1, reporting=2)
    clock.advance(seconds=1)
    assert trust.coverage(first) == Coverage(installed=0, reporting=1)
    assert timedelta(days=7) == REPORTING_WINDOW

    # her agent runs again: counted again
    await trust.report(ann, [entry(NSS, fp)])
    assert trust.coverage(first) == Coverage(installed=1, reporting=2)


async def test_devices_of_a_certificate(lab: Lab, trust: DeviceTrustService) -> None:
    gateway, clock = lab.gateway, lab.gateway.clock
    fp = fp_of(gateway, gateway.initial_ca_id)
    ann, _ = lab.enroll(hostname="ann-laptop")
    bob, _ = lab.enroll(hostname="bob-laptop")
    cid, _ = lab.enroll(hostname="cid-laptop")
    await trust.report(ann, [entry("system", fp), entry("nss:/etc/pki/nssdb"), entry(NSS, fp)])
    reported_ann = clock()
    clock.advance(days=8)
    await trust.report(bob, [entry("system", FP_A)])
    rows = trust.devices_for(gateway.account_id, gateway.initial_ca_id)
    assert [(r.device.id, r.installed, r.stores, r.reported_at, r.reporting) for r in rows] == [
        (ann.id, True, ("system", NSS), reported_ann, False),  # stale: shown, not counted
        (bob.id, False, (), clock(), True),
        (cid.id, False, (), None, False),  # never reported
    ]
    with pytest.raises(NotFound):
        trust.devices_for(gateway.account_id, "9d3c2a1b-0000-4000-8000-000000000000")


async def test_turn_on_warning(lab: Lab, trust: DeviceTrustService) -> None:
    gateway = lab.gateway
    account = gateway.account_id
    second = gateway.service.generate(account)
    assert trust.turn_on_warning(account, second.id) is None  # nobody reports: nothing to say
    devices: list[Device] = [lab.enroll(hostname=f"host-{i}")[0] for i in range(3)]
    for device in devices:
        await trust.report(
            device, [entry("system", gateway.service.get(account, gateway.initial_ca_id).fingerprint)]
        )
    await trust.report(devices[0], [entry("system", second.fingerprint)])
    assert trust.turn_on_warning(account, second.id) == (
        f"2 of 3 reporting devices have not installed certificate {second.id} yet: "
        "turning it on breaks TLS for them until their agent syncs"
    )
    assert missing_message(2, 3, second.id) == trust.turn_on_warning(account, second.id)
    for device in devices[1:]:
        await trust.report(device, [entry(NSS, second.fingerprint)])
    assert trust.turn_on_warning(account, second.id) is None
    assert trust.turn_on_warning(account, "no-such-certificate") is None
    assert TRUST_WARNING == 10100


async def test_deleted_devices_are_forgotten_and_cannot_report(lab: Lab, trust: DeviceTrustService) -> None:
    gateway = lab.gateway
    first = gateway.service.get(gateway.account_id, gateway.initial_ca_id)
    device, _ = lab.enroll()
    await trust.report(device, [entry("system", first.fingerprint)])
    assert trust.coverage(first) == Coverage(installed=1, reporting=1)
    lab.service.delete_device(gateway.account_id, device.id)
    assert trust.coverage(first) == Coverage(installed=0, reporting=0)
    assert gateway.store.trust_reports.for_device(device.id) is None
    installed = gateway.store._db.connection.execute(
        "SELECT count(*) FROM device_trust_installed"
    ).fetchone()[0]
    assert installed == 0  # the cascade reached every table
    with pytest.raises(Unauthenticated, match=f"device {device.id} was deleted: enroll again"):
        await trust.report(device, [entry("system")])


async def test_reports_share_the_group_commit(lab: Lab, trust: DeviceTrustService) -> None:
    import asyncio

    devices = [lab.enroll(hostname=f"host-{i}")[0] for i in range(20)]
    commits = lab.service.writer.commits
    await asyncio.gather(*(trust.report(d, [entry("system", FP_A)]) for d in devices))
    assert lab.service.writer.commits - commits < len(devices)
    assert all(trust.device_report(d) is not None for d in devices)  # visible to the service's own connection


async def test_without_a_writer_reports_are_written_directly(lab: Lab) -> None:
    gateway = lab.gateway
    trust = DeviceTrustService(gateway.store, gateway.service, gateway.clock)
    device, _ = lab.enroll()
    await trust.report(device, [entry("system", FP_A)])
    report = trust.device_report(device)
    assert report is not None and report.stores == (entry("system", FP_A),)
