"""Gateway's CA handling inside stock mitmproxy: the composition root for ``mitmdump -s``.

    mitmdump -s proxy/mitmdump_script.py --set gateway_data_dir=./var

Signs every intercepted leaf with the in-use CA of a gateway data directory (a leaf key of its
own, as ``gateway run`` does) and follows changes made through the gateway's admin API: the
store is read again every ``gateway_sync_seconds``. This process registers as a node of the
store (``proxy.node_sync.CaNode``, as ``gateway run`` does), so a newly activated CA stays
pending until it has loaded it too.

Scripts load before mitmproxy's TlsConfig and cannot replace it, so this addon lends its
``get_cert`` to the stock TlsConfig instance; everything else (ALPN, upstream verification)
stays stock. mitmdump loads this file by path; its imports resolve through the installed
``gateway`` package (``pip install -e .`` puts ``proxy``, ``addons`` and ``certs`` on the path).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from contextlib import ExitStack, closing
from pathlib import Path

from mitmproxy import ctx, exceptions
from mitmproxy.addonmanager import Loader

from addons.inspection import HotTlsConfig, refuse_forbidden_options
from certs.clock import utcnow
from proxy.config import ConfigError, load_master_key
from proxy.node_sync import CaNode, IssuerSettings
from proxy.services.certificates import CertificateService
from proxy.store import Store

logger = logging.getLogger(__name__)


class GatewayScript:
    def __init__(self) -> None:
        self.signer = HotTlsConfig()  # never registered: lends get_cert to the stock TlsConfig
        self.node: CaNode | None = None
        self._opened = ExitStack()  # the data directory's steps: store, then node; undone in reverse
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
        """The store, then this node live in it; each undone if a later step fails."""
        self._close()
        with ExitStack() as steps:
            store = steps.enter_context(closing(Store.open(data_dir / "gateway.db")))
            accounts = store.accounts.list()
            if not accounts:
                raise ConfigError(f"the store in {data_dir} has no account yet")
            node = CaNode(
                CertificateService(store, load_master_key(data_dir, os.environ), utcnow),
                self.signer,
                account_id=accounts[0].id,
                settings=IssuerSettings(public_base_url=ctx.options.gateway_public_url.rstrip("/")),
            )
            steps.enter_context(node.live(f"mitmdump {socket.gethostname()} pid {os.getpid()}"))
            self._opened = steps.pop_all()
        self.node = node
        if node.in_use_id is None:
            logger.warning("no certificate is in use in %s: TLS interception is refused", data_dir)

    def _close(self) -> None:
        self.node = None
        self._opened.close()

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
        self._close()


addons = [GatewayScript()]
