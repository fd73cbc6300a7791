"""The watch history: a SQLite database in the home (``watch.db``), beside the CA index.

It holds the inventory (targets added, partner domains of the trust store taken out), the state of everything
watched with the time that state began (``states``; each change of state also goes to ``transitions``), the
certificate each endpoint presented last (``certificates``) and every certificate change (``changes``). WAL
mode and ``BEGIN IMMEDIATE`` as in the CA index (:mod:`certkit.adapters.castore`): ``watch serve`` and a
``watch check`` or ``watch report`` may use it at once. ``meta.schema_version`` says which layout this is.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from certkit.adapters.castore import db_error, immediate_transaction
from certkit.adapters.fs import PRIVATE_DIR, make_dirs
from certkit.core.jsonfacts import rfc3339
from certkit.core.watch import CertFacts, Change, Setting, WatchTarget
from certkit.errors import CertkitError, StoreError

__all__ = ["FILE", "SCHEMA_VERSION", "StateRow", "WatchHistory"]

FILE = "watch.db"
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS targets (
    target   TEXT PRIMARY KEY,
    role     TEXT NOT NULL,
    source   TEXT NOT NULL,
    options  TEXT NOT NULL,               -- JSON: the probe's options
    enabled  INTEGER NOT NULL DEFAULT 1,  -- 0: a trust store partner taken out with watch remove
    added_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS states (
    key       TEXT PRIMARY KEY,           -- certificate:..., crl:..., target:...
    state     TEXT NOT NULL,
    detail    TEXT NOT NULL,
    since     TEXT NOT NULL,              -- when this state began (RFC 3339)
    last_seen TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS transitions (
    key    TEXT NOT NULL,
    state  TEXT NOT NULL,
    before TEXT,
    at     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS transitions_at ON transitions(at);
CREATE TABLE IF NOT EXISTS certificates (
    target     TEXT NOT NULL,
    endpoint   TEXT NOT NULL,
    facts      TEXT NOT NULL,
    first_seen TEXT NOT NULL,
    last_seen  TEXT NOT NULL,
    PRIMARY KEY (target, endpoint)
);
CREATE TABLE IF NOT EXISTS changes (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    at       TEXT NOT NULL,
    target   TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    role     TEXT NOT NULL,
    fields   TEXT NOT NULL,
    before   TEXT NOT NULL,
    after    TEXT NOT NULL,
    settings TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS changes_at ON changes(at);
"""


def _db_error(exc: sqlite3.Error, path: Path, doing: str = "written") -> CertkitError:
    """castore's one-line SQLite errors, naming the watch history (not the CA index)."""
    return db_error(exc, path, doing, what="The watch history", folder="the certkit home",
                    damaged="Move it aside: the next certkit watch run starts a new history.")


def _time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass(frozen=True)
class StateRow:
    """The state of one watched thing and when it began."""

    key: str
    state: str
    detail: dict[str, Any]
    since: dt.datetime
    last_seen: dt.datetime

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "state": self.state, "since": rfc3339(self.since),
                "last_seen": rfc3339(self.last_seen), "detail": self.detail}


