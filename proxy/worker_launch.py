"""What starting the workers of ``gateway run --workers N`` needs (``proxy/workers.py``): each
worker's command line (``gateway node`` with this gateway's data-plane settings), and a check
that every listener can be shared by them before any starts."""

from __future__ import annotations

import errno
import logging
import socket
import sys

from proxy import config as cfg
from proxy.modes import listen_address, parse_mode
from proxy.store.locator import split_password

logger = logging.getLogger(__name__)


def worker_argv(config: cfg.Config, name: str, node_id: str) -> list[str]:
    """``gateway node`` with this gateway's data-plane settings, as worker ``name``, node
    ``node_id`` (the same id across the worker's restarts: a restarted worker takes over its
    predecessor's entry in the store, so a worker killed with -9 never holds a rollout back)."""
    argv = [sys.executable, "-m", "proxy.cli.main", "node", "--data-dir", str(config.data_dir)]
    argv += ["--node-id", node_id]
    argv += ["--database", split_password(config.store_location)[0]]  # the password: PGPASSWORD
    for spec in config.mode_specs:
        argv += ["--mode", spec]
    if config.upstream_ca:
        argv += ["--upstream-ca", str(config.upstream_ca)]
    if config.hosts_file:
        argv += ["--hosts", str(config.hosts_file)]
    if config.hosts_only:
        argv.append("--hosts-only")
    for path in config.policy_paths:
        argv += ["--policies", str(path)]
    if config.require_device:
        argv.append("--require-device")
    if config.default_account:
        argv += ["--default-account", config.default_account]
    argv += [
        "--leaf-lifetime-days", str(config.leaf_lifetime.days),
        "--leaf-cache-size", str(config.leaf_cache_size),
        "--public-url", config.public_base_url,
        "--log-level", config.log_level,
        "--node-timeout", str(config.node_timeout.total_seconds()),
        "--worker", name,
    ]  # fmt: skip
    return argv


def check_listeners(config: cfg.Config) -> None:
    """Workers need fixed TCP ports nobody else holds: a port already taken (also by another
    gateway's workers, which would silently share it) is refused before any worker starts."""
    if config.wireguard is not None:
        raise cfg.ConfigError(
            "--wireguard-ports: WireGuard device tunnels cannot be shared by workers: run with --workers 1"
        )
    for spec in config.mode_specs:
        mode = parse_mode(spec)
        if mode.type_name == "wireguard":
            raise cfg.ConfigError(
                f"--mode {spec}: WireGuard listeners cannot be shared by workers: run with --workers 1"
            )
        host, port = listen_address(mode)
        if port == 0:
            raise cfg.ConfigError(f"--mode {spec}: workers share fixed ports; give a port other than 0")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            # As every listener does (asyncio's too): connections of a stopped gateway left in
            # TIME_WAIT do not hold the port, a listening socket still does.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError as e:
                why = "in use" if e.errno == errno.EADDRINUSE else e.strerror
                raise cfg.ConfigError(f"--mode {spec}: cannot listen on {host}:{port}: {why}") from e
