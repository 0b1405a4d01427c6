"""macOS ``security`` and Windows PowerShell as the agent meets them, for tests on Linux.

Each fake is a ``agent.runner.Runner``: it answers every command the agent runs with the
stdout, stderr and exit status the real tool gives, rendered from real certificates made in the
test (``tests.support.pki``): ``security find-certificate -a -p -Z`` hash lines and PEM blocks,
``find-identity``'s numbered lines, a PKCS#12 written by ``export``, the property list of
``trust-settings-export``; PowerShell's ``ConvertTo-Json -Compress`` of the listing the agent's
script asks for, its signature object, the one-line error the script writes. The formats were
written from the tools' documentation, not captured on a real Mac or Windows machine
(docs/agent.md says so). Every command is kept in ``calls``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import plistlib
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import pkcs12

from agent.macos_security import SECURITY
from agent.runner import Command, Completed, ToolMissing
from agent.serial_number import IOREG
from agent.windows_powershell import POWERSHELL, decode_script
from tests.support.pki import Issued

# --- macOS ----------------------------------------------------------------------------------------


def sha1_of(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA1()).hex().upper()  # macOS and Windows name certificates by it


def render_find_certificate(certificates: list[x509.Certificate], *, sha256: bool = True) -> str:
    """``security find-certificate -a -p -Z`` (with ``SHA-256 hash:`` on current macOS)."""
    out = []
    for cert in certificates:
        if sha256:
            out.append(f"SHA-256 hash: {cert.fingerprint(hashes.SHA256()).hex().upper()}\n")
        out.append(f"SHA-1 hash: {sha1_of(cert)}\n")
        out.append(cert.public_bytes(serialization.Encoding.PEM).decode())
    return "".join(out)


def render_find_identity(identities: list[tuple[str, str, str]]) -> str:
    """``security find-identity KEYCHAIN``: (sha1, label, status) -- status "" for a valid one."""
    lines = ["Policy: X.509 Basic", "  Matching identities"]
    for number, (sha1, label, status) in enumerate(identities, start=1):
        lines.append(f'  {number}) {sha1} "{label}"' + (f" ({status})" if status else ""))
    lines.append(f"     {len(identities)} identities found")
    lines += ["", "  Valid identities only"]
    valid = [i for i in identities if not i[2]]
    for number, (sha1, label, _) in enumerate(valid, start=1):
        lines.append(f'  {number}) {sha1} "{label}"')
    lines.append(f"     {len(valid)} valid identities found")
    return "\n".join(lines) + "\n"


@dataclass
class KeychainItem:
    issued: Issued
    with_key: bool = True
    label: str = ""
    status: str = ""  # find-identity's (CSSMERR_TP_CERT_EXPIRED) for an expired one


@dataclass
class FakeSecurity:
    """``/usr/bin/security`` over keychains in memory (path -> items)."""

    keychains: dict[str, list[KeychainItem]] = field(default_factory=dict)
    trusted: dict[str, list[x509.Certificate]] = field(default_factory=dict)  # admin trust settings
    root: bool = True  # may change admin trust settings and the System keychain
    exportable: bool = True
    unexportable: set[str] = field(default_factory=set)  # keychains whose keys security may not export
    installed: bool = True
    sha256_lines: bool = True
    serial: str = "C02TEST0MAC1"
    override: dict[str, Completed] = field(default_factory=dict)  # subcommand -> canned answer
    calls: list[Command] = field(default_factory=list)

    def run(self, command: Command) -> Completed:
        self.calls.append(command)
        if command.argv[0] == IOREG:  # the serial number, at enrollment
            return Completed(0, f'  {{\n    "IOPlatformSerialNumber" = "{self.serial}"\n  }}\n'.encode())
        assert command.argv[0] == SECURITY, command.argv
        if not self.installed:
            raise ToolMissing(f"{SECURITY} is not installed on this system")
        sub, args = command.argv[1], list(command.argv[2:])
        if sub in self.override:
            return self.override[sub]
        handler = getattr(self, "_" + sub.replace("-", "_"))
        result: Completed = handler(args)
        return result

    def items(self, path: str) -> list[KeychainItem] | None:
        return self.keychains.get(path)

    def _no_keychain(self) -> Completed:
        return Completed(
            50, b"", b"security: SecKeychainSearchCopyNext: The specified keychain could not be found.\n"
        )

    def _find_certificate(self, args: list[str]) -> Completed:
        assert args[:3] == ["-a", "-p", "-Z"], args
        items = self.items(args[3])
        if items is None:
            return self._no_keychain()
        text = render_find_certificate([i.issued.certificate for i in items], sha256=self.sha256_lines)
        return Completed(0, text.encode())

    def _find_identity(self, args: list[str]) -> Completed:
        items = self.items(args[0])
        if items is None:
            return self._no_keychain()
        identities = [
            (sha1_of(i.issued.certificate), i.label or _cn(i.issued.certificate), i.status)
            for i in items
            if i.with_key
        ]
        return Completed(0, render_find_identity(identities).encode())

    def _export(self, args: list[str]) -> Completed:
        options = dict(zip(args[::2], args[1::2], strict=True))
        items = self.items(options["-k"])
        if items is None:
            return self._no_keychain()
        if not self.exportable or options["-k"] in self.unexportable:
            return Completed(
                1, b"", b"security: SecKeychainItemExport: The contents of this item cannot be retrieved.\n"
            )
        keyed = [i for i in items if i.with_key]
        if not keyed:
            return Completed(
                1, b"", b"security: SecKeychainItemExport: The specified item could not be found.\n"
            )
        first = keyed[
            0
        ].issued  # PKCS#12 as cryptography writes it: one key; the other certificates ride along
        others = [i.issued.certificate for i in keyed[1:]]
        data = pkcs12.serialize_key_and_certificates(
            b"identity", first.key, first.certificate, others or None,
            serialization.BestAvailableEncryption(options["-P"].encode()),
        )  # fmt: skip
        Path(options["-o"]).write_bytes(data)
        return Completed(0)

    def _trust_settings_export(self, args: list[str]) -> Completed:
        assert args[0] == "-d", args
        roots = [c for certs in self.trusted.values() for c in certs]
        if not roots:
            return Completed(
                1, b"", b"SecTrustSettingsCreateExternalRepresentation: No Trust Settings were found.\n"
            )
        trust_list = {
            sha1_of(c): {
                "issuerName": c.issuer.public_bytes(),
                "serialNumber": c.serial_number.to_bytes(20, "big").lstrip(b"\0"),
                "modDate": datetime(2026, 1, 1, tzinfo=UTC).replace(tzinfo=None),
                "trustSettings": [],
            }
            for c in roots
        }
        Path(args[1]).write_bytes(plistlib.dumps({"trustList": trust_list, "trustVersion": 1}))
        return Completed(0)

    def _denied(self) -> Completed:
        return Completed(
            1,
            b"",
            b"SecTrustSettingsSetTrustSettings: The authorization was denied since no user interaction was possible.\n",
        )

    def _add_trusted_cert(self, args: list[str]) -> Completed:
        assert args[:5] == ["-d", "-r", "trustRoot", "-k", args[4]], args
        if not self.root:
            return self._denied()
        cert = x509.load_pem_x509_certificate(Path(args[5]).read_bytes())
        items = self.keychains.setdefault(args[4], [])
        if all(sha1_of(i.issued.certificate) != sha1_of(cert) for i in items):
            items.append(KeychainItem(Issued(cert, ec.generate_private_key(ec.SECP256R1())), with_key=False))
        self.trusted.setdefault(args[4], []).append(cert)
        return Completed(0)

    def _remove_trusted_cert(self, args: list[str]) -> Completed:
        if not self.root:
            return self._denied()
        cert = x509.load_pem_x509_certificate(Path(args[1]).read_bytes())
        for certs in self.trusted.values():
            if cert in certs:
                certs.remove(cert)
                return Completed(0)
        return Completed(
            1,
            b"",
            b"SecTrustSettingsRemoveTrustSettings: The specified item could not be found in the keychain.\n",
        )

    def _delete_certificate(self, args: list[str]) -> Completed:
        assert args[0] == "-Z", args
        items = self.items(args[2]) or []
        if not self.root:
            return Completed(1, b"", b"security: SecKeychainItemDelete: UNIX[Permission denied]\n")
        kept = [i for i in items if sha1_of(i.issued.certificate) != args[1]]
        if len(kept) == len(items):
            return Completed(
                44, b"", b'security: Unable to delete certificate matching "' + args[1].encode() + b'"\n'
            )
        self.keychains[args[2]] = kept
        return Completed(0)


def _cn(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(names[0].value) if names else ""


# --- Windows --------------------------------------------------------------------------------------


@dataclass
class StoreItem:
    issued: Issued
    has_key: bool = True
    usable: bool = True  # the key can be opened by this user
    friendly_name: str = ""


_LIST = re.compile(r"Get-ChildItem -LiteralPath 'Cert:\\(\w+)\\(\w+)'")
_SIGN = re.compile(r"Get-Item -LiteralPath 'Cert:\\(\w+)\\(\w+)\\([0-9A-F]{40})'")
_MESSAGE = re.compile(r"FromBase64String\('([A-Za-z0-9+/=]*)'\)")
_STORE = re.compile(r"X509Store \('(\w+)', '(\w+)'\)")
_FIND = re.compile(r"'FindByThumbprint', '([0-9A-F]{40})'")


def p1363(signature_der: bytes, size: int) -> bytes:
    r, s = decode_dss_signature(signature_der)
    return r.to_bytes(size, "big") + s.to_bytes(size, "big")


def render_listing(items: list[StoreItem], *, encoding: str = "utf-8", bom: bool = False) -> bytes:
    """``ConvertTo-Json -InputObject @(...) -Compress`` of the agent's listing script."""
    value = [
        {
            "Thumbprint": sha1_of(i.issued.certificate),
            "HasPrivateKey": i.has_key,
            "FriendlyName": i.friendly_name,
            "RawData": base64.b64encode(
                i.issued.certificate.public_bytes(serialization.Encoding.DER)
            ).decode(),
        }
        for i in items
    ]
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return (b"\xef\xbb\xbf" if bom else b"") + text.encode(encoding, errors="replace") + b"\r\n"


