"""policies/pac.py: exclusions checked, and the PAC file run for real (Node.js) on hosts."""

from __future__ import annotations

import pytest

from policies.pac import ExclusionKind, PacError, PacFile
from tests.policies.pac_eval import find_proxy

PROXY = "PROXY gw.example:8080"


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [
        ("Intranet.Example.", ExclusionKind.NAME, "intranet.example"),
        ("*.corp.example", ExclusionKind.PATTERN, "*.corp.example"),
        ("build-?.lab", ExclusionKind.PATTERN, "build-?.lab"),
        ("203.0.113.7", ExclusionKind.NETWORK, "203.0.113.7/32"),
        ("203.0.113.9/24", ExclusionKind.NETWORK, "203.0.113.0/24"),
    ],
)
def test_exclusion_is_read_by_its_shape(text: str, kind: ExclusionKind, value: str) -> None:
    exclusion = PacFile.exclusion(text)
    assert (exclusion.kind, exclusion.value) == (kind, value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "give a host name"),
        ("2001:db8::/32", "IPv6 networks cannot be expressed"),
        ("300.1.1.1", "not an IP address or network"),
        ('evil"); alert(1); ("', "not a host name"),
        ("a b", "not a host name"),
        ("*.x\\y", "a pattern may hold"),
        ("x" * 300, "give a host name"),
    ],
)
def test_bad_exclusion_is_refused_saying_what_would_do(text: str, message: str) -> None:
    with pytest.raises(PacError, match=message):
        PacFile.exclusion(text)


def test_bad_proxy_address_is_refused() -> None:
    with pytest.raises(PacError, match="expected HOST:PORT"):
        PacFile('gw"; return "DIRECT')


def test_pac_sends_public_hosts_to_the_proxy_and_local_ones_direct() -> None:
    exclusions = tuple(PacFile.exclusion(e) for e in ("intranet.example", "*.corp.example", "203.0.113.0/24"))
    pac = PacFile("gw.example:8080", exclusions, direct_hosts=("admin.example",)).render()
    got = find_proxy(pac, [
        "example.com", "www.example.com", "8.8.8.8", "172.32.0.1", "2001:db8::1", "localhost.example.com",
        "localhost", "app.localhost", "intranet", "127.0.0.1", "10.1.2.3", "172.16.0.1", "172.31.255.255",
        "192.168.1.1", "169.254.1.1", "::1", "fd00::1", "fc12:3456::1", "fe80::1", "admin.example",
        "intranet.example", "wiki.intranet.example", "a.corp.example", "203.0.113.77", "EXAMPLE.ORG",
    ])  # fmt: skip
    proxied = {h for h, v in got.items() if v == PROXY}
    direct = {h for h, v in got.items() if v == "DIRECT"}
    assert proxied == {
        "example.com", "www.example.com", "8.8.8.8", "172.32.0.1", "2001:db8::1", "localhost.example.com",
        "EXAMPLE.ORG",
    }  # fmt: skip
    assert direct == set(got) - proxied


def test_pattern_exclusion_does_not_cover_the_bare_domain() -> None:
    pac = PacFile("gw.example:8080", (PacFile.exclusion("*.corp.example"),)).render()
    assert find_proxy(pac, ["corp.example", "x.corp.example"]) == {
        "corp.example": PROXY,
        "x.corp.example": "DIRECT",
    }


def test_ipv6_proxy_is_written_with_brackets() -> None:
    pac = PacFile("[2001:db8::5]:3128").render()
    assert find_proxy(pac, ["example.com"]) == {"example.com": "PROXY [2001:db8::5]:3128"}
