"""The CA index: a SQLite database in the CA home.

One row per issued certificate, with its DER, names, validity, status, revocation and renewal
links. WAL mode with ``BEGIN IMMEDIATE`` transactions: several processes may issue at once, each
insert is all-or-nothing, and a process killed at any point leaves a complete row or none.

Every SQLite error leaves as a :class:`~certkit.errors.CertkitError` that tells a full disk (free space,
nothing was recorded) from a read-only home (exit 2) and from a damaged index (restore from a backup).
A home that cannot be written (a backup mounted read-only) is opened read-only: reading works, writing
says why not.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import functools
import json
import os
import shutil
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from cryptography import x509

from certkit.core import jsonfacts
from certkit.core.extensions import san_names
from certkit.core.formats import cert_der, sha1_thumbprint, sha256_fingerprint
from certkit.core.jsonfacts import rfc3339
from certkit.core.names import dns_name, is_ip_address
from certkit.errors import CertkitError, InputError, NotFoundError, StoreError, UsageError

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


def _parse(t: str | None) -> dt.datetime | None:
    return dt.datetime.strptime(t, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC) if t else None


def serial_hex(serial: int) -> str:
    """The index's key for a serial: lower-case hex, unpadded (JSON shows :func:`certkit.core.jsonfacts.serial_hex`)."""
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
        """The record in the JSON contract's names and formats (docs/json.md; ``ca list``, ``ca show``)."""
        return {
            "serial": jsonfacts.serial_hex(self.serial),
            "common_name": self.common_name,
            "dns_names": [n for n in self.names if not is_ip_address(n)],
            "ip_addresses": [n for n in self.names if is_ip_address(n)],
            "profile": self.profile,
            "not_before": rfc3339(self.not_before),
            "not_after": rfc3339(self.not_after),
            "issued_at": rfc3339(self.issued_at),
            "status": self.status,
            "revoked_at": jsonfacts.rfc3339_or_none(self.revoked_at),
            "reason": self.reason,
            "thumbprint_sha1": self.sha1,
            "fingerprint_sha256": self.sha256,
            "renewed_from": None if self.renewed_from is None else jsonfacts.serial_hex(self.renewed_from),
            "renewed_by": None if self.renewed_by is None else jsonfacts.serial_hex(self.renewed_by),
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


_P = ParamSpec("_P")
_R = TypeVar("_R")

#: SQLite primary result codes (``sqlite3.Error.sqlite_errorcode & 0xff``)
_SQLITE_READONLY, _SQLITE_CORRUPT, _SQLITE_FULL, _SQLITE_CANTOPEN, _SQLITE_NOTADB = 8, 11, 13, 14, 26
_SQLITE_IOERR, _SQLITE_BUSY, _SQLITE_LOCKED = 10, 5, 6
#: below this much free space an I/O error on the index is taken for a full disk
_NEARLY_FULL = 256 * 1024


def disk_full(folder: Path) -> bool:
    """Whether the file system holding ``folder`` has (next to) no free space left."""
    try:
        return shutil.disk_usage(folder).free < _NEARLY_FULL
    except OSError:
        return False


def read_only_folder(folder: Path) -> bool:
    """Whether ``folder`` cannot be written: a read-only mount (root included), or no write permission."""
    statvfs = getattr(os, "statvfs", None)
    try:
        if statvfs is not None and statvfs(folder).f_flag & getattr(os, "ST_RDONLY", 1):
            return True
    except OSError:
        pass
    return not os.access(folder, os.W_OK)


def full_disk_error(folder: Path, what: str) -> StoreError:
    return StoreError(f"{what}: the disk holding {folder} is full.",
                      "Free some space there and run the command again; the CA was left as it was before "
                      "(nothing half-recorded, no files without a record).")


def db_error(exc: sqlite3.Error, path: Path, doing: str = "written", *, what: str = "The CA index",
             folder: str = "the CA home",
             damaged: str = "Restore the CA home from a backup (certkit ca status checks the index).",
             ) -> InputError | StoreError:
    """One line for an SQLite failure: a full disk, a read-only home, a busy database, or a damaged one.

    ``what`` names the database (the CA index, the watch history), ``folder`` the folder it lives in;
    ``damaged`` is the fix for a damaged one.
    """
    code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
    text = str(exc)
    if code == _SQLITE_FULL or "disk is full" in text:
        return full_disk_error(path.parent, f"{what} {path} cannot be {doing}")
    io_error = code in (_SQLITE_IOERR, _SQLITE_CANTOPEN)
    if code == _SQLITE_READONLY or "readonly" in text or (io_error and read_only_folder(path.parent)):
        return InputError(f"{what} {path} cannot be {doing}: {folder} is read-only ({text}).",
                          f"Run the command on a writable copy of {folder}, as the user who owns it.")
    if io_error and disk_full(path.parent):
        return full_disk_error(path.parent, f"{what} {path} cannot be {doing}")
    if code in (_SQLITE_BUSY, _SQLITE_LOCKED):
        return StoreError(f"{what} {path} is locked ({text}).", "Another certkit process is busy with it; try again.")
    if code in (_SQLITE_CORRUPT, _SQLITE_NOTADB) or type(exc) is sqlite3.DatabaseError:
        return StoreError(f"{what} {path} is damaged ({text}).", damaged)
    return StoreError(f"{what} {path} cannot be {doing} ({text}).",
                      f"Check the disk and the permissions of {folder}, then run the command again.")


@contextlib.contextmanager
def immediate_transaction(db: sqlite3.Connection, path: Path,
                          error: Callable[[sqlite3.Error, Path], CertkitError] | None = None,
                          ) -> Iterator[sqlite3.Connection]:
    """One all-or-nothing write transaction on ``db`` (the CA index's, the watch history's).

    ``BEGIN IMMEDIATE`` takes the write lock first, so concurrent writers queue instead of failing; an
    exception in the block, or a ``COMMIT`` that fails (a full disk), rolls back. SQLite errors become
    one-line errors naming ``path`` (``error``, default :func:`db_error`).
    """
    error = error or db_error
    try:
        db.execute("BEGIN IMMEDIATE")
    except sqlite3.Error as exc:
        raise error(exc, path) from None
    try:
        yield db
    except BaseException:
        _rollback(db)
        raise
    try:
        db.execute("COMMIT")
    except sqlite3.Error as exc:
        _rollback(db)
        raise error(exc, path) from None


def _rollback(db: sqlite3.Connection) -> None:
    if db.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            db.execute("ROLLBACK")


def _mapped(method: Callable[_P, _R]) -> Callable[_P, _R]:
    """Turn any SQLite error escaping ``method`` into one certkit error line."""
    @functools.wraps(method)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return method(*args, **kwargs)
        except sqlite3.Error as exc:
            index = args[0]
            assert isinstance(index, CAIndex)
            raise db_error(exc, index.path, "read" if method.__name__ in _READERS else "written") from None
    return wrapper


_READERS = {"meta", "serial_taken", "get", "find", "records", "count", "revoked_entries", "latest_crls",
            "integrity_ok", "has_serials", "has_crl"}


class DuplicateSerial(Exception):
    """Raised inside :meth:`CAIndex.add_many` when a serial is taken; the caller draws a new one."""


class CAIndex:
    """The SQLite index of a CA home."""

    FILE = "ca.db"

    def __init__(self, path: Path, *, create: bool = False) -> None:
        self.path = path
        #: why the index is open read-only (a read-only home, a full disk), or None when it can be written
        self.read_only: InputError | StoreError | None = None
        try:
            self._db = self._connect()
        except sqlite3.Error as exc:
            if create:
                raise db_error(exc, path, "created") from None
            self._db = self._connect_read_only(exc)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
        try:
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA busy_timeout = 60000")
            db.execute("PRAGMA journal_mode = WAL")
            # NORMAL in WAL mode: a committed transaction survives a killed process; only power loss
            # may undo the last ones, and never leaves a torn row.
            db.execute("PRAGMA synchronous = NORMAL")
            db.execute("PRAGMA foreign_keys = ON")
            db.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
        except BaseException:
            db.close()
            raise
        return db

    def _connect_read_only(self, first: sqlite3.Error) -> sqlite3.Connection:
        """A home that cannot be written (mounted read-only, or its disk full) is still read.

        ``mode=ro`` reads the WAL as well; when the home cannot even hold the WAL's shared-memory file and
        no WAL is pending, ``immutable=1`` reads the database file alone (nobody can be writing to it).
        """
        error = db_error(first, self.path, "opened")
        if isinstance(error, StoreError) and "damaged" in error.message:
            raise error
        uri = self.path.resolve().as_uri()
        wal = self.path.with_name(self.path.name + "-wal")
        options = ["mode=ro"]
        with contextlib.suppress(OSError):
            if wal.stat().st_size == 0:
                options.append("immutable=1")
        if not wal.exists():
            options.append("immutable=1")
        for option in options:
            try:
                db = sqlite3.connect(f"{uri}?{option}", uri=True, timeout=60, isolation_level=None,
                                     check_same_thread=False)
            except sqlite3.Error:
                continue
            try:
                db.row_factory = sqlite3.Row
                db.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
            except sqlite3.Error:
                db.close()
                continue
            self.read_only = error
            return db
        raise error from None

    @classmethod
    def create(cls, path: Path, meta: dict[str, str]) -> CAIndex:
        try:  # created by us, 0600 whatever the umask: SQLite gives its WAL files the same mode
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o600))
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
                raise full_disk_error(path.parent, f"The CA index {path} cannot be created") from None
            raise StoreError(f"The CA index {path} cannot be created ({exc.strerror}).",
                             "Check the folder and its permissions.") from None
        index = cls(path, create=True)
        try:
            with index.transaction() as db:
                for statement in _SCHEMA.strip().split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
                for k, v in meta.items():
                    db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (k, v))
        except sqlite3.Error as exc:
            index.close()
            raise db_error(exc, path, "created") from None
        return index

    @classmethod
    def open(cls, path: Path) -> CAIndex:
        if not path.is_file():
            raise NotFoundError(f"There is no CA in {path.parent} (no {cls.FILE}).",
                                "Create one with: certkit ca init --name NAME, or point --home at the CA folder.")
        index = cls(path)
        try:
            version = index._db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        except sqlite3.DatabaseError as exc:
            index.close()
            if (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF == _SQLITE_NOTADB or "no such table" in str(exc):
                raise StoreError(f"{path} is not a certkit CA index ({exc}).",
                                 "Point --home at a CA folder made by certkit ca init.") from None
            raise db_error(exc, path, "read") from None
        version = version[0] if version else None
        if version != str(SCHEMA_VERSION):
            index.close()
            raise StoreError(f"{path} has index schema version {version}, this certkit reads {SCHEMA_VERSION}.",
                             "Use the certkit version that created this CA.")
        return index

    def close(self) -> None:
        self._db.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE``: take the write lock first, so concurrent writers queue instead of failing.

        All or nothing: an exception in the block, or a ``COMMIT`` that fails (a full disk), rolls back.
        """
        if self.read_only is not None:
            raise self.read_only
        with immediate_transaction(self._db, self.path) as db:
            yield db

    # --- meta -----------------------------------------------------------------------------------
    @_mapped
    def meta(self) -> dict[str, str]:
        return {row["key"]: row["value"] for row in self._db.execute("SELECT key, value FROM meta")}

    @_mapped
    def set_meta(self, db: sqlite3.Connection, key: str, value: str) -> None:
        db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    # --- certificates ---------------------------------------------------------------------------
    @_mapped
    def serial_taken(self, serial: int) -> bool:
        return self._db.execute("SELECT 1 FROM certs WHERE serial = ?", (serial_hex(serial),)).fetchone() is not None

    @_mapped
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
                 rfc3339(cert.not_valid_before_utc), rfc3339(cert.not_valid_after_utc), rfc3339(issued_at),
                 sha1_thumbprint(cert), sha256_fingerprint(cert),
                 serial_hex(renewed_from) if renewed_from is not None else None,
                 json.dumps(files or {}), cert_der(cert)),
            )
        except sqlite3.IntegrityError as exc:
            if "serial" in str(exc) or "PRIMARY" in str(exc).upper():
                raise DuplicateSerial(str(exc)) from None
            raise
        if files:
            self._release(db, files.values(), keep=cert.serial_number)

    @staticmethod
    def _release(db: sqlite3.Connection, paths: Iterable[str], *, keep: int) -> None:
        """``--force`` gave these files to the certificate ``keep``: earlier records no longer hold them.

        Without this, two records would name one file (issued in the same second, which of them is newest
        is a coin toss), and ``probe --as`` could present a certificate with the key of another.
        """
        for path in set(paths):
            needle = json.dumps(path)
            rows = db.execute("SELECT serial, files FROM certs WHERE serial != ? AND instr(files, ?) > 0",
                              (serial_hex(keep), needle)).fetchall()
            for serial, text in rows:
                held = json.loads(text)
                kept = {kind: where for kind, where in held.items() if where != path}
                if kept != held:
                    db.execute("UPDATE certs SET files = ? WHERE serial = ?", (json.dumps(kept), serial))

    @_mapped
    def set_files(self, serial: int, files: dict[str, str]) -> None:
        with self.transaction() as db:
            self.set_files_in(db, serial, files)

    @_mapped
    def delete_unpublished(self, db: sqlite3.Connection, serial: int) -> None:
        """Forget a certificate whose files could not be published: nobody holds it or its key."""
        db.execute("DELETE FROM certs WHERE serial = ? AND files = '{}'", (serial_hex(serial),))

    @_mapped
    def set_files_in(self, db: sqlite3.Connection, serial: int, files: dict[str, str]) -> None:
        """Record the files of a certificate inside an open transaction (earlier records give them up)."""
        db.execute("UPDATE certs SET files = ? WHERE serial = ?", (json.dumps(files), serial_hex(serial)))
        self._release(db, files.values(), keep=serial)

    @_mapped
    def get(self, serial: int) -> CertRecord:
        row = self._db.execute(f"SELECT {_COLUMNS} FROM certs WHERE serial = ?", (serial_hex(serial),)).fetchone()
        if row is None:
            raise NotFoundError(f"No certificate with serial {serial_hex(serial)} in this CA.",
                                "List them with: certkit ca list.")
        return _record(row)

    @_mapped
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

    @_mapped
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
            args.append(rfc3339(expiring_before))
        if after is not None:
            clauses.append("not_after > ?")
            args.append(rfc3339(after))
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._db.execute(f"SELECT {_COLUMNS} FROM certs {where} ORDER BY issued_at, serial", args)
        return [_record(r) for r in rows]

    @_mapped
    def count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM certs").fetchone()[0])

    @_mapped
    def revoke(self, serial: int, *, at: dt.datetime, reason: str) -> CertRecord:
        with self.transaction() as db:
            rec = self.get(serial)
            if rec.status == "revoked":
                raise UsageError(f"Certificate {rec.serial_hex} ({rec.common_name}) is already revoked "
                                 f"(since {rfc3339(rec.revoked_at or at)}, reason {rec.reason}).",
                                 "Nothing to do; publish the CRL with: certkit ca crl.")
            db.execute("UPDATE certs SET status = 'revoked', revoked_at = ?, reason = ? WHERE serial = ?",
                       (rfc3339(at), reason, rec.serial_hex))
        return self.get(serial)

    @_mapped
    def revoked_entries(self) -> list[tuple[int, dt.datetime, str | None]]:
        rows = self._db.execute("SELECT serial, revoked_at, reason FROM certs WHERE status = 'revoked' "
                                "ORDER BY revoked_at")
        return [(int(r["serial"], 16), _parse(r["revoked_at"]) or dt.datetime.min, r["reason"]) for r in rows]

    # --- CRLs -----------------------------------------------------------------------------------
    @_mapped
    def next_crl_number(self, db: sqlite3.Connection) -> int:
        row = db.execute("SELECT MAX(number) FROM crls").fetchone()
        return int(row[0] or 0) + 1

    @_mapped
    def record_crl(self, db: sqlite3.Connection, crl: x509.CertificateRevocationList, number: int,
                   issuer: str) -> None:
        from cryptography.hazmat.primitives import serialization

        db.execute("INSERT INTO crls VALUES (?,?,?,?,?)",
                   (number, issuer, rfc3339(crl.last_update_utc), rfc3339(crl.next_update_utc or crl.last_update_utc),
                    crl.public_bytes(serialization.Encoding.DER)))

    @_mapped
    def latest_crls(self) -> Sequence[sqlite3.Row]:
        return list(self._db.execute(
            "SELECT c.* FROM crls c JOIN (SELECT issuer, MAX(number) n FROM crls GROUP BY issuer) m "
            "ON c.issuer = m.issuer AND c.number = m.n"))

    @_mapped
    def has_serials(self, serials: Sequence[int]) -> bool:
        """Whether any of these serials is recorded (a journal's transaction committed)."""
        return any(self.serial_taken(s) for s in serials)

    @_mapped
    def has_crl(self, number: int) -> bool:
        return self._db.execute("SELECT 1 FROM crls WHERE number = ?", (number,)).fetchone() is not None

    @_mapped
    def integrity_ok(self) -> bool:
        return bool(self._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok")
