"""Report results: one fresh nonce per report, a proof per passing result, one POST.

The answers to the agent's requests carry a fresh single-use nonce (``Gateway-Nonce``); the
agent proves a report with the one it was last offered, if that stays valid long enough, and
otherwise asks ``POST /agent/nonce`` for one. For each passing rule it signs
``certs.proof.proof_message(nonce, device id, rule id)`` with the certificate's private key
(``certs.proof.sign_proof``) and sends the certificate (PEM), the nonce (base64, as received)
and the signature (base64): the rule id in the message keeps one nonce from proving a rule it
was not signed for, and the server redeems it once, for the whole report. A pass without a
usable private key is still sent, without a signature and with the reason, so that the server
records why it could not be verified. A failing rule is sent with its reason. The server
answers with what it stored.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization

from agent import addresses
from agent.checks import AgentRule, RuleCheck, parse_rules
from agent.errors import AgentError
from agent.locations import KeyUnavailable
from agent.store_key import StoreKey
from agent.transport import Transport
from certs.errors import CertError
from certs.proof import proof_message, sign_proof

logger = logging.getLogger(__name__)

RULES_PATH = "/agent/posture_rules"
NONCE_PATH = "/agent/nonce"
RESULTS_PATH = "/agent/results"
MAX_REASON_CHARS = 1000


@dataclass(frozen=True)
class Stored:
    """One result as the server stored it."""

    rule_id: str
    success: bool
    verified: bool
    reason: str
    expires_at: str = ""  # RFC 3339, when the server says


def fetch_rules(transport: Transport) -> list[AgentRule]:
    return parse_rules(transport.get(RULES_PATH))


def fetch_nonce(transport: Transport) -> str:
    answer = transport.post(NONCE_PATH, {})
    nonce = answer.get("nonce") if isinstance(answer, dict) else None
    if not isinstance(nonce, str) or not nonce:
        raise AgentError("the server's answer to POST /agent/nonce holds no nonce")
    return nonce


class ReportNonce:
    """The report's nonce, got when the first proof needs it: the one the server last offered,
    or a new one from ``POST /agent/nonce``."""

    def __init__(self, transport: Transport) -> None:
        self._transport = transport
        self._nonce: str | None = None

    def __call__(self) -> str:
        if self._nonce is None:
            self._nonce = self._transport.take_nonce() or fetch_nonce(self._transport)
        return self._nonce


def build_result(check: RuleCheck, nonce: Callable[[], str], *, device_id: str) -> dict[str, Any]:
    """The wire form of one result; for a pass, with the certificate and the proof over
    ``nonce()``."""
    if not check.passed or check.certificate is None:
        return {"rule_id": check.rule_id, "success": False, "reason": check.reason[:MAX_REASON_CHARS]}
    result: dict[str, Any] = {
        "rule_id": check.rule_id,
        "success": True,
        "reason": "",
        "certificate": check.certificate.public_bytes(serialization.Encoding.PEM).decode(),
    }
    if check.key is None:
        result["reason"] = f"no proof of possession: {check.key_problem}"[:MAX_REASON_CHARS]
        return result
    nonce_text = nonce()
    try:
        raw = base64.b64decode(nonce_text, validate=True)
        message = proof_message(nonce=raw, device_id=device_id, rule_id=check.rule_id)
    except (binascii.Error, ValueError):
        raise AgentError("the server sent a nonce that is not base64") from None
    except CertError as e:
        result["reason"] = f"no proof of possession: {e}"[:MAX_REASON_CHARS]
        return result
    try:
        if isinstance(check.key, StoreKey):  # the platform signs; the key never leaves it
            signature = check.key.sign(message)
        else:
            signature = sign_proof(check.key, message)
    except (CertError, KeyUnavailable) as e:
        result["reason"] = f"no proof of possession: {e}"[:MAX_REASON_CHARS]
        return result
    result["nonce"] = nonce_text
    result["signature"] = base64.b64encode(signature).decode("ascii")
    return result


def report(checks: Sequence[RuleCheck], transport: Transport, *, device_id: str) -> list[Stored]:
    """Send the device's addresses, then every result that names a rule; the server's record
    of each."""
    addresses.register(transport)
    nonce = ReportNonce(transport)
    results = [build_result(check, nonce, device_id=device_id) for check in checks if check.rule_id]
    if not results:
        return []
    answer = transport.post(RESULTS_PATH, {"results": results})
    if isinstance(answer, dict) and isinstance(answer.get("results"), list):
        answer = answer["results"]
    if not isinstance(answer, list):
        raise AgentError("the server's answer to POST /agent/results is not a list of stored results")
    stored = []
    for item in answer:
        if not isinstance(item, dict):
            raise AgentError(
                "the server's answer to POST /agent/results holds something that is not a result"
            )
        stored.append(
            Stored(
                rule_id=str(item.get("rule_id", "")),
                success=item.get("success") is True,
                verified=item.get("verified") is True,
                reason=str(item.get("reason") or ""),
                expires_at=str(item.get("expires_at") or ""),
            )
        )
    for entry in stored:
        logger.info(
            "stored: rule %s %s%s%s", entry.rule_id, "pass" if entry.success else "fail",
            " (verified)" if entry.verified else "", f": {entry.reason}" if entry.reason else "",
        )  # fmt: skip
    return stored
