"""Host names: DNS's length limits, and the parent domains rules compare against."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from policies.errors import PolicyError
from policies.facts import RequestFacts
from policies.scheme import domains_of, host_name_problem


def _domains_by_labels(host: str) -> tuple[str, ...]:
    """The definition: each suffix of labels that still has a dot, most specific first."""
    labels = host.split(".")
    if len(labels) == 1:
        return (host,)
    return tuple(".".join(labels[i:]) for i in range(len(labels) - 1))


@pytest.mark.parametrize(
    ("host", "domains"),
    [
        ("a.b.example.com", ("a.b.example.com", "b.example.com", "example.com")),
        ("Example.COM.", ("example.com",)),
        ("localhost", ("localhost",)),
        ("10.1.2.3", ("10.1.2.3",)),
        ("[::1]", ("[::1]",)),
        ("", ()),
    ],
)
def test_domains_of(host: str, domains: tuple[str, ...]) -> None:
    assert domains_of(host) == domains


@given(st.lists(st.text(alphabet="abc-", max_size=5), min_size=1, max_size=12).map(".".join))
def test_domains_of_matches_the_label_definition(host: str) -> None:
    host = host.strip().rstrip(".")
    if host and not host.replace(".", "").isdigit():
        assert domains_of(host) == _domains_by_labels(host)


def test_a_name_longer_than_dns_allows_has_no_parent_domains() -> None:
    """30,000 labels gave 30,000 suffixes (quadratic time and memory) before; now one value."""
    host = ".".join(["a"] * 30_000)
    assert domains_of(host) == (host,)


@pytest.mark.parametrize(
    ("host", "problem"),
    [
        ("a" * 63 + ".example.com", None),
        ("a" * 64 + ".example.com", "has a label of 64 characters; a label has at most 63"),
        (".".join(["a" * 63] * 4)[:253], None),
        (".".join(["a" * 63] * 4)[:253] + ".", None),
        (".".join(["a"] * 30_000), "is 59999 characters long; a host name has at most 253"),
    ],
)
def test_host_name_problem(host: str, problem: str | None) -> None:
    assert host_name_problem(host) == problem


def test_a_url_whose_host_is_too_long_is_refused() -> None:
    host = ".".join(["a"] * 30_000)
    with pytest.raises(ValueError, match=r"^URL host is 59999 characters long; a host name has at most 253$"):
        RequestFacts.from_url(f"https://{host}/")


def test_an_access_application_domain_too_long_is_refused() -> None:
    from policies.access import AccessApplication

    with pytest.raises(PolicyError, match="domain: has a label of 64 characters; a label has at most 63"):
        AccessApplication.from_api(
            {"name": "x", "domain": "a" * 64 + ".example.com", "policies": []}, where="app"
        )
