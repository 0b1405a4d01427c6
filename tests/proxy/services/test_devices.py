"""DeviceService: rules, enrollment, credentials, and the identity the proxy reads (with expiry
through an injected clock, and the cache)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from certs.sealing import KeySealer
from policies.facts import ANONYMOUS
from proxy.bootstrap import first_start
from proxy.services.certificates import CertificateService
from proxy.services.device_enrollment import DeviceDetails, user_id
from proxy.services.device_writer import Batch
from proxy.services.devices import DeviceService, Unauthenticated
from proxy.services.errors import InvalidInput, NotFound, Refused
from proxy.services.posture_verify import Report
from proxy.store import LogQuery, Outcome, PostureLogEntry, Store
from tests.support.clock import FakeClock
from tests.support.devices import EMAIL, Lab, make_lab, pem, rule_body, token_secret
from tests.support.server import Gateway


def _details(**changes: str) -> DeviceDetails:
    body = {"name": "laptop-7", "os": "linux", "hostname": "laptop-7", "serial_number": "SN-1"}
    return DeviceDetails.from_api({**body, **changes})


# --- rules --------------------------------------------------------------------------------------


def test_rule_round_trips_in_cloudflare_shape(lab: Lab) -> None:
    rule = lab.service.rule(lab.account, lab.rule_id)
    api = rule.to_api()
    assert api["id"] == lab.rule_id and api["enabled"] is True
    assert api["input"]["certificate_id"] == lab.ca_id and api["expiration"] == "10m"
    assert [r.id for r in lab.service.rules(lab.account)] == [lab.rule_id]


def test_rule_must_name_an_mtls_certificate_of_the_account(lab: Lab) -> None:
    missing = "2458ce5a-0c35-4c7f-82c7-8e9487d3ff60"
    with pytest.raises(InvalidInput, match="input.certificate_id: no mTLS certificate with id"):
        lab.service.create_rule(lab.account, rule_body(missing))
    gateway_ca = lab.gateway.initial_ca_id  # a gateway CA is not an mTLS upload
    with pytest.raises(InvalidInput, match="no mTLS certificate"):
        lab.service.create_rule(lab.account, rule_body(gateway_ca))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"type": "file"}, "type: 'file' is not supported"),
        ({"schedule": "10s"}, "schedule: must be at least 1m"),
        ({"input": {"certificate_id": "nope"}}, "input.certificate_id: must be the UUID"),
        ({"match": [{"platform": "beos"}]}, r"match\[0\].platform"),
    ],
)
def test_invalid_rules_name_the_field(lab: Lab, change: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        lab.service.create_rule(lab.account, rule_body(lab.ca_id, **change))


def test_mtls_certificate_in_use_by_a_rule_is_not_deleted(lab: Lab) -> None:
    with pytest.raises(Refused, match=f"device posture rule\\(s\\) {lab.rule_id}"):
        lab.gateway.service.delete_mtls(lab.account, lab.ca_id)
    lab.service.delete_rule(lab.account, lab.rule_id)
    assert lab.gateway.service.delete_mtls(lab.account, lab.ca_id).id == lab.ca_id


def test_unknown_rule_and_account_are_not_found(lab: Lab) -> None:
    with pytest.raises(NotFound):
        lab.service.rule(lab.account, "nope")
    with pytest.raises(NotFound):
        lab.service.rules("0" * 32)


# --- enrollment and credentials -----------------------------------------------------------------


def test_enrollment_token_is_single_use_and_carries_the_server(lab: Lab) -> None:
    issued = lab.service.create_enrollment_token(lab.account, email="Bob@Example.com")
    assert issued.token.startswith("gwe1.") and issued.expires_at == lab.now + timedelta(hours=1)
    secret = token_secret(issued.token)
    enrolled = lab.service.enroll(secret, _details(email="mallory@example.com"), "10.0.0.9")
    assert enrolled.device.email == "Bob@Example.com"  # the admin's choice wins
    assert enrolled.device.ip == "10.0.0.9" and enrolled.device.os == "linux"
    with pytest.raises(Refused, match="already used"):
        lab.service.enroll(secret, _details(), "10.0.0.9")


def test_enrollment_refuses_unknown_and_expired_tokens(lab: Lab) -> None:
    with pytest.raises(Unauthenticated, match="not a valid enrollment token"):
        lab.service.enroll("made-up", _details(email=EMAIL), "127.0.0.1")
    issued = lab.service.create_enrollment_token(lab.account, expires_in="5m")
    lab.gateway.clock.advance(minutes=5)
    with pytest.raises(Refused, match="expired at 2026-03-01T12:05:00Z"):
        lab.service.enroll(token_secret(issued.token), _details(email=EMAIL), "127.0.0.1")


def test_enrollment_needs_a_user(lab: Lab) -> None:
    issued = lab.service.create_enrollment_token(lab.account)
    with pytest.raises(InvalidInput, match="email: required"):
        lab.service.enroll(token_secret(issued.token), _details(), "127.0.0.1")
    device = lab.service.enroll(token_secret(issued.token), _details(email=EMAIL), "127.0.0.1")
    assert device.device.email == EMAIL


@pytest.mark.parametrize(
    ("body", "message"),
    [({"expires_in": "0s"}, "between 1m and 30d"), ({"expires_in": "soon"}, "duration"),
     ({"email": "not-an-address"}, "email address")],
)  # fmt: skip
def test_bad_token_requests(lab: Lab, body: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        lab.service.create_enrollment_token(lab.account, **body)


@pytest.mark.parametrize("os", ["darwin", "macOS", "mac"])
def test_platform_names_are_cloudflare_s(os: str) -> None:
    assert _details(os=os).os.value == "mac"
    with pytest.raises(InvalidInput, match="unknown operating system 'beos'"):
        _details(os="beos")


def test_secrets_are_stored_hashed_and_compared(lab: Lab) -> None:
    device, secret = lab.enroll()
    dump = "\n".join(lab.gateway.store.dump())
    assert secret not in dump
    assert lab.service.authenticate(device.id, secret) == device.id
    assert lab.service.authenticate(device.id, secret + "x") is None
    assert lab.service.authenticate("unknown-device", secret) is None
    assert lab.service.authenticate("x" * 10_000, secret) is None


async def test_refused_secret_is_logged_for_a_known_device(lab: Lab) -> None:
    device, _ = lab.enroll()
    for _ in range(3):
        with pytest.raises(Unauthenticated, match="wrong device secret"):
            await lab.service.login(device.id, "wrong", "10.1.1.1")
    with pytest.raises(Unauthenticated, match="unknown device"):
        await lab.service.login("no-such-device", "wrong", "10.1.1.1")
    entries, total = lab.service.logs(LogQuery(lab.account), offset=0, limit=10)
    assert total == 1  # once a minute per device
    assert entries[0].outcome is Outcome.REFUSED and entries[0].device_id == device.id
    assert "wrong device secret (from 10.1.1.1)" in entries[0].reason


async def test_deleted_device_stops_authenticating_at_once(lab: Lab) -> None:
    device, secret = lab.enroll()
    assert lab.service.authenticate(device.id, secret) == device.id  # cached now
    lab.service.delete_device(lab.account, device.id)
    assert lab.service.authenticate(device.id, secret) is None
    assert lab.service.identity(device.id) is ANONYMOUS


# --- identity -----------------------------------------------------------------------------------


async def test_identity_passed_then_expired_without_any_write(lab: Lab) -> None:
    device, _ = lab.enroll()
    identity = lab.service.identity(device.id)
    assert identity.email == EMAIL and identity.device_id == device.id
    assert identity.posture_passed == () and identity.posture_failed == ()  # never reported
    cert, key = lab.ca.issue(lab.now)
    await lab.service.submit(device, [await lab.passing(device, cert, key)], "127.0.0.1")
    identity = lab.service.identity(device.id)
    assert identity.posture_passed == (lab.rule_id,) and identity.posture_failed == ()
    assert identity.verified_certificate_cn == "laptop-7.corp"
    lab.gateway.clock.advance(minutes=9, seconds=59)
    assert lab.service.identity(device.id) is identity  # cached, still valid
    lab.gateway.clock.advance(seconds=1)
    expired = lab.service.identity(device.id)
    assert expired.posture_passed == () and expired.posture_failed == (lab.rule_id,)
    assert expired.verified_certificate_cn is None


async def test_pass_expires_with_the_certificate(lab: Lab) -> None:
    device, _ = lab.enroll()
    cert, key = lab.ca.issue(lab.now, valid_from=timedelta(days=-1), valid_for=timedelta(days=1, minutes=3))
    stored = await lab.service.submit(device, [await lab.passing(device, cert, key)], "127.0.0.1")
    assert stored[0].success and stored[0].expires_at == lab.now + timedelta(minutes=3)
    lab.gateway.clock.advance(minutes=3)
    assert lab.service.identity(device.id).posture_failed == (lab.rule_id,)


async def test_failed_result_counts_as_failed(lab: Lab) -> None:
    device, _ = lab.enroll()
    report = Report(rule_id=lab.rule_id, success=False, reason="no certificate in /etc/pki/client.pem")
    (stored,) = await lab.service.submit(device, [report], "127.0.0.1")
    assert not stored.success and stored.reason == "no certificate in /etc/pki/client.pem"
    assert lab.service.identity(device.id).posture_failed == (lab.rule_id,)


async def test_rules_of_other_platforms_do_not_apply(lab: Lab) -> None:
    mac_rule = lab.service.create_rule(lab.account, rule_body(lab.ca_id, match=[{"platform": "mac"}]))
    everywhere = lab.service.create_rule(lab.account, rule_body(lab.ca_id, match=[]))
    device, _ = lab.enroll()
    assert [r.id for r, _ in lab.service.agent_rules(device)] == [lab.rule_id, everywhere.id]
    assert all(p == pem(lab.ca.certificate) for _, p in lab.service.agent_rules(device))
    failing = [Report(rule_id=rid, success=False, reason="x") for rid in (lab.rule_id, everywhere.id)]
    await lab.service.submit(device, failing, "127.0.0.1")
    assert lab.service.identity(device.id).posture_failed == tuple(sorted([lab.rule_id, everywhere.id]))
    assert mac_rule.id not in lab.service.identity(device.id).posture_failed


async def test_rule_changes_reach_cached_identities(lab: Lab) -> None:
    device, _ = lab.enroll()
    cert, key = lab.ca.issue(lab.now)
    await lab.service.submit(device, [await lab.passing(device, cert, key)], "127.0.0.1")
    assert lab.service.identity(device.id).posture_passed == (lab.rule_id,)
    body = rule_body(lab.ca_id, name="renamed")  # same requirements: the result stays
    lab.service.replace_rule(lab.account, lab.rule_id, body)
    assert lab.service.identity(device.id).posture_passed == (lab.rule_id,)
    stricter = rule_body(lab.ca_id, input={**body["input"], "extended_key_usage": ["emailProtection"]})
    lab.service.replace_rule(lab.account, lab.rule_id, stricter)  # new requirements: report again
    assert lab.service.identity(device.id).posture_passed == ()
    lab.service.delete_rule(lab.account, lab.rule_id)
    assert lab.service.identity(device.id).posture_failed == ()


async def test_a_node_sees_rules_another_process_made_changed_and_deleted(lab: Lab, store_url: str) -> None:
    """A data-plane node (a worker, ``gateway node``: its own connection to the store) reads the
    rules again once it has followed a change (``forget_cached``), not only devices and results."""
    node_store = Store.open(store_url, migrations=False)
    node = DeviceService(node_store, lab.gateway.clock, public_base_url="http://127.0.0.1:8081")
    try:
        device, _ = lab.enroll()
        cert, key = lab.ca.issue(lab.now)
        await lab.service.submit(device, [await lab.passing(device, cert, key)], "127.0.0.1")
        assert node.identity(device.id).posture_passed == (lab.rule_id,)
        second = lab.service.create_rule(lab.account, rule_body(lab.ca_id, name="second"))
        passing = await lab.passing(device, cert, key, rule_id=second.id)
        await lab.service.submit(device, [passing], "127.0.0.1")
        node.forget_cached()
        assert set(node.identity(device.id).posture_passed) == {lab.rule_id, second.id}
        stricter = rule_body(
            lab.ca_id, input={**rule_body(lab.ca_id)["input"], "extended_key_usage": ["emailProtection"]}
        )
        lab.service.replace_rule(lab.account, second.id, stricter)  # new requirements: report again
        node.forget_cached()
        assert node.identity(device.id).posture_passed == (lab.rule_id,)
        lab.service.delete_rule(lab.account, lab.rule_id)
        node.forget_cached()
        assert node.identity(device.id).posture_passed == ()
        assert node.identity(device.id) == lab.service.identity(device.id)  # the admin plane's
    finally:
        node.close()
        node_store.close()


async def test_a_node_forgets_only_what_the_journal_names(lab: Lab, store_url: str) -> None:
    """A node follows a posture report of one device by forgetting that device alone (the others
    stay cached: no store read per request after every report); a deleted device and a changed
    rule reach it all the same."""
    node_store = Store.open(store_url, migrations=False)
    node = DeviceService(node_store, lab.gateway.clock, public_base_url="http://127.0.0.1:8081")
    try:
        node_store.changes.take()
        (first, first_secret), (second, _) = lab.enroll(hostname="one"), lab.enroll()
        cert, key = lab.ca.issue(lab.now)
        node.forget_changed(node_store.changes.take())
        assert node.authenticate(first.id, first_secret) == first.id
        kept = node.identity(first.id)
        assert node.identity(second.id).posture_passed == ()
        await lab.service.submit(second, [await lab.passing(second, cert, key)], "127.0.0.1")
        changes = node_store.changes.take()
        assert changes.devices == {second.id} and not changes.everything
        node.forget_changed(changes)
        assert node.identity(first.id) is kept  # still cached
        assert node.identity(second.id).posture_passed == (lab.rule_id,)  # read again
        lab.service.replace_rule(
            lab.account,
            lab.rule_id,
            rule_body(
                lab.ca_id, input={**rule_body(lab.ca_id)["input"], "extended_key_usage": ["emailProtection"]}
            ),
        )
        node.forget_changed(node_store.changes.take())
        assert node.identity(second.id).posture_passed == ()  # the rule's new requirements
        lab.service.delete_device(lab.account, first.id)
        node.forget_changed(node_store.changes.take())
        assert node.authenticate(first.id, first_secret) is None
        assert node.identity(first.id) is ANONYMOUS
    finally:
        node.close()
        node_store.close()


async def test_subscribers_hear_of_every_stored_result(lab: Lab) -> None:
    device, _ = lab.enroll()
    calls: list[int] = []
    lab.service.subscribe(lambda: calls.append(1))
    lab.service.subscribe(lambda: 1 / 0)  # a broken subscriber does not stop the others
    await lab.service.submit(device, [Report(rule_id=lab.rule_id, success=False, reason="x")], "h")
    assert calls == [1]


@pytest.mark.serial  # a tight time bound: runs alone (tests/support/parallel.py)
def test_cached_identity_costs_microseconds(lab: Lab) -> None:
    import time

    device, _ = lab.enroll()
    lab.service.identity(device.id)
    started = time.perf_counter()
    for _ in range(10_000):
        lab.service.identity(device.id)
    per_call = (time.perf_counter() - started) / 10_000
    assert per_call < 20e-6, f"{per_call * 1e6:.1f} µs per cached identity()"


# --- group commit -------------------------------------------------------------------------------


async def test_concurrent_reports_share_transactions(lab: Lab) -> None:
    devices = [lab.enroll(hostname=f"host-{i}") for i in range(20)]
    writer = lab.service.writer
    before = writer.commits
    reports = [Report(rule_id=lab.rule_id, success=False, reason=f"r{i}") for i in range(20)]
    stored = await asyncio.gather(
        *(lab.service.submit(d, [r], "h") for (d, _), r in zip(devices, reports, strict=True))
    )
    assert [s[0].reason for s in stored] == [f"r{i}" for i in range(20)]
    assert writer.commits - before < 20


async def test_a_failing_job_rolls_back_alone(lab: Lab) -> None:
    writer = lab.service.writer

    def boom(store: Store) -> None:
        store.posture_logs.add([])
        raise RuntimeError("boom")

    ok_job = writer.run(lambda store: 42)
    bad_job = writer.run(boom)
    results = await asyncio.gather(ok_job, bad_job, return_exceptions=True)
    assert results[0] == 42 and isinstance(results[1], RuntimeError)


async def test_a_batch_item_that_fails_is_applied_again_alone(lab: Lab) -> None:
    writer = lab.service.writer
    calls: list[list[str]] = []

    def apply(store: Store, items: list[str]) -> list[str]:
        calls.append(list(items))
        store.posture_logs.add([])
        if "bad" in items:
            raise ValueError("bad item")
        return [f"{item}!" for item in items]

    batch = Batch("test", apply)
    before = writer.commits
    results = await asyncio.gather(*(writer.add(batch, i) for i in ("a", "bad", "c")), return_exceptions=True)
    assert results[0] == "a!" and results[2] == "c!"
    assert isinstance(results[1], ValueError) and str(results[1]) == "bad item"
    assert calls == [["a", "bad", "c"], ["a"], ["bad"], ["c"]]
    assert writer.commits - before == 1


def _logging_batch(lab: Lab, calls: list[list[str]]) -> Batch[str, str]:
    """A batch that writes a posture-log entry per item, then fails when an item is "bad"."""

    def apply(store: Store, items: list[str]) -> list[str]:
        calls.append(list(items))
        store.posture_logs.add(
            PostureLogEntry(account_id=lab.account, device_id="d", rule_id=item, rule_name="",
                            outcome=Outcome.REFUSED, verified=False, reason="test", at=lab.now)
            for item in items
        )  # fmt: skip
        if "bad" in items:
            raise ValueError("bad item")
        return [f"{item}!" for item in items]

    return Batch("logging", apply)


def _logged(lab: Lab) -> list[str]:
    entries, _ = lab.service.logs(LogQuery(lab.account), offset=0, limit=100)
    return sorted(e.rule_id for e in entries if e.reason == "test")


async def test_a_failed_batch_writes_only_its_good_items_once(lab: Lab) -> None:
    """One batch alone in its transaction (no savepoint): the failure rolls the whole
    transaction back, then each item is applied alone in the next."""
    calls: list[list[str]] = []
    batch = _logging_batch(lab, calls)
    results = await asyncio.gather(
        *(lab.service.writer.add(batch, i) for i in ("a", "bad", "c")), return_exceptions=True
    )
    assert results[0] == "a!" and results[2] == "c!" and isinstance(results[1], ValueError)
    assert calls == [["a", "bad", "c"], ["a"], ["bad"], ["c"]]
    assert _logged(lab) == ["a", "c"]


async def test_a_failed_batch_beside_another_job_keeps_that_job(lab: Lab) -> None:
    """A batch sharing its transaction with other work fails inside its own savepoint."""
    calls: list[list[str]] = []
    batch = _logging_batch(lab, calls)
    entry = PostureLogEntry(account_id=lab.account, device_id="d", rule_id="job", rule_name="",
                            outcome=Outcome.REFUSED, verified=False, reason="test", at=lab.now)  # fmt: skip
    writer = lab.service.writer
    results = await asyncio.gather(
        writer.run(lambda store: store.posture_logs.add([entry])),
        *(writer.add(batch, i) for i in ("a", "bad")),
        return_exceptions=True,
    )
    assert results[0] is None and results[1] == "a!" and isinstance(results[2], ValueError)
    assert calls == [["a", "bad"], ["a"], ["bad"]]
    assert _logged(lab) == ["a", "job"]


async def test_reports_of_many_devices_are_written_together(lab: Lab) -> None:
    devices = [lab.enroll(hostname=f"laptop-{i}")[0] for i in range(5)]
    reports = [
        await lab.passing(d, *lab.ca.issue(lab.now, cn=f"laptop-{i}.corp")) for i, d in enumerate(devices)
    ]
    before = lab.service.writer.commits
    stored = await asyncio.gather(
        *(lab.service.submit(d, [r], "h") for d, r in zip(devices, reports, strict=True))
    )
    assert [(s.success, s.verified) for (s,) in stored] == [(True, True)] * 5
    assert lab.service.writer.commits - before == 1
    for device in devices:
        (result,) = lab.gateway.store.posture_results.for_device(device.id)
        assert result.success and result.verified


def test_user_ids_are_stable_uuid5_of_the_email() -> None:
    assert user_id("Ana@Example.com") == user_id("ana@example.com")
    assert user_id("ana@example.com") != user_id("bob@example.com")
    assert len(user_id("ana@example.com")) == 36


def test_service_takes_a_fingerprint_for_tokens(gateway: Gateway) -> None:
    import base64
    import json

    fingerprint = ":".join(["AB"] * 32)
    service = DeviceService(
        gateway.store,
        gateway.clock,
        public_base_url="https://gw.example:8443/",
        server_fingerprint=fingerprint,
    )
    token = service.create_enrollment_token(gateway.account_id).token
    body = token.removeprefix("gwe1.")
    fields = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    assert fields["u"] == "https://gw.example:8443" and fields["f"] == fingerprint
    assert fields["a"] == gateway.account_id and len(fields["s"]) >= 43


async def test_an_in_memory_store_commits_in_the_loop(clock: FakeClock, sealer: KeySealer) -> None:
    store = Store.open(now=clock())
    try:
        certificates = CertificateService(store, sealer, clock)
        boot = first_start(store, certificates, admin_token_env=None, clock=clock)
        gateway = Gateway(store, certificates, clock, boot.account_id, "", boot.generated_ca_id or "")
        lab = make_lab(gateway)
        device, _ = lab.enroll()
        cert, key = lab.ca.issue(lab.now)
        (stored,) = await lab.service.submit(device, [await lab.passing(device, cert, key)], "h")
        assert stored.success and lab.service.identity(device.id).posture_passed == (lab.rule_id,)
        assert lab.service.writer.commits == 2  # first sighting (nonce), then the result
        lab.service.close()
    finally:
        store.close()
