"""The CA index: a SQLite database in the CA home.

One row per issued certificate, with its DER, names, validity, status, revocation and renewal
links. WAL mode with ``BEGIN IMMEDIATE`` transactions: several processes may issue at once, each
insert is all-or-nothing, and a process killed at any point leaves a complete row or none.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509

from certkit.core.formats import cert_der, sha1_thumbprint, sha256_fingerprint
from certkit.core.issuance import san_names
from certkit.core.names import dns_name
from certkit.errors import InputError, NotFoundError, StoreError, UsageError

__all__ = ["SCHEMA_VERSION", "CAIndex", "CertRecord"]

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS certs (
    serial       TEXT PRIMARY KEY,          -- lower-case hex, no leading zeros
    common_name  TEXT NOT NULL,
    names        TEXT NOT NULL,             -- JSON list of SAN names
    profile      TEXT NOT NULL,
    not_before   TEXT NOT NULL,             -- ISO 8601 UTC
    not_after    TEXT NOT NULL,
    issued_at    TEXT NOT NULL,
    status       TEXT NOT NULL DEFAULT 'valid' CHECK (status IN ('valid', 'revoked')),
    revoked_at   TEXT,
    reason       TEXT,
    sha1         TEXT NOT NULL,
    sha256       TEXT NOT NULL UNIQUE,
    renewed_from TEXT REFERENCES certs(serial),
    files        TEXT NOT NULL DEFAULT '{}', -- JSON: what was written where
    der          BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS certs_cn ON certs(common_name);
CREATE INDEX IF NOT EXISTS certs_not_after ON certs(not_after);
CREATE TABLE IF NOT EXISTS crls (
    number       INTEGER PRIMARY KEY,
    issuer       TEXT NOT NULL,
    this_update  TEXT NOT NULL,
    next_update  TEXT NOT NULL,
    der          BLOB NOT NULL
);
"""


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse(t: str | None) -> dt.datetime | None:
    return dt.datetime.strptime(t, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC) if t else None


def serial_hex(serial: int) -> str:
    return format(serial, "x")


@dataclass(frozen=True)
class CertRecord:
    """One row of the index."""

    serial: int
    common_name: str
    names: tuple[str, ...]
    profile: str
    not_before: dt.datetime
    not_after: dt.datetime
    issued_at: dt.datetime
    status: str
    revoked_at: dt.datetime | None
    reason: str | None
    sha1: str
    sha256: str
    renewed_from: int | None
    renewed_by: int | None
    files: dict[str, str]
    der: bytes

    @property
    def serial_hex(self) -> str:
        return serial_hex(self.serial)

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_der_x509_certificate(self.der)

    def to_dict(self) -> dict[str, Any]:
        return {
            "serial": self.serial_hex,
            "common_name": self.common_name,
            "names": list(self.names),
            "profile": self.profile,
            "not_before": _iso(self.not_before),
            "not_after": _iso(self.not_after),
            "issued_at": _iso(self.issued_at),
            "status": self.status,
            "revoked_at": _iso(self.revoked_at) if self.revoked_at else None,
            "reason": self.reason,
            "sha1_thumbprint": self.sha1,
            "sha256_fingerprint": self.sha256,
            "renewed_from": serial_hex(self.renewed_from) if self.renewed_from is not None else None,
            "renewed_by": serial_hex(self.renewed_by) if self.renewed_by is not None else None,
            "files": self.files,
        }


_COLUMNS = ("serial, common_name, names, profile, not_before, not_after, issued_at, status, revoked_at, reason, "
            "sha1, sha256, renewed_from, files, der, "
            "(SELECT r.serial FROM certs r WHERE r.renewed_from = certs.serial LIMIT 1) AS renewed_by")


def _record(row: sqlite3.Row) -> CertRecord:
    return CertRecord(
        serial=int(row["serial"], 16), common_name=row["common_name"], names=tuple(json.loads(row["names"])),
        profile=row["profile"], not_before=_parse(row["not_before"]) or dt.datetime.min,
        not_after=_parse(row["not_after"]) or dt.datetime.min, issued_at=_parse(row["issued_at"]) or dt.datetime.min,
        status=row["status"], revoked_at=_parse(row["revoked_at"]), reason=row["reason"], sha1=row["sha1"],
        sha256=row["sha256"], renewed_from=int(row["renewed_from"], 16) if row["renewed_from"] else None,
        renewed_by=int(row["renewed_by"], 16) if row["renewed_by"] else None,
        files=json.loads(row["files"]), der=bytes(row["der"]),
    )


class DuplicateSerial(Exception):
    """Raised inside :meth:`CAIndex.add_many` when a serial is taken; the caller draws a new one."""


