"""``gateway ca rotate`` and ``gateway ca rotation ...`` against the real admin API on a loopback
port, with the rotation driver running: a rotation followed to the end with --watch; bad input
and a second rotation refused with one line and exit 1; show, pause, resume and cancel."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from proxy.services.rotation_driver import RotationDriver
from proxy.services.rotations import RotationService
from tests.support.devices import Lab
from tests.support.server import serving

from .test_ca import cli


@dataclasses.dataclass
class Served:
    url: str
    lab: Lab
    rotations: RotationService

    async def run(self, *argv: str) -> int:
        return await asyncio.to_thread(
            cli, "ca", *argv, "--server", self.url, "--token", self.lab.gateway.token
        )


@pytest.fixture
async def served(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Served]:
    monkeypatch.delenv("GATEWAY_SERVER", raising=False)
    monkeypatch.delenv("GATEWAY_ADMIN_TOKEN", raising=False)
    rotations = RotationService(lab.gateway.store, lab.gateway.service, lab.gateway.clock)
    deps = dataclasses.replace(lab.api(), rotations=rotations)
    driver = RotationDriver(rotations, interval=timedelta(milliseconds=50))
    async with serving(deps) as port, driver.running():
        yield Served(f"http://127.0.0.1:{port}", lab, rotations)


async def test_rotate_and_watch_to_the_end(served: Served, capsys: pytest.CaptureFixture[str]) -> None:
    code = await served.run("rotate", "--coverage", "0", "--deadline", "10m", "--grace", "0s", "--watch")
    out, err = capsys.readouterr()
    assert code == 0, (out, err)
    assert "started: manual rotation: generated certificate" in out
    assert "completed step done" in out
    (current,) = served.rotations.list(served.lab.account)
    assert current.record.state == "completed"
    new = served.lab.gateway.service.get(served.lab.account, current.record.new_certificate_id)
    assert new.in_use


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--coverage", "101"), "coverage: must be a whole percentage from 0 to 100, got 101 (HTTP 400)"),
        (("--deadline=-1m",), "deadline: "),
        (("--deadline", "2020-01-01T00:00:00Z"), "is not in the future"),
        (("--grace=-5m",), "grace: must not be negative"),
    ],
)
async def test_bad_input_is_one_line_and_exit_1(
    served: Served, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], message: str
) -> None:
    code = await served.run("rotate", *argv)
    out, err = capsys.readouterr()
    assert code == 1 and out == ""
    assert err.startswith("gateway: error: ") and message in err and len(err.strip().splitlines()) == 1, err


async def test_show_pause_resume_cancel_and_a_second_rotation(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    lab = served.lab
    bob, _ = lab.enroll(hostname="bob-laptop", serial="SN-2")
    lab.gateway.store.trust_reports.replace(bob.id, [], lab.now)
    assert await served.run("rotate", "--deadline", "1h") == 0
    capsys.readouterr()
    assert await served.run("rotate") == 1
    assert "one rotation at a time per account" in capsys.readouterr().err

    async def shown() -> str:
        assert await served.run("rotation") == 0
        return capsys.readouterr().out

    async def at_install() -> bool:
        return "step install" in await shown()

    for _ in range(100):
        if await at_install():
            break
        await asyncio.sleep(0.05)
    text = await shown()
    assert "0/1 reporting devices have it (need 100%)" in text and f"bob-laptop ({bob.id})" in text
    assert await served.run("rotation", "pause") == 0
    assert "paused at step install" in capsys.readouterr().out
    assert await served.run("rotation", "resume") == 0
    assert "running at step install" in capsys.readouterr().out
    assert await served.run("rotation", "cancel") == 0
    assert "was deactivated" in capsys.readouterr().out
    assert await served.run("rotation", "list") == 0
    assert "cancelled" in capsys.readouterr().out
