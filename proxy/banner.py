"""What ``gateway run`` prints on stdout once it serves: where it listens and how to trust its CA.

Logs go to stderr; this is the one thing on stdout, printed once (the admin token in it only on
the start that made the token).
"""

from __future__ import annotations

import logging
import shlex
from collections.abc import Sequence

from mitmproxy.proxy.mode_specs import ProxyMode

from proxy.admin_tls import AdminTls
from proxy.config import ADMIN_TOKEN_ENV, Config, HostPort
from proxy.modes import ModeKind, listen_address, parse_mode

logger = logging.getLogger(__name__)

LAST_LINE = "Stop with Ctrl-C."


def banner(
    config: Config,
    *,
    account_id: str,
    admin_tls: AdminTls | None,
    new_admin_token: str | None,
    in_use_id: str | None,
    modes: Sequence[ProxyMode] = (),
) -> str:
    modes = modes or [parse_mode(spec) for spec in config.mode_specs]
    ca_url = f"{config.public_base_url}/pki/ca.pem"
    lines: list[str] = ["Gateway is running"]
    lines.extend(line for mode in modes for line in mode_lines(mode))
    lines.append(f"  admin API    {config.admin_url}/client/v4   (account {account_id})")
    lines.append(f"  dashboard    {config.admin_url}/   (sign in with the admin token)")
    regular = [m for m in modes if m.type_name == ModeKind.REGULAR]
    proxy_url = _address(regular[0]).url() if regular else None
    curl = "curl"
    if admin_tls:
        lines.append(f"  admin TLS    SHA-256 {admin_tls.fingerprint}   (agents pin it)")
        if config.admin_tls_auto:
            cacert = admin_tls.certificate_file
            curl = f"curl --cacert {cacert}"
            lines.append(f"               self-signed: trust it with --cacert {cacert}")
    if new_admin_token:
        lines.extend(_token_lines(config, new_admin_token))
    lines.extend(
        [
            f"  root CA      {ca_url}   (in use: {in_use_id or 'none'})",
            "Trust the root CA on clients:",
            f"  {curl} -o gateway-ca.pem {ca_url}",
            f"  curl -x {proxy_url} --cacert gateway-ca.pem https://example.com/"
            if proxy_url
            else "  curl --cacert gateway-ca.pem https://example.com/   # from a redirected client",
            '  certutil -d sql:$HOME/.pki/nssdb -A -t "C,," -n "Gateway root CA" -i gateway-ca.pem   # Chromium, Firefox (NSS)',
            LAST_LINE,
        ]
    )
    return "\n".join(lines)


def mode_lines(mode: ProxyMode) -> list[str]:
    """What a client of one mode needs to know."""
    address = _address(mode)
    if mode.type_name == ModeKind.REGULAR:
        return [f"  proxy        {address.url()}   (explicit HTTP proxy; HTTPS is intercepted)"]
    if mode.type_name == ModeKind.TRANSPARENT:
        return [
            f"  transparent  {address}   (redirected TCP; HTTPS is intercepted, the SNI names the leaf)",
            f"               redirect rules: gateway transparent rules --port {address.port}"
            + ("" if address.is_wildcard else f" --to {address.host}"),
        ]
    return [f"  {mode.type_name:<12} {address}   ({mode.full_spec})"]


def _address(mode: ProxyMode) -> HostPort:
    host, port = listen_address(mode)
    return HostPort(host or "0.0.0.0", port)


def _token_lines(config: Config, token: str) -> Sequence[str]:
    data_dir = shlex.quote(str(config.data_dir))
    return [
        f"  admin token  {token}",
        f"               shown once: keep it now (only its hash is stored; or set {ADMIN_TOKEN_ENV})",
        f"               another one later: gateway token create --data-dir {data_dir}",
    ]
