"""The admin API calls the lab makes (Cloudflare's v4 shapes): readiness, the account, the
gateway's CA, the device CA upload, the posture rule and an enrollment token."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import aiohttp

logger = logging.getLogger(__name__)

REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=15)


class AdminError(Exception):
    """The admin API refused or did not answer; the message says what was asked."""


class AdminClient:
    def __init__(self, session: aiohttp.ClientSession, base_url: str, token: str) -> None:
        self._session = session
        self._base = base_url.rstrip("/")
        self._auth = {"Authorization": f"Bearer {token}"}

    async def wait_ready(self, timeout: float, *, alive: Any = None) -> None:
        """``/healthz`` answers 200, or AdminError after ``timeout`` (sooner when ``alive()`` is false)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if alive is not None and not alive():
                raise AdminError("the gateway exited while starting")
            try:
                async with self._session.get(
                    f"{self._base}/healthz", timeout=aiohttp.ClientTimeout(total=2)
                ) as r:
                    if r.status == 200:
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(0.1)
        raise AdminError(f"the gateway's admin API did not answer within {timeout:.0f} s")

    async def ca_pem(self) -> str:
        async with self._session.get(f"{self._base}/pki/ca.pem", timeout=REQUEST_TIMEOUT) as r:
            if r.status != 200:
                raise AdminError(f"GET /pki/ca.pem: HTTP {r.status}")
            return await r.text()

    async def account_id(self) -> str:
        accounts = await self._call("GET", "/client/v4/accounts")
        if not isinstance(accounts, list) or not accounts:
            raise AdminError("GET /accounts: no account")
        return str(accounts[0]["id"])

    async def upload_device_ca(self, account: str, pem: str, name: str) -> str:
        body = {"ca": True, "certificates": pem, "name": name}
        return str((await self._call("POST", f"/client/v4/accounts/{account}/mtls_certificates", body))["id"])

    async def create_posture_rule(self, account: str, body: dict[str, Any]) -> str:
        return str((await self._call("POST", f"/client/v4/accounts/{account}/devices/posture", body))["id"])

    async def enrollment_token(self, account: str, email: str) -> str:
        body = {"email": email, "expires_in": "10m"}
        result = await self._call("POST", f"/client/v4/accounts/{account}/devices/enrollment_tokens", body)
        return str(result["token"])

    async def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        try:
            async with self._session.request(
                method, self._base + path, json=body, headers=self._auth, timeout=REQUEST_TIMEOUT
            ) as r:
                answer = await r.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as e:
            raise AdminError(f"{method} {path}: {e or type(e).__name__}") from e
        if not isinstance(answer, dict) or not answer.get("success"):
            errors = answer.get("errors") if isinstance(answer, dict) else answer
            raise AdminError(f"{method} {path}: HTTP {r.status}: {errors}")
        return answer["result"]
