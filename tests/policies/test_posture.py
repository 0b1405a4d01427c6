"""Posture rules: Cloudflare's shapes both ways, every validation message, durations, helpers."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from policies.posture import (
    DEFAULT_EXPIRATION,
    DEFAULT_SCHEDULE,
    ClientCertificateInput,
    ExtendedKeyUsage,
    Locations,
    OperatingSystem,
    Platform,
    PostureRule,
    PostureType,
    TrustStore,
    format_duration,
    parse_duration,
)
from policies.rules import FieldError

CERT_ID = "2458ce5a-0c35-4c7f-82c7-8e9487d3ff60"


def _apply(body: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``...`` deletes a key; a dotted key (``input.cn``) reaches inside."""
    body = {k: (dict(v) if isinstance(v, dict) else v) for k, v in body.items()}
    for key, value in overrides.items():
        target = body
        *parents, last = key.split(".")
        for parent in parents:
            target = target[parent]
        if value is ...:
            target.pop(last, None)
        else:
            target[last] = value
    return body


def v2(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "corp cert",
        "type": "client_certificate_v2",
        "schedule": "5m",
        "expiration": "1h",
        "match": [{"platform": "linux"}],
        "input": {
            "certificate_id": CERT_ID,
            "check_private_key": True,
            "operating_system": "linux",
            "cn": "${hostname}.corp",
            "extended_key_usage": ["clientAuth", "emailProtection"],
            "locations": {"paths": ["/etc/pki/client.pem"], "trust_stores": ["system", "user"]},
            "subject_alternative_names": ["${serial_number}.corp"],
        },
    }
    return _apply(body, {k.replace("__", "."): v for k, v in overrides.items()})


def v1(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "legacy cert",
        "type": "client_certificate",
        "input": {"certificate_id": CERT_ID, "cn": "${serial_number}_mycompany"},
    }
    return _apply(body, {k.replace("__", "."): v for k, v in overrides.items()})


# --- accepted shapes ------------------------------------------------------------------------


def test_v2_rule() -> None:
    rule = PostureRule.from_api(v2(), where="posture rule")
    assert rule == PostureRule(
        name="corp cert",
        type=PostureType.CLIENT_CERTIFICATE_V2,
        schedule=timedelta(minutes=5),
        expiration=timedelta(hours=1),
        match=(Platform.LINUX,),
        input=ClientCertificateInput(
            certificate_id=CERT_ID,
            cn="${hostname}.corp",
            check_private_key=True,
            operating_system=OperatingSystem.LINUX,
            extended_key_usage=(ExtendedKeyUsage.CLIENT_AUTH, ExtendedKeyUsage.EMAIL_PROTECTION),
            locations=Locations(
                paths=("/etc/pki/client.pem",), trust_stores=(TrustStore.SYSTEM, TrustStore.USER)
            ),
            subject_alternative_names=("${serial_number}.corp",),
        ),
    )
    assert rule.certificate_id == CERT_ID
    assert rule.cn_template == "${hostname}.corp"
    assert rule.san_templates == ("${serial_number}.corp",)
    assert rule.extended_key_usage == ("clientAuth", "emailProtection")
    assert rule.check_private_key is True


def test_v2_minimal_rule_takes_defaults() -> None:
    body = {
        "name": "corp cert",
        "type": "client_certificate_v2",
        "input": {"certificate_id": CERT_ID, "check_private_key": False, "operating_system": "mac"},
    }
    rule = PostureRule.from_api(body, where="posture rule")
    assert rule.schedule == DEFAULT_SCHEDULE == timedelta(minutes=5)
    assert rule.expiration == DEFAULT_EXPIRATION == timedelta(minutes=10)
    assert rule.match == () and rule.description == "" and rule.id == ""
    assert rule.input == ClientCertificateInput(certificate_id=CERT_ID, operating_system=OperatingSystem.MAC)
    assert rule.cn_template is None and rule.san_templates == () and rule.extended_key_usage == ()


