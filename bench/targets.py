"""Processes the benchmark starts: the nginx origin and the proxies under test.

Every child is started in its own session (process group) and registered in ``REGISTRY`` so that
``kill_all()`` can end exactly the processes this run started, on normal exit, on error and on
Ctrl-C. Nothing here ever kills by name.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from pki import Authority

REGISTRY: list[subprocess.Popen] = []
CLIENT_PIDS: set[int] = set()  # load clients (asyncio subprocesses, own sessions)
CLK_TCK = os.sysconf("SC_CLK_TCK")
BENCH_SUFFIX = "bench.test"


def kill_all() -> None:
    """SIGTERM then SIGKILL every process group this run started and that is still alive."""
    for pid in CLIENT_PIDS:
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    for proc in REGISTRY:
        if proc.poll() is None:
            _signal_group(proc, signal.SIGTERM)
    deadline = time.monotonic() + 5
    for proc in REGISTRY:
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if proc.poll() is None:
            _signal_group(proc, signal.SIGKILL)
            proc.wait()


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)  # start_new_session=True: pgid == pid
    except ProcessLookupError:
        pass


def spawn(
    argv: list[str], log: Path, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.Popen:
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
            cwd=cwd,
        )
    REGISTRY.append(proc)
    return proc


async def stop(proc: subprocess.Popen | None, timeout: float = 10.0) -> int | None:
    """SIGTERM the process (its group after ``timeout``: SIGKILL); returns its exit code."""
    if proc is None:
        return None
    if proc.poll() is None:
        try:
            os.kill(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    rc = proc.poll()
    _signal_group(proc, signal.SIGKILL)  # leftovers (helpers, workers) of the group; the leader if hung
    return rc if rc is not None else proc.wait()  # negative = killed by that signal


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_is_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


async def wait_port(host: str, port: int, proc: subprocess.Popen, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before listening on {host}:{port}")
        try:
            _, w = await asyncio.open_connection(host, port)
            w.close()
            return
        except OSError:
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on {host}:{port} within {timeout:.0f} s")


def tree_cpu_seconds(pid: int | None) -> float:
    """user+system CPU of ``pid`` and all its live descendants (from /proc)."""
    if pid is None:
        return 0.0
    return sum(proc_cpu_seconds(p) for p in process_tree(pid))


def proc_cpu_seconds(pid: int | None) -> float:
    """user+system CPU of ``pid`` (every thread) so far, from ``/proc/PID/stat`` (10 ms ticks); 0
    when the process is gone."""
    if pid is None:
        return 0.0
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = raw[raw.rfind(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def tree_cpu_ns(pid: int | None) -> int:
    """``proc_cpu_ns`` of ``pid`` and of every live descendant (the workers of ``gateway run
    --workers N``)."""
    if pid is None:
        return 0
    return sum(proc_cpu_ns(p) for p in process_tree(pid))


def process_tree(pid: int) -> list[int]:
    """``pid`` and every live descendant of it, parents before their children (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        children.setdefault(int(raw[raw.rfind(")") + 2 :].split()[1]), []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def proc_cpu_ns(pid: int | None) -> int:
    """CPU time (ns) of every thread of ``pid``, from ``/proc/PID/task/*/schedstat``: exact, where
    ``/proc/PID/stat`` counts 10 ms ticks. 0 when the process is gone."""
    if pid is None:
        return 0
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0
    for tid in tasks:
        try:
            total += int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return total


def _threads(pid: int, tree: bool) -> list[tuple[int, int]]:
    """(process, thread) ids of every live thread of ``pid`` and, with ``tree``, of its live
    descendants (from /proc)."""
    found = []
    for process in process_tree(pid) if tree else [pid]:
        try:
            tasks = os.listdir(f"/proc/{process}/task")
        except OSError:
            continue
        found += [(process, int(tid)) for tid in tasks]
    return found


def run_when_idle(pid: int | None, tree: bool = False) -> None:
    """Put every thread of ``pid`` (and, with ``tree``, of its live descendants) in ``SCHED_IDLE``:
    they run only on CPU time nothing else wants, so the bench's own load client and origin no
    longer preempt the proxy they load (``bench/run --load-sched idle``). Threads made later
    inherit the policy."""
    if pid is None:
        return
    for _, tid in _threads(pid, tree):
        try:
            os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
        except ProcessLookupError:  # that thread has ended
            pass


def preemptions(pid: int | None, tree: bool = False) -> int:
    """How often the threads of ``pid`` (and, with ``tree``, of its live descendants) were taken
    off a CPU while they still wanted to run (``nonvoluntary_ctxt_switches``, /proc): a proxy
    that shares too few cores with its load client gets preempted, and each time its caches go
    cold. 0 when the process is gone."""
    if pid is None:
        return 0
    total = 0
    for process, tid in _threads(pid, tree):
        try:
            status = Path(f"/proc/{process}/task/{tid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("nonvoluntary_ctxt_switches:"):
                total += int(line.split()[1])
    return total


def system_cpu() -> tuple[float, float]:
    """Machine-wide (busy, steal) CPU seconds since boot, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq) / CLK_TCK, steal / CLK_TCK


# --------------------------------------------------------------------------------------------
@dataclass
class Origin:
    """nginx on loopback, HTTP/1.1 + h2, certificate chosen per SNI from ``certs/<name>.pem``."""

    workdir: Path
    ip: str
    port: int
    workers: int = 1
    proc: subprocess.Popen | None = None

    def write_config(self) -> Path:
        d = self.workdir
        for sub in ("tmp", "logs"):
            (d / sub).mkdir(exist_ok=True)
        user = "user root;\n" if os.geteuid() == 0 else ""
        temp = "".join(
            f"  {kind}_temp_path {d}/tmp/{kind};\n"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        conf = f"""{user}worker_processes {self.workers};
pid {d}/nginx.pid;
error_log {d}/logs/error.log warn;
worker_rlimit_nofile 65535;
events {{ worker_connections 16384; }}
http {{
  access_log off;
{temp}  keepalive_requests 10000000;
  keepalive_timeout 120s;
  server {{
    listen {self.ip}:{self.port} ssl http2;
    ssl_certificate {d}/certs/$ssl_server_name.pem;
    ssl_certificate_key {d}/host.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    location / {{
      default_type text/plain;
      return 200 "gateway-bench-origin ok\\n";
    }}
  }}
}}
"""
        path = d / "nginx.conf"
        path.write_text(conf)
        return path

    async def start(self) -> None:
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        conf = self.write_config()
        argv = [
            nginx,
            "-p",
            str(self.workdir),
            "-c",
            str(conf),
            "-e",
            str(self.workdir / "logs/error.log"),
            "-g",
            "daemon off;",
        ]
        self.proc = spawn(argv, self.workdir / "logs/stdout.log")
        await wait_port(self.ip, self.port, self.proc, 15, "nginx")

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None


def nginx_version() -> str:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    try:
        out = subprocess.run([nginx, "-v"], capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return "missing"
    return (out.stderr or out.stdout).strip().replace("nginx version: ", "")


# --------------------------------------------------------------------------------------------
@dataclass
class Target:
    """One thing to load: ``proxy`` is None for the direct baseline."""

    name: str
    workdir: Path
    proxy: tuple[str, int] | None = None
    cafile: Path | None = None
    proc: subprocess.Popen | None = None
    info: dict = field(default_factory=dict)
    proxy_headers: dict[str, str] = field(default_factory=dict)  # sent on every CONNECT (device identity)
    tree_cpu: bool = False  # its CPU is its process tree's (gateway run --workers N: the workers)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        if self.proc is not None:
            self.info["exit_code"] = await stop(self.proc)
            self.proc = None


@dataclass
class Direct(Target):
    origin_ca: Path | None = None

    async def start(self) -> None:
        self.cafile = self.origin_ca


MITM_ADDON = '''"""Maps *.{suffix} to the bench origin (written by bench/targets.py)."""
ORIGIN_IP = {ip!r}


def server_connect(data):
    host, port = data.server.address
    if host == "{suffix}" or host.endswith(".{suffix}"):
        data.server.address = (ORIGIN_IP, port)
'''


@dataclass
class Mitmdump(Target):
    mitmdump: str = ""
    origin_ca: Path | None = None
    origin_ip: str = "127.0.0.1"

    async def start(self) -> None:
        conf = self.workdir / "confdir"
        conf.mkdir(parents=True, exist_ok=True)
        ca = Authority.generate("Bench mitmdump CA")  # static EC P-256, same key type as the gateway's
        (conf / "mitmproxy-ca.pem").write_bytes(ca.key_pem() + ca.cert_pem())
        self.cafile = self.workdir / "mitmdump-ca.pem"
        self.cafile.write_bytes(ca.cert_pem())
        addon = self.workdir / "resolve_addon.py"
        addon.write_text(MITM_ADDON.format(suffix=BENCH_SUFFIX, ip=self.origin_ip))
        port = free_port()
        argv = [
            self.mitmdump,
            "--listen-host",
            "127.0.0.1",
            "--listen-port",
            str(port),
            "--set",
            f"confdir={conf}",
            "--set",
            f"ssl_verify_upstream_trusted_ca={self.origin_ca}",
            "-s",
            str(addon),
            "-q",
        ]
        self.proc = spawn(argv, self.workdir / "mitmdump.log")
        self.proxy = ("127.0.0.1", port)
        await wait_port("127.0.0.1", port, self.proc, 30, "mitmdump")


@dataclass
class Gateway(Target):
    gateway: str = ""
    origin_ca: Path | None = None
    origin_ip: str = "127.0.0.1"
    extra_args: list[str] = field(default_factory=list)
    startup_timeout: float = 90.0
    policies: Path | None = None  # --policies FILE
    admin: str = ""
    token: str = ""  # GATEWAY_ADMIN_TOKEN of this process
    launcher: list[str] = field(default_factory=list)  # instead of ``gateway`` (bench/gateway_variant.py)

    async def start(self) -> None:
        data = self.workdir / "data"
        data.mkdir(parents=True, exist_ok=True)
        hosts = self.workdir / "hosts"
        hosts.write_text(f"{self.origin_ip} *.{BENCH_SUFFIX}\n")
        pport, aport = free_port(), free_port()
        while aport == pport:
            aport = free_port()
        token = self.token = secrets.token_urlsafe(24)
        env = dict(os.environ, GATEWAY_ADMIN_TOKEN=token)
        argv = [
            *(self.launcher or [self.gateway]),
            "run",
            "--data-dir",
            str(data),
            "--proxy-listen",
            f"127.0.0.1:{pport}",
            "--admin-listen",
            f"127.0.0.1:{aport}",
            "--upstream-ca",
            str(self.origin_ca),
            "--hosts",
            str(hosts),
            *(["--policies", str(self.policies)] if self.policies else []),
            *([] if "--workers" in self.extra_args else ["--workers", "1"]),
            *self.extra_args,
        ]
        self.info["argv"] = argv
        self.log = self.workdir / "gateway.log"
        t0 = time.monotonic()
        self.proc = spawn(argv, self.log, env=env)
        admin = self.admin = f"http://127.0.0.1:{aport}"
        await self._wait_healthy(admin, t0)
        self.info["startup_s"] = round(time.monotonic() - t0, 2)
        pem = await asyncio.to_thread(_http_get, f"{admin}/pki/ca.pem")
        if b"BEGIN CERTIFICATE" not in pem:
            raise RuntimeError(f"gateway /pki/ca.pem did not return a PEM certificate: {pem[:80]!r}")
        self.cafile = self.workdir / "gateway-ca.pem"
        self.cafile.write_bytes(pem)
        self.proxy = ("127.0.0.1", pport)
        while "Stop with Ctrl-C." not in self.log.read_text(errors="replace"):  # every worker serves
            if self.proc.poll() is not None or time.monotonic() - t0 > self.startup_timeout:
                raise RuntimeError(f"gateway run printed no banner within {self.startup_timeout:.0f} s")
            await asyncio.sleep(0.2)
        await wait_port("127.0.0.1", pport, self.proc, 10, "gateway proxy listener")

    async def _wait_healthy(self, admin: str, t0: float) -> None:
        while time.monotonic() - t0 < self.startup_timeout:
            if self.proc.poll() is not None:
                tail = self.log.read_text(errors="replace")[-1500:]
                raise RuntimeError(f"gateway run exited with {self.proc.returncode} before /healthz:\n{tail}")
            try:
                await asyncio.to_thread(_http_get, f"{admin}/healthz", 2.0)
                return
            except OSError:
                await asyncio.sleep(0.2)
        raise RuntimeError(f"gateway /healthz not 200 within {self.startup_timeout:.0f} s (log: {self.log})")

    async def stop(self) -> None:
        await super().stop()
        try:
            self.info["log_bytes"] = self.log.stat().st_size
        except (AttributeError, OSError):
            pass

    async def decisions(self) -> dict[str, float]:
        """``gateway_decisions_total`` by "action/stage", from the public ``GET /metrics``."""
        text = (await asyncio.to_thread(_http_get, f"{self.admin}/metrics")).decode()
        found = re.findall(
            r'^gateway_decisions_total\{action="([^"]*)",stage="([^"]*)"\} (\S+)$', text, re.MULTILINE
        )
        return {f"{action}/{stage}": float(value) for action, stage, value in found}

    def log_lines(self, word: str) -> list[str]:
        try:
            return [line for line in self.log.read_text(errors="replace").splitlines() if word in line]
        except OSError:
            return []


def probe_status(
    proxy: tuple[str, int],
    port: int,
    host: str,
    cafile: Path,
    timeout: float = 15.0,
    headers: dict[str, str] | None = None,
) -> int:
    """One ``GET https://host:port/`` through the proxy (CONNECT with ``headers``, TLS checked
    against ``cafile``): the HTTP status the client gets."""
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    with socket.create_connection(proxy, timeout=timeout) as raw:
        raw.sendall(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n{extra}\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = raw.recv(4096)
            if not chunk:
                raise OSError("proxy closed the connection after CONNECT")
            head += chunk
        if b" 200" not in head.split(b"\r\n", 1)[0]:
            raise OSError(f"CONNECT answered {head[:60]!r}")
        with ssl.create_default_context(cafile=str(cafile)).wrap_socket(raw, server_hostname=host) as tls:
            tls.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            first = b""
            while b"\r\n" not in first:
                chunk = tls.recv(4096)
                if not chunk:
                    break
                first += chunk
    parts = first.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


def _http_get(url: str, timeout: float = 10.0) -> bytes:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy env var
    with opener.open(url, timeout=timeout) as resp:
        if resp.status != 200:
            raise OSError(f"{url}: HTTP {resp.status}")
        return resp.read()


@dataclass
class Squid(Target):
    origin_ca: Path | None = None
    origin_ip: str = "127.0.0.1"
    origin_port: int = 443
    names: list[str] = field(default_factory=list)

    async def start(self) -> None:
        d = self.workdir
        d.mkdir(parents=True, exist_ok=True)
        ca = Authority.generate("Bench Squid CA")
        (d / "proxy-ca.pem").write_bytes(ca.cert_pem())
        (d / "proxy-ca.key").write_bytes(ca.key_pem())
        self.cafile = d / "proxy-ca.pem"
        # hosts_file has no wildcards and truncates long lines: one name per line
        (d / "hosts").write_text("".join(f"{self.origin_ip} {name}\n" for name in self.names))
        shutil.copy(self.origin_ca, d / "up-ca.pem")
        port = free_port()
        conf = f"""http_port 127.0.0.1:{port} ssl-bump tls-cert={d}/proxy-ca.pem tls-key={d}/proxy-ca.key generate-host-certificates=on dynamic_cert_mem_cache_size=16MB
sslcrtd_program /usr/lib/squid/security_file_certgen -s {d}/ssl_db -M 16MB
sslcrtd_children 8 startup=1 idle=1
acl step1 at_step SslBump1
ssl_bump peek step1
ssl_bump bump all
tls_outgoing_options cafile={d}/up-ca.pem
hosts_file {d}/hosts
dns_nameservers 127.0.0.1
pinger_enable off
acl SSL_ports port {self.origin_port}
acl CONNECT method CONNECT
http_access deny CONNECT !SSL_ports
http_access allow localhost
http_access deny all
cache deny all
pid_filename {d}/squid.pid
access_log none
cache_log {d}/cache.log
coredump_dir {d}
shutdown_lifetime 1 seconds
"""
        (d / "squid.conf").write_text(conf)
        await asyncio.to_thread(self._prepare_dirs, d)
        squid = shutil.which("squid") or "/usr/sbin/squid"
        self.proc = spawn([squid, "-N", "-f", str(d / "squid.conf")], d / "squid.out")
        self.proxy = ("127.0.0.1", port)
        await wait_port("127.0.0.1", port, self.proc, 30, "squid")

    @staticmethod
    def _prepare_dirs(d: Path) -> None:
        subprocess.run(
            ["/usr/lib/squid/security_file_certgen", "-c", "-s", str(d / "ssl_db"), "-M", "16MB"],
            check=True,
            capture_output=True,
            timeout=30,
        )
        if os.geteuid() == 0:  # the kid and the helpers run as user 'proxy'
            subprocess.run(["chown", "-R", "proxy:proxy", str(d)], check=True, timeout=30)
