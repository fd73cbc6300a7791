"""The managed trust store on disk: a folder of PEM files named by fingerprint, plus an index.

Layout of a store folder (default ``<home>/trust/``)::

    index.json          {"format": "certkit-trust-store", "version": 1, "anchors": [...]}
    <SHA256>.pem        one certificate per file, named by its SHA-256 fingerprint (64 hex digits)
    .lock               the lock serialising writers (filelock: flock on POSIX, msvcrt on Windows)

Each index entry holds the provenance (label, partner domains, source, when added, pinned) and what
``list`` shows (subject, validity, CA or not) together with the file's size and SHA-256, so that
opening a store reads one JSON file and stats the PEM files; nothing is parsed until the anchors
are used. That keeps opening 10,000 anchors well under a second.

Integrity: opening checks that every indexed file exists with its recorded size; the first use of
the anchors checks every file's SHA-256 and that the certificate inside has the fingerprint its name
says. Any difference raises :class:`~certkit.errors.StoreError` (exit 1) naming the file -- a file
changed behind certkit's back is never used. PEM files the index does not list (a crash between
writing a PEM and the index, or a file dropped in by hand) are ignored and listed in
:attr:`TrustStore.stray`.

Updates take the lock, re-read the index, write the PEM files atomically, then replace the index
atomically: two processes adding at once both succeed, and a crash leaves the old index intact. A
store folder (and a missing home above it) is created 0700 whatever the umask; reading never writes,
so a store on a read-only mount can be listed, shown, exported and used to verify.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509

from certkit.adapters.fs import PRIVATE_DIR, PUBLIC, atomic_write, atomic_write_many, file_lock
from certkit.clock import Clock, SystemClock
from certkit.core.formats import cert_der, cert_pem, sha1_thumbprint, sha256_fingerprint
from certkit.core.jsonfacts import rfc3339, serial_hex
from certkit.core.names import dns_name
from certkit.core.trust import Anchor, AnchorSet, Override, Refusal, anchor_refusals, is_ca, is_self_signed
from certkit.errors import InputError, NotFoundError, PolicyError, StoreError, UsageError

__all__ = ["FORMAT", "INDEX", "AddResult", "TrustStore", "default_store_path", "entry_dict"]

FORMAT = "certkit-trust-store"
VERSION = 1
INDEX = "index.json"
LOCK = ".lock"
_FP_FILE = re.compile(r"^[0-9A-F]{64}\.pem$")
_HEX = re.compile(r"^[0-9A-Fa-f:]+$")


def entry_dict(entry: dict[str, Any]) -> dict[str, Any]:
    """An index entry in the JSON contract's formats (docs/json.md; ``trust list|show|remove --json``): times as
    RFC 3339 with ``Z``, the serial as Windows prints it. The index file keeps what it has always stored."""
    out = dict(entry)
    for key in ("not_before", "not_after", "added_at"):
        if out.get(key):
            out[key] = rfc3339(_dt.datetime.fromisoformat(out[key]))
    if out.get("serial"):
        out["serial"] = serial_hex(int(out["serial"], 16))
    return out


def default_store_path(home: Path) -> Path:
    """Where the trust store of a certkit home lives."""
    return home / "trust"


@dataclass(frozen=True)
class AddResult:
    """What :meth:`TrustStore.add` did with one certificate."""

    anchor: Anchor
    added: bool  # False: it was already in the store (provenance merged)
    overridden: tuple[Refusal, ...] = ()  # refusals accepted because of pin or force


@dataclass
class _Entry:
    data: dict[str, Any]

    @property
    def fingerprint(self) -> str:
        return str(self.data["fingerprint_sha256"])

    @property
    def file(self) -> str:
        return f"{self.fingerprint}.pem"


@dataclass
class _State:
    entries: dict[str, _Entry] = field(default_factory=dict)


class TrustStore:
    """A folder of trusted certificates with provenance. See the module docstring for the format.

    ``TrustStore(path)`` opens an existing store or an empty/missing folder (created on first add).
    ``anchor_set()`` is what :func:`certkit.verify_chain` takes: the managed anchors plus Mozilla's roots
    from certifi, or only the managed ones with ``managed_only=True``.
    """

    def __init__(self, path: str | os.PathLike[str], *, clock: Clock | None = None, check: bool = True) -> None:
        self.path = Path(path)
        self.clock: Clock = clock or SystemClock()
        self._check = check
        self._state = self._read_index()
        self.problems: list[str] = []
        self.stray: list[Path] = []
        self._anchors: tuple[Anchor, ...] | None = None
        self._sets: dict[bool, AnchorSet] = {}
        self._scan()

    # --- reading -------------------------------------------------------------------------------

    def _read_index(self) -> _State:
        p = self.path
        if p.exists() and not p.is_dir():
            raise StoreError(f"{p} is a file, not a trust store folder.", "Give a folder with --store.")
        index = p / INDEX
        if not index.exists():
            # A new store (or one whose first write was interrupted) holds only certkit's own files:
            # the lock, fingerprint-named PEMs and hidden temporary files. Anything else: not a store.
            # Another process may be writing the first index right now: it is one of ours too, and is
            # read below when it appeared while we looked.
            foreign = p.is_dir() and any(not (child.name.startswith(".") or _FP_FILE.match(child.name)
                                              or child.name == INDEX) for child in p.iterdir())
            if not index.exists():
                if foreign:
                    raise StoreError(f"{p} is not a certkit trust store (it has files but no {INDEX}).",
                                     "Give the right --store folder, or an empty or new folder to start a store.")
                return _State()
        try:
            data = json.loads(index.read_text("utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise StoreError(f"The trust store index {index} cannot be read ({exc}).",
                             "Restore it from a backup; certkit does not guess at a damaged index.") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise StoreError(f"{index} is not a certkit trust store index.",
                             "Give the right --store folder.")
        if data.get("version") != VERSION:
            raise StoreError(f"{index} has store format version {data.get('version')!r}; this certkit reads "
                             f"version {VERSION}.", "Use the certkit version that wrote the store.")
        entries: dict[str, _Entry] = {}
        for item in data.get("anchors", []):
            if not isinstance(item, dict) or not isinstance(item.get("fingerprint_sha256"), str):
                raise StoreError(f"{index} has a malformed entry.", "Restore the index from a backup.")
            entry = _Entry(item)
            entries[entry.fingerprint] = entry
        return _State(entries)

    def _scan(self) -> None:
        """Cheap integrity check on open: every indexed file exists with its recorded size."""
        problems: list[str] = []
        names: set[str] = set()
        if self.path.is_dir():
            names = {n for n in os.listdir(self.path) if _FP_FILE.match(n)}
        for fp, entry in self._state.entries.items():
            f = self.path / entry.file
            try:
                size = f.stat().st_size
            except FileNotFoundError:
                problems.append(f"{f} is missing")
                continue
            if size != entry.data.get("file_size"):
                problems.append(f"{f} was changed behind certkit's back (size {size}, recorded "
                                f"{entry.data.get('file_size')})")
            names.discard(f"{fp}.pem")
        self.stray = sorted(self.path / n for n in names)
        self.problems = problems
        if problems and self._check:
            raise StoreError(f"The trust store {self.path} is damaged: {problems[0]}"
                             + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else "") + ".",
                             "Restore the file, or drop the anchor with certkit trust remove FP and add it again.")

    def __len__(self) -> int:
        return len(self._state.entries)

    def entries(self) -> list[dict[str, Any]]:
        """The index entries (provenance and summary), without parsing any certificate."""
        return [dict(e.data) for e in self._state.entries.values()]

    def _load(self, entry: _Entry) -> x509.Certificate:
        f = self.path / entry.file
        try:
            data = f.read_bytes()
        except FileNotFoundError:
            raise StoreError(f"{f} is missing from the trust store.",
                             "Restore it, or drop the anchor with certkit trust remove FP.") from None
        if hashlib.sha256(data).hexdigest() != entry.data.get("file_sha256"):
            raise StoreError(f"{f} was changed behind certkit's back (its SHA-256 differs from the index).",
                             "Restore the file, or drop the anchor with certkit trust remove FP and add it again.")
        try:
            cert = x509.load_pem_x509_certificate(data)
        except ValueError:
            raise StoreError(f"{f} no longer holds a readable certificate.",
                             "Restore the file, or drop the anchor with certkit trust remove FP.") from None
        if sha256_fingerprint(cert) != entry.fingerprint:
            raise StoreError(f"{f} holds a certificate whose fingerprint does not match its name.",
                             "Restore the file, or drop the anchor with certkit trust remove FP.")
        return cert

    @staticmethod
    def _anchor(entry: _Entry, cert: x509.Certificate) -> Anchor:
        d = entry.data
        added = d.get("added_at")
        return Anchor(cert=cert, label=d.get("label"), partners=tuple(d.get("partners") or ()),
                      source=d.get("source"), added_at=_dt.datetime.fromisoformat(added) if added else None,
                      pinned=bool(d.get("pinned")), origin="managed")

    def anchors(self) -> tuple[Anchor, ...]:
        """The managed anchors, loaded and integrity-checked on first use."""
        if self._anchors is None:
            self._anchors = tuple(self._anchor(e, self._load(e)) for e in self._state.entries.values())
        return self._anchors

    def anchor_set(self, *, managed_only: bool = False) -> AnchorSet:
        """Anchors for :func:`~certkit.core.verify.verify_chain`: managed + certifi roots, or managed only."""
        if managed_only not in self._sets:
            managed = AnchorSet(self.anchors())
            if managed_only:
                self._sets[True] = managed
            else:
                from certkit.adapters.roots import public_roots

                self._sets[False] = managed.union(public_roots())
        return self._sets[managed_only]

    def managed(self) -> AnchorSet:
        """Only the managed anchors (same as ``anchor_set(managed_only=True)``)."""
        return self.anchor_set(managed_only=True)

    def find(self, ref: str) -> list[dict[str, Any]]:
        """Entries matching ``ref``: a label (exact), a SHA-256 fingerprint or SHA-1 thumbprint, or a
        fingerprint prefix of at least 8 hex digits (colons allowed)."""
        entries = list(self._state.entries.values())
        by_label = [e for e in entries if e.data.get("label") == ref]
        if by_label:
            return [dict(e.data) for e in by_label]
        if _HEX.match(ref):
            h = ref.replace(":", "").upper()
            if len(h) >= 8:
                return [dict(e.data) for e in entries
                        if e.fingerprint.startswith(h) or str(e.data.get("thumbprint_sha1", "")) == h]
        return []

    def get(self, ref: str) -> dict[str, Any]:
        """The one entry ``ref`` names; NotFoundError or UsageError (ambiguous) otherwise."""
        found = self.find(ref)
        if not found:
            raise NotFoundError(f"No anchor in {self.path} matches {ref!r}.",
                                "Run certkit trust list to see fingerprints and labels.")
        if len(found) > 1:
            raise UsageError(f"{ref!r} matches {len(found)} anchors.", "Give more of the fingerprint.")
        return found[0]

    def certificate(self, fingerprint: str) -> x509.Certificate:
        """The certificate stored under ``fingerprint`` (integrity-checked)."""
        entry = self._state.entries.get(fingerprint)
        if entry is None:
            raise NotFoundError(f"No anchor {fingerprint} in {self.path}.", "Run certkit trust list.")
        return self._load(entry)

    # --- writing ------------------------------------------------------------------------------

    def _write_index(self, state: _State) -> None:
        doc = {"format": FORMAT, "version": VERSION,
               "anchors": [e.data for e in sorted(state.entries.values(), key=lambda e: e.fingerprint)]}
        atomic_write(self.path / INDEX, (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode(), mode=PUBLIC,
                     overwrite=True)

    def _reload(self) -> None:
        self._state = self._read_index()
        self._anchors = None
        self._sets = {}

    def add(self, cert: x509.Certificate, *, label: str | None = None, partners: Sequence[str] = (),
            source: str | None = None, pin: bool = False, force: bool = False) -> AddResult:
        """Add one certificate; see :meth:`add_many`."""
        return self.add_many([cert], label=label, partners=partners, source=source, pin=pin, force=force)[0]

    def add_many(self, certs: Iterable[x509.Certificate], *, label: str | None = None, partners: Sequence[str] = (),
                 source: str | None = None, pin: bool = False, force: bool = False,
                 check_time: _dt.datetime | None = None, sources: Sequence[str | None] | None = None
                 ) -> list[AddResult]:
        """Add certificates as anchors in one locked, atomic update.

        A certificate that is not a CA is refused unless ``pin`` (trust exactly it); an expired, not yet
        valid, weak-key or SHA-1-signed one unless ``force``. Every certificate is checked before anything
        is written: one refusal writes nothing (:class:`~certkit.errors.PolicyError`, exit 2). ``sources``
        gives a source per certificate (else ``source`` for all). Adding a
        certificate already present is harmless: its label is kept (or set) and partners are merged.
        """
        certs = list(certs)
        srcs = list(sources) if sources is not None else [source] * len(certs)
        if len(srcs) != len(certs):
            raise UsageError("add_many needs one source per certificate.")
        now = self.clock.now()
        parts = tuple(dns_name(p) for p in partners)
        if label is not None and (not label.strip() or (_HEX.match(label) and len(label) >= 8)):
            raise InputError(f"The label {label!r} is empty or looks like a fingerprint.",
                             "Use a name such as fabrikam.")
        allowed = {o for o, given in ((Override.PIN, pin), (Override.FORCE, force)) if given}
        plan = [(cert, _accepted_refusals(cert, check_time or now, allowed)) for cert in certs]
        results: list[AddResult] = []
        with file_lock(self.path / LOCK, folder_mode=PRIVATE_DIR):
            self._reload()
            state = self._state
            files: list[tuple[Path, bytes, int]] = []
            for (cert, accepted), src in zip(plan, srcs, strict=True):
                existing = state.entries.get(sha256_fingerprint(cert))
                if existing is not None:
                    _merge_provenance(existing, label, parts, pinned=pin and not is_ca(cert))
                    results.append(AddResult(self._anchor(existing, cert), added=False, overridden=accepted))
                    continue
                pem = cert_pem(cert)
                entry = _new_entry(cert, pem, label=label, partners=parts, source=src, added_at=now,
                                   forced=[r.reason for r in accepted if r.override is Override.FORCE])
                state.entries[entry.fingerprint] = entry
                target = self.path / entry.file
                if not (target.exists() and target.read_bytes() == pem):
                    files.append((target, pem, PUBLIC))
                results.append(AddResult(self._anchor(entry, cert), added=True, overridden=accepted))
            if files:
                atomic_write_many(files, overwrite=True)
            self._write_index(state)
        self._reload()
        self._scan()
        return results

    def remove(self, ref: str) -> dict[str, Any]:
        """Remove the anchor ``ref`` names (works on a damaged anchor too); returns its index entry."""
        with file_lock(self.path / LOCK, folder_mode=PRIVATE_DIR):
            self._reload()
            entry = self.get(ref)
            fp = entry["fingerprint_sha256"]
            del self._state.entries[fp]
            self._write_index(self._state)
            with contextlib.suppress(FileNotFoundError):
                (self.path / f"{fp}.pem").unlink()
        self._reload()
        self._scan()
        return entry

    # --- export -------------------------------------------------------------------------------

    def export_certificates(self, *, include_public: bool = False) -> list[x509.Certificate]:
        """The certificates to export: managed anchors (and certifi's roots with ``include_public``)."""
        return list(self.anchor_set(managed_only=not include_public).certificates)

    def export(self, fmt: str, out: Path | None, *, include_public: bool = False,
               overwrite: bool = False) -> bytes | list[Path]:
        """``pem``: a bundle (Postfix ``smtp_tls_CAfile``, OpenSSL); ``p7b``: PKCS#7 DER (Windows);
        ``der-dir``: a folder of ``.cer`` files (certutil -addstore, the certificates MMC snap-in).

        Returns the bytes (pem/p7b without ``out``) or the written paths. ``overwrite`` refreshes an
        earlier export in place (atomically); for ``der-dir`` it also removes the ``.cer`` files of an
        earlier export whose anchors are no longer in the store.
        """
        certs = self.export_certificates(include_public=include_public)
        if fmt == "pem":
            data = cert_pem(*certs)
        elif fmt == "p7b":
            if not certs:
                raise UsageError("The store has no anchors to export.", "Add some with certkit trust add.")
            from cryptography.hazmat.primitives.serialization import Encoding, pkcs7

            data = pkcs7.serialize_certificates(certs, Encoding.DER)
        elif fmt == "der-dir":
            if out is None:
                raise UsageError("--format der-dir needs --out FOLDER.", "Name a folder to write the .cer files to.")
            if out.exists() and not out.is_dir():
                raise UsageError(f"{out} is a file, not a folder.", "Name a new or empty folder.")
            anchors = {a.fingerprint: a for a in self.anchor_set(managed_only=not include_public)}
            files = []
            for fp, a in anchors.items():
                stem = re.sub(r"[^A-Za-z0-9._-]+", "_", a.label or _cn(a.cert) or "anchor").strip("_")[:40]
                files.append((out / f"{stem}-{fp[:16]}.cer", cert_der(a.cert), PUBLIC))
            written = atomic_write_many(files, overwrite=overwrite)
            if overwrite:
                keep = {p.name for p in written}
                for old in out.glob("*.cer"):
                    if old.name not in keep and _EXPORTED.search(old.name):
                        old.unlink(missing_ok=True)
            return written
        else:
            raise UsageError(f"Unknown export format {fmt!r}.", "Use pem, p7b or der-dir.")
        if out is None:
            return data
        return [atomic_write(out, data, overwrite=overwrite)]


#: The name certkit gives an exported anchor: ``<label>-<16 hex of the SHA-256>.cer``.
_EXPORTED = re.compile(r"-[0-9A-F]{16}\.cer$")


def _cn(cert: x509.Certificate) -> str:
    cns = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(cns[0].value) if cns else ""


def _accepted_refusals(cert: x509.Certificate, at: _dt.datetime, allowed: set[Override]) -> tuple[Refusal, ...]:
    """The refusals of ``cert`` as an anchor at ``at``, all of which ``allowed`` overrides; a
    :class:`~certkit.errors.PolicyError` naming the others when it does not."""
    refusals = anchor_refusals(cert, at=at)
    blocking = [r for r in refusals if r.override not in allowed]
    if blocking:
        why = "; ".join(f"{r.reason} (use --{r.override} to accept)" for r in blocking)
        raise PolicyError(f"Refusing to trust {cert.subject.rfc4514_string()}: {why}.", "Nothing was added.")
    return tuple(refusals)


def _merge_provenance(entry: _Entry, label: str | None, partners: Sequence[str], *, pinned: bool) -> None:
    """A certificate added again: its label is kept (or set), partners are merged, a pin is kept."""
    d = entry.data
    if label and not d.get("label"):
        d["label"] = label
    d["partners"] = sorted(set(d.get("partners") or ()) | set(partners))
    d["pinned"] = bool(d.get("pinned")) or pinned


def _new_entry(cert: x509.Certificate, pem: bytes, *, label: str | None, partners: Sequence[str],
               source: str | None, added_at: _dt.datetime, forced: list[str]) -> _Entry:
    """The index entry of a new anchor."""
    return _Entry({
        "fingerprint_sha256": sha256_fingerprint(cert),
        "thumbprint_sha1": sha1_thumbprint(cert),
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "serial": f"{cert.serial_number:X}",
        "not_before": cert.not_valid_before_utc.isoformat(),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "is_ca": is_ca(cert),
        "self_signed": is_self_signed(cert),
        "pinned": not is_ca(cert),
        "label": label,
        "partners": sorted(set(partners)),
        "source": source,
        "added_at": added_at.isoformat(),
        "forced": forced,
        "file_size": len(pem),
        "file_sha256": hashlib.sha256(pem).hexdigest(),
    })