class CAIndex:
    """The SQLite index of a CA home."""

    FILE = "ca.db"

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._db = sqlite3.connect(path, timeout=60, isolation_level=None, check_same_thread=False)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA busy_timeout = 60000")
            self._db.execute("PRAGMA journal_mode = WAL")
            # NORMAL in WAL mode: a committed transaction survives a killed process; only power loss
            # may undo the last ones, and never leaves a torn row.
            self._db.execute("PRAGMA synchronous = NORMAL")
            self._db.execute("PRAGMA foreign_keys = ON")
        except sqlite3.OperationalError as exc:
            if "readonly" in str(exc) or "unable to open" in str(exc):
                raise InputError(f"The CA index {path} cannot be opened for writing ({exc}).",
                                 "Run certkit as the user who owns the CA home (the index keeps a journal beside "
                                 "it, so even reading needs write access to the folder).") from None
            raise StoreError(f"The CA index {path} cannot be opened ({exc}).",
                             "Restore the CA home from a backup.") from None
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"The CA index {path} cannot be opened ({exc}).",
                             "Restore the CA home from a backup.") from None

    @classmethod
    def create(cls, path: Path, meta: dict[str, str]) -> CAIndex:
        index = cls(path)
        with index.transaction() as db:
            for statement in _SCHEMA.strip().split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            for k, v in meta.items():
                db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (k, v))
        return index

    @classmethod
    def open(cls, path: Path) -> CAIndex:
        if not path.is_file():
            raise NotFoundError(f"There is no CA in {path.parent} (no {cls.FILE}).",
                                "Create one with: certkit ca init --name NAME, or point --home at the CA folder.")
        index = cls(path)
        try:
            version = index.meta().get("schema_version")
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{path} is not a certkit CA index ({exc}).",
                             "Point --home at a CA folder made by certkit ca init.") from None
        if version != str(SCHEMA_VERSION):
            raise StoreError(f"{path} has index schema version {version}, this certkit reads {SCHEMA_VERSION}.",
                             "Use the certkit version that created this CA.")
        return index

    def close(self) -> None:
        self._db.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE``: take the write lock first, so concurrent writers queue instead of failing."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise StoreError(f"The CA index {self.path} is locked ({exc}).",
                             "Another certkit process is busy with this CA; try again.") from None
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        else:
            self._db.execute("COMMIT")

    # --- meta -----------------------------------------------------------------------------------
    def meta(self) -> dict[str, str]:
        return {row["key"]: row["value"] for row in self._db.execute("SELECT key, value FROM meta")}

    def set_meta(self, db: sqlite3.Connection, key: str, value: str) -> None:
        db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    # --- certificates ---------------------------------------------------------------------------
    def serial_taken(self, serial: int) -> bool:
        return self._db.execute("SELECT 1 FROM certs WHERE serial = ?", (serial_hex(serial),)).fetchone() is not None

    def insert(self, db: sqlite3.Connection, cert: x509.Certificate, *, profile: str, issued_at: dt.datetime,
               common_name: str | None = None, names: Sequence[str] | None = None,
               renewed_from: int | None = None, files: dict[str, str] | None = None) -> None:
        """Insert one row inside an open transaction; :class:`DuplicateSerial` if the serial is taken.

        ``common_name`` and ``names`` may be given by an issuer that knows them, which spares parsing the
        certificate's extensions again (the dominant cost of recording a fresh certificate).
        """
        if common_name is None:
            cn_attrs = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
            common_name = str(cn_attrs[0].value) if cn_attrs else ""
        if names is None:
            names = san_names(cert)
        try:
            db.execute(
                "INSERT INTO certs (serial, common_name, names, profile, not_before, not_after, issued_at, sha1, "
                "sha256, renewed_from, files, der) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (serial_hex(cert.serial_number), common_name.lower(), json.dumps(list(names)), profile,
                 _iso(cert.not_valid_before_utc), _iso(cert.not_valid_after_utc), _iso(issued_at),
                 sha1_thumbprint(cert), sha256_fingerprint(cert),
                 serial_hex(renewed_from) if renewed_from is not None else None,
                 json.dumps(files or {}), cert_der(cert)),
            )
        except sqlite3.IntegrityError as exc:
            if "serial" in str(exc) or "PRIMARY" in str(exc).upper():
                raise DuplicateSerial(str(exc)) from None
            raise

    def set_files(self, serial: int, files: dict[str, str]) -> None:
        with self.transaction() as db:
            self.set_files_in(db, serial, files)

    def delete_unpublished(self, db: sqlite3.Connection, serial: int) -> None:
        """Forget a certificate whose files could not be published: nobody holds it or its key."""
        db.execute("DELETE FROM certs WHERE serial = ? AND files = '{}'", (serial_hex(serial),))

    def set_files_in(self, db: sqlite3.Connection, serial: int, files: dict[str, str]) -> None:
        """Record the files of a certificate inside an open transaction."""
        db.execute("UPDATE certs SET files = ? WHERE serial = ?", (json.dumps(files), serial_hex(serial)))

    def get(self, serial: int) -> CertRecord:
        row = self._db.execute(f"SELECT {_COLUMNS} FROM certs WHERE serial = ?", (serial_hex(serial),)).fetchone()
        if row is None:
            raise NotFoundError(f"No certificate with serial {serial_hex(serial)} in this CA.",
                                "List them with: certkit ca list.")
        return _record(row)

    def find(self, ref: str, *, unique: bool = False) -> CertRecord:
        """A certificate by serial (hex, optionally with colons or 0x) or by name.

        A name is compared as a host name (case, trailing dot and IDN normalised): first with the CN, the
        newest valid certificate first; then, unless ``unique``, with the SAN names. With ``unique`` (for
        revocation) a name must be a CN matching exactly one valid certificate: revoking the wrong one
        takes a production Edge down.
        """
        text = ref.strip().lower()
        hexpart = text.removeprefix("0x").replace(":", "")
        if hexpart and all(c in "0123456789abcdef" for c in hexpart) and len(hexpart) >= 8:
            row = self._db.execute(f"SELECT {_COLUMNS} FROM certs WHERE serial = ?",
                                   (format(int(hexpart, 16), "x"),)).fetchone()
            if row is not None:
                return _record(row)
        try:
            name = dns_name(text)
        except InputError:
            name = text
        order = "ORDER BY (status = 'valid') DESC, issued_at DESC, not_after DESC"
        rows = self._db.execute(f"SELECT {_COLUMNS} FROM certs WHERE common_name = ? {order}", (name,)).fetchall()
        if unique:
            valid = [r for r in rows if r["status"] == "valid"]
            if len(valid) > 1:
                serials = ", ".join(r["serial"] for r in valid)
                raise UsageError(f"{len(valid)} valid certificates are named {name} (serials {serials}).",
                                 "Name the one you mean by its serial (certkit ca list).")
        elif not rows:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM certs WHERE EXISTS "
                f"(SELECT 1 FROM json_each(certs.names) WHERE json_each.value = ?) {order}", (name,)).fetchall()
        if not rows:
            raise NotFoundError(f"No certificate with serial or name {ref!r} in this CA.",
                                "List them with: certkit ca list.")
        return _record(rows[0])

    def records(self, *, revoked: bool | None = None, expiring_before: dt.datetime | None = None,
                after: dt.datetime | None = None) -> list[CertRecord]:
        clauses: list[str] = []
        args: list[str] = []
        if revoked is True:
            clauses.append("status = 'revoked'")
        elif revoked is False:
            clauses.append("status = 'valid'")
        if expiring_before is not None:
            clauses.append("not_after <= ?")
            args.append(_iso(expiring_before))
        if after is not None:
            clauses.append("not_after > ?")
            args.append(_iso(after))
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._db.execute(f"SELECT {_COLUMNS} FROM certs {where} ORDER BY issued_at, serial", args)
        return [_record(r) for r in rows]

    def count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM certs").fetchone()[0])

    def revoke(self, serial: int, *, at: dt.datetime, reason: str) -> CertRecord:
        with self.transaction() as db:
            rec = self.get(serial)
            if rec.status == "revoked":
                raise UsageError(f"Certificate {rec.serial_hex} ({rec.common_name}) is already revoked "
                                 f"(since {_iso(rec.revoked_at or at)}, reason {rec.reason}).",
                                 "Nothing to do; publish the CRL with: certkit ca crl.")
            db.execute("UPDATE certs SET status = 'revoked', revoked_at = ?, reason = ? WHERE serial = ?",
                       (_iso(at), reason, rec.serial_hex))
        return self.get(serial)

    def revoked_entries(self) -> list[tuple[int, dt.datetime, str | None]]:
        rows = self._db.execute("SELECT serial, revoked_at, reason FROM certs WHERE status = 'revoked' "
                                "ORDER BY revoked_at")
        return [(int(r["serial"], 16), _parse(r["revoked_at"]) or dt.datetime.min, r["reason"]) for r in rows]

    # --- CRLs -----------------------------------------------------------------------------------
    def next_crl_number(self, db: sqlite3.Connection) -> int:
        row = db.execute("SELECT MAX(number) FROM crls").fetchone()
        return int(row[0] or 0) + 1

    def record_crl(self, db: sqlite3.Connection, crl: x509.CertificateRevocationList, number: int,
                   issuer: str) -> None:
        from cryptography.hazmat.primitives import serialization

        db.execute("INSERT INTO crls VALUES (?,?,?,?,?)",
                   (number, issuer, _iso(crl.last_update_utc), _iso(crl.next_update_utc or crl.last_update_utc),
                    crl.public_bytes(serialization.Encoding.DER)))

    def latest_crls(self) -> Sequence[sqlite3.Row]:
        return list(self._db.execute(
            "SELECT c.* FROM crls c JOIN (SELECT issuer, MAX(number) n FROM crls GROUP BY issuer) m "
            "ON c.issuer = m.issuer AND c.number = m.n"))

    def integrity_ok(self) -> bool:
        return bool(self._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok")