def test_v1_rule() -> None:
    rule = PostureRule.from_api(v1(), where="posture rule")
    assert rule.type is PostureType.CLIENT_CERTIFICATE
    assert rule.input == ClientCertificateInput(certificate_id=CERT_ID, cn="${serial_number}_mycompany")
    assert rule.check_private_key is False and rule.input.operating_system is None
    assert rule.to_api()["input"] == {"certificate_id": CERT_ID, "cn": "${serial_number}_mycompany"}


@pytest.mark.parametrize(
    ("overrides", "check"),
    [
        ({"expiration": ""}, lambda r: r.expiration == timedelta(minutes=10)),
        ({"expiration": None}, lambda r: r.expiration == timedelta(minutes=10)),
        ({"schedule": ""}, lambda r: r.schedule == timedelta(minutes=5)),
        ({"schedule": "1m"}, lambda r: r.schedule == timedelta(minutes=1)),
        ({"schedule": "1h30m"}, lambda r: r.schedule == timedelta(minutes=90)),
        ({"schedule": "1d"}, lambda r: r.schedule == timedelta(days=1)),
        ({"expiration": "30s"}, lambda r: r.expiration == timedelta(seconds=30)),
        ({"input__cn": ""}, lambda r: r.cn_template is None),
        ({"input__cn": ...}, lambda r: r.cn_template is None),
        ({"input__certificate_id": CERT_ID.upper()}, lambda r: r.certificate_id == CERT_ID),
        ({"input__locations": ...}, lambda r: r.input.locations == Locations()),
        ({"input__locations": {}}, lambda r: r.input.locations == Locations()),
        (
            {"input__locations": {"trust_stores": ["SYSTEM", "User"]}},
            lambda r: r.input.locations.trust_stores == (TrustStore.SYSTEM, TrustStore.USER),
        ),
        (
            {"input__locations": {"paths": ["C:\\certs\\client.pem"]}},
            lambda r: r.input.locations.paths == ("C:\\certs\\client.pem",),
        ),
        ({"match": []}, lambda r: r.match == ()),
        (
            {"match": [{"platform": p.value} for p in Platform]},
            lambda r: r.match == tuple(Platform),
        ),
        ({"enabled": True}, lambda r: True),  # read-only in Cloudflare's response: dropped
        ({"id": "f00dcafe-0000-4000-8000-000000000001"}, lambda r: r.id.startswith("f00dcafe")),
        ({"description": "managed laptops"}, lambda r: r.description == "managed laptops"),
        ({"name": "  corp cert  "}, lambda r: r.name == "corp cert"),
        ({"input__operating_system": "windows"}, lambda r: r.input.operating_system == "windows"),
        ({"input__cn": "$5 ${hostname}"}, lambda r: r.cn_template == "$5 ${hostname}"),
    ],
)
def test_accepted_variants(overrides: dict[str, Any], check: Any) -> None:
    assert check(PostureRule.from_api(v2(**overrides), where="posture rule"))


# --- refused shapes: every field names itself -----------------------------------------------

