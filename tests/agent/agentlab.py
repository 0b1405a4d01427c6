"""Helpers for the agent tests: a signing CA, client certificates, real NSS databases, a TLS
server certificate, and enrollment tokens -- all made with ``cryptography`` and NSS tools."""

from __future__ import annotations

import base64
import ipaddress
import json
import shutil
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

Key = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


@dataclass(frozen=True)
class Issued:
    certificate: x509.Certificate
    key: Key

    def cert_pem(self) -> str:
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode()

    def key_pem(self, password: bytes | None = None) -> str:
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
        )
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        ).decode()


def now() -> datetime:
    return datetime.now(UTC)


def make_ca(name: str = "Device CA") -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now() - timedelta(hours=1))
        .not_valid_after(now() + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return Issued(cert, key)


def make_client(
    ca: Issued,
    cn: str,
    *,
    eku: tuple[x509.ObjectIdentifier, ...] = (ExtendedKeyUsageOID.CLIENT_AUTH,),
    sans: tuple[str, ...] = (),
    rsa_key: bool = False,
    organization: str | None = None,
    valid_from: timedelta = timedelta(hours=-1),
    valid_for: timedelta = timedelta(days=7),
) -> Issued:
    key: Key = rsa.generate_private_key(65537, 2048) if rsa_key else ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    *([x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization)] if organization else []),
                    x509.NameAttribute(NameOID.COMMON_NAME, cn),
                ]
            )
        )
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now() + valid_from)
        .not_valid_after(now() + valid_from + valid_for)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    if eku:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
    if sans:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(s) for s in sans]), critical=False
        )
    return Issued(builder.sign(ca.key, hashes.SHA256()), key)


def make_server_cert(host: str = "127.0.0.1") -> Issued:
    """A self-signed TLS server certificate for ``host`` (what the pin names)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now() - timedelta(hours=1))
        .not_valid_after(now() + timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return Issued(cert, key)


def fingerprint(cert: x509.Certificate) -> str:
    return ":".join(f"{b:02X}" for b in cert.fingerprint(hashes.SHA256()))


def make_token(
    server: str, *, account: str = "a" * 32, secret: str = "one-time-secret", pin: str = ""
) -> str:
    body = json.dumps({"u": server, "a": account, "s": secret, "f": pin}).encode()
    return "gwe1." + base64.urlsafe_b64encode(body).rstrip(b"=").decode()


# --- NSS ------------------------------------------------------------------------------------------


def need_nss() -> None:
    if not (shutil.which("certutil") and shutil.which("pk12util")):
        pytest.skip("NSS tools missing: run scripts/install-test-deps (libnss3-tools)")


def make_nssdb(directory: Path) -> Path:
    need_nss()
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["certutil", "-N", "-d", f"sql:{directory}", "--empty-password"], check=True, capture_output=True
    )
    return directory


def import_into_nssdb(directory: Path, issued: Issued, nickname: str, *, with_key: bool = True) -> None:
    """Import with the real tools: ``pk12util -i`` for certificate and key, ``certutil -A`` without."""
    if with_key:
        bundle = directory / f"{nickname}.p12"
        bundle.write_bytes(
            pkcs12.serialize_key_and_certificates(
                nickname.encode(),
                issued.key,
                issued.certificate,
                None,
                serialization.BestAvailableEncryption(b"import"),
            )
        )
        subprocess.run(
            ["pk12util", "-i", str(bundle), "-d", f"sql:{directory}", "-W", "import", "-K", ""],
            check=True, capture_output=True,
        )  # fmt: skip
        bundle.unlink()
    else:
        pem = directory / f"{nickname}.pem"
        pem.write_text(issued.cert_pem())
        subprocess.run(
            ["certutil", "-A", "-d", f"sql:{directory}", "-n", nickname, "-t", ",,", "-i", str(pem)],
            check=True, capture_output=True,
        )  # fmt: skip
        pem.unlink()


def delete_from_nssdb(directory: Path, nickname: str) -> None:
    subprocess.run(
        ["certutil", "-F", "-d", f"sql:{directory}", "-n", nickname], check=True, capture_output=True
    )


CERT_ID = "2458ce5a-0c35-4c7f-82c7-8e9487d3ff60"


def rule_api(
    rule_id: str,
    *,
    name: str | None = None,
    cn: str | None = "${hostname}.corp",
    paths: tuple[str, ...] = (),
    trust_stores: tuple[str, ...] = (),
    eku: tuple[str, ...] = ("clientAuth",),
    check_private_key: bool = True,
    sans: tuple[str, ...] = (),
    operating_system: str = "linux",
    match: tuple[str, ...] = ("linux",),
    schedule: str = "5m",
    expiration: str = "10m",
) -> dict[str, object]:
    """A client_certificate_v2 rule in the API shape."""
    body: dict[str, object] = {
        "certificate_id": CERT_ID,
        "check_private_key": check_private_key,
        "operating_system": operating_system,
        "extended_key_usage": list(eku),
        "locations": {"paths": list(paths), "trust_stores": list(trust_stores)},
    }
    if cn:
        body["cn"] = cn
    if sans:
        body["subject_alternative_names"] = list(sans)
    return {
        "id": rule_id,
        "name": name or rule_id,
        "type": "client_certificate_v2",
        "schedule": schedule,
        "expiration": expiration,
        "match": [{"platform": p} for p in match],
        "input": body,
    }


def wire_rule(rule: dict[str, object], ca: Issued) -> dict[str, object]:
    """One entry of GET /agent/posture_rules."""
    return {"rule": rule, "signing_certificates": ca.cert_pem()}
