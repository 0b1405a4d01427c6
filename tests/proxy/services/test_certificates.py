"""CertificateService: every lifecycle rule of SPEC §2 with an injected clock, and node deployment."""

from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography import x509

from certs.authority import KeyType
from certs.errors import InvalidCertificate, LifecycleError, LimitExceeded
from certs.lifecycle import BindingStatus
from proxy.services.certificates import CertificateService
from proxy.services.errors import InvalidInput, NotFound, Refused
from proxy.store import CertificateKind, Store
from tests.support.pki import make_ca
from tests.support.server import Gateway

AVAILABLE = BindingStatus.AVAILABLE
PENDING = BindingStatus.PENDING_DEPLOYMENT


def available(gw: Gateway) -> str:
    """A new certificate, activated (no live node: available at once)."""
    cert = gw.service.generate(gw.account_id)
    assert gw.service.activate(gw.account_id, cert.id).binding_status is AVAILABLE
    return cert.id


def statuses(gw: Gateway) -> dict[str, tuple[str, bool]]:
    return {c.id: (c.binding_status.value, c.in_use) for c in gw.service.list(gw.account_id)}  # type: ignore[union-attr]


# -- generation -------------------------------------------------------------------------------


def test_generate_makes_an_inactive_ca_naming_the_account(gateway: Gateway) -> None:
    cert = gateway.service.generate(gateway.account_id, validity_period_days=30)
    assert cert.binding_status is BindingStatus.INACTIVE and not cert.in_use
    assert cert.kind is CertificateKind.GATEWAY_MANAGED and not cert.auto_generated
    assert cert.issuer_org == "Gateway"
    assert cert.expires_on == gateway.clock() + timedelta(days=30)
    parsed = x509.load_pem_x509_certificate(cert.certificate_pem.encode())
    assert parsed.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


@pytest.mark.parametrize("key_type", [KeyType.EC_P384, KeyType.RSA_2048])
def test_generate_honours_the_key_type(gateway: Gateway, key_type: KeyType) -> None:
    cert = gateway.service.generate(gateway.account_id, key_type=key_type)
    assert gateway.service.authority(cert.id).key_type is key_type


@pytest.mark.parametrize("days", [0, 10951, -1])
def test_generate_refuses_a_validity_out_of_range(gateway: Gateway, days: int) -> None:
    with pytest.raises(InvalidInput, match=r"validity_period_days: must be between 1 and 10950"):
        gateway.service.generate(gateway.account_id, validity_period_days=days)


def test_fourth_generation_in_24_hours_is_refused_until_the_window_rolls(gateway: Gateway) -> None:
    first = gateway.clock()
    for _ in range(3):
        gateway.service.generate(gateway.account_id)
        gateway.clock.advance(hours=1)
    with pytest.raises(LimitExceeded, match="at most 3 certificates can be generated per 24 hours") as e:
        gateway.service.generate(gateway.account_id)
    assert e.value.retry_after == first + timedelta(hours=24)
    assert len(gateway.service.list(gateway.account_id)) == 4  # the first-start CA + 3
    gateway.clock.set(first + timedelta(hours=24, seconds=1))
    gateway.service.generate(gateway.account_id)


def test_deleted_certificates_still_count_towards_the_limit(gateway: Gateway) -> None:
    for _ in range(3):
        cert = gateway.service.generate(gateway.account_id)
        gateway.service.delete(gateway.account_id, cert.id)
    with pytest.raises(LimitExceeded, match="at most 3 certificates can be generated per 24 hours"):
        gateway.service.generate(gateway.account_id)


def test_uncounted_generation_is_outside_the_limit(gateway: Gateway) -> None:
    for _ in range(3):
        gateway.service.generate(gateway.account_id)
    gateway.service.generate(gateway.account_id, count_towards_limit=False)


async def test_generate_async_counts_too(gateway: Gateway) -> None:
    for _ in range(3):
        await gateway.service.generate_async(gateway.account_id, 10, KeyType.EC_P256)
    with pytest.raises(LimitExceeded, match="at most 3 certificates can be generated per 24 hours"):
        await gateway.service.generate_async(gateway.account_id)


def test_unknown_account_is_not_found(service: CertificateService, store: Store) -> None:
    with pytest.raises(NotFound, match="no account with id 'nope'"):
        service.generate("nope")


# -- activation and deployment ----------------------------------------------------------------


def test_activate_with_no_live_node_is_available_at_once(gateway: Gateway) -> None:
    cert_id = available(gateway)
    assert statuses(gateway)[cert_id] == ("available", False)


