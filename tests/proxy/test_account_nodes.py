"""Several accounts in one process: each account's CAs and policies are loaded under one node,
accounts made or deleted while it runs are picked up, and the default account's serve traffic
from no known device (``proxy/account_nodes.py``)."""

from __future__ import annotations

from typing import Any

import pytest

from addons.enforcement import PolicySnapshot
from certs.issuer import LeafIssuer
from proxy.account_nodes import AccountCaNodes, AccountPolicies, default_account
from proxy.config import ConfigError
from proxy.node_sync import IssuerSettings
from proxy.services.accounts import AccountService
from proxy.services.policies import PolicyService
from proxy.services.policy_kinds import GATEWAY_RULES
from tests.support.server import Gateway

BLOCK = {"name": "Block", "action": "block", "filters": ["http"], "traffic": 'http.request.host == "x.test"'}


class Sinks:
    """What the TLS addon and the enforcer were told, as ``HotTlsConfig`` and ``Enforcer`` hear it."""

    def __init__(self) -> None:
        self.default_issuer: LeafIssuer | None = None
        self.issuers: dict[str, LeafIssuer | None] = {}
        self.default_snapshot: PolicySnapshot | None = None
        self.snapshots: dict[str, PolicySnapshot] = {}

    def use_issuer(self, issuer: LeafIssuer | None) -> None:
        self.default_issuer = issuer

    def use_account_issuer(self, account_id: str, issuer: LeafIssuer | None) -> None:
        self.issuers[account_id] = issuer

    def use(self, snapshot: PolicySnapshot) -> None:
        self.default_snapshot = snapshot

    def use_account(self, account_id: str, snapshot: PolicySnapshot) -> None:
        self.snapshots[account_id] = snapshot

    def drop_account(self, account_id: str) -> None:
        self.issuers.pop(account_id, None)
        self.snapshots.pop(account_id, None)


@pytest.fixture
def accounts(gateway: Gateway) -> AccountService:
    return AccountService(
        gateway.store, gateway.service, gateway.clock, default_account_id=gateway.account_id
    )


def _nodes(gateway: Gateway, accounts: AccountService, sinks: Sinks) -> AccountCaNodes:
    return AccountCaNodes(
        gateway.service, sinks, accounts, default_account_id=gateway.account_id,
        settings=IssuerSettings("http://127.0.0.1:8081"), node_id="n" * 32,
    )  # fmt: skip


def test_every_account_signs_with_its_own_ca_under_one_node(
    gateway: Gateway, accounts: AccountService
) -> None:
    sinks = Sinks()
    nodes = _nodes(gateway, accounts, sinks)
    accounts.subscribe(nodes.sync)
    with nodes.live("test"):
        assert sinks.default_issuer is sinks.issuers[gateway.account_id] is not None
        branch, ca = accounts.create("Branch")  # picked up at once, no restart
        issuer = sinks.issuers[branch.id]
        assert issuer is not None and issuer.fingerprint == ca.fingerprint
        assert sinks.default_issuer is sinks.issuers[gateway.account_id]  # the default is untouched
        for account in (gateway.account_id, branch.id):
            assert [n.node_id for n in gateway.store.nodes.loaded(account)] == [nodes.node_id]
        assert [n.id for n in gateway.store.nodes.list()] == [nodes.node_id]

        new = gateway.service.generate(branch.id)
        gateway.service.activate(branch.id, new.id)
        nodes.sync()
        gateway.service.turn_on(branch.id, new.id)
        nodes.sync()
        swapped = sinks.issuers[branch.id]
        assert swapped is not None and swapped.fingerprint == new.fingerprint
        assert sinks.default_issuer is sinks.issuers[gateway.account_id]

        accounts.delete(branch.id)
        assert branch.id not in sinks.issuers and nodes.node(branch.id) is None
    assert gateway.store.nodes.list() == []


