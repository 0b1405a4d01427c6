"""Hot swap under load: clients keep opening new connections while another CA is turned on.
No request fails, no leaf of the old CA is served after the switch, and a keep-alive connection
opened before the switch keeps working on the same TLS session."""

from __future__ import annotations

import http.client
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509

from . import sdk
from .gateway_process import GatewayProcess
from .origin import Origin, body_for
from .pki import describe, issued_by, load_pem
from .tunnel import client_context, fetch

pytestmark = pytest.mark.e2e

WORKERS = 6
LOAD_SECONDS = 8.0
SWAP_AFTER = 3.5
MAX_REQUESTS_PER_WORKER = 3000


@dataclass(frozen=True)
class Handshake:
    started: float  # monotonic, before CONNECT
    finished: float
    leaf: x509.Certificate | None
    error: str | None


def _load(
    gw: GatewayProcess,
    origin: Origin,
    bundle: Path,
    worker: int,
    until: float,
    out: list[Handshake],
) -> None:
    ctx = client_context(bundle)
    for n in range(MAX_REQUESTS_PER_WORKER):
        started = time.monotonic()
        if started >= until:
            return
        # Odd requests: a new name, so a fresh leaf is issued. Even ones: one of a few names seen
        # before, so a leaf cached under the old CA would be served again if the cache let it.
        host = f"w{worker}-{n}.origin.test" if n % 2 else f"w{worker}-cached{n % 3}.origin.test"
        try:
            got = fetch(gw.proxy_port, host, origin.port, ctx, timeout=10)
            if got.status != 200 or body_for(host) not in got.body:
                raise AssertionError(f"status {got.status}: {got.body[:200]!r}")
            out.append(Handshake(started, time.monotonic(), got.leaf, None))
        except Exception as e:  # recorded and asserted on below
            out.append(Handshake(started, time.monotonic(), None, f"{host}: {type(e).__name__}: {e}"))


def _keepalive_get(conn: http.client.HTTPSConnection) -> str:
    conn.request("GET", "/", headers={"Connection": "keep-alive"})
    response = conn.getresponse()
    body = response.read().decode()
    assert response.status == 200, body[:300]
    return body


def _peer_leaf(conn: http.client.HTTPSConnection) -> x509.Certificate:
    der = conn.sock.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def test_hot_swap_under_load(gateway: GatewayProcess, origin: Origin, tmp_path: Path) -> None:
    old_ca = load_pem(gateway.ca_pem())
    with sdk.client(gateway) as c:
        account = sdk.account_id(c)
        new = sdk.generate_available(c, account)  # prepared, not yet in use
        new_ca = load_pem(new.certificate)
        bundle = tmp_path / "both-cas.pem"
        bundle.write_text(gateway.ca_pem() + new.certificate)

        # A keep-alive connection through the proxy, opened (and used) before the swap.
        keep = http.client.HTTPSConnection(
            "127.0.0.1", gateway.proxy_port, context=client_context(bundle), timeout=10
        )
        keep.set_tunnel("origin.test", origin.port)
        try:
            assert body_for("origin.test") in _keepalive_get(keep)
            keep_socket = keep.sock
            keep_leaf = _peer_leaf(keep)
            assert issued_by(keep_leaf, old_ca), describe(keep_leaf)

            results: list[list[Handshake]] = [[] for _ in range(WORKERS)]
            t0 = time.monotonic()
            until = t0 + LOAD_SECONDS
            threads = [
                threading.Thread(
                    target=_load, args=(gateway, origin, bundle, i, until, results[i]), daemon=True
                )
                for i in range(WORKERS)
            ]
            for t in threads:
                t.start()
            time.sleep(SWAP_AFTER)  # real time on purpose: the load builds up before the swap
            swap_sent = time.monotonic()
            sdk.turn_on(c, account, new.id)
            swap_returned = time.monotonic()
            for t in threads:
                t.join(LOAD_SECONDS + 30)
            assert not any(t.is_alive() for t in threads), "load threads did not finish"

            # The pre-swap connection still works, on the same socket and the same (old) leaf.
            assert body_for("origin.test") in _keepalive_get(keep)
            assert keep.sock is keep_socket, "the keep-alive connection was re-opened"
            assert _peer_leaf(keep) == keep_leaf
        finally:
            keep.close()

    handshakes = [h for per_worker in results for h in per_worker]
    errors = [h.error for h in handshakes if h.error]
    assert not errors, f"{len(errors)} of {len(handshakes)} requests failed, e.g. {errors[:5]}"

    before = [h for h in handshakes if h.finished < swap_sent]
    after = [h for h in handshakes if h.started > swap_returned]
    # Not vacuous: real traffic on both sides of the switch.
    assert len(before) >= 8 and len(after) >= 8, (len(before), len(after), len(handshakes))
    assert all(h.leaf is not None and issued_by(h.leaf, old_ca) for h in before), (
        "a pre-swap leaf is not from the old CA"
    )
    stale = [h for h in after if h.leaf is None or not issued_by(h.leaf, new_ca)]
    assert not stale, (
        f"{len(stale)} of {len(after)} handshakes started after the swap returned got a leaf "
        f"not from the new CA; first at +{stale[0].started - swap_returned:.3f} s: "
        f"{describe(stale[0].leaf) if stale[0].leaf else None}"
    )
