"""mitmproxy's options, read without a deep copy when the value cannot be changed in place.

Stock ``OptManager.__getattr__`` returns ``copy.deepcopy`` of an option's value at every read,
so that a caller cannot change the option by mutating what it got. mitmproxy reads several
options per connection and per layer (``ignore_hosts``, ``allow_hosts``, ``proxy_debug``, ...):
in the new-host profile about 1.6 % of the gateway's CPU went to those copies.

``SharedReadOptions`` keeps, per option, what the last read returned, tied to the option object
and its value object (``_Option.set`` and ``reset`` replace the value, a rollback replaces the
options: either way the next read copies again). Values that cannot be changed in place (``None``,
``bool``, ``int``, ``float``, ``str``, ``bytes``) are returned as they are; a list of those is
returned as a new list at each read, as stock does; anything else is read the stock way.
"""

from __future__ import annotations

from typing import Any

from mitmproxy import options

__all__ = ["SharedReadOptions"]

_IMMUTABLE = frozenset({type(None), bool, int, float, str, bytes})


class SharedReadOptions(options.Options):
    """``mitmproxy.options.Options`` whose reads skip the deep copy where it cannot matter."""

    def __init__(self, **kwargs: Any) -> None:
        # (option, value object, what to hand out, hand out a new list of it)
        self.__dict__["_reads"] = {}
        super().__init__(**kwargs)

    def __getattr__(self, attr: str) -> Any:
        known = self.__dict__.get("_options")
        option = known.get(attr) if known is not None else None
        if option is None:
            return super().__getattr__(attr)  # type: ignore[no-untyped-call]  # AttributeError, as stock
        value = option.value
        read = self.__dict__["_reads"].get(attr)
        if read is None or read[0] is not option or read[1] is not value:
            current = option.current()
            if type(current) in _IMMUTABLE:
                read = (option, value, current, False)
            elif type(current) is list and all(type(item) in _IMMUTABLE for item in current):
                read = (option, value, tuple(current), True)
            else:
                return current  # a dict, a set, a nested list: the stock deep copy every time
            self.__dict__["_reads"][attr] = read
        return list(read[2]) if read[3] else read[2]
