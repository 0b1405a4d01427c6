"""AccountService on both store backends: an account made with its own CA in use, names
checked, deletion refused for the default account and while devices are left, and a deleted
account's objects and scoped tokens gone with it (``proxy/services/accounts.py``)."""

from __future__ import annotations

import pytest

from proxy.services import accounts
from proxy.services.accounts import AccountService
from proxy.services.errors import Conflict, InvalidInput, Refused
from proxy.store import TokenOrigin
from tests.support.devices import Lab
from tests.support.server import Gateway

SCOPED = "scoped-token-0123456789abcdefgh"


@pytest.fixture
def account_service(gateway: Gateway) -> AccountService:
    return AccountService(
        gateway.store, gateway.service, gateway.clock, default_account_id=gateway.account_id
    )


def test_an_account_is_made_with_its_own_ca_in_use(gateway: Gateway, account_service: AccountService) -> None:
    told: list[str] = []
    account_service.subscribe(lambda: told.append("changed"))
    account, ca = account_service.create("  Branch ")
    assert account.name == "Branch" and told == ["changed"]
    in_use = gateway.service.in_use(account.id)
    assert in_use is not None and in_use.id == ca.id and in_use.binding_status is not None
    assert in_use.binding_status.value == "available"
    assert gateway.service.configuration(account.id).settings["certificate"]["id"] == ca.id
    with pytest.raises(Conflict, match="is already named 'Branch'"):
        account_service.create("BRANCH")
    with pytest.raises(InvalidInput, match="name: must not be empty"):
        account_service.create(" ")
    assert [a.name for a in account_service.list()] == ["Gateway", "Branch"] and told == ["changed"]


def test_deletion_is_refused_for_the_default_account_and_while_devices_are_left(
    gateway: Gateway, account_service: AccountService, lab: Lab
) -> None:
    with pytest.raises(Refused, match="default account"):
        account_service.delete(gateway.account_id)
    lab.enroll()
    account_service.default_account_id = "0" * 32  # the first account is no longer the default
    with pytest.raises(Conflict, match=f"account {gateway.account_id} \\(Gateway\\) still has 1 device:"):
        account_service.delete(gateway.account_id)
    assert account_service.get(gateway.account_id).name == "Gateway"


def test_a_deleted_account_takes_its_objects_and_tokens_along(
    gateway: Gateway, account_service: AccountService
) -> None:
    account, ca = account_service.create("Branch")
    accounts.add_token(gateway.store, SCOPED, TokenOrigin.GENERATED, gateway.clock, account_id=account.id)
    assert accounts.authenticate(gateway.store, SCOPED) is not None
    assert account_service.delete(account.id).id == account.id
    assert gateway.store.accounts.get(account.id) is None
    assert gateway.store.certificates.get(ca.id) is None
    assert accounts.authenticate(gateway.store, SCOPED) is None
    assert gateway.store.accounts.delete(account.id) is False


def test_a_new_admin_token_never_starts_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    # A token starting with '-' is read as an option by `--token T` (argparse, and most CLIs).
    drawn = iter(["-dash-first", "ok-token"])
    monkeypatch.setattr(accounts.secrets, "token_urlsafe", lambda nbytes: next(drawn))
    assert accounts.new_token() == "ok-token"
