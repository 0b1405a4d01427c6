"""Certificate records: built from a certificate (sealing its key) and read back to a CA."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from certs.authority import CertificateAuthority
from certs.errors import CertError
from certs.lifecycle import BindingStatus
from certs.sealing import KeySealer
from proxy.services.uploads import facts_of
from proxy.store import CertificateKind, CertificateRecord

logger = logging.getLogger(__name__)


def _pem(certificate: x509.Certificate) -> str:
    return certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")


def new_record(
    account_id: str,
    kind: CertificateKind,
    certificate: x509.Certificate,
    chain: Sequence[x509.Certificate],
    authority: CertificateAuthority | None,
    sealer: KeySealer,
    *,
    name: str,
    now: datetime,
    binding_status: BindingStatus | None,
    auto_generated: bool = False,
) -> CertificateRecord:
    """A new record with a fresh UUID; the key (if any) sealed with the id as context."""
    cert_id = str(uuid.uuid4())
    sealed = None
    if authority is not None:
        sealed = sealer.seal(authority.private_key_pem(), context=cert_id.encode())
    facts = facts_of(certificate)
    return CertificateRecord(
        id=cert_id,
        account_id=account_id,
        kind=kind,
        name=name,
        certificate_pem=_pem(certificate),
        chain_pem="".join(_pem(c) for c in chain),
        sealed_private_key=sealed,
        fingerprint=facts.fingerprint,
        issuer_org=facts.issuer_org,
        issuer_raw=facts.issuer_raw,
        serial=facts.serial,
        signature_algorithm=facts.signature_algorithm,
        binding_status=binding_status,
        in_use=False,
        auto_generated=auto_generated,
        created_at=now,
        updated_at=now,
        uploaded_on=now,
        expires_on=facts.expires_on,
    )


def load_authority(record: CertificateRecord, sealer: KeySealer) -> CertificateAuthority:
    """Unseal the record's key and rebuild its CA (no upload checks: it passed them once).

    Raises CertError when there is no key or it cannot be unsealed (wrong master key, tampering).
    """
    if record.sealed_private_key is None:
        raise CertError(f"certificate {record.id} has no private key")
    key_pem = sealer.unseal(record.sealed_private_key, context=record.id.encode())
    key = serialization.load_pem_private_key(key_pem, password=None)
    if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
        raise CertError(f"certificate {record.id}: stored key of an unsupported type")
    certificate = x509.load_pem_x509_certificate(record.certificate_pem.encode("ascii"))
    chain: tuple[x509.Certificate, ...] = ()
    if record.chain_pem:
        chain = tuple(x509.load_pem_x509_certificates(record.chain_pem.encode("ascii")))
    return CertificateAuthority(certificate=certificate, private_key=key, chain=chain)
