"""Load client, run as its own process: ``python bench/loadclient.py < spec.json``.

It owns its event loop and its core share, so the orchestrator (and any proxy) never runs on the
same loop. Protocol on stdout, one line each: ``START``, when the timed phase begins (after
keep-alive connections are set up); ``END``, when the last operation finished; then
``RESULT {json}``.

Spec (JSON on stdin):
  mode         "close"     -- one new connection per request: [CONNECT] -> TLS(SNI) -> GET -> read to EOF
               "keepalive" -- `concurrency` persistent connections, each sending sequential GETs
  proxy        [host, port] or null (null = direct TLS to `origin`)
  proxy_headers  optional {name: value} sent on each CONNECT (e.g. a device's Proxy-Authorization)
  origin       [ip, port]   where the origin listens (used directly, or as the CONNECT port)
  host         one name for every request (same-host / keep-alive), or
  host_fmt, host_start  names host_fmt.format(host_start + i), one per request (new-host)
  cafile       CA the client trusts (proxy CA when intercepting, origin CA when direct)
  concurrency, count, time_limit, op_timeout

Mode "ab" (several proxies, slices in turn): ``proxies`` [[host, port], ...], ``cafiles`` [ca0,
...], ``order`` a list of proxy indexes (which proxy each slice loads), ``slice_s``, ``scenario``
"keep-alive" (``concurrency`` persistent connections opened to each proxy before ``START``),
optionally ``proxies_headers`` [{name: value}, ...] (each proxy's CONNECT headers),
"same-host" (new connections to ``host``) or "new-host" (a new name per connection:
``host_fmt.format(host_start + slice * names_per_slice + j)``). Per slice, ``SLICE i k`` is
printed, only proxy k gets work until ``slice_s`` has passed (operations in flight finish), and
``SLICE_END i k`` is printed. The result lists each slice's operations, elapsed time and latency
percentiles.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import sys
import time
from collections import Counter
from typing import Any

BODY_MARKER = b"gateway-bench-origin"


class BenchError(Exception):
    pass


def make_context(cafile: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=cafile)  # verifies chain and host name: a bad leaf fails
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


async def open_tls(spec: dict[str, Any], ctx: ssl.SSLContext, host: str):
    o_ip, o_port = spec["origin"]
    if spec["proxy"] is None:
        return await asyncio.open_connection(o_ip, o_port, ssl=ctx, server_hostname=host)
    p_host, p_port = spec["proxy"]
    r, w = await asyncio.open_connection(p_host, p_port)
    extra = "".join(f"{k}: {v}\r\n" for k, v in spec.get("proxy_headers", {}).items())
    w.write(f"CONNECT {host}:{o_port} HTTP/1.1\r\nHost: {host}:{o_port}\r\n{extra}\r\n".encode())
    status = await r.readline()
    if b" 200" not in status:
        w.close()
        raise BenchError(f"CONNECT answered {status.strip()[:60]!r}")
    while (await r.readline()) not in (b"\r\n", b""):
        pass
    await w.start_tls(ctx, server_hostname=host)
    return r, w


async def read_response(r: asyncio.StreamReader) -> bytes:
    head = await r.readuntil(b"\r\n\r\n")
    status_line, _, rest = head.partition(b"\r\n")
    if b" 200 " not in status_line + b" ":
        raise BenchError(f"status {status_line[:60]!r}")
    length = None
    for line in rest.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    if length is None:
        raise BenchError("no Content-Length in response")
    body = await r.readexactly(length)
    if BODY_MARKER not in body:
        raise BenchError("unexpected body")
    return body


class Run:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.ctx = make_context(spec["cafile"])
        self.latencies: list[int] = []  # microseconds, successful operations only
        self.tls_latencies: list[int] = []
        self.errors: Counter[str] = Counter()
        self.samples: list[str] = []
        self.next = 0
        self.deadline = 0.0

    def error(self, exc: BaseException) -> None:
        kind = type(exc).__name__
        self.errors[kind] += 1
        if len(self.samples) < 5:
            self.samples.append(f"{kind}: {exc}"[:200])

    def host(self, i: int) -> str:
        if "host" in self.spec:
            return self.spec["host"]
        return self.spec["host_fmt"].format(self.spec["host_start"] + i)

    def take(self) -> int | None:
        if self.next >= self.spec["count"] or time.perf_counter() >= self.deadline:
            return None
        self.next += 1
        return self.next - 1

    async def one_close(self, i: int) -> None:
        host = self.host(i)
        t0 = time.perf_counter_ns()
        r, w = await open_tls(self.spec, self.ctx, host)
        t1 = time.perf_counter_ns()
        try:
            w.write(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            await read_response(r)
        finally:
            w.transport.abort()
        t2 = time.perf_counter_ns()
        self.tls_latencies.append((t1 - t0) // 1000)
        self.latencies.append((t2 - t0) // 1000)

    async def worker_close(self) -> None:
        while (i := self.take()) is not None:
            try:
                async with asyncio.timeout(self.spec["op_timeout"]):
                    await self.one_close(i)
            except Exception as e:  # noqa: BLE001 - counted and reported, never hidden
                self.error(e)

    async def worker_keepalive(self, conn, host: str) -> None:
        r, w = conn
        request = f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
        try:
            while self.take() is not None:
                t0 = time.perf_counter_ns()
                try:
                    async with asyncio.timeout(self.spec["op_timeout"]):
                        w.write(request)
                        await read_response(r)
                except Exception as e:  # noqa: BLE001
                    self.error(e)
                    return  # this connection is broken; the others go on
                self.latencies.append((time.perf_counter_ns() - t0) // 1000)
        finally:
            w.transport.abort()

    async def main(self) -> dict[str, Any]:
        spec = self.spec
        conc = spec["concurrency"]
        conns = []
        if spec["mode"] == "keepalive":
            host = self.host(0)
            for _ in range(conc):
                try:
                    async with asyncio.timeout(spec["op_timeout"]):
                        conns.append(await open_tls(spec, self.ctx, host))
                except Exception as e:  # noqa: BLE001
                    self.error(e)
        print("START", flush=True)
        cpu0, t0 = time.process_time(), time.perf_counter()
        self.deadline = t0 + spec["time_limit"]
        if spec["mode"] == "keepalive":
            await asyncio.gather(*(self.worker_keepalive(c, host) for c in conns))
        else:
            await asyncio.gather(*(self.worker_close() for _ in range(conc)))
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        print("END", flush=True)
        return {
            "ok": len(self.latencies),
            "attempted": self.next,
            "errors": dict(self.errors),
            "error_samples": self.samples,
            "elapsed_s": elapsed,
            "client_cpu_s": cpu,
            "latency_us": self.latencies,
            "tls_latency_us": self.tls_latencies,
            "hit_time_limit": time.perf_counter() >= self.deadline and self.next < spec["count"],
        }


class AbRun(Run):
    """Several proxies, one slice at a time: keep-alive requests, or new connections (same host, or
    a new host name per connection from the slice's own range of names)."""

    async def main(self) -> dict[str, Any]:
        spec = self.spec
        conc, scenario = spec["concurrency"], spec.get("scenario", "keep-alive")
        headers = spec.get("proxies_headers") or [{} for _ in spec["proxies"]]
        subs = [
            dict(spec, proxy=proxy, proxy_headers=h)
            for proxy, h in zip(spec["proxies"], headers, strict=True)
        ]
        ctxs = [make_context(cafile) for cafile in spec["cafiles"]]
        conns: list[list[Any]] = [[] for _ in subs]
        if scenario == "keep-alive":
            for k in range(len(subs)):
                for _ in range(conc):
                    async with asyncio.timeout(spec["op_timeout"]):
                        conns[k].append(await open_tls(subs[k], ctxs[k], spec["host"]))
        request = f"GET / HTTP/1.1\r\nHost: {spec['host']}\r\n\r\n".encode()
        slices = []
        print("START", flush=True)
        cpu0 = time.process_time()

        async def keepalive(conn, deadline: float, lat: list[int]) -> None:
            r, w = conn
            while time.perf_counter() < deadline:
                t0 = time.perf_counter_ns()
                try:
                    async with asyncio.timeout(spec["op_timeout"]):
                        w.write(request)
                        await read_response(r)
                except Exception as e:
                    self.error(e)  # counted and reported; a broken connection ends the run
                    raise
                lat.append((time.perf_counter_ns() - t0) // 1000)

        async def connections(k: int, names: Any, deadline: float, lat: list[int]) -> None:
            while time.perf_counter() < deadline and (host := next(names, None)) is not None:
                t0 = time.perf_counter_ns()
                try:
                    async with asyncio.timeout(spec["op_timeout"]):
                        r, w = await open_tls(subs[k], ctxs[k], host)
                        try:
                            w.write(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
                            await read_response(r)
                        finally:
                            w.transport.abort()
                except Exception as e:
                    self.error(e)
                    raise
                lat.append((time.perf_counter_ns() - t0) // 1000)

        try:
            for i, k in enumerate(spec["order"]):
                print(f"SLICE {i} {k}", flush=True)
                lat: list[int] = []
                t0 = time.perf_counter()
                deadline = t0 + spec["slice_s"]
                if scenario == "keep-alive":
                    await asyncio.gather(*(keepalive(c, deadline, lat) for c in conns[k]))
                else:
                    if scenario == "new-host":  # names never used before, a range per slice
                        first = spec["host_start"] + i * spec["names_per_slice"]
                        names = iter(
                            [spec["host_fmt"].format(first + j) for j in range(spec["names_per_slice"])]
                        )
                    else:
                        names = iter([spec["host"]] * 10**6)
                    await asyncio.gather(*(connections(k, names, deadline, lat) for _ in range(conc)))
                elapsed = time.perf_counter() - t0
                print(f"SLICE_END {i} {k}", flush=True)
                lat.sort()
                slices.append(
                    {
                        "slice": i,
                        "proxy": k,
                        "ok": len(lat),
                        "elapsed_s": elapsed,
                        "latency_p50_ms": lat[len(lat) // 2] / 1000 if lat else None,
                        "latency_p99_ms": lat[min(len(lat) - 1, int(0.99 * len(lat)))] / 1000
                        if lat
                        else None,
                    }
                )
        except Exception:  # noqa: BLE001 - already counted in self.errors, reported in the result
            pass
        finally:
            for side in conns:
                for _, w in side:
                    w.transport.abort()
        print("END", flush=True)
        return {
            "slices": slices,
            "errors": dict(self.errors),
            "error_samples": self.samples,
            "client_cpu_s": time.process_time() - cpu0,
        }


def main() -> None:
    spec = json.load(sys.stdin)
    result = asyncio.run((AbRun if spec["mode"] == "ab" else Run)(spec).main())
    sys.stdout.write("RESULT " + json.dumps(result) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
