"""proxy.option_reads: options read without a deep copy give what stock mitmproxy gives, see
every change (update, reset, a rolled-back update), and never hand out something a caller could
change the option through."""

from __future__ import annotations

import pytest
from mitmproxy import exceptions, options

from proxy.option_reads import SharedReadOptions


def _both() -> tuple[options.Options, SharedReadOptions]:
    return options.Options(), SharedReadOptions()


def test_every_option_reads_as_stock_reads_it() -> None:
    stock, shared = _both()
    assert stock.keys() == shared.keys()
    for name in sorted(stock.keys()):
        assert getattr(shared, name) == getattr(stock, name), name
        assert getattr(shared, name) == getattr(stock, name), name  # the second read, shared


def test_a_change_is_seen_at_the_next_read() -> None:
    opts = SharedReadOptions()
    assert opts.ignore_hosts == []
    assert opts.ssl_insecure is False
    opts.update(ignore_hosts=["a.example"], ssl_insecure=True)
    assert opts.ignore_hosts == ["a.example"]
    assert opts.ssl_insecure is True
    opts.ignore_hosts = ["b.example"]
    assert opts.ignore_hosts == ["b.example"]
    opts.reset()
    assert opts.ignore_hosts == []
    assert opts.ssl_insecure is False


def test_a_rolled_back_change_is_not_seen() -> None:
    opts = SharedReadOptions()
    opts.update(ignore_hosts=["kept.example"])
    assert opts.ignore_hosts == ["kept.example"]

    def refuse(updated: set[str]) -> None:
        if "ignore_hosts" in updated:
            raise exceptions.OptionsError("refused")

    opts.changed.connect(refuse)
    with pytest.raises(exceptions.OptionsError):
        opts.update(ignore_hosts=["refused.example"])
    assert opts.ignore_hosts == ["kept.example"]


def test_a_list_read_is_a_new_list_each_time() -> None:
    opts = SharedReadOptions(ignore_hosts=["a.example"])
    first = opts.ignore_hosts
    first.append("changed.example")
    assert opts.ignore_hosts == ["a.example"]
    assert opts.ignore_hosts is not opts.ignore_hosts


def test_an_unknown_option_raises_as_stock() -> None:
    with pytest.raises(AttributeError, match="No such option"):
        _ = SharedReadOptions().no_such_option
