"""Posture on Windows, on Linux: the real parsing, checks and signature handling fed with recorded
PowerShell output (``tests.agent.platform_tools.FakePowerShell``) rendered from real
certificates and keys. None of this has run on a real Windows machine (docs/agent.md)."""

from __future__ import annotations

import base64
from datetime import timedelta
from pathlib import Path

import pytest

from agent.checks import Device, RuleCheck, check_rules, parse_rules
from agent.report import build_result
from agent.runner import Completed
from agent.stores_windows import WindowsLocator, WindowsStoreKey
from agent.windows_powershell import POWERSHELL, decode_script, parse_listing, script_command
from certs.proof import proof_message, verify_proof
from tests.agent.agentlab import rule_api, wire_rule
from tests.agent.platform_tools import FakePowerShell, StoreItem, render_listing, sha1_of
from tests.support.pki import Issued, issue_leaf, make_ca

HOST = Device(hostname="DESKTOP-7", serial_number="5CD1234")
NONCE = base64.b64encode(b"n" * 32).decode()
MACHINE, USER = "LocalMachine\\My", "CurrentUser\\My"


def win_rule(rule_id: str = "r1", **options: object) -> dict[str, object]:
    return rule_api(rule_id, cn="${hostname}.corp", operating_system="windows", match=("windows",), **options)  # type: ignore[arg-type]


def check(shell: FakePowerShell, ca: Issued, *rules: dict[str, object]) -> list[RuleCheck]:
    locator = WindowsLocator(shell, home=Path("C:/Users/ann"))
    return check_rules(parse_rules([wire_rule(r, ca) for r in rules]), HOST, locator=locator)


def assert_proved(result: RuleCheck, issued: Issued) -> None:
    wire = build_result(result, lambda: NONCE, device_id="dev")
    assert wire["success"] is True and wire["nonce"] == NONCE
    message = proof_message(nonce=b"n" * 32, device_id="dev", rule_id=result.rule_id)
    verify_proof(issued.certificate, message, base64.b64decode(str(wire["signature"])))


# --- the listing on recorded output ---------------------------------------------------------------


def test_recorded_listing_output_parses_arrays_single_objects_bom_and_code_pages(ca: Issued) -> None:
    a = StoreItem(issue_leaf(ca, "Zoë\u2019s PC"), friendly_name="Zoë\u2019s PC ключ")
    b = StoreItem(issue_leaf(ca, "b"), has_key=False)
    found = parse_listing(render_listing([a, b], bom=True))
    assert [(f.thumbprint, f.has_private_key, f.friendly_name) for f in found] == [
        (sha1_of(a.issued.certificate), True, "Zoë\u2019s PC ключ"),
        (sha1_of(b.issued.certificate), False, ""),
    ]
    # Windows PowerShell 5.1 prints a lone object, not a one-item array, for some pipelines
    single = render_listing([a]).strip()[1:-1]
    assert parse_listing(single)[0].certificate == a.issued.certificate
    # a console code page that is not UTF-8 mangles the label only: the DER is base64
    mangled = parse_listing(render_listing([a], encoding="cp1252"))
    assert mangled[0].certificate == a.issued.certificate and mangled[0].friendly_name != a.friendly_name
    assert parse_listing(b"") == [] and parse_listing(b"[]\r\n") == []


