"""The device tunnels as mitmproxy modes: one ``wireguard:CONF@HOST:PORT`` mode per device.

:class:`WireGuardModes` keeps mitmproxy's WireGuard listeners in step with the enrolled
devices. After every device change (``DeviceService.subscribe``; changes during a sync make
one more) it asks the service for every tunnel, writes each listener's conf file -- the JSON
``{"server_key", "client_key"}`` mitmproxy reads, 0600 in ``DATA_DIR/wireguard/`` -- and pushes
the modes it wants; mitmproxy starts the new listeners and stops the old ones without a
restart. It is also the directory the ``addons.wireguard`` addon asks which device a listener
belongs to, and it removes the conf files when the gateway stops (the keys stay sealed in the
store).

mitmproxy logs each new WireGuard listener's client configuration, private key included;
:func:`tune_mitmproxy_logs` keeps those keys out of the log, and keeps the line about a
refused handshake (an unknown peer) in it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import re
import urllib.parse
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Final

from mitmproxy.proxy.mode_specs import ProxyMode

from addons.wireguard import Tunnel
from proxy.config import Config, ConfigError
from proxy.modes import DEFAULT_LISTEN_HOST
from proxy.services.wireguard import WireGuardService, WireGuardSettings, parse_ports
from proxy.store.wireguard import WireGuardTunnel

logger = logging.getLogger(__name__)

CONF_SUFFIX: Final = ".conf"
DEVICE_MODE_PORTS: Final = 100  # --mode wireguard@HOST:PORT: ports PORT to PORT+99
MITMPROXY_MODE_LOGGER: Final = "mitmproxy.proxy.mode_servers"
# mitmproxy_rs logs "Failed to process a WireGuard handshake packet" (an unknown peer) here
MITMPROXY_RS_WIREGUARD_LOGGER: Final = "mitmproxy.packet_sources.wireguard"
_PRIVATE_KEY = re.compile(r"(PrivateKey\s*=\s*)\S+")

type PushModes = Callable[[Sequence[str]], Awaitable[object]]


class WireGuardModes:
    def __init__(self, service: WireGuardService, conf_dir: Path, push: PushModes) -> None:
        """``push(specs)``: make these the WireGuard modes mitmproxy runs, returning once it
        listens on them (``proxy.modes.Modes.set_dynamic``); every other mode stays."""
        self._service = service
        self._conf_dir = conf_dir
        self._push = push
        self._tunnels: dict[str, Tunnel] = {}  # by conf path (the mode's data)
        self._specs: tuple[str, ...] | None = None
        self._task: asyncio.Task[None] | None = None
        self._again = False
        if service.enabled:
            tune_mitmproxy_logs()

    @property
    def specs(self) -> tuple[str, ...]:
        """The modes pushed last (one per device tunnel)."""
        return self._specs or ()

    # -- the directory of addons.wireguard -------------------------------------------------------

    def tunnel(self, mode: ProxyMode) -> Tunnel | None:
        return self._tunnels.get(mode.data)

    # -- keeping in step -------------------------------------------------------------------------

    def changed(self) -> None:
        """A device subscriber (called on the loop): sync soon. Changes that arrive while a sync
        runs make one more sync after it, not one each."""
        if self._task is not None and not self._task.done():
            self._again = True
            return
        self._task = asyncio.get_running_loop().create_task(self._syncing(), name="wireguard sync")

    async def _syncing(self) -> None:
        while True:
            self._again = False
            try:
                await self.sync()
            except Exception:  # a failed sync must not stop the next: log it, try on the next change
                logger.exception("WireGuard: could not bring the device listeners in step")
            if not self._again:
                return

    async def sync(self) -> tuple[str, ...]:
        """Conf files and modes for every device tunnel; pushed when they changed."""
        if not self._service.enabled:
            return ()
        tunnels = self._service.reconcile()
        wanted: dict[str, Tunnel] = {}
        specs: list[str] = []
        for tunnel in tunnels:
            conf = str(self._write_conf(tunnel))
            wanted[conf] = Tunnel(tunnel.device_id, tunnel.address)
            specs.append(self._spec(conf, tunnel.port))
        self._tunnels = {**self._tunnels, **wanted}  # known before their listeners start
        if tuple(specs) != self._specs:
            await self._push(specs)
            self._specs = tuple(specs)
            logger.info("WireGuard: %d device listeners", len(specs))
        self._tunnels = wanted
        self._remove_confs(keep={t.device_id for t in tunnels})
        return self._specs

    async def aclose(self) -> None:
        """Wait for a sync under way, then remove every conf file (start-up writes them again
        from the store)."""
        if self._task is not None:
            self._again = False
            await asyncio.gather(self._task, return_exceptions=True)
        self._remove_confs(keep=set())

    # -- conf files -----------------------------------------------------------------------------

    def _spec(self, conf: str, port: int) -> str:
        settings = self._service.settings
        assert settings is not None
        return f"wireguard:{conf}@{settings.listen_host}:{port}"

    def _conf_path(self, device_id: str) -> Path:
        return self._conf_dir / f"{device_id}{CONF_SUFFIX}"

    def _write_conf(self, tunnel: WireGuardTunnel) -> Path:
        """mitmproxy's conf file for the device's listener: written 0600 when new or changed."""
        keys = self._service.listener_keys(tunnel)
        text = json.dumps({"server_key": keys.server_key, "client_key": keys.client_key}, indent=4)
        path = self._conf_path(tunnel.device_id)
        try:
            if path.read_text() == text:
                return path
        except OSError:
            pass  # missing: written below
        self._conf_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.unlink(missing_ok=True)
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(text)
        temporary.replace(path)
        return path

    def _remove_confs(self, keep: set[str]) -> None:
        if not self._conf_dir.is_dir():
            return
        for path in self._conf_dir.iterdir():
            if path.suffix in (CONF_SUFFIX, ".tmp") and path.stem not in keep:
                path.unlink(missing_ok=True)


class _RedactPrivateKeys(logging.Filter):
    """Replaces every ``PrivateKey = ...`` value in a record's message with ``<hidden>``."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "PrivateKey" in message:
            record.msg = _PRIVATE_KEY.sub(r"\1<hidden>", message)
            record.args = None
        return True


