"""WireGuard device tunnel vs explicit proxy: keep-alive requests/s and gateway CPU per request.

Sets up nginx (HTTPS origin on loopback), one ``gateway run --wireguard-ports`` and one enrolled
device, a client network namespace joined by a veth pair made here (10.214.250.0/30, private and
used only between the two namespaces), and Debian's userspace ``wireguard-go`` in it configured
from ``gateway agent wireguard --format wg``. Two paths reach the same origin through the same
gateway, both identified as the device and inspected:

  explicit   curl -x the gateway's proxy, with the device's credentials, in the root namespace
  wireguard  curl in the namespace, through the tunnel (mitmproxy's userspace WireGuard)

Each turn, one curl per path fetches ``--round`` URLs over one kept-alive connection; the paths
take turns, the order flipped every turn, so that machine drift hits both alike. The gateway's
CPU (user + system, /proc) is read around each turn. Prints requests/s and CPU ms per request per
path, and the ratios. Needs root, /dev/net/tun, ip, wireguard-go, wg, curl and nginx. Bounded by
``--requests`` and ``--max-seconds``; everything it made is removed at the end.

Run:  .venv/bin/python bench/wireguard_bench.py [--requests 2000] [--round 100] [--max-seconds 120] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from pki import Authority, write_host_certs
from targets import BENCH_SUFFIX, Gateway, Origin, free_port, kill_all, tree_cpu_seconds

HOST = f"wg.{BENCH_SUFFIX}"
NS = "gwbench-wg"
VETH = ("gwbwga", "gwbwgb")
IFACE = "gwbwg0"
ROOT, CLIENT, VIRTUAL = "10.214.250.1", "10.214.250.2", "10.214.250.9"
WG_PORTS = (51990, 51993)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=2000, help="timed requests per path (default: 2000)")
    parser.add_argument(
        "--round", type=int, default=100, help="requests per curl, per path per turn (default: 100)"
    )
    parser.add_argument("--max-seconds", type=float, default=120, help="stop the timed part after this long")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    return parser.parse_args(argv)


def sh(*argv: str, env: dict[str, str] | None = None, check: bool = True) -> str:
    done = subprocess.run(list(argv), capture_output=True, env=env, timeout=120, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])}: {done.stderr.decode(errors='replace')[-500:]}")
    return done.stdout.decode()


def network_up() -> subprocess.Popen[bytes]:
    sh("ip", "netns", "add", NS)
    sh("ip", "link", "add", VETH[0], "type", "veth", "peer", "name", VETH[1])
    sh("ip", "link", "set", VETH[1], "netns", NS)
    sh("ip", "address", "add", f"{ROOT}/30", "dev", VETH[0])
    sh("ip", "address", "add", f"{VIRTUAL}/32", "dev", VETH[0])
    sh("ip", "link", "set", VETH[0], "up")
    sh("ip", "-n", NS, "address", "add", f"{CLIENT}/30", "dev", VETH[1])
    sh("ip", "-n", NS, "link", "set", VETH[1], "up")
    sh("ip", "-n", NS, "link", "set", "lo", "up")
    env = dict(os.environ, WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD="1")
    wg = subprocess.Popen(["ip", "netns", "exec", NS, "wireguard-go", "-f", IFACE], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    for _ in range(200):
        if subprocess.run(["ip", "-n", NS, "link", "show", IFACE], capture_output=True).returncode == 0:
            return wg
        time.sleep(0.05)
    raise RuntimeError("wireguard-go made no interface")


def network_down(wg: subprocess.Popen[bytes] | None) -> None:
    if wg is not None:
        wg.kill()
        wg.wait(10)
    sh("ip", "netns", "del", NS, check=False)
    sh("ip", "link", "del", VETH[0], check=False)
    Path(f"/var/run/wireguard/{IFACE}.sock").unlink(missing_ok=True)


async def bench(args: argparse.Namespace, tmp: Path) -> dict[str, object]:
    gateway_bin = str(REPO / ".venv" / "bin" / "gateway")
    ca = Authority.generate("WireGuard bench origin CA")
    origin_dir = tmp / "origin"
    origin_dir.mkdir()
    write_host_certs(ca, [HOST], origin_dir / "certs", origin_dir / "host.key")
    origin_ca = tmp / "origin-ca.pem"
    origin_ca.write_bytes(ca.cert_pem())
    origin = Origin(origin_dir, "127.0.0.1", free_port())
    await origin.start()
    hosts = tmp / "hosts"
    hosts.write_text(f"127.0.0.1 *.{BENCH_SUFFIX} {VIRTUAL}\n")
    wg = None
    gw = None
    try:
        wg = network_up()
        gw = Gateway("gateway", tmp / "gateway", gateway=gateway_bin, origin_ca=origin_ca,
                     extra_args=["--hosts", str(hosts), "--wireguard-ports", f"{ROOT}:{WG_PORTS[0]}-{WG_PORTS[1]}"])  # fmt: skip
        gw.workdir.mkdir()
        await gw.start()
        assert gw.proxy is not None and gw.cafile is not None and gw.proc is not None
        env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
        token = sh(gateway_bin, "device", "token", "--server", gw.admin, "--ttl", "10m",
                   env=dict(env, GATEWAY_ADMIN_TOKEN=gw.token)).strip()  # fmt: skip
        state = str(tmp / "agent" / "state.json")
        sh(
            gateway_bin,
            "agent",
            "enroll",
            "--token",
            token,
            "--email",
            "bench@example.com",
            "--state",
            state,
            env=env,
        )
        userinfo = sh(gateway_bin, "agent", "credentials", "--state", state, env=env).strip()
        conf = tmp / "wg.conf"
        conf.write_text(sh(gateway_bin, "agent", "wireguard", "--format", "wg", "--state", state, env=env))
        conf.chmod(0o600)
        quick = sh(gateway_bin, "agent", "wireguard", "--state", state, env=env)
        address = re.search(r"^Address = (\S+)$", quick, re.M)
        assert address
        sh("ip", "netns", "exec", NS, "wg", "setconf", IFACE, str(conf))
        sh("ip", "-n", NS, "address", "add", address.group(1), "dev", IFACE)
        sh("ip", "-n", NS, "link", "set", IFACE, "up")
        sh("ip", "-n", NS, "route", "replace", "default", "dev", IFACE)

        url = f"https://{HOST}:{origin.port}/bench"
        proxy = f"http://127.0.0.1:{gw.proxy[1]}"
        prefixes = {
            "explicit": ["env", "-u", "http_proxy", "-u", "https_proxy"],
            "wireguard": ["ip", "netns", "exec", NS],
        }
        extra = {"explicit": ["-x", proxy, "--proxy-user", userinfo], "wireguard": []}
        done = {name: 0 for name in prefixes}
        seconds = {name: 0.0 for name in prefixes}
        cpu = {name: 0.0 for name in prefixes}
        connects = {name: 0 for name in prefixes}  # curl's new connections: 1 per curl when kept alive

        def turn(name: str, count: int) -> None:
            resolve = f"{HOST}:{origin.port}:{VIRTUAL}" if name == "wireguard" else None
            pid = gw.proc.pid if gw is not None and gw.proc is not None else None
            before_cpu, before = tree_cpu_seconds(pid), time.perf_counter()
            _curl(name, count, resolve)
            seconds[name] += time.perf_counter() - before
            cpu[name] += tree_cpu_seconds(pid) - before_cpu
            done[name] += count

        def _curl(name: str, count: int, resolve: str | None) -> None:
            assert gw is not None and gw.cafile is not None
            argv = [*prefixes[name], "curl", "-sS", "--fail", "--max-time", "60", "--cacert", str(gw.cafile),
                    "-w", "%{num_connects}\\n", *extra[name]]  # fmt: skip
            if resolve:
                argv += ["--resolve", resolve]
            for _ in range(count):
                argv += ["-o", "/dev/null", url]
            connects[name] += sum(int(n) for n in sh(*argv).split())

        for name in prefixes:  # warm up: leaves, handshakes
            _curl(name, 20, f"{HOST}:{origin.port}:{VIRTUAL}" if name == "wireguard" else None)
        started, order = time.monotonic(), list(prefixes)
        while min(done.values()) < args.requests and time.monotonic() - started < args.max_seconds:
            for name in order:
                turn(name, args.round)
            order.reverse()
    finally:
        if gw is not None:
            await gw.stop()
        network_down(wg)
        if origin.proc is not None:
            origin.proc.terminate()

    figures: dict[str, object] = {
        name: {
            "requests": done[name],
            "requests_per_s": round(done[name] / seconds[name], 1),
            "gateway_cpu_ms_per_request": round(cpu[name] / done[name] * 1000, 3),
            "connections": connects[name],
        }
        for name in done
    }
    e, w = figures["explicit"], figures["wireguard"]
    assert isinstance(e, dict) and isinstance(w, dict)
    figures["wireguard_vs_explicit_rate"] = round(w["requests_per_s"] / e["requests_per_s"], 3)
    figures["wireguard_vs_explicit_cpu"] = round(
        w["gateway_cpu_ms_per_request"] / e["gateway_cpu_ms_per_request"], 3
    )
    figures["cpus"] = os.cpu_count()
    return figures


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("wireguard_bench: needs root (network namespaces)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="gateway-wireguard-bench-") as tmp:
        try:
            figures = asyncio.run(bench(args, Path(tmp)))
        finally:
            kill_all()
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        for name in ("explicit", "wireguard"):
            f = figures[name]
            assert isinstance(f, dict)
            print(f"{name:10} {f['requests']:6d} requests  {f['requests_per_s']:8.1f} req/s  "
                  f"{f['gateway_cpu_ms_per_request']:7.3f} ms gateway CPU/request")  # fmt: skip
        print(f"wireguard / explicit: rate {figures['wireguard_vs_explicit_rate']}, "
              f"CPU per request {figures['wireguard_vs_explicit_cpu']}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