@pytest.mark.parametrize(
    ("output", "message"),
    [
        (b"Get-ChildItem : Cannot find drive.", "not JSON"),
        (b'[{"Thumbprint":"AB"}]', "lacks Thumbprint, HasPrivateKey or RawData"),
        (b'[{"Thumbprint":"AB","HasPrivateKey":true,"RawData":"!!"}]', "RawData is not a certificate"),
        (b"[1]", "item 1 is not an object"),
    ],
)
def test_recorded_listing_output_that_does_not_parse_is_refused(output: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_listing(output)


def test_recorded_listing_whose_thumbprint_is_not_the_certificates_is_refused(ca: Issued) -> None:
    text = render_listing([StoreItem(issue_leaf(ca, "a"))]).decode()
    thumbprint = text.split('"Thumbprint":"')[1][:40]
    with pytest.raises(ValueError, match="is not the certificate's"):
        parse_listing(text.replace(thumbprint, "0" * 40).encode())


# --- checks ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("key_type", ["ec-p256", "ec-p384", "rsa-2048"])
def test_recorded_machine_store_key_signs_in_place_and_proves(ca: Issued, key_type: str) -> None:
    client = issue_leaf(ca, "desktop-7.corp", key_type=key_type)
    shell = FakePowerShell({MACHINE: [StoreItem(client)]})
    (result,) = check(shell, ca, win_rule())
    assert result.passed, result.reason
    assert result.candidate is not None
    assert result.candidate.source == f"cert:{MACHINE}\\{sha1_of(client.certificate)}"
    assert isinstance(result.key, WindowsStoreKey)
    assert result.reason.endswith(", private key present")
    assert_proved(result, client)
    scripts = [decode_script(c) for c in shell.calls]
    assert "Get-ChildItem -LiteralPath 'Cert:\\LocalMachine\\My'" in scripts[0]
    assert all("Export" not in s for s in scripts)  # the key is used in place, never exported
    assert all(c.argv[:5] == (POWERSHELL, "-NoProfile", "-NonInteractive", "-ExecutionPolicy", "Bypass")
               for c in shell.calls)  # fmt: skip


def test_recorded_key_that_windows_will_not_open_is_reported_unproven(ca: Issued) -> None:
    client = issue_leaf(ca, "desktop-7.corp")
    shell = FakePowerShell({MACHINE: [StoreItem(client, usable=False)]})
    (result,) = check(shell, ca, win_rule())
    assert result.passed and result.key is None
    assert result.reason.endswith("private key present (the store says so; the agent cannot use it)")
    assert result.key_problem == (
        f"its private key is in Cert:\\{MACHINE} but Windows does not let the agent use it: "
        f"PowerShell failed on Cert:\\{MACHINE}: Keyset does not exist"
    )
    wire = build_result(result, lambda: NONCE, device_id="dev")
    assert "signature" not in wire and str(wire["reason"]).startswith(
        "no proof of possession: its private key is in"
    )


def test_recorded_several_certificates_without_key_expired_and_foreign(ca: Issued) -> None:
    expired = issue_leaf(ca, "desktop-7.corp", valid_from=timedelta(days=-10), valid_for=timedelta(days=1))
    keyless = issue_leaf(ca, "desktop-7.corp")
    foreign = issue_leaf(make_ca("Other CA"), "desktop-7.corp")
    good = issue_leaf(ca, "DESKTOP-7.corp")
    shell = FakePowerShell({MACHINE: [StoreItem(expired), StoreItem(keyless, has_key=False),
                                      StoreItem(foreign), StoreItem(good, friendly_name="Zoë")]})  # fmt: skip
    (result,) = check(shell, ca, win_rule())
    assert result.passed and result.candidate is not None and result.candidate.certificate == good.certificate
    reasons = {r.source.rsplit("\\", 1)[1]: r.reason for r in result.rejected}
    assert reasons[sha1_of(expired.certificate)].startswith("expired on ")
    assert reasons[sha1_of(keyless.certificate)] == (
        f"Cert:\\{MACHINE} holds no private key for it (HasPrivateKey is false)"
    )
    assert reasons[sha1_of(foreign.certificate)].startswith("issued by CN=Other CA")
    assert_proved(result, good)


def test_recorded_user_store_is_read_only_when_the_rule_lists_user(ca: Issued) -> None:
    client = issue_leaf(ca, "desktop-7.corp")
    shell = FakePowerShell({USER: [StoreItem(client)]})
    (machine_only, user) = check(shell, ca, win_rule("r1"), win_rule("r2", trust_stores=("user",)))
    assert machine_only.reason == f"no certificate found (cert:{MACHINE}: the store holds no certificate)"
    assert user.passed and user.candidate is not None and user.candidate.source.startswith(f"cert:{USER}\\")


def test_recorded_broken_output_and_a_missing_powershell_are_reasons(ca: Issued) -> None:
    shell = FakePowerShell(override={"list": Completed(0, b"\xff\xfeG\x00e\x00t\x00")})
    (result,) = check(shell, ca, win_rule())
    assert (
        not result.passed
        and f"cannot read the listing of {MACHINE} from PowerShell: not JSON" in result.reason
    )
    denied = FakePowerShell(
        override={"list": Completed(1, b"", b"gateway-agent-error: Access is denied.\r\n")}
    )
    (result,) = check(denied, ca, win_rule())
    assert (
        result.reason
        == f"no certificate found (cert:{MACHINE}: PowerShell failed on Cert:\\{MACHINE}: Access is denied.)"
    )
    (result,) = check(FakePowerShell(installed=False), ca, win_rule())
    assert f"{POWERSHELL} is not on this system" in result.reason


def test_recorded_signature_that_powershell_prints_wrong_is_not_a_proof(ca: Issued) -> None:
    client = issue_leaf(ca, "desktop-7.corp")
    other = issue_leaf(ca, "other")
    shell = FakePowerShell({MACHINE: [StoreItem(client)]})
    signed_by_other = FakePowerShell({MACHINE: [StoreItem(other)]})
    message = b"x" * 40
    script_answer = signed_by_other.run(
        script_command(
            f"  $c = Get-Item -LiteralPath 'Cert:\\{MACHINE}\\{sha1_of(other.certificate)}'\n"
            f"  $m = [Convert]::FromBase64String('{base64.b64encode(message).decode()}')"
        )
    )
    shell.override["sign"] = script_answer
    (result,) = check(shell, ca, win_rule())
    assert result.key is None and "does not make valid signatures for it" in result.key_problem
    shell.override["sign"] = Completed(0, b"Signature: 3045...")
    (result,) = check(shell, ca, win_rule())
    assert result.key is None and "cannot read the signature PowerShell made" in result.key_problem
