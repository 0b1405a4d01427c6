"""Before any worker starts (``proxy/worker_launch.py``): a port of 0, a port someone holds and
WireGuard listeners are refused, and a port a stopped gateway left in TIME_WAIT is not."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from proxy.config import Config, ConfigError, HostPort
from proxy.worker_launch import check_listeners


def test_workers_refuse_port_zero_taken_ports_and_wireguard(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="port other than 0"):
        check_listeners(Config(data_dir=tmp_path, proxy_listen=HostPort("127.0.0.1", 0)))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{port}: in use"):
            check_listeners(Config(data_dir=tmp_path, proxy_listen=HostPort("127.0.0.1", port)))
    with pytest.raises(ConfigError, match="WireGuard"):
        check_listeners(Config(data_dir=tmp_path, modes=("wireguard@127.0.0.1:51820",)))


def test_workers_start_where_a_stopped_gateway_left_connections_in_time_wait(tmp_path: Path) -> None:
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)) as client:
            served, _ = listener.accept()
            served.close()  # the server's side closes first: its end waits in TIME_WAIT
            client.recv(1)
    check_listeners(Config(data_dir=tmp_path, proxy_listen=HostPort("127.0.0.1", port)))