BAD: dict[str, tuple[dict[str, Any], str]] = {
    "not a mapping": ({"__body__": ["a list"]}, "posture rule: must be a mapping"),
    "name missing": ({"name": ...}, "posture rule: name: required"),
    "name empty": ({"name": " "}, "posture rule: name: must not be empty"),
    "name not a string": ({"name": 5}, "name: must be a string, got 5"),
    "type missing": ({"type": ...}, "'corp cert': type: required"),
    "type of another Cloudflare check": (
        {"type": "file"},
        (
            "type: 'file' is not supported by this gateway "
            "(supported: client_certificate, client_certificate_v2)"
        ),
    ),
    "type os_version": ({"type": "os_version"}, "type: 'os_version' is not supported"),
    "type unknown": (
        {"type": "client_cert"},
        "type: unknown type 'client_cert' (one of: client_certificate, client_certificate_v2)",
    ),
    "type not a string": ({"type": ["client_certificate"]}, "type: unknown type a non-string"),
    "schedule below the minimum": (
        {"schedule": "30s"},
        "schedule: must be at least 1m (Cloudflare's minimum), got '30s'",
    ),
    "schedule zero": ({"schedule": "0m"}, "schedule: must be at least 1m"),
    "schedule without unit": ({"schedule": "5"}, 'schedule: must be a duration such as "30s"'),
    "schedule unknown unit": ({"schedule": "5w"}, "schedule: must be a duration"),
    "schedule negative": ({"schedule": "-5m"}, "schedule: must be a duration"),
    "schedule not a string": (
        {"schedule": 300},
        'schedule: must be a duration string such as "5m"',
    ),
    "schedule too long": ({"schedule": "400d"}, "schedule: must be at most 8760h, got '400d'"),
    "schedule huge number": ({"schedule": "999999999999d"}, "schedule: must be at most 8760h"),
    "schedule too many digits": ({"schedule": "9999999999999s"}, "schedule: must be a duration"),
    "expiration zero": ({"expiration": "0s"}, "expiration: must be longer than 0s"),
    "expiration garbage": ({"expiration": "ten minutes"}, "expiration: must be a duration"),
    "match not a list": ({"match": "linux"}, "match: must be a list"),
    "match item not a mapping": ({"match": ["linux"]}, "match[0]: must be a mapping"),
    "match unknown platform": (
        {"match": [{"platform": "linux"}, {"platform": "beos"}]},
        "match[1].platform: unknown platform 'beos' (one of: windows, mac, linux, android, ios, chromeos)",
    ),
    "match platform missing": ({"match": [{}]}, "match[0].platform: required"),
    "match platform twice": (
        {"match": [{"platform": "linux"}, {"platform": "linux"}]},
        "match[1].platform: 'linux' is listed twice",
    ),
    "match unknown key": (
        {"match": [{"platform": "linux", "os": "x"}]},
        "match[0]: unknown key 'os'",
    ),
    "unknown top-level key": ({"schedul": "5m", "schedule": ...}, "unknown key 'schedul'"),
    "input missing": ({"input": ...}, "'corp cert': input: required"),
    "input not a mapping": ({"input": "x"}, "input: must be a mapping"),
    "certificate_id missing": ({"input__certificate_id": ...}, "input.certificate_id: required"),
    "certificate_id not a UUID": (
        {"input__certificate_id": "lab-ca"},
        (
            "input.certificate_id: must be the UUID of an uploaded mTLS certificate, such as "
            "2458ce5a-0c35-4c7f-82c7-8e9487d3ff60, got 'lab-ca'"
        ),
    ),
    "certificate_id without dashes": (
        {"input__certificate_id": CERT_ID.replace("-", "")},
        "input.certificate_id: must be the UUID",
    ),
    "certificate_id in braces": (
        {"input__certificate_id": "{" + CERT_ID + "}"},
        "input.certificate_id: must be the UUID",
    ),
    "check_private_key missing": (
        {"input__check_private_key": ...},
        "input.check_private_key: required",
    ),
    "check_private_key not a bool": (
        {"input__check_private_key": "yes"},
        "input.check_private_key: must be true or false, got 'yes'",
    ),
    "operating_system missing": (
        {"input__operating_system": ...},
        "input.operating_system: required",
    ),
    "operating_system unknown": (
        {"input__operating_system": "android"},
        "input.operating_system: unknown operating_system 'android' (one of: linux, windows, mac)",
    ),
    "cn not a string": ({"input__cn": 7}, "input.cn: must be a string, got 7"),
    "cn unknown variable": (
        {"input__cn": "${user}.corp"},
        (
            "input.cn: unknown variable ${user} in '${user}.corp': only ${hostname} and "
            "${serial_number} are filled in"
        ),
    ),
    "cn unterminated variable": ({"input__cn": "${hostname"}, "input.cn: unterminated variable"),
    "cn too long": ({"input__cn": "x" * 256}, "input.cn: is 256 characters: at most 255"),
    "extended_key_usage unknown": (
        {"input__extended_key_usage": ["clientAuth", "serverAuth"]},
        (
            "input.extended_key_usage[1]: unknown extended key usage 'serverAuth' "
            "(one of: clientAuth, emailProtection)"
        ),
    ),
    "extended_key_usage as an OID": (
        {"input__extended_key_usage": ["1.3.6.1.5.5.7.3.2"]},
        "input.extended_key_usage[0]: unknown extended key usage '1.3.6.1.5.5.7.3.2'",
    ),
    "extended_key_usage twice": (
        {"input__extended_key_usage": ["clientAuth", "clientAuth"]},
        "input.extended_key_usage[1]: 'clientAuth' is listed twice",
    ),
    "extended_key_usage not a list": (
        {"input__extended_key_usage": "clientAuth"},
        "input.extended_key_usage: must be a list",
    ),
    "extended_key_usage item not a string": (
        {"input__extended_key_usage": [1]},
        "input.extended_key_usage[0]: must be a string, got 1",
    ),
    "locations not a mapping": ({"input__locations": ["/x"]}, "input.locations: must be a mapping"),
    "locations unknown key": (
        {"input__locations": {"path": ["/x"]}},
        "input.locations: unknown key 'path' (did you mean paths?)",
    ),
    "paths relative": (
        {"input__locations": {"paths": ["/ok.pem", "certs/client.pem"]}},
        (
            "input.locations.paths[1]: must be an absolute path such as /etc/pki/client.pem, "
            "got 'certs/client.pem'"
        ),
    ),
    "paths home-relative": (
        {"input__locations": {"paths": ["~/client.pem"]}},
        "input.locations.paths[0]: must be an absolute path",
    ),
    "paths empty string": (
        {"input__locations": {"paths": [""]}},
        "input.locations.paths[0]: must not be empty",
    ),
    "paths NUL": (
        {"input__locations": {"paths": ["/etc/a\x00b"]}},
        "input.locations.paths[0]: must not contain a NUL character",
    ),
    "paths twice": (
        {"input__locations": {"paths": ["/a.pem", "/a.pem"]}},
        "input.locations.paths[1]: '/a.pem' is listed twice",
    ),
    "paths too many": (
        {"input__locations": {"paths": [f"/c{i}.pem" for i in range(65)]}},
        "input.locations.paths: has 65 entries: at most 64",
    ),
    "paths not a list": (
        {"input__locations": {"paths": "/etc/pki/client.pem"}},
        "input.locations.paths: must be a list",
    ),
    "trust store unknown": (
        {"input__locations": {"trust_stores": ["system", "machine"]}},
        "input.locations.trust_stores[1]: unknown trust store 'machine' (one of: system, user)",
    ),
    "trust store twice": (
        {"input__locations": {"trust_stores": ["system", "System"]}},
        "input.locations.trust_stores[1]: 'System' is listed twice",
    ),
    "san empty": (
        {"input__subject_alternative_names": ["a.corp", ""]},
        "input.subject_alternative_names[1]: must not be empty",
    ),
    "san unknown variable": (
        {"input__subject_alternative_names": ["${mac}.corp"]},
        "input.subject_alternative_names[0]: unknown variable ${mac}",
    ),
    "san twice": (
        {"input__subject_alternative_names": ["a.corp", "a.corp"]},
        "input.subject_alternative_names[1]: 'a.corp' is listed twice",
    ),
    "input unknown key": (
        {"input__common_name": "x"},
        "input: unknown key 'common_name'",
    ),
}

