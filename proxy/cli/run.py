"""``gateway run``: start the proxy and the admin API in one process."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

from certs.errors import CertError
from proxy.cli import options as shared
from proxy.cli.errors import CliError
from proxy.config import Config, ConfigError, HostPort
from proxy.services.policy_state import PolicyLoadError
from proxy.store.database import StoreError
from proxy.store.locator import locate

EPILOG = """\
examples:
  gateway run                                   # embedded defaults: ./var, 127.0.0.1:8080 and :8081
  gateway run --data-dir /srv/gateway --upstream-ca lab-ca.pem --hosts lab.hosts
  gateway run --policies policies/examples/          # rules and Access from YAML files
  gateway run --database postgresql://gateway@db.example:5432/gateway   # the store on PostgreSQL
  gateway run --admin-listen 0.0.0.0:8081 --admin-tls auto   # admin API for other machines, over TLS
  gateway run --mode regular@127.0.0.1:8080 --mode transparent@192.0.2.1:8443
                                                # explicit and transparent at once (docs/modes.md;
                                                # redirect rules: gateway transparent rules --port 8443)
environment:
  GATEWAY_ADMIN_TOKEN   admin API token (otherwise one is made on first start and printed once)
  GATEWAY_MASTER_KEY    base64 of 32 bytes encrypting private keys at rest
                        (otherwise DATA_DIR/master.key, created 0600)
"""


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "run",
        help="start the inspecting proxy and the admin API",
        description="Start the TLS-inspecting proxy and the admin API in one process. On first start "
        "with an empty data directory it creates an account, an admin token and a root CA in use.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    shared.DATA_DIR.add(parser)
    shared.DATABASE.add(parser)
    shared.PROXY_LISTEN.add(parser)
    shared.MODE.add(parser)
    parser.add_argument(
        "--wireguard-ports",
        metavar="[HOST:]FIRST-LAST",
        help="WireGuard device tunnels: one UDP port per enrolled device, on HOST (default 127.0.0.1); "
        "--mode wireguard@HOST:PORT is the same as HOST:PORT-PORT+99 (docs/modes.md, WireGuard)",
    )
    parser.add_argument(
        "--wireguard-endpoint",
        metavar="HOST",
        help="the gateway's host in device WireGuard configurations "
        "(default: the --wireguard-ports host, or --public-url's host when that is 0.0.0.0 or ::)",
    )
    parser.add_argument(
        "--admin-listen",
        default="127.0.0.1:8081",
        metavar="HOST:PORT",
        help="admin API (default: 127.0.0.1:8081); off loopback (0.0.0.0 included) it needs --admin-tls",
    )
    parser.add_argument(
        "--admin-tls",
        metavar="auto|FILE",
        help="serve the admin API over TLS: 'auto' makes a self-signed certificate on first start and keeps it "
        "(DATA_DIR/admin-tls.crt; agents pin its fingerprint), or FILE is a PEM certificate chain "
        "(with its unencrypted key, or see --admin-tls-key)",
    )
    parser.add_argument(
        "--admin-tls-key",
        metavar="FILE",
        help="the unencrypted PEM private key of --admin-tls FILE, when not in that file",
    )
    for option in shared.DATA_PLANE:
        option.add(parser)
    shared.PUBLIC_URL.add(parser, note="also in enrollment tokens")
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="proxy processes sharing the listeners (default: one per core; 1: the proxy runs in this "
        "process, as before). The admin API runs once, in this process (docs/scale.md)",
    )
    shared.NODE_TIMEOUT.add(parser)
    shared.LOG_LEVEL.add(parser)
    parser.set_defaults(func=run)


def config_from(args: argparse.Namespace) -> Config:
    try:
        proxy_listen = HostPort.parse(args.proxy_listen or "127.0.0.1:8080", option="--proxy-listen")
        modes = tuple(args.mode)
        if modes and args.proxy_listen:  # both: the explicit proxy comes first
            modes = (f"regular@{proxy_listen}", *modes)
        if args.database is not None:
            locate(args.database)  # a bad URL is one line, before anything starts
        config = Config(
            data_dir=Path(args.data_dir),
            database=args.database or "",
            proxy_listen=proxy_listen,
            modes=modes,
            admin_listen=HostPort.parse(args.admin_listen, option="--admin-listen"),
            upstream_ca=Path(args.upstream_ca) if args.upstream_ca else None,
            hosts_file=Path(args.hosts) if args.hosts else None,
            hosts_only=args.hosts_only,
            policy_paths=tuple(Path(p) for p in args.policies),
            require_device=args.require_device,
            default_account=args.default_account,
            leaf_lifetime=timedelta(days=args.leaf_lifetime_days),
            leaf_cache_size=args.leaf_cache_size,
            public_url=args.public_url,
            log_level=args.log_level,
            admin_tls_auto=args.admin_tls == "auto",
            admin_tls_cert=Path(args.admin_tls) if args.admin_tls and args.admin_tls != "auto" else None,
            admin_tls_key=Path(args.admin_tls_key) if args.admin_tls_key else None,
            node_timeout=timedelta(seconds=args.node_timeout),
            workers=args.workers if args.workers is not None else (os.cpu_count() or 1),
        )
        from proxy.modes import Modes  # mitmproxy's mode parser: only for this command
        from proxy.wireguard import with_device_tunnels

        config = with_device_tunnels(config, ports=args.wireguard_ports, endpoint=args.wireguard_endpoint)
        if args.workers is None and (
            config.wireguard or any(s.startswith("wireguard") for s in config.mode_specs)
        ):
            config = dataclasses.replace(config, workers=1)  # WireGuard listeners cannot be shared
        Modes.from_specs(config.mode_specs)  # a bad spec is one line, before anything starts
        return config
    except (ConfigError, StoreError) as e:
        raise CliError(str(e), exit_code=2) from e


def run(args: argparse.Namespace) -> int:
    config = config_from(args)  # bad input is one line, before the heavy imports
    from proxy import admin_plane, runtime  # mitmproxy, aiohttp: only for this command

    runtime.setup_logging(config.log_level)
    serve = admin_plane.serve if config.workers > 1 else runtime.serve  # admin plane + N workers
    try:
        return asyncio.run(serve(config, dict(os.environ)))
    except StoreError as e:  # unreachable, refused credentials, no such database, newer schema
        raise CliError(f"the store cannot be used: {e}", exit_code=2) from e
    except (ConfigError, CertError, PolicyLoadError) as e:
        raise CliError(str(e)) from e
