"""pkilint's CA/Browser Forum server-certificate lint, in process, with the CLI's finding filter."""

from __future__ import annotations

from pkilint import finding_filter, loader
from pkilint.cabf import serverauth
from pkilint.cabf.serverauth import serverauth_constants
from pkilint.pkix import certificate
from pkilint.validation import ValidationFindingSeverity


def cabf_serverauth_findings(
    pem: str,
    *,
    certificate_type: serverauth_constants.CertificateType = (
        serverauth_constants.CertificateType.DV_FINAL_CERTIFICATE
    ),
    threshold: ValidationFindingSeverity = ValidationFindingSeverity.WARNING,
) -> list[tuple[str, str]]:
    """(severity, code) of every finding at `threshold` or worse (lower value = worse)."""
    doc = loader.RFC5280CertificateDocumentLoader().load_pem_document(pem, "leaf")
    validator = certificate.create_pkix_certificate_validator_container(
        serverauth.create_decoding_validators(), serverauth.create_validators(certificate_type)
    )
    results, _ = finding_filter.filter_results(
        serverauth.create_serverauth_finding_filters(certificate_type), validator.validate(doc.root)
    )
    return [
        (fd.finding.severity.name, fd.finding.code)
        for result in results
        for fd in result.finding_descriptions
        if fd.finding.severity <= threshold
    ]
