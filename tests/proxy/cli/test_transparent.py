"""gateway transparent rules: printed, explained, never applied."""

from __future__ import annotations

import pytest

from proxy.cli.main import main


def test_rules_for_a_source_and_an_interface(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["transparent", "rules", "--port", "8443", "--source", "10.0.0.0/24", "--interface", "eth1"])
        == 0
    )
    out = capsys.readouterr().out
    assert 'iifname "eth1" ip saddr 10.0.0.0/24 tcp dport { 80, 443 } redirect to :8443' in out
    assert "iptables -t nat -A PREROUTING -i eth1 -s 10.0.0.0/24 -p tcp -m multiport --dports 80,443" in out
    assert "ip6tables" not in out  # an IPv4 source: IPv4 rules only
    rule_lines = [line for line in out.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert all(not line.startswith("nft ") for line in rule_lines)  # printed, not a command that applies


def test_dnat_to_the_listeners_address_for_both_families(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["transparent", "rules", "--port", "8443", "--to", "2001:db8::1", "--dport", "443"]) == 0
    out = capsys.readouterr().out
    assert "tcp dport { 443 } dnat ip6 to [2001:db8::1]:8443" in out
    assert (
        "ip6tables -t nat -A PREROUTING -p tcp -m multiport --dports 443 -j DNAT --to-destination [2001:db8::1]:8443"
        in out
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--port", "0"], "--port 0: a port is 1-65535"),
        (["--port", "1", "--source", "10.0.0.0/33"], "--source 10.0.0.0/33"),
        (["--port", "1", "--interface", "eth0; rm -rf /"], "--interface 'eth0; rm -rf /'"),
        (["--port", "1", "--source", "10.0.0.0/8", "--to", "::1"], "different IP versions"),
    ],
)
def test_bad_options_are_one_line(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["transparent", "rules", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