class WatchHistory:
    """``watch.db`` in ``home``: :meth:`open` creates it (0600) on first use."""

    def __init__(self, path: Path, db: sqlite3.Connection) -> None:
        self.path = path
        self._db = db

    @classmethod
    def open(cls, home: Path) -> WatchHistory:
        path = Path(home) / FILE
        try:
            if not path.exists():
                make_dirs(path.parent, PRIVATE_DIR)
                with contextlib.suppress(FileExistsError):
                    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o600))
            db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        except OSError as exc:
            raise StoreError(f"The watch history {path} cannot be opened ({exc.strerror}).",
                             "Check the home folder and its permissions.") from None
        except sqlite3.Error as exc:
            raise _db_error(exc, path, "opened") from None
        history = cls(path, db)
        try:
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA busy_timeout = 30000")
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")
            with history._transaction() as tx:
                for statement in _SCHEMA.strip().split(";"):
                    if statement.strip():
                        tx.execute(statement)
                row = tx.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
                if row is None:
                    tx.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
                elif row[0] != str(SCHEMA_VERSION):
                    raise StoreError(f"{path} has schema version {row[0]}, this certkit reads {SCHEMA_VERSION}.",
                                     "Use the certkit version that wrote it, or move the file away.")
        except sqlite3.Error as exc:
            db.close()
            raise _db_error(exc, path, "opened") from None
        except BaseException:
            db.close()
            raise
        return history

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> WatchHistory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with immediate_transaction(self._db, self.path, _db_error) as db:
            yield db

    def _read(self, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        try:
            return list(self._db.execute(sql, args))
        except sqlite3.Error as exc:
            raise _db_error(exc, self.path, "read") from None

    # --- the inventory -----------------------------------------------------------------------------------------

    def add_target(self, target: WatchTarget, at: dt.datetime) -> bool:
        """Add or update ``target``; true when it was not in the inventory before."""
        with self._transaction() as tx:
            had = tx.execute("SELECT enabled FROM targets WHERE target = ?", (target.target,)).fetchone()
            tx.execute("INSERT OR REPLACE INTO targets VALUES (?, ?, ?, ?, 1, ?)",
                       (target.target, target.role, target.source, json.dumps(dict(target.options)), rfc3339(at)))
        return had is None or not had[0]

    def exclude(self, target: str, at: dt.datetime) -> None:
        """Take a partner domain of the trust store out of the inventory (it stays out until added again)."""
        with self._transaction() as tx:
            tx.execute("INSERT OR REPLACE INTO targets VALUES (?, 'partner', 'trust', '{}', 0, ?)",
                       (target, rfc3339(at)))

    def remove_target(self, target: str) -> bool:
        with self._transaction() as tx:
            return tx.execute("DELETE FROM targets WHERE target = ? AND enabled = 1", (target,)).rowcount > 0

    def targets(self) -> list[WatchTarget]:
        return [WatchTarget(r["target"], r["role"], r["source"], json.loads(r["options"]))
                for r in self._read("SELECT * FROM targets WHERE enabled = 1 ORDER BY target")]

    def excluded(self) -> set[str]:
        return {r["target"] for r in self._read("SELECT target FROM targets WHERE enabled = 0")}

    # --- states ------------------------------------------------------------------------------------------------

    def set_state(self, key: str, state: str, detail: dict[str, Any], at: dt.datetime) -> dt.datetime:
        """Record that ``key`` is in ``state`` at ``at``; returns when that state began (``at`` if it is new)."""
        now = rfc3339(at)
        with self._transaction() as tx:
            row = tx.execute("SELECT state, since FROM states WHERE key = ?", (key,)).fetchone()
            if row is not None and row["state"] == state:
                tx.execute("UPDATE states SET detail = ?, last_seen = ? WHERE key = ?", (json.dumps(detail), now, key))
                return _time(row["since"])
            tx.execute("INSERT OR REPLACE INTO states VALUES (?, ?, ?, ?, ?)",
                       (key, state, json.dumps(detail), now, now))
            tx.execute("INSERT INTO transitions VALUES (?, ?, ?, ?)",
                       (key, state, None if row is None else row["state"], now))
        return at

    def states(self) -> list[StateRow]:
        return [StateRow(r["key"], r["state"], json.loads(r["detail"]), _time(r["since"]), _time(r["last_seen"]))
                for r in self._read("SELECT * FROM states ORDER BY key")]

    def transitions(self, since: dt.datetime) -> list[dict[str, Any]]:
        return [{"key": r["key"], "state": r["state"], "before": r["before"], "at": r["at"]}
                for r in self._read("SELECT * FROM transitions WHERE at >= ? ORDER BY at, rowid", (rfc3339(since),))]

    # --- certificates and their changes ------------------------------------------------------------------------

    def last_certificate(self, target: str, endpoint: str) -> CertFacts | None:
        rows = self._read("SELECT facts FROM certificates WHERE target = ? AND endpoint = ?", (target, endpoint))
        return CertFacts.from_dict(json.loads(rows[0]["facts"])) if rows else None

    def record_certificate(self, target: str, endpoint: str, facts: CertFacts, at: dt.datetime,
                           change: Change | None = None) -> None:
        """Remember the certificate ``endpoint`` presented (and the change from the last one, in one transaction)."""
        now = rfc3339(at)
        with self._transaction() as tx:
            row = tx.execute("SELECT facts, first_seen FROM certificates WHERE target = ? AND endpoint = ?",
                             (target, endpoint)).fetchone()
            same = row is not None and json.loads(row["facts"])["thumbprint_sha1"] == facts.thumbprint_sha1
            first = row["first_seen"] if same else now
            tx.execute("INSERT OR REPLACE INTO certificates VALUES (?, ?, ?, ?, ?)",
                       (target, endpoint, json.dumps(facts.to_dict()), first, now))
            if change is not None:
                tx.execute("INSERT INTO changes (at, target, endpoint, role, fields, before, after, settings) "
                           "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                           (rfc3339(change.at), change.target, change.endpoint, change.role,
                            json.dumps(list(change.fields)), json.dumps(change.before.to_dict()),
                            json.dumps(change.after.to_dict()), json.dumps([s.to_dict() for s in change.settings])))

    def changes(self, since: dt.datetime | None = None) -> list[Change]:
        rows = self._read("SELECT * FROM changes WHERE at >= ? ORDER BY id", (rfc3339(since),)) if since else \
            self._read("SELECT * FROM changes ORDER BY id")
        return [Change(r["target"], r["endpoint"], r["role"], tuple(json.loads(r["fields"])),
                       CertFacts.from_dict(json.loads(r["before"])), CertFacts.from_dict(json.loads(r["after"])),
                       tuple(Setting(**s) for s in json.loads(r["settings"])), _time(r["at"])) for r in rows]

    def change_counts(self) -> dict[tuple[str, str], int]:
        """Every change recorded, per (target, role): the value of the changes counter."""
        return {(r["target"], r["role"]): int(r["n"])
                for r in self._read("SELECT target, role, COUNT(*) AS n FROM changes GROUP BY target, role")}
