"""Revisions: a cheap fingerprint of what an account's policies are, to tell whether another
process changed them without reading and compiling them.

A data-plane node (``gateway node``, a worker of ``gateway run --workers N``) asks for it when
the store changed at all, and rebuilds its policy engines only when the fingerprint moved. The
fingerprint covers every row's id, ``updated_at`` and body length (lists: their ``revision``):
an edit is missed only if it keeps both the update stamp and the length; the rows of
``access_application_policies`` change only with their application's ``updated_at``.
"""

from __future__ import annotations

import hashlib
import logging

from proxy.store.database import Database

logger = logging.getLogger(__name__)

_QUERIES = (
    "SELECT id, updated_at || ' ' || precedence || ' ' || length(CAST(body AS TEXT)) FROM gateway_rules"
    " WHERE account_id = ? ORDER BY id",
    "SELECT id, updated_at || ' ' || length(CAST(body AS TEXT)) FROM access_policies WHERE account_id = ? ORDER BY id",
    "SELECT id, updated_at || ' ' || length(CAST(body AS TEXT)) FROM access_applications WHERE account_id = ? ORDER BY id",
    "SELECT id, revision FROM gateway_lists WHERE account_id = ? ORDER BY id",
)


# What a data-plane node loads, for every account at once: accounts, their certificates' state,
# their settings, and their policies.
_DATA_PLANE = (
    "SELECT id, '' FROM accounts ORDER BY id",
    "SELECT id, account_id || ' ' || fingerprint || ' ' || coalesce(binding_status, '') || ' ' || in_use"
    " || ' ' || updated_at FROM certificates ORDER BY id",
    "SELECT account_id, updated_at || ' ' || CAST(settings AS TEXT) FROM gateway_configuration ORDER BY account_id",
    "SELECT account_id || ' ' || id, updated_at || ' ' || precedence || ' ' || length(CAST(body AS TEXT)) FROM gateway_rules"
    " ORDER BY account_id, id",
    "SELECT account_id || ' ' || id, updated_at || ' ' || length(CAST(body AS TEXT)) FROM access_policies ORDER BY account_id, id",
    "SELECT account_id || ' ' || id, updated_at || ' ' || length(CAST(body AS TEXT)) FROM access_applications"
    " ORDER BY account_id, id",
    "SELECT account_id || ' ' || id, revision FROM gateway_lists ORDER BY account_id, id",
)


class Revisions:
    def __init__(self, db: Database) -> None:
        self._db = db

    def data_plane(self) -> str:
        """Changes whenever anything a data-plane node loads changes, in any account: accounts,
        certificates (state, in use), settings, rules, Access, lists (a SHA-256 hex digest; a
        handful of queries). Devices and posture are not in it: a node forgets those the change
        journal names (``changes``), and asks for this digest only when the journal says ``plane``."""
        return self._digest(_DATA_PLANE, ())

    def policies(self, account_id: str) -> str:
        """Changes whenever a rule, an Access policy or application, or a list of the account
        is created, changed or deleted (a SHA-256 hex digest)."""
        return self._digest(_QUERIES, (account_id,))

    def _digest(self, queries: tuple[str, ...], parameters: tuple[str, ...]) -> str:
        digest = hashlib.sha256()
        for query in queries:
            digest.update(b"|")
            for row in self._db.connection.execute(query, parameters):
                digest.update(f"{row[0]}\x00{row[1]}\x01".encode())
        return digest.hexdigest()
