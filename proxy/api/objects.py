"""Domain records as the JSON objects of Cloudflare's API (never with a private key)."""

from __future__ import annotations

import logging
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from proxy.api.envelope import timestamp
from proxy.store import (
    Account,
    CertificateKind,
    CertificateRecord,
    GatewayConfiguration,
    Node,
)

logger = logging.getLogger(__name__)


def account(record: Account) -> dict[str, Any]:
    return {
        "id": record.id,
        "name": record.name,
        "type": "standard",
        "settings": {},
        "created_on": timestamp(record.created_at),
    }


def gateway_certificate(record: CertificateRecord) -> dict[str, Any]:
    kind = "gateway_managed" if record.kind is CertificateKind.GATEWAY_MANAGED else "custom"
    return {
        "id": record.id,
        "type": kind,
        "binding_status": record.binding_status.value if record.binding_status else "inactive",
        "in_use": record.in_use,
        "certificate": record.certificate_pem,
        "fingerprint": record.fingerprint,
        "issuer_org": record.issuer_org,
        "issuer_raw": record.issuer_raw,
        "created_at": timestamp(record.created_at),
        "updated_at": timestamp(record.updated_at),
        "uploaded_on": timestamp(record.uploaded_on),
        "expires_on": timestamp(record.expires_on),
    }


def mtls_certificate(record: CertificateRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "name": record.name,
        "ca": True,
        "certificates": record.certificate_pem + record.chain_pem,
        "issuer": record.issuer_raw,
        "serial_number": record.serial,
        "signature": record.signature_algorithm,
        "type": "custom",
        "uploaded_on": timestamp(record.uploaded_on),
        "updated_at": timestamp(record.updated_at),
        "expires_on": timestamp(record.expires_on),
    }


def configuration(record: GatewayConfiguration) -> dict[str, Any]:
    return {
        "settings": record.settings,
        "created_at": timestamp(record.created_at),
        "updated_at": timestamp(record.updated_at),
    }


def node(record: Node, *, live: bool, current: bool, loaded: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": record.id,
        "name": record.name,
        "started_at": timestamp(record.started_at),
        "last_heartbeat": timestamp(record.last_heartbeat),
        "live": live,
        "current": current,
        "loaded_certificates": loaded,
    }


def certificate_der(record: CertificateRecord) -> bytes:
    """The record's CA certificate, DER."""
    certificate = x509.load_pem_x509_certificate(record.certificate_pem.encode("ascii"))
    return certificate.public_bytes(serialization.Encoding.DER)
