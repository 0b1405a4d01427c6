"""mitmproxy's type check of every HTTP message, worked out once per message class.

Unless Python runs with ``-O``, mitmproxy checks every field of every request and response it
makes (``MessageData.__post_init__``) with ``typecheck.check_option_type``, the checker of its
options: for each field it reads the dataclass's fields again, asks ``typing`` what the field's
type is made of, and formats the ``TypeError`` it would raise before checking anything (a union
formats one per member). That is 19-25 µs per message in-process, four messages per intercepted
HTTPS request through the explicit proxy (CONNECT, its answer, the request, the response), and
the exceptions and strings it builds are garbage for the collector: 7 % of the gateway's CPU per
new-host connection end to end (docs/performance.md, "Seventh pass").

``install()`` replaces that method with one ``isinstance`` per field, against the classes each
field's type admits, worked out once per message class from the same dataclass fields. The check
stays: a value that fails it goes on to stock's ``check_option_type``, so the ``TypeError`` is
stock's word for word, and a field whose type is anything but a class or a union of classes (none
in mitmproxy 12) keeps stock's check. Under ``python -O`` mitmproxy defines no check, and
``install()`` adds none.
"""

from __future__ import annotations

import dataclasses
import logging
import types
import typing
from collections.abc import Callable
from typing import Any, Final

from mitmproxy import http
from mitmproxy.utils import typecheck

logger = logging.getLogger(__name__)

__all__ = ["STOCK_CHECK", "accepted_classes", "check_fields", "install"]

_Check = tuple[str, Any, tuple[type, ...] | None]

STOCK_CHECK: Final[Callable[..., None] | None] = vars(http.MessageData).get("__post_init__")
"""mitmproxy's own ``MessageData.__post_init__`` (``None`` under ``python -O``)."""

_checks: dict[type, tuple[_Check, ...]] = {}


def accepted_classes(typeinfo: Any) -> tuple[type, ...] | None:
    """The classes whose instances ``check_option_type`` accepts for ``typeinfo``, or ``None``
    when that type is not a plain class or a union of them (stock's check then decides)."""
    origin = typing.get_origin(typeinfo)
    if origin is typing.Union or origin is types.UnionType:
        classes: list[type] = []
        for member in typing.get_args(typeinfo):
            accepted = accepted_classes(member)
            if accepted is None:
                return None
            classes.extend(accepted)
        return tuple(classes)
    if origin is not None or not isinstance(typeinfo, type):
        return None  # a generic (tuple[...], Sequence[...]), a string annotation...
    if typeinfo is typing.Any:  # a class since Python 3.11
        return (object,)
    if typeinfo in (typing.TextIO, typing.BinaryIO):
        return None  # stock accepts anything with a read() for these
    if typeinfo is float:
        return (float, int)  # stock lets an int stand for a float
    return (typeinfo,)


def _checks_of(cls: type) -> tuple[_Check, ...]:
    found = _checks.get(cls)
    if found is None:
        found = _checks[cls] = tuple(
            (field.name, field.type, accepted_classes(field.type)) for field in dataclasses.fields(cls)
        )
    return found


def check_fields(message: http.MessageData) -> None:
    """What stock ``MessageData.__post_init__`` checks, raising what it raises."""
    for name, typeinfo, accepted in _checks_of(type(message)):
        value = getattr(message, name)
        if accepted is None or not isinstance(value, accepted):
            typecheck.check_option_type(name, value, typeinfo)


def install() -> None:
    """From now on, messages made in this process are checked by ``check_fields``."""
    if vars(http.MessageData).get("__post_init__") in (None, check_fields):
        return  # python -O (mitmproxy checks nothing), or installed already
    http.MessageData.__post_init__ = check_fields  # type: ignore[method-assign]
    logger.debug("mitmproxy's HTTP messages type-checked by proxy.message_checks")