def test_activate_waits_for_every_live_node(gateway: Gateway) -> None:
    svc, acc = gateway.service, gateway.account_id
    svc.register_node("n1", "node one")
    svc.register_node("n2", "node two")
    cert = svc.generate(acc)
    assert svc.activate(acc, cert.id).binding_status is PENDING
    svc.node_loaded("n1", acc, {cert.id: cert.fingerprint})
    assert svc.get(acc, cert.id).binding_status is PENDING
    svc.node_loaded("n2", acc, {cert.id: "00:WRONG"})  # another certificate under that id
    assert svc.get(acc, cert.id).binding_status is PENDING
    svc.node_loaded("n2", acc, {cert.id: cert.fingerprint})
    assert svc.get(acc, cert.id).binding_status is AVAILABLE


def test_a_dead_node_does_not_hold_deployment_back(gateway: Gateway) -> None:
    svc, acc = gateway.service, gateway.account_id
    svc.register_node("n1", "node one")
    cert = svc.generate(acc)
    assert svc.activate(acc, cert.id).binding_status is PENDING
    gateway.clock.advance(seconds=31)  # n1 missed its heartbeats
    assert svc.get(acc, cert.id).binding_status is AVAILABLE


def test_deactivate_waits_until_no_live_node_has_it_loaded(gateway: Gateway) -> None:
    svc, acc = gateway.service, gateway.account_id
    cert_id = available(gateway)
    fingerprint = svc.get(acc, cert_id).fingerprint
    svc.node_loaded("n1", acc, {cert_id: fingerprint})
    assert svc.deactivate(acc, cert_id).binding_status is BindingStatus.PENDING_DELETION
    assert cert_id not in {ca.id for ca in svc.loadable(acc)}
    svc.node_loaded("n1", acc, {})  # the node unloaded it
    assert svc.get(acc, cert_id).binding_status is BindingStatus.INACTIVE


def test_deactivate_with_no_live_node_is_inactive_at_once(gateway: Gateway) -> None:
    cert_id = available(gateway)
    status = gateway.service.deactivate(gateway.account_id, cert_id).binding_status
    assert status is BindingStatus.INACTIVE


def test_at_most_ten_available_pending_included(gateway: Gateway) -> None:
    svc, acc = gateway.service, gateway.account_id
    ids = [svc.generate(acc, count_towards_limit=False).id for _ in range(10)]
    for cert_id in ids[:9]:
        svc.activate(acc, cert_id)  # 9 + the first-start CA = 10
    with pytest.raises(LimitExceeded, match="at most 10 certificates can be available") as e:
        svc.activate(acc, ids[9])
    assert e.value.retry_after is None
    assert svc.get(acc, ids[9]).binding_status is BindingStatus.INACTIVE


def test_expired_certificate_cannot_be_activated(gateway: Gateway) -> None:
    cert = gateway.service.generate(gateway.account_id, validity_period_days=1)
    gateway.clock.advance(days=2)
    with pytest.raises(LifecycleError, match="expired .* cannot be activated"):
        gateway.service.activate(gateway.account_id, cert.id)


def test_activate_twice_is_refused(gateway: Gateway) -> None:
    cert_id = available(gateway)
    with pytest.raises(LifecycleError, match="already active"):
        gateway.service.activate(gateway.account_id, cert_id)


def test_unknown_certificate_is_not_found(gateway: Gateway) -> None:
    with pytest.raises(NotFound, match="no gateway certificate with id"):
        gateway.service.activate(gateway.account_id, "7c0c1a4e-1f4e-4d3c-9a51-7a2d3e4f5a6b")


def test_certificates_of_another_account_are_not_found(gateway: Gateway) -> None:
    from proxy.services.accounts import create_account

    other = create_account(gateway.store, "Other", gateway.clock)
    with pytest.raises(NotFound):
        gateway.service.get(other.id, gateway.initial_ca_id)


# -- turning on, deleting ---------------------------------------------------------------------


def test_turn_on_moves_in_use_and_leaves_the_previous_available(gateway: Gateway) -> None:
    cert_id = available(gateway)
    gateway.service.turn_on(gateway.account_id, cert_id)
    assert statuses(gateway) == {
        gateway.initial_ca_id: ("available", False),
        cert_id: ("available", True),
    }
    assert gateway.service.configuration(gateway.account_id).settings["certificate"] == {"id": cert_id}


def test_turn_on_needs_an_available_certificate(gateway: Gateway) -> None:
    cert = gateway.service.generate(gateway.account_id)
    with pytest.raises(LifecycleError, match="is inactive: activate it"):
        gateway.service.turn_on(gateway.account_id, cert.id)
    gateway.service.register_node("n1", "n1")
    gateway.service.activate(gateway.account_id, cert.id)
    with pytest.raises(LifecycleError, match="pending_deployment"):
        gateway.service.turn_on(gateway.account_id, cert.id)
    assert gateway.service.in_use(gateway.account_id).id == gateway.initial_ca_id  # type: ignore[union-attr]


