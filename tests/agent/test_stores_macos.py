"""Posture on macOS, on Linux: the real parsing and checks fed with recorded ``security`` output
(``tests.agent.platform_tools.FakeSecurity``) rendered from real certificates. None of this has
run on a real Mac (docs/agent.md)."""

from __future__ import annotations

import base64
import plistlib
from datetime import timedelta
from pathlib import Path

import pytest

from agent.checks import Device, RuleCheck, check_rules, parse_rules
from agent.macos_security import SECURITY, SYSTEM_KEYCHAIN, parse_find_certificate, parse_find_identity
from agent.report import build_result
from agent.runner import Completed
from agent.stores_macos import MacLocator
from certs.keys import PrivateKey
from certs.proof import proof_message, verify_proof
from tests.agent.agentlab import rule_api, wire_rule
from tests.agent.platform_tools import (
    FakeSecurity,
    KeychainItem,
    render_find_certificate,
    render_find_identity,
    sha1_of,
)
from tests.support.pki import Issued, issue_leaf, make_ca

HOST = Device(hostname="macbook", serial_number="C02XYZ")
NONCE = base64.b64encode(b"n" * 32).decode()


def mac_rule(rule_id: str = "r1", **options: object) -> dict[str, object]:
    return rule_api(rule_id, cn="${hostname}.corp", operating_system="mac", match=("mac",), **options)  # type: ignore[arg-type]


def check(
    security: FakeSecurity, ca: Issued, *rules: dict[str, object], home: Path | None = None
) -> list[RuleCheck]:
    locator = MacLocator(security, home=home or Path("/Users/ann"))
    return check_rules(parse_rules([wire_rule(r, ca) for r in rules]), HOST, locator=locator)


def proved(result: dict[str, object], issued: Issued, rule_id: str = "r1") -> bool:
    message = proof_message(nonce=b"n" * 32, device_id="dev", rule_id=rule_id)
    verify_proof(issued.certificate, message, base64.b64decode(str(result["signature"])))
    return True


# --- the parsers on recorded output ---------------------------------------------------------------


def test_recorded_find_certificate_output_with_and_without_sha256_lines_parses(ca: Issued) -> None:
    one, two = issue_leaf(ca, "macbook.corp"), issue_leaf(ca, "Zoë\u2019s MacBook")
    for sha256 in (True, False):  # older macOS prints the SHA-1 line only
        text = render_find_certificate([one.certificate, two.certificate], sha256=sha256)
        found = parse_find_certificate(text)
        assert [f.sha1 for f in found] == [sha1_of(one.certificate), sha1_of(two.certificate)]
        assert found[1].certificate == two.certificate
    assert parse_find_certificate("") == []


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda t: t.replace("SHA-1 hash: ", "SHA-1 hash: 00", 1), "is not the certificate's"),
        (lambda t: t[: t.rindex("-----END")], "without its END line"),
        (lambda t: "security: something odd\n" + t, "unexpected line 'security: something odd'"),
        (lambda t: t.replace("MII", "MIX", 1), "does not parse"),
    ],
)
def test_recorded_find_certificate_output_that_does_not_parse_is_refused(ca: Issued, mangle, message) -> None:  # type: ignore[no-untyped-def]
    text = render_find_certificate([issue_leaf(ca, "a").certificate, issue_leaf(ca, "b").certificate])
    with pytest.raises(ValueError, match=message):
        parse_find_certificate(mangle(text))


def test_recorded_find_identity_output_lists_each_identity_once(ca: Issued) -> None:
    a, b = issue_leaf(ca, "a"), issue_leaf(ca, "b")
    text = render_find_identity([(sha1_of(a.certificate), 'Zoë "work" \u2013 Mac', ""),
                                 (sha1_of(b.certificate), "old", "CSSMERR_TP_CERT_EXPIRED")])  # fmt: skip
    found = parse_find_identity(text)
    assert [(i.sha1, i.label, i.status) for i in found] == [
        (sha1_of(a.certificate), 'Zoë "work" \u2013 Mac', ""),
        (sha1_of(b.certificate), "old", "CSSMERR_TP_CERT_EXPIRED"),
    ]
    assert parse_find_identity(render_find_identity([])) == []
    with pytest.raises(ValueError, match="unexpected line"):
        parse_find_identity('  1) NOTAHASH "x"\n')


