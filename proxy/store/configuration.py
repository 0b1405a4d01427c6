"""The per-account Gateway configuration: a JSON settings object."""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import Any

from proxy.store.database import Database, from_db, to_db
from proxy.store.records import GatewayConfiguration

logger = logging.getLogger(__name__)


class Configurations:
    def __init__(self, db: Database) -> None:
        self._db = db

    def get(self, account_id: str) -> GatewayConfiguration | None:
        row = self._db.connection.execute(
            "SELECT * FROM gateway_configuration WHERE account_id = ?", (account_id,)
        ).fetchone()
        if row is None:
            return None
        return GatewayConfiguration(
            account_id=row["account_id"],
            settings=json.loads(row["settings"]),
            created_at=from_db(row["created_at"]),
            updated_at=from_db(row["updated_at"]),
        )

    def save(self, account_id: str, settings: dict[str, Any], now: datetime) -> None:
        """Insert or replace the settings; ``created_at`` is kept from the first save."""
        text = json.dumps(settings, sort_keys=True, allow_nan=False)
        with self._db.transaction() as conn:
            conn.execute(
                "INSERT INTO gateway_configuration (account_id, settings, created_at, updated_at)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (account_id) DO UPDATE SET"
                " settings = excluded.settings, updated_at = excluded.updated_at",
                (account_id, text, to_db(now), to_db(now)),
            )
