"""CA rotations over HTTP (proxy/api/rotations.py): bad input is a 400 naming the field, a second
rotation a 409 that the SDK must not retry, unknown ids 404; a rotation started, watched, paused,
resumed and moved on by the driver through the API; cancel refused after the switch."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from proxy.api import ApiDeps
from proxy.services.rotations import RotationService
from tests.support.devices import Lab
from tests.support.server import Reply, call

Client = TestClient[web.Request, web.Application]


@pytest.fixture
def rotations(lab: Lab) -> RotationService:
    return RotationService(lab.gateway.store, lab.gateway.service, lab.gateway.clock)


@pytest.fixture
def deps(lab: Lab, rotations: RotationService) -> ApiDeps:
    return dataclasses.replace(lab.api(), rotations=rotations)


def path(lab: Lab, suffix: str = "") -> str:
    return f"/client/v4/accounts/{lab.account}/gateway/certificates/rotations{suffix}"


async def admin(client: Client, lab: Lab, method: str, suffix: str = "", body: Any = None) -> Reply:
    return await call(client, method, path(lab, suffix), token=lab.gateway.token, json=body)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"deadline": "-5m"}, "deadline: "),
        ({"deadline": "2020-01-01T00:00:00Z"}, "deadline: 2020-01-01T00:00:00Z is not in the future"),
        ({"deadline": "soon"}, "deadline: must be a duration"),
        ({"deadline": "2030-01-01T00:00:00"}, "deadline: '2030-01-01T00:00:00' has no time zone"),
        ({"coverage": 101}, "coverage: must be a whole percentage from 0 to 100"),
        ({"coverage": -1}, "coverage: "),
        ({"coverage": "all"}, "coverage: "),
        ({"grace": "-1h"}, "grace: must not be negative"),
        ({"grace": 5}, "grace: must be a duration"),
        ({"on_deadline": "later"}, "on_deadline: must be one of hold, proceed"),
        ({"upload_id": "x"}, "upload_id: 'x' is not a UUID"),
        ({"speed": "fast"}, "speed: unknown field"),
    ],
)
async def test_bad_input_is_a_400_naming_the_field(client: Client, lab: Lab, body: Any, message: str) -> None:
    before = len(lab.gateway.service.list(lab.account))
    reply = await admin(client, lab, "POST", body=body)
    assert reply.status == 400, reply.body
    assert reply.error.startswith(message), reply.error
    assert len(lab.gateway.service.list(lab.account)) == before  # nothing generated


async def test_a_second_rotation_is_a_409_not_retried(client: Client, lab: Lab) -> None:
    first = await admin(client, lab, "POST", body={"deadline": "10m"})
    assert first.status == 200, first.body
    second = await admin(client, lab, "POST", body={})
    assert second.status == 409
    assert second.headers["x-should-retry"] == "false"
    assert f"rotation {first.result['id']} is running" in second.error


async def test_unknown_rotation_and_none_yet_are_404(client: Client, lab: Lab) -> None:
    none = await admin(client, lab, "GET", "/current")
    assert (
        none.status == 404
        and none.error == "no CA rotation in this account yet: start one with `gateway ca rotate`"
    )
    unknown = await admin(client, lab, "GET", "/4a3c3a3e-0000-4000-8000-000000000000")
    assert unknown.status == 404 and "no CA rotation" in unknown.error
    assert (await admin(client, lab, "POST", "/4a3c3a3e-0000-4000-8000-000000000000/pause")).status == 404
    listed = await admin(client, lab, "GET")
    assert listed.status == 200 and listed.result == []


async def test_a_rotation_through_the_api(client: Client, lab: Lab, rotations: RotationService) -> None:
    bob, _ = lab.enroll(hostname="bob-laptop", serial="SN-2")
    lab.gateway.store.trust_reports.replace(bob.id, [], lab.now)  # reports, has nothing yet
    started = await admin(client, lab, "POST", body={"coverage": 100, "deadline": "10m", "grace": "30s"})
    assert started.status == 200, started.body
    rotation = started.result
    assert (rotation["state"], rotation["step"], rotation["trigger"]) == ("running", "deploy", "manual")
    assert rotation["old_certificate_id"] == lab.gateway.initial_ca_id and rotation["grace"] == "30s"
    rotations.advance()

    current = (await admin(client, lab, "GET", "/current")).result
    assert current["id"] == rotation["id"] and current["step"] == "install"
    assert current["coverage"] == {
        "required_percent": 100, "installed": 0, "reporting": 1, "met": False,
        "missing": [{"device_id": bob.id, "name": "bob-laptop"}],
    }  # fmt: skip
    assert [s["step"] for s in current["steps"]] == ["deploy", "install"]

    paused = await admin(client, lab, "POST", f"/{rotation['id']}/pause")
    assert paused.status == 200 and paused.result["state"] == "paused"
    again = await admin(client, lab, "POST", f"/{rotation['id']}/pause")
    assert again.status == 400 and "already paused" in again.error
    bad = await admin(client, lab, "POST", f"/{rotation['id']}/resume", {"deadline": "-1m"})
    assert bad.status == 400 and bad.error.startswith("deadline: ")
    resumed = await admin(client, lab, "POST", f"/{rotation['id']}/resume", {"deadline": "1h"})
    assert resumed.status == 200 and resumed.result["state"] == "running"
    moved = await admin(client, lab, "POST", f"/{rotation['id']}/continue")
    assert moved.status == 400 and "held or paused" in moved.error

    fingerprint = lab.gateway.service.get(lab.account, rotation["new_certificate_id"]).fingerprint
    from proxy.store import TrustStoreEntry

    lab.gateway.store.trust_reports.replace(bob.id, [TrustStoreEntry("system", (fingerprint,))], lab.now)
    rotations.advance()
    one = (await admin(client, lab, "GET", f"/{rotation['id']}")).result
    assert one["step"] == "grace" and one["switched_at"] is not None and one["coverage"]["met"] is True
    refused = await admin(client, lab, "POST", f"/{rotation['id']}/cancel")
    assert refused.status == 400 and "start a new rotation" in refused.error
    listed = await admin(client, lab, "GET")
    assert [r["id"] for r in listed.result] == [rotation["id"]]


async def test_cancel_before_the_switch(client: Client, lab: Lab) -> None:
    started = (await admin(client, lab, "POST", body={"deadline": "1h"})).result
    cancelled = await admin(client, lab, "POST", f"/{started['id']}/cancel")
    assert cancelled.status == 200 and cancelled.result["state"] == "cancelled"
    assert "deactivated" in cancelled.result["message"]
    cert = lab.gateway.service.get(lab.account, started["new_certificate_id"])
    assert cert.binding_status is not None and cert.binding_status.value == "inactive"
    twice = await admin(client, lab, "POST", f"/{started['id']}/cancel")
    assert twice.status == 400 and "already cancelled" in twice.error
