"""Helpers for the agent tests: real NSS databases (NSS tools), enrollment tokens and posture rules
in the API's shape. Certificates come from ``tests.support.pki``."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from tests.support.pki import Issued


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
