"""The official Cloudflare SDK (5.x) drives the admin API unchanged, over a real loopback socket."""

from __future__ import annotations

import cloudflare
import pytest
from cloudflare import AsyncCloudflare

from tests.support.clock import START
from tests.support.pki import make_ca
from tests.support.server import Gateway


async def test_whole_certificate_lifecycle(sdk: AsyncCloudflare, gateway: Gateway) -> None:
    svc = gateway.service
    accounts = [a async for a in sdk.accounts.list()]  # pages until an empty result
    assert [a.id for a in accounts] == [gateway.account_id]
    account = accounts[0].id
    certificates = sdk.zero_trust.gateway.certificates
    svc.register_node("node-1", "node one")  # one live node: activation waits for it

    created = await certificates.create(account_id=account, validity_period_days=1826)
    assert created.binding_status == "inactive" and created.type == "gateway_managed" and created.id
    activated = await certificates.activate(created.id, account_id=account)
    assert activated.binding_status == "pending_deployment"
    svc.node_loaded("node-1", account, {created.id: created.fingerprint or ""})
    assert (await certificates.get(created.id, account_id=account)).binding_status == "available"

    await sdk.zero_trust.gateway.configurations.edit(
        account_id=account,
        settings={"certificate": {"id": created.id}, "tls_decrypt": {"enabled": True}},
    )
    in_use = {c.id: c.in_use async for c in certificates.list(account_id=account)}
    assert in_use == {gateway.initial_ca_id: False, created.id: True}
    configuration = await sdk.zero_trust.gateway.configurations.get(account_id=account)
    assert configuration.settings and configuration.settings.certificate
    assert configuration.settings.certificate.id == created.id

    old = gateway.initial_ca_id
    assert (await certificates.deactivate(old, account_id=account)).binding_status == "inactive"
    deleted = await certificates.delete(old, account_id=account)
    assert deleted.id == old
    with pytest.raises(cloudflare.NotFoundError) as e:
        await certificates.get(old, account_id=account)
    assert e.value.status_code == 404

    pems = make_ca("BYO Root", organization="Lab", now=START)
    upload = await sdk.mtls_certificates.create(
        account_id=account, ca=True, certificates=pems.cert_pem(), private_key=pems.key_pem(), name="byo"
    )
    assert upload.id and upload.type == "custom" and upload.issuer == "CN=BYO Root,O=Lab"
    listed = [
        m.id async for m in sdk.mtls_certificates.list(account_id=account, type=["custom", "gateway_managed"])
    ]
    assert listed == [upload.id]
    assert (await certificates.activate(upload.id, account_id=account)).binding_status == "pending_deployment"
    svc.node_loaded(
        "node-1",
        account,
        {created.id: created.fingerprint or "", upload.id: svc.get(account, upload.id).fingerprint},
    )
    custom = await certificates.get(upload.id, account_id=account)
    assert (custom.type, custom.binding_status) == ("custom", "available")
    await sdk.zero_trust.gateway.configurations.edit(
        account_id=account, settings={"certificate": {"id": upload.id}}
    )
    states = {c.id: (c.type, c.in_use) async for c in certificates.list(account_id=account)}
    assert states == {created.id: ("gateway_managed", False), upload.id: ("custom", True)}
    fetched = await sdk.mtls_certificates.get(upload.id, account_id=account)
    assert fetched.name == "byo"


async def test_refusals_reach_the_sdk_as_the_right_errors(sdk: AsyncCloudflare, gateway: Gateway) -> None:
    certificates = sdk.zero_trust.gateway.certificates
    account = gateway.account_id
    for _ in range(3):
        await certificates.create(account_id=account)
    with pytest.raises(cloudflare.RateLimitError) as limited:
        await certificates.create(account_id=account)
    assert limited.value.response.headers["x-should-retry"] == "false"
    assert int(limited.value.response.headers["retry-after"]) > 0
    with pytest.raises(cloudflare.BadRequestError, match="is in use"):
        await certificates.deactivate(gateway.initial_ca_id, account_id=account)
    with pytest.raises(cloudflare.BadRequestError, match="nil UUID"):
        await sdk.zero_trust.gateway.configurations.edit(
            account_id=account,
            settings={"certificate": {"id": "00000000-0000-0000-0000-000000000000"}},
        )
    with pytest.raises(cloudflare.BadRequestError, match="not a CA"):
        await sdk.mtls_certificates.create(
            account_id=account, ca=True, certificates=make_ca(now=START, ca=False).cert_pem()
        )
    wrong = AsyncCloudflare(base_url=str(sdk.base_url), api_token="wrong-token", max_retries=0)
    async with wrong:
        with pytest.raises(cloudflare.AuthenticationError):
            await wrong.zero_trust.gateway.certificates.get(gateway.initial_ca_id, account_id=account)