# --- checks ---------------------------------------------------------------------------------------


def test_recorded_system_keychain_identity_passes_and_proves_with_the_exported_key(ca: Issued) -> None:
    client = issue_leaf(ca, "MACBOOK.corp", key_type="rsa-2048")
    security = FakeSecurity({SYSTEM_KEYCHAIN: [KeychainItem(client)]})
    (result,) = check(security, ca, mac_rule())
    assert result.passed, result.reason
    assert result.candidate is not None
    assert result.candidate.source == f"keychain:{SYSTEM_KEYCHAIN} {sha1_of(client.certificate)}"
    assert result.reason.endswith("CN 'MACBOOK.corp', private key present")
    assert isinstance(result.key, PrivateKey)
    wire = build_result(result, lambda: NONCE, device_id="dev")
    assert wire["success"] is True and proved(wire, client)
    exports = [c for c in security.calls if c.argv[1] == "export"]
    assert len(exports) == 1 and "-P" in exports[0].argv
    assert "********" in exports[0].shown()  # the one-time password is not what a person sees


def test_recorded_keychain_with_several_identities_no_key_and_an_expired_one(ca: Issued) -> None:
    expired = issue_leaf(ca, "macbook.corp", valid_from=timedelta(days=-10), valid_for=timedelta(days=1))
    keyless = issue_leaf(ca, "macbook.corp")
    good = issue_leaf(ca, "macbook.corp")
    foreign = issue_leaf(make_ca("Other CA"), "macbook.corp")
    security = FakeSecurity({SYSTEM_KEYCHAIN: [
        KeychainItem(foreign), KeychainItem(expired, status="CSSMERR_TP_CERT_EXPIRED"),
        KeychainItem(keyless, with_key=False), KeychainItem(good, label="Zoë\u2019s device"),
    ]})  # fmt: skip
    (result,) = check(security, ca, mac_rule())
    # the export gives the first identity's key only (foreign's): the good identity passes on the
    # keychain's word, and says why it cannot be proven
    assert result.passed
    assert result.candidate is not None and result.candidate.certificate == good.certificate
    assert result.key is None
    assert "the export gave another identity's key" in result.key_problem
    assert "private key present (the store says so; the agent cannot use it)" in result.reason
    reasons = {r.source.rsplit(" ", 1)[1]: r.reason for r in result.rejected}
    assert reasons[sha1_of(expired.certificate)].startswith("expired on ")
    assert reasons[sha1_of(keyless.certificate)] == (
        f"the keychain {SYSTEM_KEYCHAIN} holds no private key for it (no identity {sha1_of(keyless.certificate)})"
    )
    assert reasons[sha1_of(foreign.certificate)].startswith("issued by CN=Other CA")
    wire = build_result(result, lambda: NONCE, device_id="dev")
    assert "signature" not in wire and str(wire["reason"]).startswith("no proof of possession: ")


def test_recorded_export_refused_is_said_plainly_and_never_a_proven_pass(ca: Issued) -> None:
    client = issue_leaf(ca, "macbook.corp")
    security = FakeSecurity({SYSTEM_KEYCHAIN: [KeychainItem(client)]}, exportable=False)
    (result,) = check(security, ca, mac_rule())
    assert result.passed and result.key is None
    assert result.key_problem == (
        f"its private key is in the keychain {SYSTEM_KEYCHAIN} but cannot be used by the agent (not exportable): "
        f"security export failed for the keychain {SYSTEM_KEYCHAIN}: "
        "security: SecKeychainItemExport: The contents of this item cannot be retrieved."
    )
    wire = build_result(result, lambda: NONCE, device_id="dev")
    assert wire["success"] is True and "signature" not in wire and "not exportable" in str(wire["reason"])


def test_recorded_certificate_without_its_key_fails_a_key_check_but_passes_without_one(ca: Issued) -> None:
    client = issue_leaf(ca, "macbook.corp")
    security = FakeSecurity({SYSTEM_KEYCHAIN: [KeychainItem(client, with_key=False)]})
    (with_check, without) = check(security, ca, mac_rule("r1"), mac_rule("r2", check_private_key=False))
    assert not with_check.passed and "holds no private key for it" in with_check.reason
    assert without.passed and without.key is None