BAD_V1: dict[str, tuple[dict[str, Any], str]] = {
    "v1 cn missing": (
        {"input__cn": ...},
        (
            "input.cn: required: client_certificate needs a cn (use type client_certificate_v2 "
            "to check a certificate without a common name)"
        ),
    ),
    "v1 cn empty": ({"input__cn": ""}, "input.cn: required: client_certificate needs a cn"),
    "v1 certificate_id missing": ({"input__certificate_id": ...}, "input.certificate_id: required"),
    "v1 v2 field": (
        {"input__check_private_key": True},
        (
            "input: unknown key 'check_private_key': client_certificate takes only certificate_id "
            "and cn (use type client_certificate_v2 for the other checks)"
        ),
    ),
    "v1 cn unknown variable": ({"input__cn": "${mac}"}, "input.cn: unknown variable ${mac}"),
}


def _body(make: Any, overrides: dict[str, Any]) -> Any:
    if "__body__" in overrides:
        return overrides["__body__"]
    return make(**overrides)


@pytest.mark.parametrize(("overrides", "message"), BAD.values(), ids=BAD.keys())
def test_bad_v2_field_is_named(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(FieldError, match=re.escape(message)):
        PostureRule.from_api(_body(v2, overrides), where="posture rule")


@pytest.mark.parametrize(("overrides", "message"), BAD_V1.values(), ids=BAD_V1.keys())
def test_bad_v1_field_is_named(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(FieldError, match=re.escape(message)):
        PostureRule.from_api(_body(v1, overrides), where="posture rule")


def test_error_names_the_rule_and_the_path() -> None:
    with pytest.raises(FieldError) as info:
        PostureRule.from_api(v2(input__operating_system="beos"), where="devices/posture")
    error = info.value
    assert error.where == "devices/posture 'corp cert'"
    assert error.path == ("input", "operating_system")
    assert str(error).startswith("devices/posture 'corp cert': input.operating_system: ")


# --- the response shape and round trips -----------------------------------------------------


def test_to_api_is_cloudflares_response_shape() -> None:
    rule = PostureRule.from_api(
        v2(id="f00dcafe-0000-4000-8000-000000000001", description="managed"), where="rule"
    )
    assert rule.to_api() == {
        "id": "f00dcafe-0000-4000-8000-000000000001",
        "name": "corp cert",
        "description": "managed",
        "type": "client_certificate_v2",
        "schedule": "5m",
        "expiration": "1h",
        "input": {
            "certificate_id": CERT_ID,
            "check_private_key": True,
            "operating_system": "linux",
            "cn": "${hostname}.corp",
            "extended_key_usage": ["clientAuth", "emailProtection"],
            "locations": {"paths": ["/etc/pki/client.pem"], "trust_stores": ["system", "user"]},
            "subject_alternative_names": ["${serial_number}.corp"],
        },
        "match": [{"platform": "linux"}],
        "enabled": True,
    }


def test_to_api_fills_defaults() -> None:
    body = PostureRule.from_api(v1(), where="rule").to_api()
    assert body["schedule"] == "5m" and body["expiration"] == "10m" and body["match"] == []
    assert "id" not in body and body["enabled"] is True


@pytest.mark.parametrize(
    "body",
    [
        v1(),
        v2(),
        v2(input__cn=..., input__locations=..., input__subject_alternative_names=..., match=[]),
        v2(input__locations={"trust_stores": ["user"]}, schedule="90m", expiration="45s"),
        v2(id="f00dcafe-0000-4000-8000-000000000001", description="x", schedule="1d"),
    ],
    ids=["v1", "v2", "v2 minimal", "v2 odd durations", "v2 with id"],
)
def test_round_trip(body: dict[str, Any]) -> None:
    rule = PostureRule.from_api(body, where="rule")
    again = PostureRule.from_api(rule.to_api(), where="rule")
    assert again == rule
    assert again.to_api() == rule.to_api()


_templates = st.sampled_from(["${hostname}.corp", "${serial_number}", "laptop", "a-${hostname}"])


@given(
    v2_rule=st.booleans(),
    schedule=st.integers(min_value=60, max_value=86400 * 30),
    expiration=st.integers(min_value=1, max_value=86400 * 30),
    platforms=st.lists(st.sampled_from(list(Platform)), unique=True),
    cn=st.none() | _templates,
    usages=st.lists(st.sampled_from(list(ExtendedKeyUsage)), unique=True),
    sans=st.lists(_templates, unique=True, max_size=3),
    paths=st.lists(st.sampled_from(["/a.pem", "/etc/pki/b.pem", "/k.key"]), unique=True),
    stores=st.lists(st.sampled_from(list(TrustStore)), unique=True),
    check_key=st.booleans(),
    os_=st.sampled_from(list(OperatingSystem)),
)
def test_round_trip_any_rule(
    v2_rule: bool,
    schedule: int,
    expiration: int,
    platforms: list[Platform],
    cn: str | None,
    usages: list[ExtendedKeyUsage],
    sans: list[str],
    paths: list[str],
    stores: list[TrustStore],
    check_key: bool,
    os_: OperatingSystem,
) -> None:
    if v2_rule:
        input_ = ClientCertificateInput(
            certificate_id=CERT_ID,
            cn=cn,
            check_private_key=check_key,
            operating_system=os_,
            extended_key_usage=tuple(usages),
            locations=Locations(tuple(paths), tuple(stores)),
            subject_alternative_names=tuple(sans),
        )
    else:
        input_ = ClientCertificateInput(certificate_id=CERT_ID, cn=cn or "laptop")
    rule = PostureRule(
        name="r",
        type=PostureType.CLIENT_CERTIFICATE_V2 if v2_rule else PostureType.CLIENT_CERTIFICATE,
        schedule=timedelta(seconds=schedule),
        expiration=timedelta(seconds=expiration),
        match=tuple(platforms),
        input=input_,
    )
    assert PostureRule.from_api(rule.to_api(), where="rule") == rule


# --- durations and helpers ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value", "canonical"),
    [
        ("30s", timedelta(seconds=30), "30s"),
        ("1m", timedelta(minutes=1), "1m"),
        ("5m", timedelta(minutes=5), "5m"),
        ("60m", timedelta(hours=1), "1h"),
        ("90m", timedelta(minutes=90), "90m"),
        ("1h30m", timedelta(minutes=90), "90m"),
        ("1h", timedelta(hours=1), "1h"),
        ("24h", timedelta(days=1), "24h"),
        ("1d", timedelta(days=1), "24h"),
        ("61s", timedelta(seconds=61), "61s"),
        (" 5m ", timedelta(minutes=5), "5m"),
    ],
)
def test_durations(text: str, value: timedelta, canonical: str) -> None:
    assert parse_duration(text) == value
    assert format_duration(value) == canonical
    assert parse_duration(format_duration(value)) == value


@pytest.mark.parametrize("text", ["", "5", "m", "5 m", "1.5h", "5M", "-1m", "1y", "1h 30m"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="must be a duration such as"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("stores", "databases"),
    [
        ((), ("/etc/pki/nssdb",)),
        ((TrustStore.SYSTEM,), ("/etc/pki/nssdb",)),
        ((TrustStore.USER,), ("/etc/pki/nssdb", "~/.pki/nssdb")),
        ((TrustStore.USER, TrustStore.SYSTEM), ("/etc/pki/nssdb", "~/.pki/nssdb")),
    ],
)
def test_nss_databases(stores: tuple[TrustStore, ...], databases: tuple[str, ...]) -> None:
    assert Locations(trust_stores=stores).nss_databases() == databases


def test_applies_to() -> None:
    linux_only = PostureRule.from_api(v2(), where="rule")
    everywhere = PostureRule.from_api(v2(match=[]), where="rule")
    assert linux_only.applies_to(Platform.LINUX) and linux_only.applies_to("linux")
    assert not linux_only.applies_to("windows")
    assert everywhere.applies_to("windows") and everywhere.applies_to(Platform.IOS)


def test_rules_are_hashable_values() -> None:
    a = PostureRule.from_api(v2(), where="rule")
    b = PostureRule.from_api(v2(), where="rule")
    assert a == b and hash(a) == hash(b)
    with pytest.raises(AttributeError):
        a.name = "x"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kind", "input_", "changes", "message"),
    [
        (PostureType.CLIENT_CERTIFICATE, ClientCertificateInput(CERT_ID), {}, "needs input.cn"),
        (
            PostureType.CLIENT_CERTIFICATE,
            ClientCertificateInput(CERT_ID, cn="x", check_private_key=True),
            {},
            "takes only input.certificate_id and input.cn",
        ),
        (
            PostureType.CLIENT_CERTIFICATE_V2,
            ClientCertificateInput(CERT_ID),
            {},
            "needs input.operating_system",
        ),
        (
            PostureType.CLIENT_CERTIFICATE,
            ClientCertificateInput(CERT_ID, cn="x"),
            {"schedule": timedelta(seconds=59)},
            "schedule must be at least 1 minute",
        ),
        (
            PostureType.CLIENT_CERTIFICATE,
            ClientCertificateInput(CERT_ID, cn="x"),
            {"expiration": timedelta(0)},
            "expiration longer than 0",
        ),
    ],
)
def test_rules_built_in_code_are_checked(
    kind: PostureType, input_: ClientCertificateInput, changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        PostureRule(name="r", type=kind, input=input_, **changes)
