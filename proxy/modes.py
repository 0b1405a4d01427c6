"""The proxy's modes: the ones ``gateway run --mode`` configured, and dynamic ones added at run time.

mitmproxy keeps its listeners in the ``mode`` option (a list of specs,
``name[:data][@[host:]port]``, ``proxy/mode_specs.py``); changing that option makes its
``proxyserver`` addon start the new listeners and stop the removed ones, keeping the rest.
``Modes`` is the one place that holds that list, so other parts of the server never write the
option themselves:

- the configured modes (``--mode``, or ``regular@--proxy-listen``) are fixed for the process;
- dynamic modes belong to an *owner* (a name, e.g. ``"wireguard"``); ``await modes.set_dynamic(
  owner, specs)`` replaces that owner's modes and returns once mitmproxy listens on them (or
  raises ``ConfigError`` and leaves the running listeners as they were).

A spec without a host listens on ``DEFAULT_LISTEN_HOST`` (loopback, as every gateway default);
give ``transparent@0.0.0.0:8443`` or ``wireguard:CONF@0.0.0.0:51820`` to be reached from
elsewhere.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Sequence
from enum import StrEnum
from typing import TYPE_CHECKING

from mitmproxy.proxy.mode_specs import ProxyMode

from proxy.config import ConfigError

if TYPE_CHECKING:
    from mitmproxy.master import Master

logger = logging.getLogger(__name__)

DEFAULT_LISTEN_HOST = "127.0.0.1"
DEFAULT_PORTS = {"regular": 8080, "transparent": 8080, "wireguard": 51820}
EXPECTED = "regular@HOST:PORT, transparent@HOST:PORT (Linux) or wireguard[:CONF]@HOST:PORT"


class ModeKind(StrEnum):
    """The modes a gateway serves (mitmproxy has more: reverse, socks5, local, ...)."""

    REGULAR = "regular"  # explicit HTTP proxy (CONNECT, absolute-form)
    TRANSPARENT = "transparent"  # connections a firewall rule redirected here (Linux)
    WIREGUARD = "wireguard"  # a WireGuard tunnel (userspace, mitmproxy_rs)


def parse_mode(spec: str, *, option: str = "--mode") -> ProxyMode:
    """One mode spec, or a ``ConfigError`` naming the option and saying what would do."""
    try:
        mode = ProxyMode.parse(spec)
    except ValueError as e:
        raise ConfigError(f"{option} {spec!r}: {e}; expected {EXPECTED}") from None
    if mode.type_name not in set(ModeKind):
        raise ConfigError(
            f"{option} {spec!r}: mode {mode.type_name!r} is not served by a gateway; expected {EXPECTED}"
        )
    if mode.type_name == ModeKind.TRANSPARENT and not sys.platform.startswith("linux"):
        raise ConfigError(f"{option} {spec!r}: transparent mode needs Linux (SO_ORIGINAL_DST)")
    return mode


def kind(mode: ProxyMode) -> ModeKind:
    return ModeKind(mode.type_name)


def listen_address(mode: ProxyMode) -> tuple[str, int]:
    """Where the mode listens: its own host and port, or the gateway's defaults."""
    port = mode.listen_port()
    return mode.listen_host(DEFAULT_LISTEN_HOST), DEFAULT_PORTS[mode.type_name] if port is None else port


def _check_distinct(modes: Sequence[ProxyMode], option: str) -> None:
    seen: dict[tuple[str, int, str], str] = {}
    for mode in modes:
        host, port = listen_address(mode)
        if port == 0:
            continue  # the system picks a free port for each
        protocols = ("tcp", "udp") if mode.transport_protocol == "both" else (mode.transport_protocol,)
        for protocol in protocols:
            other = seen.get((host, port, protocol))
            if other is not None:
                raise ConfigError(
                    f"{option} {mode.full_spec!r}: {host}:{port}/{protocol} is already {other!r}"
                )
            seen[(host, port, protocol)] = mode.full_spec


