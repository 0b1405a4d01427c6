"""The compose lab's origin: the demo sites of ``gateway demo`` (proxy/demo/origins.py) on every
interface, with a lab CA made at start.

    python docker/lab_origin.py LAB_DIR [HOST:PORT]

Writes ``LAB_DIR/origin-ca.pem`` (the gateway trusts it upstream: ``--upstream-ca``) and the demo
policies ``LAB_DIR/demo.yaml`` (``--policies``), then serves www/blocked/secure/bank.demo.test by
SNI until SIGTERM. Only the compose lab runs it; ``gateway demo`` serves the same sites on loopback.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from pathlib import Path

from aiohttp import web

from proxy.demo import policies
from proxy.demo.origins import SITE_NAMES, app, tls_context
from proxy.demo.pki import LabPki, write_leaf

logger = logging.getLogger("lab_origin")


async def serve(lab: Path, host: str, port: int) -> None:
    pki = LabPki.generate()
    keys = lab / "origin-keys"
    keys.mkdir(mode=0o700, exist_ok=True)
    files = {name: write_leaf(leaf, keys, name) for name, leaf in pki.origin_leaves(SITE_NAMES).items()}
    policies.write(lab)
    runner = web.AppRunner(app(), handle_signals=False, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port, ssl_context=tls_context(files)).start()
    # Written last: the gateway waits for it, so it starts once the sites answer.
    (lab / "origin-ca.pem.tmp").write_text(pki.origin_ca.certificate_pem())
    (lab / "origin-ca.pem.tmp").replace(lab / "origin-ca.pem")
    logger.info("demo sites %s on %s:%d", ", ".join(SITE_NAMES), host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def main(argv: list[str]) -> int:
    if not 1 <= len(argv) <= 2:
        print("usage: lab_origin.py LAB_DIR [HOST:PORT]", file=sys.stderr)
        return 2
    host, _, port = (argv[1] if len(argv) == 2 else "0.0.0.0:443").rpartition(":")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(serve(Path(argv[0]), host, int(port)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