def test_recorded_login_keychain_is_read_only_when_the_rule_lists_user(ca: Issued, tmp_path: Path) -> None:
    client = issue_leaf(ca, "macbook.corp")
    login = str(tmp_path / "Library/Keychains/login.keychain-db")
    security = FakeSecurity({SYSTEM_KEYCHAIN: [], login: [KeychainItem(client)]})
    (system_only, user) = check(
        security, ca, mac_rule("r1"), mac_rule("r2", trust_stores=("user",)), home=tmp_path
    )
    assert not system_only.passed
    assert (
        system_only.reason
        == f"no certificate found (keychain:{SYSTEM_KEYCHAIN}: the keychain holds no certificate)"
    )
    assert (
        user.passed and user.candidate is not None and user.candidate.source.startswith(f"keychain:{login} ")
    )


def test_recorded_unreadable_output_and_a_missing_tool_are_reasons_not_crashes(ca: Issued) -> None:
    garbage = FakeSecurity(
        {SYSTEM_KEYCHAIN: []}, override={"find-certificate": Completed(0, b"<?xml version")}
    )
    (result,) = check(garbage, ca, mac_rule())
    assert not result.passed
    assert (
        "cannot read `security find-certificate` output for the keychain /Library/Keychains/System.keychain"
        in result.reason
    )
    missing = FakeSecurity(installed=False)
    (result,) = check(missing, ca, mac_rule())
    assert result.reason == (
        f"no certificate found (keychain:{SYSTEM_KEYCHAIN}: {SECURITY} is not on this system: "
        f"the keychain {SYSTEM_KEYCHAIN} can be read only on macOS)"
    )
    no_keychain = FakeSecurity({})
    (result,) = check(no_keychain, ca, mac_rule())
    assert "The specified keychain could not be found." in result.reason


def test_recorded_mac_fails_a_linux_rule_with_the_reason_without_running_security(ca: Issued) -> None:
    security = FakeSecurity({SYSTEM_KEYCHAIN: [KeychainItem(issue_leaf(ca, "macbook.corp"))]})
    (result,) = check(security, ca, rule_api("r1"))
    assert result.reason == "the rule matches linux devices, not mac"
    (result,) = check(security, ca, rule_api("r1", match=(), operating_system="windows"))
    assert result.reason == "the rule checks windows devices (operating_system), not mac"
    assert security.calls == []


def test_recorded_find_identity_that_does_not_parse_leaves_certificates_without_keys(ca: Issued) -> None:
    client = issue_leaf(ca, "macbook.corp")
    security = FakeSecurity({SYSTEM_KEYCHAIN: [KeychainItem(client)]},
                            override={"find-identity": Completed(0, b"Policy: X.509 Basic\n  1) ???\n")})  # fmt: skip
    (with_key, without) = check(security, ca, mac_rule("r1"), mac_rule("r2", check_private_key=False))
    assert not with_key.passed
    assert "cannot read `security find-identity` output" in with_key.reason
    assert without.passed and without.key is None and "find-identity" in without.key_problem


def test_recorded_trust_settings_deny_and_garbage() -> None:
    from agent.macos_security import parse_trust_settings

    plist = plistlib.dumps({"trustList": {
        "AA" * 20: {"trustSettings": []},
        "BB" * 20: {"trustSettings": [{"kSecTrustSettingsResult": 3}]},
        "CC" * 20: {"trustSettings": [{"kSecTrustSettingsPolicy": b"\x01", "kSecTrustSettingsResult": 1}]},
        "DD" * 20: {"trustSettings": [{"kSecTrustSettingsResult": 4}]},
    }})  # fmt: skip
    assert parse_trust_settings(plist) == {
        "AA" * 20: True,
        "BB" * 20: False,
        "CC" * 20: True,
        "DD" * 20: False,
    }
    with pytest.raises(ValueError, match="not a property list"):
        parse_trust_settings(b"SecTrustSettings: oops")
    with pytest.raises(ValueError, match="no trustList"):
        parse_trust_settings(plistlib.dumps({"trustVersion": 1}))
