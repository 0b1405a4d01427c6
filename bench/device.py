"""One enrolled device with a verified posture pass, for the ``gateway-device`` target (issue 4).

Through the running gateway's admin and agent API, as an admin and ``gateway agent`` would
(docs/api.md "Agent endpoints"): upload a device signing CA (``mtls_certificates``), create a
``client_certificate_v2`` posture rule (CN ``${hostname}.corp``), add one Gateway rule that reads
the posture (block ``posture.bench.test`` unless that rule passed), make an enrollment token,
enroll the device (``POST /agent/enroll``), and report a passing result proven with the device
certificate's key over a server nonce (``POST /agent/nonce``, ``certs.proof``). The server must
store it as verified.

The load client then sends ``Proxy-Authorization: Basic base64(device_id:device_secret)`` on its
CONNECT (:attr:`Device.proxy_headers`): the gateway attaches the device to every request of the
tunnel and looks up its identity and posture for each decision. A probe of ``posture.bench.test``
(200 as the device, 403 without) and the request log (:func:`logged_with`) prove that it does.
"""

from __future__ import annotations

import base64
import datetime
import json
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pki import Authority

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from certs.proof import proof_message, sign_proof

API = "/client/v4"
POSTURE_HOST = "posture.bench.test"  # blocked unless the device's posture rule passed
HOSTNAME = "bench-device"


@dataclass(frozen=True)
class Device:
    device_id: str
    secret: str
    account: str
    posture_rule_id: str
    gateway_rule_id: str
    certificate_pem: str = ""  # the device's client certificate, and its key, for more reports
    key_pem: str = ""

    @property
    def proxy_headers(self) -> dict[str, str]:
        return {"Proxy-Authorization": self._basic}

    @property
    def agent_headers(self) -> dict[str, str]:
        """What ``gateway agent`` sends to the agent API: the same credentials."""
        return {"Authorization": self._basic}

    @property
    def _basic(self) -> str:
        return "Basic " + base64.b64encode(f"{self.device_id}:{self.secret}".encode()).decode()


# Never via a proxy environment variable. Made once: each opener makes an SSL context and loads
# the system's CA certificates into it (~30 ms of CPU), which would be most of a report's cost.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _call(method: str, url: str, body: Any = None, headers: dict[str, str] | None = None) -> Any:
    """One JSON request; the envelope's ``result``, or RuntimeError naming the call and the errors."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with _OPENER.open(request, timeout=15) as resp:
            return json.loads(resp.read())["result"]
    except urllib.error.HTTPError as e:
        raise RuntimeError(
            f"gateway-device setup: {method} {url}: HTTP {e.code}: {e.read()[:400]!r}"
        ) from None


def _device_certificate(ca: Authority, hostname: str) -> tuple[str, ec.EllipticCurvePrivateKey]:
    """A clientAuth certificate for ``hostname.corp`` issued by ``ca``, and its key."""
    now = datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{hostname}.corp")]))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key


def enroll(admin: str, token: str) -> Device:
    """Set up the device, its rules and a verified pass on the gateway whose admin API is ``admin``
    (``http://127.0.0.1:PORT``) with admin token ``token``."""
    base = admin + API
    bearer = {"Authorization": f"Bearer {token}"}
    accounts = _call("GET", f"{base}/accounts", headers=bearer)
    if len(accounts) != 1:
        raise RuntimeError(f"gateway-device setup: expected one account, got {len(accounts)}")
    account = accounts[0]["id"]
    acct = f"{base}/accounts/{account}"
    ca = Authority.generate("Bench device signing CA")
    upload = _call(
        "POST",
        f"{acct}/mtls_certificates",
        {"name": "bench devices", "ca": True, "certificates": ca.cert_pem().decode()},
        bearer,
    )
    rule = _call(
        "POST",
        f"{acct}/devices/posture",
        {
            "name": "bench device certificate",
            "type": "client_certificate_v2",
            "expiration": "1h",
            "match": [{"platform": "linux"}],
            "input": {
                "certificate_id": upload["id"],
                "check_private_key": True,
                "operating_system": "linux",
                "cn": "${hostname}.corp",
                "extended_key_usage": ["clientAuth"],
            },
        },
        bearer,
    )
    gateway_rule = _call(
        "POST",
        f"{acct}/gateway/rules",
        {
            "name": "bench posture",
            "action": "block",
            "filters": ["http"],
            "enabled": True,
            "precedence": 1,
            "traffic": f'http.request.host == "{POSTURE_HOST}"',
            "device_posture": f'not(any(device_posture.checks.passed[*] in {{"{rule["id"]}"}}))',
        },
        bearer,
    )
    made = _call("POST", f"{acct}/devices/enrollment_tokens", {"email": "bench@example.com"}, bearer)
    body = made["token"].removeprefix("gwe1.")
    secret = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))["s"]
    enrolled = _call(
        "POST",
        f"{base}/agent/enroll",
        {"secret": secret, "name": HOSTNAME, "os": "linux", "hostname": HOSTNAME, "serial_number": "BENCH-1"},
    )
    cert_pem, key = _device_certificate(ca, HOSTNAME)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    device = Device(
        enrolled["device_id"],
        enrolled["device_secret"],
        account,
        rule["id"],
        gateway_rule["id"],
        cert_pem,
        key_pem,
    )
    report_pass(admin, device)
    return device


def ask_nonce(admin: str, device: Device) -> str:
    """A server nonce for the device (``POST /agent/nonce``): a request that changes nothing."""
    return str(_call("POST", f"{admin}{API}/agent/nonce", {}, device.agent_headers)["nonce"])


def report_pass(admin: str, device: Device) -> None:
    """One verified passing result for the device's posture rule, as ``gateway agent report``
    sends it: a server nonce, then the result proven with the device certificate's key."""
    nonce = ask_nonce(admin, device)
    key = serialization.load_pem_private_key(device.key_pem.encode(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    message = proof_message(
        nonce=base64.b64decode(nonce), device_id=device.device_id, rule_id=device.posture_rule_id
    )
    stored = _call(
        "POST",
        f"{admin}{API}/agent/results",
        {
            "results": [
                {
                    "rule_id": device.posture_rule_id,
                    "success": True,
                    "nonce": nonce,
                    "certificate": device.certificate_pem,
                    "signature": base64.b64encode(sign_proof(key, message)).decode(),
                }
            ]
        },
        device.agent_headers,
    )
    if not (len(stored) == 1 and stored[0]["success"] and stored[0]["verified"]):
        raise RuntimeError(f"gateway-device: the passing result was not stored as verified: {stored}")


def logged_with(request_log: Path, device_id: str, host: str) -> dict[str, int]:
    """Lines of the gateway's JSON request log (rotated files too) for ``host``, and how many of
    them carry the device."""
    lines = identified = 0
    for path in sorted(request_log.parent.glob(request_log.name + "*")):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            if record.get("host") == host:
                lines += 1
                identified += record.get("device") == device_id
    return {"logged": lines, "identified": identified}