def test_every_account_decides_with_its_own_policies(gateway: Gateway, accounts: AccountService) -> None:
    sinks = Sinks()
    policies = PolicyService(gateway.store, gateway.clock)
    sync = AccountPolicies(sinks, gateway.service, policies, accounts, default_account_id=gateway.account_id)
    for source in (policies, accounts):
        source.subscribe(sync.refresh)
    sync.refresh()
    branch, _ = accounts.create("Branch")
    policies.create(GATEWAY_RULES, branch.id, BLOCK)

    def rules(snapshot: Any) -> list[str]:
        return [r.name for r in snapshot.engines.gateway.rules]

    assert rules(sinks.snapshots[branch.id]) == ["Block"]
    assert rules(sinks.snapshots[gateway.account_id]) == [] == rules(sinks.default_snapshot)
    accounts.delete(branch.id)
    assert set(sinks.snapshots) == {gateway.account_id}


def test_the_default_account_is_named_by_id_prefix_or_name(
    gateway: Gateway, accounts: AccountService
) -> None:
    branch, _ = accounts.create("Branch")
    listed = accounts.list()
    assert default_account(listed, None).id == gateway.account_id
    assert default_account(listed, branch.id).id == branch.id
    assert default_account(listed, "branch").id == branch.id
    assert default_account(listed, branch.id[:16]).id == branch.id
    with pytest.raises(ConfigError, match="--default-account 'nowhere': no such account"):
        default_account(listed, "nowhere")


def test_the_heartbeat_reloads_only_the_accounts_whose_certificates_changed(
    gateway: Gateway, accounts: AccountService, monkeypatch: pytest.MonkeyPatch
) -> None:
    sinks = Sinks()
    nodes = _nodes(gateway, accounts, sinks)  # not subscribed: changes come as from another process
    branch, _ = accounts.create("Branch")
    accounts.create("Other")
    with nodes.live("test"):
        loaded: list[str] = []
        loadable = gateway.service.loadable

        def spy(account_id: str) -> Any:
            loaded.append(account_id)
            return loadable(account_id)

        monkeypatch.setattr(gateway.service, "loadable", spy)
        nodes.heartbeat()
        assert loaded == []  # nothing changed: no account walked

        new = gateway.service.generate(branch.id)
        gateway.service.activate(branch.id, new.id)  # pending until every live node has it
        nodes.heartbeat()
        assert loaded == [branch.id]
        node = nodes.node(branch.id)
        assert node is not None and new.id in node.loaded
        assert gateway.service.get(branch.id, new.id).binding_status.value == "available"

        nodes.heartbeat()  # the move to available is a change too: that account once more
        assert loaded == [branch.id, branch.id]

        # What the store lost of this node's reports is reported again, without a reload.
        gateway.store.nodes.register(nodes.node_id, "test", gateway.clock())  # forgets its reports
        nodes.heartbeat()
        assert loaded == [branch.id, branch.id]
        for account in accounts.list():
            node = nodes.node(account.id)
            assert node is not None
            reported = {n.certificate_id: n.fingerprint for n in gateway.store.nodes.loaded(account.id)}
            assert reported == node.loaded


def test_the_heartbeat_drops_a_ca_that_expired(gateway: Gateway, accounts: AccountService) -> None:
    sinks = Sinks()
    nodes = AccountCaNodes(
        gateway.service, sinks, accounts, default_account_id=gateway.account_id,
        settings=IssuerSettings("http://127.0.0.1:8081"), node_id="n" * 32, clock=gateway.clock,
    )  # fmt: skip
    branch, _ = accounts.create("Branch")
    short = gateway.service.generate(branch.id, validity_period_days=2)
    gateway.service.activate(branch.id, short.id)
    with nodes.live("test"):
        node = nodes.node(branch.id)
        assert node is not None and short.id in node.loaded
        gateway.clock.advance(days=3)
        nodes.heartbeat()
        assert short.id not in node.loaded
