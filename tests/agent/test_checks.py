"""Checks: every rule against every candidate (PEM files and a real NSS database), the first
passing one kept (with a key if any has one), every rejection with its reason; the table."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.x509.oid import ExtendedKeyUsageOID

from agent import device
from agent.checks import AgentRule, Device, RuleCheck, check_rules, parse_rules
from agent.locations import Locator
from agent.output import format_checks
from certs.proof import proof_message, sign_proof, verify_proof
from tests.agent.agentlab import import_into_nssdb, make_nssdb, rule_api, wire_rule
from tests.support.pki import Issued, issue_leaf, make_ca

HOST = Device(hostname="laptop", serial_number="SN-42")


def _check(tmp_path: Path, ca: Issued, *rules: dict[str, object]) -> list[RuleCheck]:
    parsed = parse_rules([wire_rule(r, ca) for r in rules])
    return check_rules(parsed, HOST, locator=Locator(home=tmp_path, system_nssdb=tmp_path / "no-system-db"))


def _pem(tmp_path: Path, name: str, issued: Issued, *, key: bool = True) -> str:
    path = tmp_path / name
    path.write_text(issued.cert_pem() + (issued.key_pem() if key else ""))
    return str(path)


def test_a_pem_certificate_with_its_key_passes_and_can_sign(tmp_path: Path, ca: Issued) -> None:
    client = issue_leaf(ca, "LAPTOP.corp")
    path = _pem(tmp_path, "client.pem", client)
    (check,) = _check(tmp_path, ca, rule_api("r1", paths=(path,)))
    assert check.passed, check.reason
    assert check.candidate is not None and check.candidate.source == path
    assert check.rejected == ()
    assert check.key is not None
    message = proof_message(nonce=b"n" * 32, device_id="dev", rule_id="r1")
    verify_proof(client.certificate, message, sign_proof(check.key, message))


def test_every_rejected_certificate_keeps_its_reason(tmp_path: Path, ca: Issued) -> None:
    foreign = issue_leaf(make_ca("Other CA"), "laptop.corp")
    expired = issue_leaf(ca, "laptop.corp", valid_from=timedelta(days=-10), valid_for=timedelta(days=1))
    wrong_cn = issue_leaf(ca, "desktop.corp")
    no_eku = issue_leaf(ca, "laptop.corp", ekus=(ExtendedKeyUsageOID.SERVER_AUTH,))
    paths = tuple(_pem(tmp_path, f"{n}.pem", c) for n, c in
                  (("foreign", foreign), ("expired", expired), ("wrong-cn", wrong_cn), ("no-eku", no_eku)))  # fmt: skip
    (check,) = _check(tmp_path, ca, rule_api("r1", paths=(*paths, str(tmp_path / "missing.pem"))))
    assert not check.passed
    assert check.reason == "none of the 4 certificates found passed"
    reasons = {r.source.rsplit("/", 1)[1]: r.reason for r in check.rejected}
    assert reasons["foreign.pem"] == "issued by CN=Other CA, not by the signing certificate CN=Device CA"
    assert reasons["expired.pem"].startswith("expired on ")
    assert reasons["wrong-cn.pem"] == "CN 'desktop.corp' does not match 'laptop.corp'"
    assert reasons["no-eku.pem"] == "missing extended key usage clientAuth (it has serverAuth)"
    assert reasons["missing.pem"] == "no such file"
    assert "no-system-db" not in " ".join(r.source for r in check.rejected)  # implicit, absent: not news


def test_a_certificate_without_its_key_fails_when_the_rule_checks_the_key(tmp_path: Path, ca: Issued) -> None:
    path = _pem(tmp_path, "client.pem", issue_leaf(ca, "laptop.corp"), key=False)
    (check,) = _check(tmp_path, ca, rule_api("r1", paths=(path,)))
    assert not check.passed
    assert check.reason.startswith("no private key for this certificate in the listed paths")


def test_cert_and_key_in_two_listed_files_pass(tmp_path: Path, ca: Issued) -> None:
    client = issue_leaf(ca, "laptop.corp", key_type="rsa-2048")
    (tmp_path / "c.pem").write_text(client.cert_pem())
    (tmp_path / "c.key").write_text(client.key_pem())
    (check,) = _check(tmp_path, ca, rule_api("r1", paths=(str(tmp_path / "c.pem"), str(tmp_path / "c.key"))))
    assert check.passed and check.key is not None


def test_without_check_private_key_an_encrypted_key_still_passes_but_cannot_prove(
    tmp_path: Path, ca: Issued
) -> None:
    client = issue_leaf(ca, "laptop.corp")
    path = tmp_path / "client.pem"
    path.write_text(client.cert_pem() + client.key_pem(password=b"pw"))
    (check,) = _check(tmp_path, ca, rule_api("r1", paths=(str(path),), check_private_key=False))
    assert check.passed
    assert check.key is None
    assert "private key is encrypted" in check.key_problem


def test_a_passing_certificate_with_a_key_is_preferred(tmp_path: Path, ca: Issued) -> None:
    bare = _pem(tmp_path, "bare.pem", issue_leaf(ca, "laptop.corp"), key=False)
    keyed = _pem(tmp_path, "keyed.pem", issue_leaf(ca, "laptop.corp"))
    (check,) = _check(tmp_path, ca, rule_api("r1", paths=(bare, keyed), check_private_key=False))
    assert check.passed and check.candidate is not None
    assert check.candidate.source == keyed and check.key is not None


def test_serial_number_and_san_templates(tmp_path: Path, ca: Issued) -> None:
    client = issue_leaf(ca, "sn-42.devices", dns_names=("laptop.corp.example",))
    path = _pem(tmp_path, "client.pem", client)
    rule = rule_api("r1", cn="${serial_number}.devices", sans=("${hostname}.corp.example",), paths=(path,))
    (check,) = _check(tmp_path, ca, rule)
    assert check.passed, check.reason


def test_the_signing_ca_itself_is_not_a_device_certificate(tmp_path: Path, ca: Issued) -> None:
    path = tmp_path / "ca.pem"
    path.write_text(ca.cert_pem() + ca.key_pem())
    (check,) = _check(tmp_path, ca, rule_api("r1", cn=None, eku=(), paths=(str(path),)))
    assert not check.passed
    assert "is the signing certificate CN=Device CA itself" in check.reason


def test_a_real_nss_database_pass_and_a_cert_without_key(tmp_path: Path, ca: Issued) -> None:
    db = make_nssdb(tmp_path / ".pki" / "nssdb")  # the "user" trust store under this home
    client = issue_leaf(ca, "laptop.corp")
    # NSS gives certificates with the same subject the same nickname: another subject here
    import_into_nssdb(db, issue_leaf(ca, "laptop.corp", organization="Spare"), "no key", with_key=False)
    import_into_nssdb(db, client, "corp device")
    (check,) = _check(tmp_path, ca, rule_api("r1", trust_stores=("user",)))
    assert check.passed, check.reason
    assert check.candidate is not None and check.candidate.source == f"nss:{db}/corp device"
    assert check.candidate.certificate == client.certificate
    rejected = {r.source: r.reason for r in check.rejected}
    assert (
        rejected == {f"nss:{db}/no key": f"the NSS database {db} holds no private key for 'no key'"}
        or not rejected
    )


def test_an_empty_user_nss_database_is_said_to_hold_no_certificate(tmp_path: Path, ca: Issued) -> None:
    db = make_nssdb(tmp_path / ".pki" / "nssdb")  # the "user" trust store, with nothing in it
    (check,) = _check(tmp_path, ca, rule_api("r1", trust_stores=("user",)))
    assert not check.passed
    assert check.reason == f"no certificate found (nss:{db}: the NSS database holds no certificate)"
    assert [(r.source, r.reason) for r in check.rejected] == [
        (f"nss:{db}", "the NSS database holds no certificate")
    ]


def test_an_empty_system_nss_database_is_not_news_when_the_rule_asks_for_the_user_one(
    tmp_path: Path, ca: Issued
) -> None:
    system = make_nssdb(tmp_path / "system-db")
    user = make_nssdb(tmp_path / "home" / ".pki" / "nssdb")
    import_into_nssdb(user, issue_leaf(ca, "laptop.corp"), "corp device")
    parsed = parse_rules([wire_rule(rule_api("r1", trust_stores=("user",)), ca)])
    (check,) = check_rules(parsed, HOST, locator=Locator(home=tmp_path / "home", system_nssdb=system))
    assert check.passed, check.reason
    assert check.rejected == ()
    parsed = parse_rules([wire_rule(rule_api("r2", trust_stores=("system",)), ca)])
    (check,) = check_rules(parsed, HOST, locator=Locator(home=tmp_path / "home", system_nssdb=system))
    assert check.reason == f"no certificate found (nss:{system}: the NSS database holds no certificate)"


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"match": ("windows",)}, "the rule matches windows devices, not linux"),
        ({"operating_system": "mac"}, "the rule checks mac devices (operating_system), not linux"),
    ],
)
def test_rules_for_other_platforms_fail_with_the_reason(
    tmp_path: Path, ca: Issued, changes: dict[str, object], reason: str
) -> None:
    (check,) = _check(tmp_path, ca, rule_api("r1", **changes))  # type: ignore[arg-type]
    assert (check.passed, check.reason) == (False, reason)


def test_rules_the_agent_cannot_read_fail_with_the_reason(tmp_path: Path, ca: Issued) -> None:
    rules = parse_rules([
        {"rule": {"id": "r1", "name": "odd", "type": "os_version", "input": {}}, "signing_certificates": ca.cert_pem()},
        {"rule": rule_api("r2"), "signing_certificates": ""},
        {**rule_api("r3"), "signing_certificates": ca.cert_pem()},  # a flat entry is read too
        "garbage",
    ])  # fmt: skip
    assert [r.rule_id for r in rules] == ["r1", "r2", "r3", ""]
    assert (
        "this agent cannot read the rule" in rules[0].problem
        and "'os_version' is not supported" in rules[0].problem
    )
    assert rules[1].problem == "the server sent no signing certificate for this rule"
    assert rules[2].problem == "" and rules[2].rule is not None
    assert rules[3].problem == "not a JSON object"
    checks = check_rules(rules[:2], HOST, locator=Locator(home=tmp_path, system_nssdb=tmp_path))
    assert [c.passed for c in checks] == [False, False]


def test_a_template_the_device_cannot_fill_fails_the_rule(tmp_path: Path, ca: Issued) -> None:
    parsed = parse_rules([wire_rule(rule_api("r1", cn="${serial_number}.corp"), ca)])
    (check,) = check_rules(
        parsed, Device("laptop", ""), locator=Locator(home=tmp_path, system_nssdb=tmp_path)
    )
    assert not check.passed and "the device reported no serial number" in check.reason


def test_check_table(tmp_path: Path, ca: Issued) -> None:
    good = _pem(tmp_path, "good.pem", issue_leaf(ca, "laptop.corp"))
    wrong = _pem(tmp_path, "wrong.pem", issue_leaf(ca, "desktop.corp"))
    checks = _check(
        tmp_path, ca,
        rule_api("r1", name="corp cert", paths=(wrong, good)),
        rule_api("r2", name="desktop only", cn="desktop.corp", paths=(good,)),
    )  # fmt: skip
    assert format_checks(checks) == (
        "RULE          OUTCOME  CERTIFICATE OR REASON\n"
        f"corp cert     pass     {good} (CN laptop.corp)\n"
        "desktop only  fail     CN 'laptop.corp' does not match 'desktop.corp'\n"
        "\n"
        "rejected for corp cert:\n"
        f"  {wrong} (CN desktop.corp): CN 'desktop.corp' does not match 'laptop.corp'\n"
        "\n"
        "rejected for desktop only:\n"
        f"  {good} (CN laptop.corp): CN 'laptop.corp' does not match 'desktop.corp'"
    )


def test_serial_number_prefers_the_firmware_and_skips_placeholders(tmp_path: Path) -> None:
    firmware, machine = tmp_path / "product_serial", tmp_path / "machine-id"
    machine.write_text("0f1e2d3c4b5a69788796a5b4c3d2e1f0\n")
    assert (
        device.serial_number(product_serial=firmware, machine_id=machine)
        == "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
    )
    firmware.write_text("To Be Filled By O.E.M.\n")
    assert (
        device.serial_number(product_serial=firmware, machine_id=machine)
        == "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
    )
    firmware.write_text("PF2ABCDE\n")
    assert device.serial_number(product_serial=firmware, machine_id=machine) == "PF2ABCDE"
    assert device.serial_number(product_serial=tmp_path / "a", machine_id=tmp_path / "b") == ""


def test_agent_rule_without_rule_reports_its_problem() -> None:
    assert AgentRule("r", "n", None, problem="x").problem == "x"
