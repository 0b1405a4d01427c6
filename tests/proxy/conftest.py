"""Moved to ``tests/support`` (fixtures registered by ``tests/conftest.py``); these names stay here
only until the test files written meanwhile import them from there."""

from tests.support.clock import START, FakeClock
from tests.support.server import Gateway, Reply, call

__all__ = ["START", "FakeClock", "Gateway", "Reply", "call"]
