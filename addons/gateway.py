"""Gateway's CA handling inside stock mitmproxy.

    mitmdump -s addons/gateway.py --set gateway_data_dir=./var

Signs every intercepted leaf with the in-use CA of a gateway data directory (a leaf key of its
own, as ``gateway run`` does) and follows changes made through the gateway's admin API: the
store is read again every ``gateway_sync_seconds``. This process registers as a node of the
store, so a newly activated CA stays pending until it has loaded it too.

Scripts load before mitmproxy's TlsConfig and cannot replace it, so this addon lends its
``get_cert`` to the stock TlsConfig instance; everything else (ALPN, upstream verification)
stays stock. This file is a composition root for mitmdump, like ``proxy/runtime.py`` for
``gateway run``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from pathlib import Path

from mitmproxy import ctx, exceptions
from mitmproxy.addonmanager import Loader

from addons.inspection import HotTlsConfig, refuse_forbidden_options
from certs.clock import utcnow
from proxy.config import ConfigError, load_master_key
from proxy.node import CaNode, IssuerSettings
from proxy.services.certificates import CertificateService
from proxy.store import Store

logger = logging.getLogger(__name__)


class GatewayScript:
    def __init__(self) -> None:
        self.signer = HotTlsConfig()  # never registered: lends get_cert to the stock TlsConfig
        self.store: Store | None = None
        self.node: CaNode | None = None
        self._timer: asyncio.Task[None] | None = None

    def load(self, loader: Loader) -> None:
        loader.add_option("gateway_data_dir", str, "", "Gateway data directory whose in-use CA signs leaves.")
        loader.add_option(
            "gateway_public_url",
            str,
            "http://127.0.0.1:8081",
            "Base URL of the gateway admin server, for the CA and CRL links in leaves.",
        )
        loader.add_option("gateway_sync_seconds", int, 1, "How often to read CA changes from the store.")

    def configure(self, updated: set[str]) -> None:
        refuse_forbidden_options()
        if "gateway_data_dir" not in updated and "gateway_public_url" not in updated:
            return
        data_dir = Path(ctx.options.gateway_data_dir).expanduser()
        if not ctx.options.gateway_data_dir or not (data_dir / "gateway.db").is_file():
            raise exceptions.OptionsError(
                f"gateway_data_dir: no gateway store in {str(data_dir)!r}; start `gateway run --data-dir DIR` once first"
            )
        try:
            self._open(data_dir)
        except (ConfigError, OSError) as e:
            raise exceptions.OptionsError(f"gateway_data_dir: {e}") from e
        stock = ctx.master.addons.get("tlsconfig")
        stock.get_cert = self.signer.get_cert

    def _open(self, data_dir: Path) -> None:
        self.done()
        store = Store.open(data_dir / "gateway.db")
        accounts = store.accounts.list()
        if not accounts:
            store.close()
            raise ConfigError(f"the store in {data_dir} has no account yet")
        service = CertificateService(store, load_master_key(data_dir, os.environ), utcnow)
        self.store = store
        self.node = CaNode(
            service,
            self.signer,
            account_id=accounts[0].id,
            settings=IssuerSettings(public_base_url=ctx.options.gateway_public_url.rstrip("/")),
        )
        self.node.start(f"mitmdump {socket.gethostname()} pid {os.getpid()}")
        if self.node.in_use_id is None:
            logger.warning("no certificate is in use in %s: TLS interception is refused", data_dir)

    def running(self) -> None:
        self._timer = asyncio.get_running_loop().create_task(self._follow())

    async def _follow(self) -> None:
        while True:
            await asyncio.sleep(max(1, ctx.options.gateway_sync_seconds))
            if self.node is not None:
                try:
                    self.node.sync()
                except Exception:  # keep following; the next round may succeed
                    logger.exception("could not read CA changes from the gateway store")

    def done(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.node is not None:
            self.node.stop()
            self.node = None
        if self.store is not None:
            self.store.close()
            self.store = None


addons = [GatewayScript()]
