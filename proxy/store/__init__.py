"""Persistence: SQLite (WAL, synchronous=FULL, versioned migrations). No SQL lives elsewhere."""

from proxy.store.database import StoreError
from proxy.store.records import (
    Account,
    ApiToken,
    CertificateKind,
    CertificateRecord,
    GatewayConfiguration,
    Node,
    NodeLoadedCa,
    TokenOrigin,
)
from proxy.store.store import Store

__all__ = [
    "Account",
    "ApiToken",
    "CertificateKind",
    "CertificateRecord",
    "GatewayConfiguration",
    "Node",
    "NodeLoadedCa",
    "Store",
    "StoreError",
    "TokenOrigin",
]
