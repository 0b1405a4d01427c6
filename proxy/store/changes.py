"""The change journal, read by a process that follows the store (a worker, ``gateway node``).

Triggers write one row per change (migration 11): ``device`` (a device, its posture results or
its WireGuard tunnel; the key is the device id), ``address`` (a device's addresses), ``rules``
(an account's posture rules; the key is the account id) and ``plane`` (anything
``Revisions.data_plane`` fingerprints). :meth:`ChangeJournal.take` returns what was written
after the last row it read, as :class:`Changes`. When it cannot tell (its first call, a reader
that fell behind the journal's pruning, more rows than it reads at once) it says
``everything``: the caller forgets all it cached, as it did before the journal.
"""

from __future__ import annotations

from dataclasses import dataclass

from proxy.store.database import Database

MAX_ROWS = 4096  # read at once; more than this since the last look: everything


@dataclass(frozen=True)
class Changes:
    """What other processes changed since the last look."""

    everything: bool = False
    devices: frozenset[str] = frozenset()
    addresses: bool = False
    rule_accounts: frozenset[str] = frozenset()
    plane: bool = False

    def __or__(self, other: Changes) -> Changes:
        return Changes(
            everything=self.everything or other.everything,
            devices=self.devices | other.devices,
            addresses=self.addresses or other.addresses,
            rule_accounts=self.rule_accounts | other.rule_accounts,
            plane=self.plane or other.plane,
        )


NOTHING = Changes()
EVERYTHING = Changes(everything=True)


class ChangeJournal:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._last: int | None = None  # the seq of the last row read (None: none yet)

    def take(self) -> Changes:
        """The changes written after the last row read (everything at the first call)."""
        connection = self._db.connection
        if self._last is None:
            return self._everything()
        rows = connection.execute(
            "SELECT seq, kind, key FROM store_changes WHERE seq >= ? ORDER BY seq LIMIT ?",
            (self._last, MAX_ROWS + 1),
        ).fetchall()
        if self._last:  # the row last read comes first, unless pruning took it
            if not rows or int(rows[0][0]) != self._last:
                return self._everything()
            rows = rows[1:]
        if len(rows) >= MAX_ROWS:  # more may follow
            return self._everything()
        if not rows:
            return NOTHING
        devices: set[str] = set()
        rule_accounts: set[str] = set()
        addresses = plane = False
        for _, kind, key in rows:
            if kind == "device":
                devices.add(key)
            elif kind == "address":
                addresses = True
            elif kind == "rules":
                rule_accounts.add(key)
            else:
                plane = True
        self._last = int(rows[-1][0])
        return Changes(False, frozenset(devices), addresses, frozenset(rule_accounts), plane)

    def _everything(self) -> Changes:
        """Start again from the newest row (read before the caller forgets anything: whatever
        commits later is in the next call's rows)."""
        row = self._db.connection.execute("SELECT max(seq) FROM store_changes").fetchone()
        self._last = int(row[0] or 0)
        return EVERYTHING
