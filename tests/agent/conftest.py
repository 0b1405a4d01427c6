"""The server fixtures the agent's end-to-end tests run against: the in-process gateway of
``tests/proxy/conftest.py`` (borrowed until the shared fixtures have one home)."""

from tests.proxy.conftest import clock, db_path, gateway, sealer, service, store

__all__ = ["clock", "db_path", "gateway", "sealer", "service", "store"]
