"""First start: account, CA in use, admin token; later starts change nothing but the token."""

from __future__ import annotations

import pytest

from certs.lifecycle import BindingStatus
from proxy.bootstrap import first_start
from proxy.config import ConfigError
from proxy.services import accounts
from proxy.services.certificates import CertificateService
from proxy.store import Store, TokenOrigin
from tests.support.clock import FakeClock

ENV_TOKEN = "env-admin-token-0123456789abcdef"


def test_first_start_makes_an_account_a_ca_in_use_and_a_token(
    store: Store, service: CertificateService, clock: FakeClock
) -> None:
    boot = first_start(store, service, admin_token_env=None, clock=clock)
    assert boot.created_account
    (account,) = store.accounts.list()
    assert account.id == boot.account_id and account.name == "Gateway" and len(account.id) == 32
    (cert,) = service.list(account.id)
    assert cert.id == boot.generated_ca_id
    assert cert.binding_status is BindingStatus.AVAILABLE and cert.in_use and cert.auto_generated
    assert [ca.id for ca in service.loadable(account.id) if ca.in_use] == [cert.id]
    assert boot.new_admin_token is not None
    assert accounts.authenticate(store, boot.new_admin_token) is not None
    (token,) = store.tokens.list()
    assert token.account_id is None and token.origin is TokenOrigin.GENERATED
    assert token.name == "gateway run"  # what `gateway token list` shows for it
    assert boot.new_admin_token.encode() not in token.token_sha256


def test_the_first_ca_does_not_count_towards_the_generation_limit(
    store: Store, service: CertificateService, clock: FakeClock
) -> None:
    boot = first_start(store, service, admin_token_env=None, clock=clock)
    for _ in range(3):
        service.generate(boot.account_id)


def test_later_starts_change_nothing(store: Store, service: CertificateService, clock: FakeClock) -> None:
    first = first_start(store, service, admin_token_env=None, clock=clock)
    again = first_start(store, service, admin_token_env=None, clock=clock)
    assert again.account_id == first.account_id
    assert not again.created_account and again.new_admin_token is None and again.generated_ca_id is None
    assert len(service.list(first.account_id)) == 1
    assert accounts.authenticate(store, first.new_admin_token or "") is not None


def test_env_token_is_stored_hashed_and_replaces_the_previous_one(
    store: Store, service: CertificateService, clock: FakeClock
) -> None:
    boot = first_start(store, service, admin_token_env=ENV_TOKEN, clock=clock)
    assert boot.new_admin_token is None
    assert accounts.authenticate(store, ENV_TOKEN) is not None
    first_start(store, service, admin_token_env=ENV_TOKEN + "-2", clock=clock)
    assert accounts.authenticate(store, ENV_TOKEN) is None
    assert accounts.authenticate(store, ENV_TOKEN + "-2") is not None
    (token,) = store.tokens.list()
    assert token.origin is TokenOrigin.ENV and token.name == "GATEWAY_ADMIN_TOKEN"


def test_removing_the_env_token_revokes_it_and_makes_a_new_one(
    store: Store, service: CertificateService, clock: FakeClock
) -> None:
    first_start(store, service, admin_token_env=ENV_TOKEN, clock=clock)
    boot = first_start(store, service, admin_token_env=None, clock=clock)
    assert accounts.authenticate(store, ENV_TOKEN) is None
    assert boot.new_admin_token is not None
    assert accounts.authenticate(store, boot.new_admin_token) is not None


@pytest.mark.parametrize(
    ("token", "message"),
    [("short", "use at least 16"), ("has a space in it, 1234567", "spaces or control characters")],
)
def test_unusable_env_tokens_are_refused(
    store: Store, service: CertificateService, clock: FakeClock, token: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        first_start(store, service, admin_token_env=token, clock=clock)
    assert store.accounts.list() == []
