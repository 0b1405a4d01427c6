"""The device lab: a device CA uploaded through mTLS, client certificates with CN/EKU/validity
variants, a DeviceService with one posture rule on the test gateway, and helpers to enroll devices
and build reports with real proofs of possession."""

from __future__ import annotations

import base64
import dataclasses
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from certs.proof import proof_message, sign_proof
from proxy.api import ApiDeps
from proxy.services.device_enrollment import DeviceDetails
from proxy.services.devices import DeviceService
from proxy.services.posture_verify import Report
from proxy.store import Device
from tests.support.pki import CLIENT_AUTH, EMAIL_PROTECTION, Issued, issue_leaf, make_ca
from tests.support.server import Gateway

EKUS = {"clientAuth": CLIENT_AUTH, "emailProtection": EMAIL_PROTECTION}
HOSTNAME = "laptop-7"
SERIAL = "SN-0042"
EMAIL = "ana@example.com"


def pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


@dataclass(frozen=True)
class DeviceCa:
    """The CA that signs device certificates, and the certificates it signs (no basic
    constraints on them, as many corporate device CAs issue)."""

    issued: Issued

    @property
    def certificate(self) -> x509.Certificate:
        return self.issued.certificate

    @property
    def key(self) -> ec.EllipticCurvePrivateKey:
        assert isinstance(self.issued.key, ec.EllipticCurvePrivateKey)
        return self.issued.key

    @classmethod
    def generate(cls, now: datetime, name: str = "Device CA") -> DeviceCa:
        return cls(make_ca(name, now=now, not_before=timedelta(days=-1)))

    def issue(
        self,
        now: datetime,
        *,
        cn: str = f"{HOSTNAME}.corp",
        ekus: tuple[str, ...] = ("clientAuth",),
        sans: tuple[str, ...] = (),
        valid_from: timedelta = timedelta(hours=-1),
        valid_for: timedelta = timedelta(days=30),
    ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        leaf = issue_leaf(
            self.issued, cn, ekus=tuple(EKUS[e] for e in ekus), dns_names=sans, now=now,
            valid_from=valid_from, valid_for=valid_for, basic_constraints=False,
        )  # fmt: skip
        assert isinstance(leaf.key, ec.EllipticCurvePrivateKey)
        return leaf.certificate, leaf.key


def rule_body(certificate_id: str, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "corp certificate",
        "type": "client_certificate_v2",
        "description": "a device certificate from the corp CA",
        "schedule": "5m",
        "expiration": "10m",
        "match": [{"platform": "linux"}],
        "input": {
            "certificate_id": certificate_id,
            "check_private_key": True,
            "operating_system": "linux",
            "cn": "${hostname}.corp",
            "extended_key_usage": ["clientAuth"],
            "locations": {"paths": ["/etc/pki/client.pem"]},
        },
    }
    body.update(changes)
    return body


@dataclass
class Lab:
    gateway: Gateway
    service: DeviceService
    ca: DeviceCa
    ca_id: str  # the mTLS upload
    rule_id: str

    @property
    def account(self) -> str:
        return self.gateway.account_id

    @property
    def now(self) -> datetime:
        return self.gateway.clock()

    def api(self) -> ApiDeps:
        return dataclasses.replace(self.gateway.api(), devices=self.service)

    def enroll(
        self,
        *,
        hostname: str = HOSTNAME,
        os: str = "linux",
        serial: str = SERIAL,
        email: str = EMAIL,
        name: str | None = None,
    ) -> tuple[Device, str]:
        issued = self.service.create_enrollment_token(self.account, email=email)
        secret = token_secret(issued.token)
        details = DeviceDetails.from_api(
            {"name": name or hostname, "os": os, "hostname": hostname, "serial_number": serial}
        )
        enrolled = self.service.enroll(secret, details, "127.0.0.1")
        return enrolled.device, enrolled.secret

    async def passing(
        self,
        device: Device,
        cert: x509.Certificate,
        key: ec.EllipticCurvePrivateKey,
        *,
        rule_id: str | None = None,
        nonce: bytes | None = None,
    ) -> Report:
        """A passing report with a real proof over a fresh nonce (unless one is given)."""
        rule_id = rule_id or self.rule_id
        if nonce is None:
            nonce = (await self.service.issue_nonce(device, "127.0.0.1")).nonce
        signature = sign_proof(key, proof_message(nonce=nonce, device_id=device.id, rule_id=rule_id))
        return Report(
            rule_id=rule_id,
            success=True,
            nonce=base64.b64encode(nonce).decode(),
            certificate=pem(cert),
            signature=base64.b64encode(signature).decode(),
        )


def token_secret(token: str) -> str:
    import json

    body = token.removeprefix("gwe1.")
    return str(json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))["s"])


def make_lab(gateway: Gateway, *, proof_worker: bool = False) -> Lab:
    ca = DeviceCa.generate(gateway.clock())
    upload = gateway.service.create_mtls(gateway.account_id, certificates=pem(ca.certificate), name="devices")
    service = DeviceService(
        gateway.store, gateway.clock, public_base_url="http://127.0.0.1:8081", proof_worker=proof_worker
    )
    rule = service.create_rule(gateway.account_id, rule_body(upload.id))
    return Lab(gateway, service, ca, upload.id, rule.id)
