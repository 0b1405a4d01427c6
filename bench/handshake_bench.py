"""The proxy's client-side TLS set-up per handshake, in-process: HotTlsConfig.tls_start_client vs
stock mitmproxy's TlsConfig.tls_start_client on the same addon (so the same issuer and leaves).

"new" = an SNI never seen (a leaf is issued and converted for OpenSSL), "same" = one SNI again
(the leaf comes from the cache). Rounds alternate the two; each prints the CPU-time median per
call (time.thread_time_ns) in µs. The handshake itself (key exchange, signature) is not included:
this is the set-up mitmproxy does before it, which issue 11 made cheaper.

Run:  .venv/bin/python bench/handshake_bench.py [--rounds 3] [-n 300]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from mitmproxy import connection, tls
from mitmproxy.addons import tlsconfig
from mitmproxy.proxy import context
from mitmproxy.test import taddons

from addons.inspection import HotTlsConfig
from certs.authority import CertificateAuthority
from certs.issuer import LeafIssuer


def _data(tctx: taddons.context, sni: str) -> tls.TlsData:
    client = connection.Client(peername=("127.0.0.1", 5000), sockname=("127.0.0.1", 8080), timestamp_start=0)
    client.sni = sni
    ctx = context.Context(client, tctx.options)
    ctx.server.address = (sni, 443)
    return tls.TlsData(client, context=ctx)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("-n", type=int, default=300, help="calls per case and round (default 300)")
    a = p.parse_args()
    ca = CertificateAuthority.generate(common_name="Handshake bench CA", organization="Gateway bench")
    hot = HotTlsConfig()
    with taddons.context(hot) as tctx:
        tctx.configure(hot, confdir=tempfile.mkdtemp(prefix="handshake-bench-"))
        hot.use_issuer(LeafIssuer(ca))
        setups: dict[str, Callable[[tls.TlsData], None]] = {
            "gateway": hot.tls_start_client,
            "stock": lambda data: tlsconfig.TlsConfig.tls_start_client(hot, data),
        }
        print("round  case  gateway us  stock us  gateway/stock")
        for rnd in range(a.rounds):
            for case in ("new", "same"):
                medians = {}
                order = list(setups) if rnd % 2 == 0 else list(reversed(setups))
                for label in order:
                    samples = []
                    for i in range(a.n):
                        sni = f"n{i}.{rnd}.{label}.bench.test" if case == "new" else "same.bench.test"
                        data = _data(tctx, sni)
                        start = time.thread_time_ns()
                        setups[label](data)
                        samples.append(time.thread_time_ns() - start)
                    medians[label] = statistics.median(samples) / 1000
                ratio = medians["gateway"] / medians["stock"]
                print(
                    f"{rnd + 1:5}  {case:4}  {medians['gateway']:10.1f}  {medians['stock']:8.1f}  {ratio:13.2f}"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