@dataclass
class FakePowerShell:
    """``powershell.exe`` running the agent's scripts over stores in memory ("LocalMachine\\My" -> items)."""

    stores: dict[str, list[StoreItem]] = field(default_factory=dict)
    elevated: bool = True
    installed: bool = True
    encoding: str = "utf-8"
    bom: bool = False
    serial: str = "5CDTEST0WIN1"
    override: dict[str, Completed] = field(default_factory=dict)  # "list", "sign", "add", "remove"
    calls: list[Command] = field(default_factory=list)

    def run(self, command: Command) -> Completed:
        self.calls.append(command)
        assert command.argv[0] == POWERSHELL and command.argv[-2] == "-EncodedCommand", command.argv
        if not self.installed:
            raise ToolMissing(f"{POWERSHELL} is not installed on this system")
        script = decode_script(command)
        if "Win32_BIOS" in script:  # the serial number, at enrollment
            return Completed(0, json.dumps(self.serial).encode() + b"\r\n")
        if (match := _SIGN.search(script)) is not None:
            return self.override.get("sign") or self._sign(match, script)
        if (match := _LIST.search(script)) is not None:
            return self.override.get("list") or Completed(
                0,
                render_listing(
                    self.stores.get(f"{match[1]}\\{match[2]}", []), encoding=self.encoding, bom=self.bom
                ),
            )
        store = _STORE.search(script)
        assert store is not None, script
        path = f"{store[2]}\\{store[1]}"
        if store[2] == "LocalMachine" and not self.elevated:
            return Completed(
                1,
                b"",
                b'gateway-agent-error: Exception calling "Open" with "1" argument(s): "Access is denied. "\r\n',
            )
        items = self.stores.setdefault(path, [])
        if "$s.Add($c)" in script:
            found = _MESSAGE.search(script)
            assert found is not None
            cert = x509.load_der_x509_certificate(base64.b64decode(found[1]))
            if all(sha1_of(i.issued.certificate) != sha1_of(cert) for i in items):
                items.append(StoreItem(Issued(cert, ec.generate_private_key(ec.SECP256R1())), has_key=False))
            return self.override.get("add") or Completed(0)
        thumbprint = _FIND.search(script)
        assert thumbprint is not None, script
        self.stores[path] = [i for i in items if sha1_of(i.issued.certificate) != thumbprint[1]]
        return self.override.get("remove") or Completed(0)

    def _sign(self, match: re.Match[str], script: str) -> Completed:
        path, thumbprint = f"{match[1]}\\{match[2]}", match[3]
        item = next(
            (i for i in self.stores.get(path, []) if sha1_of(i.issued.certificate) == thumbprint), None
        )
        if item is None:
            return Completed(
                1,
                b"",
                f"gateway-agent-error: Cannot find path 'Cert:\\{path}\\{thumbprint}' because it does not exist.\r\n".encode(),
            )
        if not item.has_key:
            return Completed(
                1, b"", b"gateway-agent-error: the store holds no private key for this certificate\r\n"
            )
        if not item.usable:
            return Completed(1, b"", b"gateway-agent-error: Keyset does not exist\r\n")
        found = _MESSAGE.search(script)
        assert found is not None
        message = base64.b64decode(found[1])
        key = item.issued.key
        if isinstance(key, rsa.RSAPrivateKey):
            pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
            body = {
                "format": "rsa-pss",
                "signature": base64.b64encode(key.sign(message, pss, hashes.SHA256())).decode(),
            }
        else:
            digest = hashes.SHA384() if key.curve.key_size > 256 else hashes.SHA256()
            der = key.sign(message, ec.ECDSA(digest))
            raw = p1363(der, (key.curve.key_size + 7) // 8)
            body = {"format": "ecdsa-p1363", "signature": base64.b64encode(raw).decode()}
        return Completed(0, json.dumps(body, separators=(",", ":")).encode() + b"\r\n")


def digest_of(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest().upper()
