"""``gateway node``: a data-plane node without the admin API, on a gateway's store.

Scale-out behind any TCP load balancer: every node signs with the gateway's CAs and enforces its
rules, follows the changes the admin plane (``gateway run``) makes, and heartbeats; a newly
activated CA stays pending until every live node has loaded it (docs/scale.md).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

from certs.errors import CertError
from proxy.cli import options as shared
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
    shared.DATA_DIR.add(parser, default=None, note="no default: give it, --database, or both")
    shared.DATABASE.add(parser)
    shared.PROXY_LISTEN.add(parser)
    shared.MODE.add(parser, note="WireGuard device tunnels run in the admin plane only")
    parser.add_argument(
        "--node-id", metavar="ID", help="a stable id for this node (default: a new one per start)"
    )
    parser.add_argument(
        "--health-listen",
        metavar="HOST:PORT",
        help="serve GET /healthz here for load balancers (200 with status ok or degraded)",
    )
    shared.NODE_TIMEOUT.add(parser)
    for option in shared.DATA_PLANE:
        option.add(parser)
    shared.PUBLIC_URL.add(parser, default="http://127.0.0.1:8081", default_text="http://127.0.0.1:8081")
    shared.LOG_LEVEL.add(parser)
    # A worker of `gateway run --workers N` (proxy/workers.py): not for people.
    parser.add_argument("--worker", metavar="NAME", help=argparse.SUPPRESS)
    parser.set_defaults(func=run)


def options_from(args: argparse.Namespace) -> Any:
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
    from proxy.node import NodeOptions  # heavy imports (mitmproxy): after the input is checked

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
    options = options_from(args)  # bad input is one line, before the heavy imports
    from proxy import node, runtime

    runtime.setup_logging(options.config.log_level)
    try:
        return asyncio.run(node.serve_node(options, dict(os.environ)))
    except (ConfigError, CertError, StoreError, PolicyLoadError, OSError) as e:
        raise CliError(str(e)) from e
