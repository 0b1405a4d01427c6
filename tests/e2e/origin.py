"""The HTTPS origin: nginx in its own process on loopback, one server block per test host so the
certificate is chosen by SNI, HTTP/1.1 and HTTP/2, answering `GET /` with a page naming the host
and the protocol nginx spoke (so a test can see HTTP/2 reached the origin).

`GET /e2e-headers` echoes the request headers a proxy must not forward (Proxy-Authorization),
and the access log records that header too; a plain-HTTP listener on `http_port` serves the
same for requests a proxy forwards without TLS."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.pki import Issued, issue_server, make_ca

from . import tools

# (server_name, names in the certificate, signed by the untrusted CA?)
TRUSTED_SITES = [
    ("origin.test", ["origin.test"]),
    ("*.origin.test", ["*.origin.test"]),
    ("www.example.com", ["www.example.com"]),
]
UNTRUSTED_SITES = [
    ("untrusted.test", ["untrusted.test"]),
    # More names behind the same untrusted CA, for rules that handle each one differently.
    ("*.untrusted.test", ["*.untrusted.test"]),
]
UNTRUSTED_SITE = UNTRUSTED_SITES[0]
HOST_NAMES = ["origin.test", "*.origin.test", "www.example.com", "untrusted.test", "*.untrusted.test"]


def body_for(host: str, protocol: str = "") -> str:
    """The text the origin's page holds for `host` (and protocol, as nginx names it)."""
    text = f"hello from {host}"
    return f"{text} via {protocol}" if protocol else text


# The headers a proxy must strip, as the origin received them ("[]" when absent).
HEADERS_PATH = "/e2e-headers"
_HEADERS = "proxy-authorization=[$http_proxy_authorization] host=$host\\n"


def echoed_proxy_authorization(body: str) -> str:
    """The Proxy-Authorization value the origin's /e2e-headers page reports ("" when none)."""
    start = body.index("proxy-authorization=[") + len("proxy-authorization=[")
    return body[start : body.index("] host=", start)]


_PAGE = (
    '<!doctype html><html><head><title>origin</title></head><body><h1 id="origin">'
    "hello from $host via $server_protocol</h1></body></html>\\n"
)


@dataclass
class Origin:
    directory: Path
    port: int
    ca: Issued = field(default_factory=lambda: make_ca("e2e Origin CA", key_identifiers=True))
    untrusted_ca: Issued = field(default_factory=lambda: make_ca("e2e Untrusted CA", key_identifiers=True))
    proc: subprocess.Popen[bytes] | None = None
    http_port: int = field(default_factory=tools.free_port)  # plain HTTP, every host name
    # server_name → the certificate (and key) nginx serves for it, once started
    site_certs: dict[str, Issued] = field(default_factory=dict)

    @property
    def ca_path(self) -> Path:
        return self.directory / "origin-ca.pem"

    def url(self, host: str = "origin.test", path: str = "/") -> str:
        return f"https://{host}:{self.port}{path}"

    def http_url(self, host: str = "origin.test", path: str = "/") -> str:
        return f"http://{host}:{self.http_port}{path}"

    def write_hosts_file(self, path: Path) -> Path:
        path.write_text("# e2e lab names\n127.0.0.1 " + " ".join(HOST_NAMES) + "\n")
        return path

    def _config(self) -> str:
        d = self.directory
        servers = []
        sites = [(n, names, self.ca) for n, names in TRUSTED_SITES]
        sites += [(n, names, self.untrusted_ca) for n, names in UNTRUSTED_SITES]
        for i, (server_name, names, ca) in enumerate(sites):
            stem = f"site{i}"
            issued = issue_server(ca, names)
            issued.write(d, stem)
            self.site_certs[server_name] = issued
            default = " default_server" if i == 0 else ""
            servers.append(
                f"""
  server {{
    listen 127.0.0.1:{self.port} ssl http2{default};
    server_name {server_name};
    ssl_certificate {d}/{stem}.pem;
    ssl_certificate_key {d}/{stem}.key;
    location = {HEADERS_PATH} {{ return 200 '{_HEADERS}'; }}
    location / {{ return 200 '{_PAGE}'; }}
  }}"""
            )
        servers.append(
            f"""
  server {{
    listen 127.0.0.1:{self.http_port} default_server;
    server_name _;
    location = {HEADERS_PATH} {{ return 200 '{_HEADERS}'; }}
    location / {{ return 200 '{_PAGE}'; }}
  }}"""
        )
        temp = "\n".join(
            f"  {k}_temp_path {d}/tmp/{k};" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        return f"""daemon off;
master_process off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 1024; }}
http {{
  log_format e2e '$remote_addr - $remote_user [$time_local] "$request" $status '
                 '$body_bytes_sent "$http_user_agent" proxy_authorization="$http_proxy_authorization"';
  access_log {d}/access.log e2e;
  default_type text/html;
  keepalive_timeout 120s;
  keepalive_requests 100000;
{temp}
{"".join(servers)}
}}
"""

    def start(self) -> None:
        nginx = tools.require("nginx")
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "tmp").mkdir(exist_ok=True)
        self.ca_path.write_text(self.ca.cert_pem())
        conf = self.directory / "nginx.conf"
        conf.write_text(self._config())
        log = self.directory / "error.log"
        with (self.directory / "nginx.stderr").open("wb") as stderr:
            self.proc = subprocess.Popen(
                [nginx, "-p", str(self.directory), "-c", str(conf), "-e", str(log)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,
            )
        if not all(
            tools.wait_for_port(port, timeout=10, proc=self.proc) for port in (self.port, self.http_port)
        ):
            self.stop()
            raise RuntimeError(
                f"nginx origin did not listen on {self.port}:\n"
                f"{tools.tail(self.directory / 'nginx.stderr')}\n{tools.tail(log)}"
            )

    def stop(self) -> None:
        if self.proc is not None:
            tools.stop(self.proc, timeout=10)
            self.proc = None
