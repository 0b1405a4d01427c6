"""Persistence: SQLite (WAL, synchronous=FULL, versioned migrations). No SQL lives elsewhere."""

from proxy.store.database import StoreError
from proxy.store.policies import PolicyLink, StoredApplication, StoredPolicy, StoredRule
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
    "PolicyLink",
    "Store",
    "StoreError",
    "StoredApplication",
    "StoredPolicy",
    "StoredRule",
    "TokenOrigin",
]
