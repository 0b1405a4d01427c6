"""``proxy/message_checks.py``: mitmproxy's type check of every HTTP message, by ``isinstance``
against classes worked out once, accepting and refusing exactly what stock's check does."""

from __future__ import annotations

import copy
import dataclasses
import typing
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from mitmproxy import http
from mitmproxy.test import tutils
from mitmproxy.utils import typecheck

from proxy import message_checks
from proxy.message_checks import STOCK_CHECK, accepted_classes, check_fields

CANDIDATES: list[Any] = [b"x", "x", 0, 443, 1.5, True, None, http.Headers(), object(), [b"a"], ("a", 1)]


def _outcome(check: Callable[[Any], None], message: Any) -> str:
    try:
        check(message)
    except TypeError as e:
        return f"TypeError: {e}"
    return "accepted"


def _messages() -> list[http.MessageData]:
    bare = tutils.treq(content=None).data  # content None: the other Optional branch
    bare.trailers = None
    return [tutils.treq().data, tutils.tresp().data, bare]


@pytest.fixture
def stock() -> Callable[[Any], None]:
    assert STOCK_CHECK is not None, "these tests need mitmproxy's check (not python -O)"
    return STOCK_CHECK


@pytest.mark.parametrize("message", _messages(), ids=["request", "response", "bare request"])
def test_every_field_accepts_and_refuses_exactly_what_stock_does(
    message: http.MessageData, stock: Callable[[Any], None]
) -> None:
    assert _outcome(check_fields, message) == _outcome(stock, message) == "accepted"
    refused = 0
    for field in dataclasses.fields(message):
        for value in CANDIDATES:
            changed = copy.copy(message)
            setattr(changed, field.name, value)
            ours, theirs = _outcome(check_fields, changed), _outcome(stock, changed)
            assert ours == theirs, f"{type(message).__name__}.{field.name} = {value!r}"
            refused += ours != "accepted"
    assert refused > 2 * len(dataclasses.fields(message))  # the candidates do test refusals


def test_a_valid_message_needs_no_call_of_stocks_checker(
    monkeypatch: pytest.MonkeyPatch, stock: Callable[[Any], None]
) -> None:
    messages = _messages()  # made before counting (making them runs whichever check is installed)
    calls: list[str] = []
    original = typecheck.check_option_type

    def counting(name: str, value: Any, typeinfo: Any) -> None:
        calls.append(name)
        original(name, value, typeinfo)

    monkeypatch.setattr(typecheck, "check_option_type", counting)
    for message in messages:
        check_fields(message)
    assert calls == []
    stock(messages[0])
    assert len(calls) >= len(dataclasses.fields(http.RequestData))  # what stock pays per message
    wrong = copy.copy(messages[0])
    wrong.port = "443"  # type: ignore[assignment]
    with pytest.raises(TypeError, match=r"^Expected <class 'int'> for port, but got <class 'str'>\.$"):
        check_fields(wrong)


@pytest.mark.parametrize(
    ("typeinfo", "expected"),
    [
        (bytes, (bytes,)),
        (float, (float, int)),
        (bytes | None, (bytes, type(None))),
        (typing.Optional[http.Headers], (http.Headers, type(None))),  # noqa: UP045 (typing's spelling on purpose)
        (int | str | None, (int, str, type(None))),
        (typing.Any, (object,)),
        (tuple[str, int], None),
        (Sequence[str], None),
        (typing.BinaryIO, None),
        ("str", None),
        (list[str] | None, None),
    ],
)
def test_accepted_classes(typeinfo: Any, expected: tuple[type, ...] | None) -> None:
    assert accepted_classes(typeinfo) == expected


# A message class with fields only stock's checker understands (made here rather than with a
# class statement, whose annotations this module's ``from __future__ import annotations`` turns
# into strings).
_Tagged: Any = dataclasses.make_dataclass(
    "_Tagged",
    [
        ("tags", tuple[str, int], dataclasses.field(default=("a", 1))),
        ("names", Sequence[str], dataclasses.field(default=())),
    ],
    bases=(http.RequestData,),
)


def test_a_field_of_another_type_keeps_stocks_check(stock: Callable[[Any], None]) -> None:
    fields = {f.name: getattr(tutils.treq().data, f.name) for f in dataclasses.fields(http.RequestData)}
    tagged = _Tagged(**fields)
    assert _outcome(check_fields, tagged) == "accepted"
    for name, value in [("tags", ("a", "b")), ("tags", ("a",)), ("names", ["x", 1]), ("names", "xy")]:
        changed = copy.copy(tagged)
        setattr(changed, name, value)
        assert _outcome(check_fields, changed) == _outcome(stock, changed)
    changed = copy.copy(tagged)
    changed.tags = ("a", "b")
    assert _outcome(check_fields, changed).startswith("TypeError: Expected <class 'int'> for tags[1]")


def test_install_replaces_stocks_check_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http.MessageData, "__post_init__", STOCK_CHECK)
    message_checks.install()
    assert http.MessageData.__post_init__ is check_fields  # type: ignore[attr-defined]
    message_checks.install()
    assert http.MessageData.__post_init__ is check_fields  # type: ignore[attr-defined]
    fields = {f.name: getattr(tutils.treq().data, f.name) for f in dataclasses.fields(http.RequestData)}
    assert http.RequestData(**fields).port == fields["port"]
    with pytest.raises(TypeError, match=r"^Expected <class 'int'> for port, but got <class 'str'>\.$"):
        http.RequestData(**{**fields, "port": "443"})
    with pytest.raises(TypeError, match=r"^Expected bytes \| None for content"):
        http.RequestData(**{**fields, "content": "text"})


def test_install_adds_no_check_where_mitmproxy_has_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(http.MessageData, "__post_init__")  # what python -O leaves
    message_checks.install()
    assert "__post_init__" not in vars(http.MessageData)