def test_expired_certificate_cannot_be_turned_on(gateway: Gateway) -> None:
    cert = gateway.service.generate(gateway.account_id, validity_period_days=1)
    gateway.service.activate(gateway.account_id, cert.id)
    gateway.clock.advance(days=2)
    with pytest.raises(LifecycleError, match="expired .* cannot be turned on"):
        gateway.service.turn_on(gateway.account_id, cert.id)


def test_in_use_certificate_can_be_neither_deactivated_nor_deleted(gateway: Gateway) -> None:
    with pytest.raises(LifecycleError, match="is in use"):
        gateway.service.deactivate(gateway.account_id, gateway.initial_ca_id)
    with pytest.raises(LifecycleError, match="is in use"):
        gateway.service.delete(gateway.account_id, gateway.initial_ca_id)


def test_only_inactive_certificates_are_deleted(gateway: Gateway) -> None:
    cert_id = available(gateway)
    with pytest.raises(LifecycleError, match="only inactive certificates can be deleted"):
        gateway.service.delete(gateway.account_id, cert_id)
    gateway.service.deactivate(gateway.account_id, cert_id)
    gateway.service.delete(gateway.account_id, cert_id)
    with pytest.raises(NotFound):
        gateway.service.get(gateway.account_id, cert_id)


# -- subscribers and nodes --------------------------------------------------------------------


def test_subscribers_hear_of_committed_changes_only(gateway: Gateway) -> None:
    calls: list[int] = []
    gateway.service.subscribe(lambda: calls.append(1))
    cert = gateway.service.generate(gateway.account_id)
    gateway.service.activate(gateway.account_id, cert.id)
    assert calls == [1]
    with pytest.raises(LifecycleError, match="is already active"):
        gateway.service.activate(gateway.account_id, cert.id)
    assert calls == [1]
    gateway.service.turn_on(gateway.account_id, cert.id)
    assert calls == [1, 1]


def test_a_failing_subscriber_does_not_stop_the_others(gateway: Gateway) -> None:
    calls: list[str] = []

    def broken() -> None:
        raise RuntimeError("boom")

    gateway.service.subscribe(broken)
    gateway.service.subscribe(lambda: calls.append("second"))
    available(gateway)
    assert calls == ["second"]


def test_a_subscribing_node_promotes_during_activation(gateway: Gateway) -> None:
    svc, acc = gateway.service, gateway.account_id
    svc.register_node("n1", "n1")

    def node_sync() -> None:
        svc.node_loaded("n1", acc, {ca.id: ca.fingerprint for ca in svc.loadable(acc)})

    node_sync()
    svc.subscribe(node_sync)
    cert = svc.generate(acc)
    assert svc.activate(acc, cert.id).binding_status is AVAILABLE


def test_loadable_holds_deployable_unexpired_cas_with_their_keys(gateway: Gateway) -> None:
    svc, acc = gateway.service, gateway.account_id
    short = svc.generate(acc, validity_period_days=1)
    svc.activate(acc, short.id)
    svc.generate(acc)  # inactive: not loadable
    loadable = {ca.id: ca for ca in svc.loadable(acc)}
    assert set(loadable) == {gateway.initial_ca_id, short.id}
    assert loadable[gateway.initial_ca_id].in_use
    assert loadable[short.id].authority.fingerprint == short.fingerprint
    gateway.clock.advance(days=2)
    assert [ca.id for ca in svc.loadable(acc)] == [gateway.initial_ca_id]


def test_expiry_messages_flag_the_last_30_days(gateway: Gateway) -> None:
    svc, acc = gateway.service, gateway.account_id
    svc.generate(acc, validity_period_days=40)
    assert svc.expiry_messages(svc.list(acc)) == []
    gateway.clock.advance(days=20)
    (message,) = svc.expiry_messages(svc.list(acc))
    assert "expires in 20 days" in message


# -- mTLS uploads and custom gateway certificates ---------------------------------------------


def test_upload_with_key_activates_as_custom(gateway: Gateway) -> None:
    svc, acc = gateway.service, gateway.account_id
    pems = make_ca(now=gateway.clock())
    upload = svc.create_mtls(acc, certificates=pems.cert_pem(), private_key=pems.key_pem(), name="byo")
    assert upload.kind is CertificateKind.CUSTOM and upload.binding_status is None
    assert upload.id not in {c.id for c in svc.list(acc)}
    cert = svc.activate(acc, upload.id)
    assert cert.binding_status is AVAILABLE and cert.is_gateway_certificate
    svc.turn_on(acc, upload.id)
    assert svc.in_use(acc).id == upload.id  # type: ignore[union-attr]
    assert svc.authority(upload.id).certificate.fingerprint  # key unseals


