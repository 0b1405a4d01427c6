"""Gateway lists on real traffic: a rule refers to a list (`http.request.host in $<id>`); a host
added to the list through the official SDK is blocked at the next request, removed → allowed.
Runs on the shared `policy_lab` gateway (tests/e2e/test_policies.py) and puts it back."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from . import curl, sdk
from .gateway_process import GatewayProcess
from .origin import Origin, body_for
from .policy_lab import UNMATCHED, KeepAlive, PolicyLab
from .tunnel import client_context

pytestmark = pytest.mark.e2e

CaFile = Callable[[GatewayProcess], Path]


def test_list_change_reaches_the_next_request(policy_lab: PolicyLab, origin: Origin, ca_file: CaFile) -> None:
    gw = policy_lab.gateway
    ca = ca_file(gw)
    keep = KeepAlive(gw.proxy_port, UNMATCHED, origin.port, client_context(ca))
    with sdk.client(gw) as c:
        account = sdk.account_id(c)
        lists = c.zero_trust.gateway.lists
        created = lists.create(account_id=account, name="e2e blocked domains", type="DOMAIN", items=[])
        assert created is not None and created.id
        rule = c.zero_trust.gateway.rules.create(
            account_id=account,
            name="e2e block listed domains",
            action="block",
            precedence=45,
            filters=["http"],
            traffic=f"http.request.host in ${created.id}",
            rule_settings={"block_page_enabled": True, "block_reason": "listed"},
        )
        assert rule is not None and rule.id
        try:
            status, body = keep.get("/")
            assert status == 200 and body_for(UNMATCHED) in body

            parent = UNMATCHED.split(".", 1)[1]  # a DOMAIN item covers its subdomains
            lists.edit(created.id, account_id=account, append=[{"value": parent, "description": "e2e"}])
            blocked = curl.via_proxy(gw.proxy_port, policy_lab.url(UNMATCHED), cacert=ca)
            assert blocked.status == 403 and "listed" in blocked.body.splitlines(), blocked.body[:300]
            status, body = keep.get("/")  # a connection opened before the change sees it too
            assert status == 403 and "e2e block listed domains" in body

            lists.edit(created.id, account_id=account, remove=[parent])
            allowed = curl.via_proxy(gw.proxy_port, policy_lab.url(UNMATCHED), cacert=ca)
            assert allowed.status == 200 and body_for(UNMATCHED) in allowed.body, allowed.body[:300]
        finally:
            keep.close()
            c.zero_trust.gateway.rules.delete(rule.id, account_id=account)
            lists.delete(created.id, account_id=account)
