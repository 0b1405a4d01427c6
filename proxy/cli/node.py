"""``gateway node``: a data-plane node without the admin API, on a gateway's store.

Scale-out behind any TCP load balancer: every node signs with the gateway's CAs and enforces its
rules, follows the changes the admin plane (``gateway run``) makes, and heartbeats; a newly
activated CA stays pending until every live node has loaded it (docs/scale.md).
"""

from __future__ import annotations

import argparse
import os
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

from certs.errors import CertError
from proxy.cli.errors import CliError
from proxy.config import Config, ConfigError, HostPort
from proxy.services.policy_state import PolicyLoadError
from proxy.store.database import StoreError
from proxy.store.locator import Backend, locate

EPILOG = """\
examples:
  gateway run  --data-dir /srv/gw --proxy-listen 127.0.0.1:8080      # the admin plane (and a proxy)
  gateway node --data-dir /srv/gw --proxy-listen 127.0.0.1:8091 --health-listen 127.0.0.1:9091
  gateway node --data-dir /srv/gw --proxy-listen 127.0.0.1:8092 --node-id edge-2
environment:
  GATEWAY_MASTER_KEY    the admin plane's key (otherwise DATA_DIR/master.key must exist)
"""

NODE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "node",
        help="start a data-plane node (proxy only, no admin API) on a gateway's store",
        description="Start a proxy node on the store of a gateway whose admin plane runs elsewhere "
        "(gateway run). The node registers, heartbeats, loads the gateway's CAs, rules, devices and "
        "posture, and follows their changes within about 50 ms. It never migrates the store and "
        "never makes accounts, CAs or tokens.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--data-dir",
        metavar="DIR",
        help="the gateway's data directory: its store (gateway.db), master key, request log",
    )
    parser.add_argument(
        "--database",
        metavar="PATH",
        help="the gateway's store, when not DATA_DIR/gateway.db: a SQLite file on this machine, or the "
        "postgresql://USER@HOST:PORT/DATABASE URL that gateway run --database has",
    )
    parser.add_argument(
        "--proxy-listen",
        metavar="HOST:PORT",
        help="explicit proxy, the same as --mode regular@HOST:PORT (default: 127.0.0.1:8080 when no --mode)",
    )
    parser.add_argument(
        "--mode",
        metavar="SPEC",
        action="append",
        default=[],
        help="a proxy mode (repeatable): regular@HOST:PORT or transparent@HOST:PORT (docs/modes.md); "
        "WireGuard device tunnels run in the admin plane only",
    )
    parser.add_argument(
        "--node-id", metavar="ID", help="a stable id for this node (default: a new one per start)"
    )
    parser.add_argument(
        "--health-listen",
        metavar="HOST:PORT",
        help="serve GET /healthz here for load balancers (200 with status ok or degraded)",
    )
    parser.add_argument(
        "--node-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="a node silent this long leaves the live nodes (default: 30; use the admin plane's value)",
    )
    parser.add_argument("--upstream-ca", metavar="FILE", help="extra CA (PEM) trusted for upstream servers")
    parser.add_argument("--hosts", metavar="FILE", help="hosts file resolving upstream names for labs")
    parser.add_argument("--hosts-only", action="store_true", help="answer only the names of --hosts")
    parser.add_argument(
        "--policies",
        metavar="PATH",
        action="append",
        default=[],
        help="the admin plane's YAML policy files (repeatable; the same files on every node)",
    )
    parser.add_argument(
        "--default-account",
        metavar="ID|NAME",
        help="the account for traffic from no known device (default: the first; as gateway run's)",
    )
    parser.add_argument(
        "--require-device", action="store_true", help="407 to clients without device credentials"
    )
    parser.add_argument("--leaf-lifetime-days", type=int, default=47, metavar="N", help="default: 47")
    parser.add_argument("--leaf-cache-size", type=int, default=10_000, metavar="N", help="default: 10000")
    parser.add_argument(
        "--public-url",
        metavar="URL",
        default="http://127.0.0.1:8081",
        help="the admin server as clients reach it, for the CA and CRL links in leaves (default: http://127.0.0.1:8081)",
    )
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"], help="default: info"
    )
    # A worker of `gateway run --workers N` (proxy/workers.py): not for people.
    parser.add_argument("--worker", metavar="NAME", help=argparse.SUPPRESS)
    parser.set_defaults(func=run)


def options_from(args: argparse.Namespace) -> Any:
    from proxy.node import NodeOptions  # heavy imports (mitmproxy) only for this command

    if not args.data_dir and not args.database:
        raise CliError(
            "gateway node needs the gateway's store: --data-dir DIR (its gateway.db and master.key) "
            "or --database PATH|URL",
            exit_code=2,
        )
    try:
        where = locate(args.database) if args.database else None
    except StoreError as e:
        raise CliError(str(e), exit_code=2) from e
    if args.node_id is not None and not NODE_ID.fullmatch(args.node_id):
        raise CliError(
            f"--node-id {args.node_id!r}: 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit",
            exit_code=2,
        )
    database = args.database or str(Path(args.data_dir) / "gateway.db")
    if args.data_dir:
        data_dir = Path(args.data_dir)
    elif where is not None and where.backend is Backend.SQLITE:
        data_dir = Path(where.target).parent
    else:  # PostgreSQL without --data-dir: the master key comes from the environment
        data_dir = Path("var")
    try:
        proxy_listen = HostPort.parse(args.proxy_listen or "127.0.0.1:8080", option="--proxy-listen")
        modes = tuple(args.mode)
        if modes and args.proxy_listen:
            modes = (f"regular@{proxy_listen}", *modes)
        if any(spec.startswith("wireguard") for spec in modes):
            raise ConfigError(
                "--mode wireguard: WireGuard device tunnels run in the admin plane (gateway run) only"
            )
        config = Config(
            data_dir=data_dir,
            proxy_listen=proxy_listen,
            modes=modes,
            upstream_ca=Path(args.upstream_ca) if args.upstream_ca else None,
            hosts_file=Path(args.hosts) if args.hosts else None,
            hosts_only=args.hosts_only,
            policy_paths=tuple(Path(p) for p in args.policies),
            require_device=args.require_device,
            leaf_lifetime=timedelta(days=args.leaf_lifetime_days),
            leaf_cache_size=args.leaf_cache_size,
            public_url=args.public_url,
            log_level=args.log_level,
            node_timeout=timedelta(seconds=args.node_timeout),
            default_account=args.default_account,
        )
        from proxy.modes import Modes

        Modes.from_specs(config.mode_specs)
        health = HostPort.parse(args.health_listen, option="--health-listen") if args.health_listen else None
    except ConfigError as e:
        raise CliError(str(e), exit_code=2) from e
    return NodeOptions(
        config=config,
        database=database,
        node_id=args.node_id,
        health_listen=health,
        reuse_port=args.worker is not None,
        control=args.worker is not None,
        what=args.worker or "node",
    )


def run(args: argparse.Namespace) -> int:
    from proxy import event_loop, node, runtime

    options = options_from(args)
    try:
        event_loop.loop_name(os.environ)  # a bad GATEWAY_EVENT_LOOP is a usage error
    except ConfigError as e:
        raise CliError(str(e), exit_code=2) from e
    runtime.setup_logging(options.config.log_level)
    try:
        return event_loop.run(node.serve_node(options, dict(os.environ)))
    except (ConfigError, CertError, StoreError, PolicyLoadError, OSError) as e:
        raise CliError(str(e)) from e