def with_listen_host(mode: ProxyMode) -> ProxyMode:
    """The spec with its host and port written out, so mitmproxy's global ``listen_host`` and
    ``listen_port`` options never decide where a mode listens."""
    host, port = listen_address(mode)
    host = host.removeprefix("[").removesuffix("]")  # mitmproxy takes the last ':' as the port's
    head = mode.type_name + (f":{mode.data}" if mode.data else "")
    return ProxyMode.parse(f"{head}@{host}:{port}" if host else f"{head}@{port}")


class Modes:
    """Every mode the proxy serves. Construct from the configuration, ``attach`` to mitmproxy's
    master once it exists; from then on ``set_dynamic`` changes the listeners while it runs."""

    def __init__(self, configured: Sequence[ProxyMode]) -> None:
        if not configured:
            raise ConfigError(f"--mode: at least one mode is needed; expected {EXPECTED}")
        self.configured: tuple[ProxyMode, ...] = tuple(with_listen_host(m) for m in configured)
        _check_distinct(self.configured, "--mode")
        self._dynamic: dict[str, tuple[ProxyMode, ...]] = {}
        self._master: Master | None = None
        self._lock = asyncio.Lock()

    @classmethod
    def from_specs(cls, specs: Sequence[str], *, option: str = "--mode") -> Modes:
        return cls([parse_mode(spec, option=option) for spec in specs])

    def all(self) -> tuple[ProxyMode, ...]:
        """Configured first, then each owner's dynamic modes in the order owners appeared."""
        return self.configured + tuple(m for modes in self._dynamic.values() for m in modes)

    def specs(self) -> list[str]:
        """The value of mitmproxy's ``mode`` option."""
        return [m.full_spec for m in self.all()]

    def of_kind(self, wanted: ModeKind) -> tuple[ProxyMode, ...]:
        return tuple(m for m in self.all() if m.type_name == wanted)

    def dynamic(self, owner: str) -> tuple[ProxyMode, ...]:
        return self._dynamic.get(owner, ())

    @property
    def has_transparent(self) -> bool:
        return bool(self.of_kind(ModeKind.TRANSPARENT))

    def attach(self, master: Master) -> None:
        """Set mitmproxy's ``mode`` option to these modes (before ``master.run()``)."""
        self._master = master
        master.options.update(mode=self.specs())

    async def set_dynamic(self, owner: str, specs: Sequence[str]) -> tuple[ProxyMode, ...]:
        """Replace ``owner``'s dynamic modes with ``specs`` and return once mitmproxy serves
        exactly ``all()``. A bad spec, or an address already used, raises ``ConfigError`` and
        changes nothing. Safe to call concurrently (calls are serialised)."""
        modes = tuple(with_listen_host(parse_mode(spec, option=owner)) for spec in specs)
        async with self._lock:
            before = dict(self._dynamic)
            self._dynamic[owner] = modes
            if not modes:
                del self._dynamic[owner]
            try:
                _check_distinct(self.all(), owner)
                await self._push()
            except BaseException:
                self._dynamic = before
                if self._master is not None:
                    self._master.options.update(mode=self.specs())  # back to what was served
                raise
        logger.info("modes: %s now serves %s", owner, ", ".join(m.full_spec for m in modes) or "nothing")
        return modes

    async def add(self, owner: str, spec: str) -> ProxyMode:
        """One more dynamic mode for ``owner``; returns it as served (host and port written out)."""
        mode = with_listen_host(parse_mode(spec, option=owner))
        current = [m.full_spec for m in self.dynamic(owner) if m != mode]
        await self.set_dynamic(owner, [*current, mode.full_spec])
        return mode

    async def remove(self, owner: str, spec: str) -> None:
        mode = with_listen_host(parse_mode(spec, option=owner))
        await self.set_dynamic(owner, [m.full_spec for m in self.dynamic(owner) if m != mode])

    async def _push(self) -> None:
        if self._master is None:
            return  # not running yet: attach() sets the option with everything
        from mitmproxy.exceptions import OptionsError

        try:
            self._master.options.update(mode=self.specs())
        except OptionsError as e:
            raise ConfigError(str(e)) from e
        proxyserver = self._master.addons.get("proxyserver")
        # The option change scheduled the same update; awaiting it here (a no-op when that one
        # already ran) returns once every listener of all() is up.
        if not await proxyserver.servers.update(self.all()):
            raise ConfigError("modes: some listeners did not start (see the log)")
