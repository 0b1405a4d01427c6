"""A minimal stand-in for the server's agent endpoints (docs/architecture.md, "Wire protocol
between agent and server", and "CA installation by the agent (issue 5)": root_certificates and
trust_stores), served for real on loopback from its own thread, so that the synchronous agent
and CLI can be tested before and apart from the real DeviceService.

It verifies what a real server must: the one-time enrollment secret, Basic auth, single-use
nonces it issued, and the proof of possession over ``certs.proof.proof_message``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import secrets
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from cryptography import x509

from certs.errors import CertError
from certs.proof import proof_message, verify_proof

ACCOUNT = "0123456789abcdef0123456789abcdef"


@dataclass
class StandIn:
    rules: list[dict[str, Any]] = field(default_factory=list)  # [{"rule": ..., "signing_certificates": PEM}]
    enroll_secret: str = "one-time-secret"
    devices: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> enroll body + secret
    nonces: dict[bytes, str] = field(default_factory=dict)  # raw nonce -> device id (unused ones)
    stored: list[dict[str, Any]] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)
    # issue 5: GET /agent/root_certificates lists these as they are (tests may put wrong ones in);
    # every POST /agent/trust_stores body is kept, by device
    roots: list[dict[str, Any]] = field(default_factory=list)
    trust_reports: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    # the real server offers a nonce with the rules and results answers (Gateway-Nonce headers)
    offer_nonces: bool = False
    offer_seconds: int = 120

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/client/v4/agent/enroll", self.enroll)
        app.router.add_get("/client/v4/agent/posture_rules", self.posture_rules)
        app.router.add_post("/client/v4/agent/nonce", self.nonce)
        app.router.add_post("/client/v4/agent/results", self.results)
        app.router.add_get("/client/v4/agent/root_certificates", self.root_certificates)
        app.router.add_post("/client/v4/agent/trust_stores", self.trust_stores)
        return app

    def latest_trust_report(self) -> dict[str, list[str]]:
        """store -> installed fingerprints, from the last POST /agent/trust_stores."""
        assert self.trust_reports, "no trust store report received"
        return {entry["store"]: entry["installed"] for entry in self.trust_reports[-1][1]["stores"]}

    async def root_certificates(self, request: web.Request) -> web.Response:
        self.requests.append((request.method, request.path))
        if self._device(request) is None:
            return self.error(401, "unknown device or wrong secret")
        return self.ok(self.roots)

    async def trust_stores(self, request: web.Request) -> web.Response:
        self.requests.append((request.method, request.path))
        device_id = self._device(request)
        if device_id is None:
            return self.error(401, "unknown device or wrong secret")
        body = await request.json()
        stores = body.get("stores") if isinstance(body, dict) else None
        if not isinstance(stores, list) or not all(
            isinstance(e, dict) and isinstance(e.get("store"), str) and isinstance(e.get("installed"), list)
            and isinstance(e.get("error"), str) for e in stores
        ):  # fmt: skip
            return self.error(400, 'expected {"stores": [{"store", "installed", "error"}]}')
        self.trust_reports.append((device_id, body))
        return self.ok({"stores": len(stores), "installed": sum(len(e["installed"]) for e in stores)})

    @staticmethod
    def ok(result: Any) -> web.Response:
        return web.json_response({"success": True, "errors": [], "messages": [], "result": result})

    @staticmethod
    def error(status: int, message: str) -> web.Response:
        body = {
            "success": False,
            "errors": [{"code": status, "message": message}],
            "messages": [],
            "result": None,
        }
        return web.json_response(body, status=status)

    async def enroll(self, request: web.Request) -> web.Response:
        self.requests.append((request.method, request.path))
        body = await request.json()
        if body.get("secret") != self.enroll_secret:
            return self.error(401, "unknown or used enrollment token")
        self.enroll_secret = secrets.token_hex(16)  # single use
        device_id = secrets.token_hex(16)
        secret = secrets.token_urlsafe(32)
        self.devices[device_id] = {**body, "device_secret": secret}
        return self.ok({"device_id": device_id, "device_secret": secret, "account_id": ACCOUNT})

    def _device(self, request: web.Request) -> str | None:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return None
        try:
            device_id, _, secret = base64.b64decode(header[6:]).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        known = self.devices.get(device_id)
        return device_id if known and known["device_secret"] == secret else None

    async def posture_rules(self, request: web.Request) -> web.Response:
        self.requests.append((request.method, request.path))
        device_id = self._device(request)
        if device_id is None:
            return self.error(401, "unknown device or wrong secret")
        return self._offer(device_id, self.ok(self.rules))

    def _offer(self, device_id: str, response: web.Response) -> web.Response:
        if self.offer_nonces:
            raw = secrets.token_bytes(32)
            self.nonces[raw] = device_id
            response.headers["Gateway-Nonce"] = base64.b64encode(raw).decode()
            response.headers["Gateway-Nonce-Expires-In"] = str(self.offer_seconds)
        return response

    async def nonce(self, request: web.Request) -> web.Response:
        self.requests.append((request.method, request.path))
        device_id = self._device(request)
        if device_id is None:
            return self.error(401, "unknown device or wrong secret")
        raw = secrets.token_bytes(32)
        self.nonces[raw] = device_id
        return self.ok({"nonce": base64.b64encode(raw).decode(), "expires_at": "2099-01-01T00:00:00Z"})

    async def results(self, request: web.Request) -> web.Response:
        self.requests.append((request.method, request.path))
        device_id = self._device(request)
        if device_id is None:
            return self.error(401, "unknown device or wrong secret")
        answer = []
        redeemed: set[bytes] = set()  # one nonce may prove every rule of one report
        for item in (await request.json())["results"]:
            success, verified, reason = False, False, item.get("reason", "")
            if item.get("success"):
                success, verified, reason = self._verify(device_id, item, redeemed)
            record = {"rule_id": item["rule_id"], "success": success, "verified": verified, "reason": reason,
                      "expires_at": "2099-01-01T00:00:00Z"}  # fmt: skip
            self.stored.append({**record, "sent": item})
            answer.append(record)
        return self._offer(device_id, self.ok(answer))

    def _verify(self, device_id: str, item: dict[str, Any], redeemed: set[bytes]) -> tuple[bool, bool, str]:
        if not (item.get("nonce") and item.get("certificate") and item.get("signature")):
            return False, False, "no proof of possession"
        raw = base64.b64decode(item["nonce"])
        if raw not in redeemed and self.nonces.pop(raw, None) != device_id:
            return False, False, "nonce not issued to this device, or used"
        redeemed.add(raw)
        cert = x509.load_pem_x509_certificate(item["certificate"].encode())
        message = proof_message(nonce=raw, device_id=device_id, rule_id=item["rule_id"])
        try:
            verify_proof(cert, message, base64.b64decode(item["signature"]))
        except CertError as e:
            return False, False, str(e)
        return True, True, ""


class ServerThread:
    """Serves an aiohttp application on 127.0.0.1 from a thread of its own."""

    def __init__(
        self, make_app: Callable[[], web.Application], *, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self._make_app = make_app
        self._ssl = ssl_context
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self._ssl else 'http'}://127.0.0.1:{self.port}"

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._start())
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._runner.cleanup() if self._runner else asyncio.sleep(0))
        self._loop.close()

    async def _start(self) -> None:
        self._runner = web.AppRunner(self._make_app())
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self._ssl)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    def call(self, coroutine: Any) -> Any:
        """Run a coroutine on the server's loop (to read its state from the test)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=30)

    def start(self) -> ServerThread:
        self._thread.start()
        if not self._ready.wait(timeout=30):
            raise RuntimeError("the test server did not start")
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)


@contextmanager
def serving(
    make_app: Callable[[], web.Application], *, ssl_context: ssl.SSLContext | None = None
) -> Iterator[ServerThread]:
    server = ServerThread(make_app, ssl_context=ssl_context).start()
    try:
        yield server
    finally:
        server.stop()