def test_upload_without_key_cannot_be_activated(gateway: Gateway) -> None:
    pems = make_ca(now=gateway.clock())
    upload = gateway.service.create_mtls(gateway.account_id, certificates=pems.cert_pem())
    assert upload.kind is CertificateKind.MTLS and not upload.has_private_key
    with pytest.raises(Refused, match="uploaded without its private key"):
        gateway.service.activate(gateway.account_id, upload.id)


def test_activated_upload_cannot_be_deleted_as_mtls(gateway: Gateway) -> None:
    svc, acc = gateway.service, gateway.account_id
    pems = make_ca(now=gateway.clock())
    upload = svc.create_mtls(acc, certificates=pems.cert_pem(), private_key=pems.key_pem())
    svc.activate(acc, upload.id)
    with pytest.raises(Refused, match="is activated as a gateway certificate"):
        svc.delete_mtls(acc, upload.id)
    svc.deactivate(acc, upload.id)
    svc.delete_mtls(acc, upload.id)
    with pytest.raises(NotFound):
        svc.get_mtls(acc, upload.id)


def test_deleting_a_custom_gateway_certificate_keeps_the_upload(gateway: Gateway) -> None:
    svc, acc = gateway.service, gateway.account_id
    pems = make_ca(now=gateway.clock())
    upload = svc.create_mtls(acc, certificates=pems.cert_pem(), private_key=pems.key_pem())
    svc.activate(acc, upload.id)
    svc.deactivate(acc, upload.id)
    svc.delete(acc, upload.id)
    assert svc.get_mtls(acc, upload.id).binding_status is None
    with pytest.raises(NotFound):
        svc.get(acc, upload.id)


def test_gateway_managed_certificates_are_not_mtls_uploads(gateway: Gateway) -> None:
    with pytest.raises(NotFound, match="no mTLS certificate"):
        gateway.service.get_mtls(gateway.account_id, gateway.initial_ca_id)
    assert gateway.service.list_mtls(gateway.account_id) == []


def test_bad_uploads_are_refused_and_nothing_is_stored(gateway: Gateway) -> None:
    now = gateway.clock()
    with pytest.raises(InvalidCertificate, match="not a CA"):
        gateway.service.create_mtls(gateway.account_id, certificates=make_ca(now=now, ca=False).cert_pem())
    with pytest.raises(InvalidCertificate, match="does not match"):
        gateway.service.create_mtls(
            gateway.account_id,
            certificates=make_ca(now=now).cert_pem(),
            private_key=make_ca(now=now).key_pem(),
        )
    assert gateway.service.list_mtls(gateway.account_id) == []


# -- configuration ----------------------------------------------------------------------------


def test_configuration_defaults(gateway: Gateway) -> None:
    settings = gateway.service.configuration(gateway.account_id).settings
    assert settings == {
        "certificate": {"id": gateway.initial_ca_id},
        "tls_decrypt": {"enabled": True},
    }
    assert gateway.service.tls_decrypt_enabled(gateway.account_id)


def test_patch_merges_per_top_level_key_and_put_replaces(gateway: Gateway) -> None:
    svc, acc = gateway.service, gateway.account_id
    svc.update_configuration(acc, {"block_page": {"enabled": True, "name": "Lab"}})
    svc.update_configuration(acc, {"tls_decrypt": {"enabled": False}})
    settings = svc.configuration(acc).settings
    assert settings["block_page"] == {"enabled": True, "name": "Lab"}
    assert settings["tls_decrypt"] == {"enabled": False}
    assert not svc.tls_decrypt_enabled(acc)
    svc.replace_configuration(acc, {"activity_log": {"enabled": True}})
    assert svc.configuration(acc).settings == {
        "activity_log": {"enabled": True},
        "certificate": {"id": gateway.initial_ca_id},  # the in-use certificate stays on
        "tls_decrypt": {"enabled": True},
    }


def test_configuration_refuses_the_nil_uuid(gateway: Gateway) -> None:
    with pytest.raises(InvalidInput, match="settings.certificate.id: .*nil UUID"):
        gateway.service.update_configuration(
            gateway.account_id, {"certificate": {"id": "00000000-0000-0000-0000-000000000000"}}
        )


def test_configuration_change_is_all_or_nothing(gateway: Gateway) -> None:
    svc, acc = gateway.service, gateway.account_id
    cert = svc.generate(acc)  # inactive: cannot be turned on
    before = svc.configuration(acc)
    with pytest.raises(LifecycleError, match="is inactive: activate it and wait until it is available"):
        svc.update_configuration(acc, {"certificate": {"id": cert.id}, "tls_decrypt": {"enabled": False}})
    assert svc.configuration(acc) == before
