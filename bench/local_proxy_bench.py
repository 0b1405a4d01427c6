"""What the agent's local proxy adds to a keep-alive request: latency through the gateway alone
vs through ``gateway agent proxy`` → gateway, interleaved in one run.

Sets up nginx (HTTPS origin), ``gateway run``, a device enrolled with ``gateway agent enroll`` and
``gateway agent proxy`` in front of the gateway, all on loopback. Two clients, one per path, each
with one CONNECT tunnel (TLS inside, inspected by the gateway) kept alive: straight to the gateway
with the device's ``Proxy-Authorization`` (so the gateway does the same work), and through the
local proxy without any. Requests are sequential (latency, not throughput); the paths take turns
in rounds, the order flipped every round, so that drift in the machine hits both alike.

Prints p50/p90 per path and the ratio of the medians (local proxy / gateway alone).

Run:  .venv/bin/python bench/local_proxy_bench.py [--requests 2000] [--round 50] [--max-seconds 120] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from pki import Authority, write_host_certs
from targets import BENCH_SUFFIX, Gateway, Origin, free_port, kill_all, spawn, stop, wait_port

HOST = f"lp.{BENCH_SUFFIX}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=2000, help="timed requests per path (default: 2000)")
    parser.add_argument("--round", type=int, default=50, help="requests per path per turn (default: 50)")
    parser.add_argument(
        "--warmup", type=int, default=100, help="untimed requests per path first (default: 100)"
    )
    parser.add_argument("--max-seconds", type=float, default=120, help="stop the timed part after this long")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    return parser.parse_args(argv)


class Tunnel:
    """One CONNECT tunnel through ``proxy``, TLS to the origin inside, requests kept alive."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, proxy: tuple[str, int], port: int, ctx: ssl.SSLContext, auth: str | None) -> Tunnel:
        reader, writer = await asyncio.open_connection(*proxy)
        extra = f"Proxy-Authorization: {auth}\r\n" if auth else ""
        writer.write(f"CONNECT {HOST}:{port} HTTP/1.1\r\nHost: {HOST}:{port}\r\n{extra}\r\n".encode())
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"CONNECT through {proxy}: {head[:200]!r}")
        await writer.start_tls(ctx, server_hostname=HOST)
        return cls(reader, writer)

    async def get(self) -> float:
        started = time.perf_counter()
        self.writer.write(f"GET /bench HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        body = await self.reader.readexactly(length)
        elapsed = time.perf_counter() - started
        if not head.startswith(b"HTTP/1.1 200") or b"gateway-bench-origin ok" not in body:
            raise RuntimeError(f"unexpected answer: {head[:200]!r} {body[:100]!r}")
        return elapsed

    def close(self) -> None:
        self.writer.close()


def _run(argv: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(argv, capture_output=True, env=env, timeout=60, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:3])}: {done.stderr.decode(errors='replace')[-500:]}")
    return done.stdout.decode()


async def bench(args: argparse.Namespace, tmp: Path) -> dict[str, object]:
    gateway_bin = str(REPO / ".venv" / "bin" / "gateway")
    ca = Authority.generate("Local proxy bench origin CA")
    origin_dir = tmp / "origin"
    origin_dir.mkdir()
    write_host_certs(ca, [HOST], origin_dir / "certs", origin_dir / "host.key")
    origin_ca = tmp / "origin-ca.pem"
    origin_ca.write_bytes(ca.cert_pem())
    origin = Origin(origin_dir, "127.0.0.1", free_port())
    await origin.start()
    gw = Gateway("gateway", tmp / "gateway", gateway=gateway_bin, origin_ca=origin_ca)
    gw.workdir.mkdir()
    await gw.start()
    assert gw.proxy is not None and gw.cafile is not None

    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    token = _run([gateway_bin, "device", "token", "--server", gw.admin, "--ttl", "10m"],
                 dict(env, GATEWAY_ADMIN_TOKEN=gw.token)).strip()  # fmt: skip
    state = tmp / "agent" / "state.json"
    _run(
        [
            gateway_bin,
            "agent",
            "enroll",
            "--token",
            token,
            "--email",
            "bench@example.com",
            "--state",
            str(state),
        ],
        env,
    )
    auth = (
        "Basic "
        + __import__("base64")
        .b64encode(_run([gateway_bin, "agent", "credentials", "--state", str(state)], env).strip().encode())
        .decode()
    )
    local_port = free_port()
    local = spawn(
        [gateway_bin, "agent", "proxy", "--state", str(state), "--listen", f"127.0.0.1:{local_port}",
         "--upstream", f"{gw.proxy[0]}:{gw.proxy[1]}"],
        tmp / "local-proxy.log", env=env,
    )  # fmt: skip
    await wait_port("127.0.0.1", local_port, local, 15, "local proxy")

    ctx = ssl.create_default_context(cafile=str(gw.cafile))
    paths = {
        "gateway": await Tunnel.open(gw.proxy, origin.port, ctx, auth),
        "local proxy -> gateway": await Tunnel.open(("127.0.0.1", local_port), origin.port, ctx, None),
    }
    times: dict[str, list[float]] = {name: [] for name in paths}
    try:
        for tunnel in paths.values():
            for _ in range(args.warmup):
                await tunnel.get()
        started = time.monotonic()
        order = list(paths)
        while (
            min(len(t) for t in times.values()) < args.requests
            and time.monotonic() - started < args.max_seconds
        ):
            for name in order:
                for _ in range(args.round):
                    times[name].append(await paths[name].get())
            order.reverse()
    finally:
        for tunnel in paths.values():
            tunnel.close()
        await stop(local)
        await gw.stop()
        await stop(origin.proc)

    def ms(values: list[float], q: float) -> float:
        return round(statistics.quantiles(values, n=100)[int(q) - 1] * 1000, 3)

    figures: dict[str, object] = {
        name: {"requests": len(v), "p50_ms": ms(v, 50), "p90_ms": ms(v, 90)} for name, v in times.items()
    }
    base, via = statistics.median(times["gateway"]), statistics.median(times["local proxy -> gateway"])
    figures["ratio_p50"] = round(via / base, 3)
    figures["added_p50_ms"] = round((via - base) * 1000, 3)
    figures["cpus"] = os.cpu_count()
    return figures


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="gateway-local-proxy-bench-") as tmp:
        try:
            figures = asyncio.run(bench(args, Path(tmp)))
        finally:
            kill_all()
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        for name in ("gateway", "local proxy -> gateway"):
            f = figures[name]
            assert isinstance(f, dict)
            print(
                f"{name:24} {f['requests']:6d} requests  p50 {f['p50_ms']:7.3f} ms  p90 {f['p90_ms']:7.3f} ms"
            )
        print(
            f"ratio (p50, local proxy / gateway alone): {figures['ratio_p50']}  (+{figures['added_p50_ms']} ms)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
