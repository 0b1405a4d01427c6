"""The lab: one ordered stack of start-up steps, each registering its undoing as soon as it has
made something (aiohttp's cleanup contexts are the model), so a failure or a Ctrl-C at any
point undoes exactly what was made, the last first, and then removes the directory.

  1. the directory (a former demo's is emptied; its leftover processes are killed)   removed
  2. the lab PKI, the hosts file, the policies (files in the directory)
  3. the demo origins listening                                                     stopped
  4. ``gateway run`` (child)                                                        SIGTERM, then SIGKILL
  5. through the admin API: the gateway's CA, the device CA, the posture rule, a token
  6. the device: its NSS database, enrolled, the gateway's CA synced in, one report
  7. ``gateway agent run`` and ``gateway agent proxy`` (children)                   SIGTERM, then SIGKILL
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import signal
from contextlib import AsyncExitStack
from pathlib import Path

import aiohttp

from proxy.demo import children, policies
from proxy.demo.admin import AdminClient, AdminError
from proxy.demo.banner import Banner
from proxy.demo.children import Child, ChildError
from proxy.demo.device import NICKNAME, DemoDevice, posture_rule
from proxy.demo.layout import LOOPBACK, DemoState, LabOptions, Layout, LayoutError
from proxy.demo.origins import SITE_NAMES, Origins
from proxy.demo.pki import LabPki

logger = logging.getLogger(__name__)

START_TIMEOUT = 30.0
WATCH_INTERVAL = 0.5


class Lab:
    def __init__(self, options: LabOptions) -> None:
        self.options = options
        self.layout = options.layout
        self.ports = options.ports
        self.token = secrets.token_urlsafe(32)
        self.children: list[Child] = []

    async def run(self) -> int:
        """Until SIGINT/SIGTERM (0) or until a child dies (1); everything undone either way."""
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stopping.set)
        try:
            async with AsyncExitStack() as steps:
                up = asyncio.create_task(self._up(steps))
                stop = asyncio.create_task(stopping.wait())
                await asyncio.wait({up, stop}, return_when=asyncio.FIRST_COMPLETED)
                if not up.done():  # stopped while starting
                    up.cancel()
                    await asyncio.gather(up, return_exceptions=True)
                    stop.cancel()
                    print("gateway demo: stopped while starting; cleaning up", flush=True)
                    return 0
                stop.cancel()
                up.result()  # a failed start raises here, after undoing its steps
                print(Banner(self.options, self.token).render(), flush=True)
                status = await self._watch(stopping)
                print("gateway demo: stopping; removing what it made", flush=True)
                return status
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    async def _watch(self, stopping: asyncio.Event) -> int:
        while not stopping.is_set():
            for child in self.children:
                if not child.alive():
                    print(
                        f"gateway demo: {child.name} exited with status {child.proc.returncode}; its log:\n"
                        f"{child.tail()}",
                        flush=True,
                    )
                    return 1
            try:
                await asyncio.wait_for(stopping.wait(), WATCH_INTERVAL)
            except TimeoutError:
                pass
        return 0

    # -- the steps ----------------------------------------------------------------------------------
    async def _up(self, steps: AsyncExitStack) -> None:
        self.ports.check_free()
        self._directory(steps)  # 1
        pki = LabPki.generate()  # 2
        self.layout.lab_ca.write_text(pki.origin_ca.certificate_pem())
        self.layout.hosts.write_text(f"# gateway demo: the lab's names\n{LOOPBACK} {' '.join(SITE_NAMES)}\n")
        policy_file = policies.write(self.layout.policies_dir)
        origins = await Origins.start(pki.origin_leaves(SITE_NAMES), self.layout.lab_dir, self.ports.origins)
        steps.push_async_callback(origins.stop)  # 3
        gateway = self._start(
            steps, "gateway", self._gateway_argv(policy_file), {"GATEWAY_ADMIN_TOKEN": self.token}
        )
        session = await steps.enter_async_context(aiohttp.ClientSession())
        admin = AdminClient(session, f"http://{LOOPBACK}:{self.ports.admin}", self.token)
        try:
            await admin.wait_ready(START_TIMEOUT, alive=gateway.alive)  # 4
        except AdminError as e:
            raise ChildError(f"{e}; its log:\n{gateway.tail()}") from None
        account = await admin.account_id()  # 5
        self.layout.gateway_ca.write_text(await admin.ca_pem())
        upload = await admin.upload_device_ca(
            account, pki.device_ca.certificate_pem(), "Gateway demo device CA"
        )
        await admin.create_posture_rule(account, posture_rule(upload))
        token = await admin.enrollment_token(account, "trainer@demo.test")
        device = DemoDevice(self.layout)  # 6
        await asyncio.to_thread(self._device, device, pki, token)
        self._start(steps, "agent", device.run_argv(), {})  # 7
        local = self._start(
            steps,
            "local-proxy",
            device.proxy_argv(f"{LOOPBACK}:{self.ports.local_proxy}", f"{LOOPBACK}:{self.ports.proxy}"),
            {},
        )
        await _wait_port(self.ports.local_proxy, local, START_TIMEOUT)
        DemoState(NICKNAME, self.ports.base, tuple(c.pid for c in self.children)).save(self.layout)

    def _directory(self, steps: AsyncExitStack) -> None:
        try:
            leftovers = DemoState.load(self.layout).pids if self.layout.state_file.exists() else ()
        except LayoutError:  # an unreadable state file: nothing to kill
            leftovers = ()
        killed = children.kill_leftovers(leftovers, str(self.layout.root))
        if killed:
            logger.warning("killed processes a former demo in %s left behind: %s", self.layout.root, killed)
        made = self.layout.prepare()
        if not self.options.keep:
            steps.callback(self.layout.remove, made=made)

    def _gateway_argv(self, policy_file: Path) -> list[str]:
        return children.gateway(
            "run",
            "--data-dir", str(self.layout.gateway_dir),
            "--proxy-listen", f"{LOOPBACK}:{self.ports.proxy}",
            "--admin-listen", f"{LOOPBACK}:{self.ports.admin}",
            "--upstream-ca", str(self.layout.lab_ca),
            "--hosts", str(self.layout.hosts),
            "--hosts-only",
            "--policies", str(policy_file),
            "--workers", "1",
        )  # fmt: skip

    def _start(self, steps: AsyncExitStack, name: str, argv: list[str], extra: dict[str, str]) -> Child:
        env = children.environment(home=self.layout.home, tmp=self.layout.tmp, extra=extra)
        child = children.start(name, argv, env=env, logs=self.layout.logs)
        self.children.append(child)

        async def stop() -> None:
            status = await asyncio.to_thread(child.stop)
            logger.info("%s stopped (%s)", name, "killed" if status is None else f"status {status}")

        steps.push_async_callback(stop)
        return child

    def _device(self, device: DemoDevice, pki: LabPki, token: str) -> None:
        self.layout.admin_token.touch(mode=0o600)
        self.layout.admin_token.write_text(self.token + "\n")
        device.make_database(pki.client_certificate("demo-laptop.demo.test"))
        device.nssdb.trust_root(self.layout.lab_ca, "Gateway Demo Origins CA")  # the bank's own certificate
        device.enroll(token)
        device.sync_ca()
        report = device.report()
        if "pass (verified)" not in report.stdout:
            raise ChildError(f"the demo device's first posture report did not pass: {report.stdout.strip()}")


async def _wait_port(port: int, child: Child, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if not child.alive():
            raise ChildError(f"{child.name} exited while starting: {child.tail(5)}")
        try:
            _, writer = await asyncio.open_connection(LOOPBACK, port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        await writer.wait_closed()
        return
    raise ChildError(f"{child.name} did not listen on {LOOPBACK}:{port} within {timeout:.0f} s")


def flip_posture(layout: Layout, passing: bool) -> str:
    """``gateway demo posture pass|fail``: the running lab's device, then one report."""
    DemoState.load(layout)  # a lab runs here
    return DemoDevice(layout).set_posture(passing)
