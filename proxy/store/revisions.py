"""Revisions: a cheap fingerprint of what an account's policies are, to tell whether another
process changed them without reading and compiling them.

A data-plane node (``gateway node``, a worker of ``gateway run --workers N``) asks for it when
the store changed at all, and rebuilds its policy engines only when the fingerprint moved. The
fingerprint covers every row's id and ``updated_at`` (lists: their ``revision``), so an edit
is seen even when the editing process's clock is behind; the rows of
``access_application_policies`` change only with their application's ``updated_at``.
"""

from __future__ import annotations

import hashlib
import logging

from proxy.store.database import Database

logger = logging.getLogger(__name__)

_QUERIES = (
    "SELECT id, updated_at FROM gateway_rules WHERE account_id = ? ORDER BY id",
    "SELECT id, updated_at FROM access_policies WHERE account_id = ? ORDER BY id",
    "SELECT id, updated_at FROM access_applications WHERE account_id = ? ORDER BY id",
    "SELECT id, revision FROM gateway_lists WHERE account_id = ? ORDER BY id",
)


class Revisions:
    def __init__(self, db: Database) -> None:
        self._db = db

    def policies(self, account_id: str) -> str:
        """Changes whenever a rule, an Access policy or application, or a list of the account
        is created, changed or deleted (a SHA-256 hex digest)."""
        digest = hashlib.sha256()
        for query in _QUERIES:
            digest.update(b"|")
            for row in self._db.connection.execute(query, (account_id,)):
                digest.update(f"{row[0]}\x00{row[1]}\x01".encode())
        return digest.hexdigest()