def tune_mitmproxy_logs() -> None:
    """Keep WireGuard private keys out of mitmproxy's log (it logs a new listener's client
    configuration at INFO, the device's private key in it), and keep mitmproxy_rs's line about
    a handshake it refused (an unknown peer's key, at INFO) although the rest of mitmproxy logs
    only warnings. Idempotent."""
    target = logging.getLogger(MITMPROXY_MODE_LOGGER)
    if not any(isinstance(f, _RedactPrivateKeys) for f in target.filters):
        target.addFilter(_RedactPrivateKeys())
    packets = logging.getLogger(MITMPROXY_RS_WIREGUARD_LOGGER)
    if packets.getEffectiveLevel() > logging.INFO:
        packets.setLevel(logging.INFO)


def with_device_tunnels(config: Config, *, ports: str | None, endpoint: str | None) -> Config:
    """``config`` with its WireGuard device tunnels (``gateway run``'s options):

    - ``--wireguard-ports [HOST:]FIRST-LAST``: one UDP port per device on HOST (default
      127.0.0.1, as every gateway default);
    - ``--mode wireguard@HOST:PORT`` (no CONF): the same as ``HOST:PORT-PORT+99``, taken out of
      the configured modes (a ``wireguard:CONF@...`` mode stays mitmproxy's own, one peer for
      whoever holds CONF's client key, no device identity);
    - ``--wireguard-endpoint HOST``: the host in device configurations (default: the listen
      host, or the public URL's host when listening on every address).

    Neither given: tunnels off. ConfigError names the option."""
    device_modes = [spec for spec in config.modes if _is_device_mode(spec)]
    if len(device_modes) > 1 or (device_modes and ports):
        given = [f"--mode {s}" for s in device_modes] + ([f"--wireguard-ports {ports}"] if ports else [])
        raise ConfigError(f"{' and '.join(given)}: give the device tunnels' ports once")
    if device_modes:
        mode = ProxyMode.parse(device_modes[0])
        port = mode.listen_port() or mode.default_port or 51820
        ports = f"{mode.listen_host(DEFAULT_LISTEN_HOST)}:{port}-{min(65535, port + DEVICE_MODE_PORTS - 1)}"
    elif not ports:
        if endpoint:
            raise ConfigError("--wireguard-endpoint: device tunnels are off (give --wireguard-ports)")
        return config
    host, _, range_text = ports.rpartition(":")
    host = host.removeprefix("[").removesuffix("]") or DEFAULT_LISTEN_HOST
    try:
        port_range = parse_ports(range_text)
    except ValueError as e:
        raise ConfigError(f"--wireguard-ports {e}") from None
    if not endpoint:
        wildcard = host in ("0.0.0.0", "::", "")
        endpoint = (urllib.parse.urlsplit(config.public_base_url).hostname or "") if wildcard else host
    settings = WireGuardSettings(listen_host=host, ports=port_range, endpoint_host=endpoint)
    rest = tuple(spec for spec in config.modes if spec not in device_modes)
    return dataclasses.replace(config, modes=rest, wireguard=settings)


def _is_device_mode(spec: str) -> bool:
    try:
        mode = ProxyMode.parse(spec)
    except ValueError:
        return False  # Modes.from_specs says what is wrong with it
    return mode.type_name == "wireguard" and not mode.data
