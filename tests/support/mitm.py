"""A mitmproxy master's proxy listening on loopback for a test, under mitmproxy's eager task
factory as ``Master.run`` sets it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from mitmproxy.master import Master
from mitmproxy.utils import asyncio_utils


@asynccontextmanager
async def listening(master: Master, port: int, **option_values: Any) -> AsyncIterator[None]:
    """``master`` (its addons added) proxying on ``127.0.0.1:port`` in regular mode, with
    ``option_values`` set too; its servers stopped on the way out."""
    master.options.update(mode=[f"regular@127.0.0.1:{port}"], **option_values)
    proxyserver = master.addons.get("proxyserver")
    with asyncio_utils.set_eager_task_factory():
        await proxyserver.setup_servers()
        try:
            yield
        finally:
            await proxyserver.servers.update([])
