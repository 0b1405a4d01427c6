"""gateway/lists with the official SDK (``zero_trust.gateway.lists``): create, list, get, update,
edit (append/remove), items, delete, and the refusals with their status and message."""

from __future__ import annotations

import cloudflare
import pytest

from tests.support.policies import api_for, sdk_for
from tests.support.server import Gateway


async def test_sdk_drives_lists(gateway: Gateway) -> None:
    a = gateway.account_id
    async with sdk_for(gateway, files=None) as sdk:
        lists = sdk.zero_trust.gateway.lists
        created = await lists.create(
            account_id=a,
            name="bad sites",
            type="DOMAIN",
            description="blocked",
            items=[{"value": "Casino.Example", "description": "gambling"}, {"value": "bets.example"}],
        )
        assert created is not None and created.id and created.type == "DOMAIN"
        assert [(i.value, i.description) for i in created.items or []] == [
            ("casino.example", "gambling"),
            ("bets.example", ""),
        ]
        listed = [gl async for gl in lists.list(account_id=a)]
        assert [(gl.id, gl.count, gl.items) for gl in listed] == [(created.id, 2, None)]

        edited = await lists.edit(
            created.id, account_id=a, append=[{"value": "poker.example"}], remove=["bets.example"]
        )
        assert edited is not None and [i.value for i in edited.items or []] == [
            "casino.example",
            "poker.example",
        ]
        items = [i.value async for i in lists.items.list(created.id, account_id=a, per_page=1)]
        assert items == ["casino.example", "poker.example"]  # paged one by one until an empty page

        updated = await lists.update(created.id, account_id=a, name="renamed", items=[{"value": "x.example"}])
        assert updated is not None and (updated.name, updated.type, updated.count) == ("renamed", "DOMAIN", 1)
        got = await lists.get(created.id, account_id=a)
        assert got is not None and got.created_at == created.created_at

        rules = sdk.zero_trust.gateway.rules
        rule = await rules.create(
            account_id=a, name="Block listed", action="block", filters=["http"],
            traffic=f"http.request.host in ${created.id}",
        )  # fmt: skip
        with pytest.raises(cloudflare.BadRequestError) as refused:
            await lists.delete(created.id, account_id=a)
        assert "is used by gateway rule 'Block listed'" in str(refused.value.body)
        assert rule.id is not None
        await rules.delete(rule.id, account_id=a)
        await lists.delete(created.id, account_id=a)
        with pytest.raises(cloudflare.NotFoundError):
            await lists.get(created.id, account_id=a)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"name": "x", "type": "COLOR"}, "unknown type 'COLOR'"),
        (
            {"name": "x", "type": "IP", "items": [{"value": "10.0.0.1/8"}]},
            "host bits set (did you mean 10.0.0.0/8?)",
        ),
        (
            {"name": "x", "type": "DOMAIN", "items": ["a.example", "A.example"]},
            "'a.example' repeats items[0]",
        ),
        ({"name": "x", "type": "DOMAIN", "items": ["*.a.example"]}, "write a.example"),
        ({"name": "x", "type": "EMAIL", "items": ["nobody"]}, "not an email address"),
        ({"type": "HOST"}, "name: required"),
    ],
)
async def test_bad_lists_are_refused(gateway: Gateway, body: dict[str, object], message: str) -> None:
    async with api_for(gateway, files=None) as api:
        reply = await api("POST", "gateway/lists", json=body)
        assert reply.status == 400
        assert message in reply.body["errors"][0]["message"]
        assert api.service.state(gateway.account_id).lists == ()


async def test_rules_refer_to_lists_by_type(gateway: Gateway) -> None:
    async with api_for(gateway, files=None) as api:
        created = await api(
            "POST", "gateway/lists", json={"name": "ips", "type": "IP", "items": ["10.0.0.0/8"]}
        )
        list_id = created.result["id"]
        wrong = await api(
            "POST",
            "gateway/rules",
            json={"name": "r", "action": "block", "traffic": f"http.request.host in ${list_id}"},
        )
        assert wrong.status == 400
        assert (
            "is a IP list, which cannot be compared with http.request.host"
            in wrong.body["errors"][0]["message"]
        )
        unknown = await api(
            "POST",
            "gateway/rules",
            json={"name": "r", "action": "block", "traffic": "http.request.host in $nope"},
        )
        assert unknown.status == 400 and "unknown list $nope" in unknown.body["errors"][0]["message"]
        changed = await api("PUT", f"gateway/lists/{list_id}", json={"name": "ips", "type": "HOST"})
        assert changed.status == 400 and "a list keeps its type (IP)" in changed.body["errors"][0]["message"]
        missing = await api("PATCH", f"gateway/lists/{list_id}", json={"remove": ["10.1.0.0/16"]})
        assert (
            missing.status == 400
            and "'10.1.0.0/16' is not in the list" in missing.body["errors"][0]["message"]
        )


async def test_export_then_import_keeps_lists(gateway: Gateway) -> None:
    async with api_for(gateway, files=None) as api:
        created = await api(
            "POST", "gateway/lists", json={"name": "hosts", "type": "HOST", "items": ["a.example"]}
        )
        list_id = created.result["id"]
        await api(
            "POST",
            "gateway/rules",
            json={"name": "r", "action": "block", "traffic": f"http.request.host in ${list_id}"},
        )
        exported = api.service.export(gateway.account_id)
        assert "lists:\n- id: " + list_id in exported
        again = await api("POST", "gateway/rules/import", data=exported)
        assert again.status == 200 and again.result["lists"] == 1
        got = await api("GET", f"gateway/lists/{list_id}")
        assert got.result | {"updated_at": "-"} == created.result | {"updated_at": "-"}
