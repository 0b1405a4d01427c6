"""Persistence: SQLite (WAL, synchronous=FULL, versioned migrations). No SQL lives elsewhere."""

from proxy.store.changes import Changes
from proxy.store.database import StoreError
from proxy.store.devices import Device, EnrollmentToken, Nonce
from proxy.store.lists import ListRecord, StoredList, StoredListItem
from proxy.store.policies import PolicyLink, StoredApplication, StoredPolicy, StoredRule
from proxy.store.posture import (
    LogQuery,
    Outcome,
    PostureLogEntry,
    PostureResult,
    StoredPostureRule,
)
from proxy.store.records import (
    Account,
    ApiToken,
    CertificateBinding,
    CertificateKind,
    CertificateRecord,
    GatewayConfiguration,
    Node,
    NodeLoadedCa,
    TokenOrigin,
)
from proxy.store.rotations import (
    OpenRotationExists,
    RotationChange,
    RotationRecord,
    RotationStep,
)
from proxy.store.store import Store
from proxy.store.trust import Coverage, TrustReport, TrustStoreEntry

__all__ = [
    "Account",
    "ApiToken",
    "CertificateBinding",
    "CertificateKind",
    "CertificateRecord",
    "Changes",
    "Coverage",
    "Device",
    "EnrollmentToken",
    "GatewayConfiguration",
    "ListRecord",
    "LogQuery",
    "Node",
    "NodeLoadedCa",
    "Nonce",
    "OpenRotationExists",
    "Outcome",
    "PolicyLink",
    "PostureLogEntry",
    "PostureResult",
    "RotationChange",
    "RotationRecord",
    "RotationStep",
    "Store",
    "StoreError",
    "StoredApplication",
    "StoredList",
    "StoredListItem",
    "StoredPolicy",
    "StoredPostureRule",
    "StoredRule",
    "TokenOrigin",
    "TrustReport",
    "TrustStoreEntry",
]
