"""A client's own network namespace, joined to the root namespace by a veth pair: the test host
of the modes whose clients are other machines (transparent, WireGuard). Its addresses are
private and live only on the pair (``SUBNET.N.1`` here, ``.2`` in the namespace, and the
origin's ``.9`` as the client sees it), so nothing is routed anywhere else. Everything made is
removed by :meth:`VethNamespace.tear_down`, also after a failed set-up."""

from __future__ import annotations

import os
import random
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from typing import Self

from . import tools
from .gateway_process import child_env


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    result = subprocess.run(["ip", *args], capture_output=True, timeout=30)
    if check and result.returncode != 0:
        raise AssertionError(f"ip {' '.join(args)}: {result.stderr.decode().strip()}")
    return result


def skip_reason(*programs: str) -> str | None:
    """Why this machine cannot host a client namespace (root, ``programs``, ``ip netns``)."""
    if os.geteuid() != 0:
        return "needs root for network namespaces and veth pairs"
    for program in ("ip", *programs):
        if shutil.which(program) is None:
            return f"{program} is not installed (scripts/install-test-deps)"
    probe = f"gwprobe{secrets.token_hex(3)}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True)
    if made.returncode != 0:
        return f"cannot make a network namespace: {made.stderr.decode().strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


@dataclass
class VethNamespace:
    name: str
    veth_root: str
    veth_client: str
    root_address: str
    client_address: str
    virtual: str  # the origin's address as the client sees it (on the root end, never routed on)

    @classmethod
    def make(cls, tag_prefix: str, subnet: str, **extra: object) -> Self:
        """``tag_prefix`` names the namespace and the veth ends (unique per call); ``subnet``
        is the first two octets (each test kind its own, so parallel runs never collide)."""
        tag, net = secrets.token_hex(3), random.randrange(0, 256)
        made = cls(
            name=f"{tag_prefix}-{tag}", veth_root=f"{tag_prefix[:3]}{tag}a", veth_client=f"{tag_prefix[:3]}{tag}b",
            root_address=f"{subnet}.{net}.1", client_address=f"{subnet}.{net}.2", virtual=f"{subnet}.{net}.9",
            **extra,  # type: ignore[arg-type]
        )  # fmt: skip
        try:
            made.set_up()
        except BaseException:
            made.tear_down()
            raise
        return made

    def set_up(self) -> None:
        ip("netns", "add", self.name)
        ip("link", "add", self.veth_root, "type", "veth", "peer", "name", self.veth_client)
        ip("link", "set", self.veth_client, "netns", self.name)
        ip("address", "add", f"{self.root_address}/30", "dev", self.veth_root)
        ip("address", "add", f"{self.virtual}/32", "dev", self.veth_root)
        ip("link", "set", self.veth_root, "up")
        ip("-n", self.name, "address", "add", f"{self.client_address}/30", "dev", self.veth_client)
        ip("-n", self.name, "link", "set", self.veth_client, "up")
        ip("-n", self.name, "link", "set", "lo", "up")

    def exec(
        self, *argv: str, timeout: float = 60, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        return tools.run(["ip", "netns", "exec", self.name, *argv], timeout=timeout, env=env or child_env())

    def tear_down(self) -> None:
        ip("netns", "del", self.name, check=False)  # takes the client's veth end with it
        ip("link", "del", self.veth_root, check=False)
