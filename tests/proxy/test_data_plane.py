"""A data-plane process follows what the admin plane's process commits (``proxy/data_plane.py``
``Following``): two processes are two connections on one SQLite file here, with the real
services on each side."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from addons.enforcement import PolicySnapshot
from certs.issuer import LeafIssuer
from certs.sealing import KeySealer
from proxy.account_nodes import AccountCaNodes, AccountPolicies
from proxy.data_plane import Following
from proxy.node_sync import IssuerSettings
from proxy.services.certificates import CertificateService
from proxy.services.devices import DeviceService
from proxy.services.policies import PolicyService
from proxy.services.policy_kinds import GATEWAY_RULES
from proxy.store import Store
from proxy.store.database import StoreError
from tests.support.server import Gateway

BLOCK = {"name": "Block casino", "action": "block", "traffic": 'http.request.host == "casino.example"'}


class Signer:
    def __init__(self) -> None:
        self.issuer: LeafIssuer | None = None

    def use_issuer(self, issuer: LeafIssuer | None) -> None:
        self.issuer = issuer

    def use_account_issuer(self, account_id: str, issuer: LeafIssuer | None) -> None:
        pass

    def drop_account(self, account_id: str) -> None:
        pass


class Enforcer:
    def __init__(self) -> None:
        self.snapshots: list[PolicySnapshot] = []

    def use(self, snapshot: PolicySnapshot) -> None:
        self.snapshots.append(snapshot)

    def use_account(self, account_id: str, snapshot: PolicySnapshot) -> None:
        pass

    def drop_account(self, account_id: str) -> None:
        pass


@dataclass
class NodeUnderTest:
    store: Store
    node: AccountCaNodes
    policies: PolicyService
    enforcer: Enforcer
    signer: Signer
    devices: DeviceService
    follow: Following


@contextmanager
def _node(gateway: Gateway, db_path: Path, sealer: KeySealer) -> Iterator[NodeUnderTest]:
    """A data-plane node's services on a connection of their own, following the gateway's."""
    account = gateway.account_id
    node_store = Store.open(db_path, migrations=False)
    try:
        service = CertificateService(node_store, sealer, gateway.clock, live_clock=node_store.now)
        policies = PolicyService(node_store, gateway.clock)
        signer, enforcer = Signer(), Enforcer()
        node = AccountCaNodes(
            service,
            signer,
            node_store.accounts,
            default_account_id=account,
            settings=IssuerSettings("http://127.0.0.1:8081"),
            node_id="node-under-test",
        )
        node.default.start("node under test")
        sync = AccountPolicies(enforcer, service, policies, node_store.accounts, default_account_id=account)
        policies.subscribe(sync.refresh)
        sync.refresh()
        devices = DeviceService(node_store, gateway.clock, public_base_url="http://127.0.0.1:8081")
        follow = Following(node_store, node, policies, sync, devices)
        try:
            yield NodeUnderTest(node_store, node, policies, enforcer, signer, devices, follow)
        finally:
            node.default.stop()
            devices.close()
    finally:
        node_store.close()


def test_a_node_follows_another_process(gateway: Gateway, db_path: Path, sealer: KeySealer) -> None:
    admin_policies = PolicyService(gateway.store, gateway.clock)
    account = gateway.account_id
    with _node(gateway, db_path, sealer) as under_test:
        node, policies, enforcer, signer, follow = (
            under_test.node, under_test.policies, under_test.enforcer, under_test.signer, under_test.follow
        )  # fmt: skip
        first_engines = enforcer.snapshots[-1].engines
        assert node.in_use_id == gateway.initial_ca_id

        # Nothing about policies changed (a heartbeat of another node): no recompilation.
        gateway.store.nodes.heartbeat("another node", gateway.clock())
        follow()
        assert enforcer.snapshots[-1].engines is first_engines

        # A rule made by the admin plane: recompiled, and the rule is in the new engines.
        admin_policies.create(GATEWAY_RULES, account, BLOCK)
        follow()
        engines = enforcer.snapshots[-1].engines
        assert engines is not first_engines
        assert engines.version > first_engines.version
        assert [r.item.name for r in policies.list(GATEWAY_RULES, account)] == ["Block casino"]

        # A setting changed by the admin plane: in the next snapshot.
        assert enforcer.snapshots[-1].tls_decrypt is True
        gateway.service.update_configuration(account, {"tls_decrypt": {"enabled": False}})
        follow()
        assert enforcer.snapshots[-1].tls_decrypt is False

        # A CA turned on by the admin plane: signing with it after the follow.
        second = gateway.service.generate(account)
        gateway.service.activate(account, second.id)
        follow()
        assert second.id in node.default.loaded
        gateway.service.list(account)  # settles: every live node (the node above) has it
        gateway.service.turn_on(account, second.id)
        follow()
        assert node.in_use_id == second.id
        assert signer.issuer is not None and signer.issuer.authority.fingerprint == second.fingerprint


def test_a_follow_the_store_broke_off_is_finished_by_the_next(
    gateway: Gateway, db_path: Path, sealer: KeySealer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The journal's rows are read once: a follow that took them and then lost the store keeps
    them, and the next follow reloads what they named."""
    with _node(gateway, db_path, sealer) as under_test:
        first_engines = under_test.enforcer.snapshots[-1].engines
        PolicyService(gateway.store, gateway.clock).create(GATEWAY_RULES, gateway.account_id, BLOCK)
        digest = under_test.store.revisions.data_plane

        def unreachable() -> str:
            raise StoreError("the database went away")

        monkeypatch.setattr(under_test.store.revisions, "data_plane", unreachable)
        with pytest.raises(StoreError):
            under_test.follow()
        monkeypatch.setattr(under_test.store.revisions, "data_plane", digest)
        under_test.follow()  # the journal has nothing new: what the first took is followed
        assert [r.item.name for r in under_test.policies.list(GATEWAY_RULES, gateway.account_id)] == [
            "Block casino"
        ]
        assert under_test.enforcer.snapshots[-1].engines.version > first_engines.version


def test_a_node_refuses_a_store_at_another_schema_version(db_path: Path) -> None:
    Store.open(db_path).close()
    with sqlite3.connect(db_path) as conn:
        conn.execute("DELETE FROM schema_version WHERE version = (SELECT max(version) FROM schema_version)")
    with pytest.raises(StoreError, match="start the admin plane .* first: it migrates the store"):
        Store.open(db_path, migrations=False)
