"""``proxy/context_fork.py``: a layer context forked as stock forks it, without a throwaway server."""

from __future__ import annotations

import uuid

import pytest
from mitmproxy import connection
from mitmproxy.options import Options
from mitmproxy.proxy import context, layer

from proxy import context_fork
from proxy.context_fork import STOCK_FORK, fork


@pytest.fixture
def parent() -> context.Context:
    client = connection.Client(peername=("127.0.0.1", 5000), sockname=("127.0.0.1", 8080), timestamp_start=0)
    ctx = context.Context(client, Options())
    ctx.server.address = ("example.test", 443)
    ctx.layers = [layer.NextLayer(ctx), layer.NextLayer(ctx)]
    return ctx


def test_a_fork_is_what_stock_makes(parent: context.Context) -> None:
    ours, theirs = fork(parent), STOCK_FORK(parent)
    assert type(ours) is type(theirs) is context.Context
    assert vars(ours).keys() == vars(theirs).keys() == {"client", "options", "server", "layers"}
    for fork_ in (ours, theirs):
        assert fork_.client is parent.client and fork_.options is parent.options
        assert fork_.server is parent.server
        assert fork_.layers == parent.layers and fork_.layers is not parent.layers
    ours.layers.append(layer.NextLayer(ours))
    assert len(parent.layers) == 2  # the fork's stack is its own


def test_a_fork_makes_no_server(parent: context.Context, monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[uuid.UUID] = []
    real = uuid.uuid4

    def counting() -> uuid.UUID:
        made.append(real())
        return made[-1]

    monkeypatch.setattr(uuid, "uuid4", counting)
    STOCK_FORK(parent)
    assert len(made) == 1  # stock's throwaway Server and its id
    fork(parent)
    assert len(made) == 1


def test_install_replaces_stocks_fork_once(monkeypatch: pytest.MonkeyPatch, parent: context.Context) -> None:
    monkeypatch.setattr(context.Context, "fork", STOCK_FORK)
    context_fork.install()
    assert context.Context.fork is fork
    context_fork.install()
    assert context.Context.fork is fork
    assert parent.fork().server is parent.server
