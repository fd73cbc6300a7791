"""The internal CA: :class:`CertificateAuthority` joins the pure issuance core to the CA home on disk.

A CA home holds::

    ca.db             the index (SQLite): every certificate issued, revocations, CRLs, settings
    root.crt          the root certificate (what partners import), PEM
    root.key          the root key, PKCS#8 PEM encrypted with the CA passphrase, 0600
    issuing.crt/.key  the issuing intermediate, when the CA was created with an intermediate
    ca.crl, ca.crl.pem      the issuing CA's latest CRL (DER is what is served at the CDP URL)
    root.crl, root.crl.pem  the root's CRL (only with an intermediate)
    .lock             the CA lock, held by every command that changes the CA
    .txn-<tag>.json   the journal of a change in progress: which files it is about to publish

Every change (issue, sign, renew, revoke, CRL) takes the CA lock, first cleans up after a run that was
killed (:meth:`CertificateAuthority.recover`), then commits its files and its record in one step: the
files are staged under temporary names tagged with the change's journal, published inside the index
transaction, and taken back (keys overwritten) when the transaction does not commit -- a full disk
included. The home is created 0700 whatever the umask.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import secrets
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs7

from certkit.adapters.castore import CAIndex, CertRecord, DuplicateSerial, serial_hex
from certkit.adapters.fs import (
    PRIVATE,
    PRIVATE_DIR,
    PUBLIC,
    LockBusy,
    Staged,
    atomic_write,
    atomic_write_many,
    file_lock,
    make_dirs,
    sha256_file,
    temp_pattern,
    wipe,
)
from certkit.clock import Clock, SystemClock
from certkit.core.findings import Finding, Side
from certkit.core.formats import PfxTarget, cert_der, cert_pem, pfx_bytes
from certkit.core.issuance import (
    BACKDATE,
    LeafRequest,
    RevokedEntry,
    Validity,
    build_ca,
    build_crl,
    build_exchange_selfsigned,
    build_leaf,
    csr_names,
    fqdn_of,
    leaf_validity,
    random_serial,
)
from certkit.core.jsonfacts import certificate_facts, rfc3339, rfc3339_or_none
from certkit.core.jsonfacts import serial_hex as canonical_serial
from certkit.core.keys import (
    KeyType,
    PrivateKey,
    PublicKey,
    check_key_strength,
    generate_key,
    load_private_key,
    public_key_matches,
)
from certkit.core.keys import private_key_pem as _key_pem
from certkit.core.names import dns_name, parse_san
from certkit.core.profiles import ProfileName
from certkit.core.text import camel_case, duration_text, snake_case
from certkit.errors import (
    AlreadyExistsError,
    CertkitError,
    InputError,
    NotFoundError,
    PassphraseError,
    PolicyError,
    StoreError,
)

if TYPE_CHECKING:
    from certkit.adapters.transport import ClientIdentity

__all__ = ["CAStatus", "CertificateAuthority", "CrlInfo", "DaneHostStatus", "IssueRequest", "IssuedCertificate",
           "WriteOptions", "exchange_selfsigned"]

REASONS = {r.name: r for r in x509.ReasonFlags if r not in (x509.ReasonFlags.remove_from_crl,)}


def _key_type_of(key: PublicKey) -> KeyType:
    if isinstance(key, rsa.RSAPublicKey):
        return KeyType.parse(f"rsa{key.key_size}") if key.key_size in (2048, 3072, 4096) else KeyType.RSA2048
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp384r1":
        return KeyType.EC_P384
    return KeyType.EC_P256


@dataclass(frozen=True)
class IssuedCertificate:
    """A certificate fresh from the CA, with its key (unless it came from a CSR or kept its key) and chain."""

    certificate: x509.Certificate
    key: PrivateKey | None
    #: Intermediates between the certificate and the root (empty for a CA without an intermediate).
    intermediates: tuple[x509.Certificate, ...] = ()
    root: x509.Certificate | None = None
    renewed_from: int | None = None
    #: The files written with the certificate (``crt``, ``key``, ``chain.pem``, ``pfx``, ``p7b``), if any.
    paths: Mapping[str, Path] = field(default_factory=dict)
    #: Sentences the admin must be shown: a validity cut back to the CA's end, CSR names left out.
    warnings: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """The file stem: the certificate's FQDN (its first fully qualified DNS name, else its CN).

        For a transport certificate that is the CN; for Exchange's self-signed layout (CN = short
        name) it is the FQDN in the SAN, so two Edges called "mail" do not collide in one folder.
        """
        fqdn = fqdn_of(self.certificate)
        if fqdn is not None:
            return fqdn
        attrs = self.certificate.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        return str(attrs[0].value) if attrs else serial_hex(self.certificate.serial_number)

    @property
    def serial(self) -> int:
        return self.certificate.serial_number

    def to_dict(self) -> dict[str, Any]:
        """Plain data for ``ca issue|sign|renew --json`` and ``selfsigned --json`` (the JSON contract,
        docs/json.md): the certificate's facts, the files written and the warnings."""
        return {"name": self.name, **certificate_facts(self.certificate),
                "renewed_from": None if self.renewed_from is None else canonical_serial(self.renewed_from),
                "files": {kind: str(path.absolute()) for kind, path in self.paths.items()},
                "warnings": list(self.warnings)}

    def cert_pem(self) -> bytes:
        return cert_pem(self.certificate)

    def chain_pem(self) -> bytes:
        """The certificate followed by the intermediates: what a server sends (``smtpd_tls_cert_file``)."""
        return cert_pem(self.certificate, *self.intermediates)

    def key_pem(self, passphrase: bytes | None = None) -> bytes:
        if self.key is None:
            raise InputError(f"certkit does not hold the key of {self.name}.",
                             "The key stays where it was generated (the CSR's origin or the previous files).")
        return _key_pem(self.key, passphrase)

    def pfx(self, password: bytes, target: PfxTarget | str = PfxTarget.LEGACY) -> bytes:
        if self.key is None:
            raise InputError(f"A PFX needs the private key, and certkit does not hold the key of {self.name}.",
                             "Build the PFX where the key is, or reissue with --rekey.")
        extra = list(self.intermediates) + ([self.root] if self.root is not None else [])
        return pfx_bytes(self.key, self.certificate, extra, password, target=target, friendly_name=self.name)

    def p7b(self) -> bytes:
        """A PKCS#7 with the certificate and its chain (what Import-ExchangeCertificate completes a request with)."""
        certs = [self.certificate, *self.intermediates] + ([self.root] if self.root is not None else [])
        return pkcs7.serialize_certificates(certs, serialization.Encoding.DER)

    def files(self, out_dir: str | Path, *, key_passphrase: bytes | None = None, pfx_password: bytes | None = None,
              pfx_target: PfxTarget | str = PfxTarget.LEGACY, write_key: bool = True, p7b: bool = False
              ) -> list[tuple[Path, bytes, int]]:
        """The files :meth:`write_to` writes: ``<fqdn>.crt``, ``.key`` (0600), ``.chain.pem``, and ``.pfx``."""
        out = Path(out_dir)
        stem = self.name.replace("*", "_wildcard")
        files = [(out / f"{stem}.crt", self.cert_pem(), PUBLIC), (out / f"{stem}.chain.pem", self.chain_pem(), PUBLIC)]
        if write_key and self.key is not None:
            files.append((out / f"{stem}.key", self.key_pem(key_passphrase), PRIVATE))
        if pfx_password is not None:
            files.append((out / f"{stem}.pfx", self.pfx(pfx_password, pfx_target), PRIVATE))
        if p7b:
            files.append((out / f"{stem}.p7b", self.p7b(), PUBLIC))
        return files

    def write_to(self, out_dir: str | Path, *, overwrite: bool = False, **kwargs: Any) -> dict[str, Path]:
        """Write the files atomically (keys 0600); refuse to replace existing files unless ``overwrite``."""
        return self._kinds(atomic_write_many(self.files(out_dir, **kwargs), overwrite=overwrite))

    def _kinds(self, paths: Iterable[Path]) -> dict[str, Path]:
        stem = self.name.replace("*", "_wildcard")
        return {p.name.removeprefix(stem).lstrip("."): p for p in paths}


@dataclass(frozen=True)
class WriteOptions:
    """Where and how issuance writes the files, as part of the same step that records the certificate.

    With these, :meth:`CertificateAuthority.issue_many` (and ``issue``, ``sign_csr``, ``renew``) write the
    files under temporary names, record the certificates, then publish the files (all or none); if
    publishing fails (a file in the way, a folder that cannot be written, an interruption) the records
    are removed again. A certificate whose files exist always has a record; only a process killed between
    the two steps can leave a record whose files were never published (its key lost with them).
    """

    out_dir: Path
    key_passphrase: bytes | None = None
    pfx_password: bytes | None = None
    pfx_target: PfxTarget | str = PfxTarget.LEGACY
    write_key: bool = True
    p7b: bool = False
    overwrite: bool = False


@dataclass(frozen=True)
class IssueRequest:
    """One certificate to issue (what a line of ``certkit ca issue --from FILE`` says)."""

    fqdn: str
    accepted_domains: tuple[str, ...] = ()
    sans: tuple[str, ...] = ()
    profile: ProfileName | str = ProfileName.TRANSPORT
    key_type: KeyType | str = KeyType.RSA2048
    days: int = 397
    #: Accept a name that mixes scripts or is a look-alike (see :func:`~certkit.core.names.dns_name`).
    allow_mixed_script: bool = False


@dataclass(frozen=True)
class CrlInfo:
    issuer: str
    number: int
    this_update: dt.datetime
    next_update: dt.datetime
    der_path: Path
    pem_path: Path
    url: str | None

    def to_dict(self) -> dict[str, Any]:
        """Plain data for ``ca crl --json`` and ``ca status --json`` (the JSON contract, docs/json.md)."""
        return {"issuer": self.issuer, "number": self.number, "this_update": rfc3339(self.this_update),
                "next_update": rfc3339(self.next_update), "der_path": str(self.der_path),
                "pem_path": str(self.pem_path), "url": self.url}


@dataclass(frozen=True)
class DaneHostStatus:
    """The DANE-EE key rollover of one host (``dane/<host>/state.json`` in the home), as ``ca status`` shows it.

    Read through :meth:`certkit.dane_rollover.DaneRollover.status` without DNS: ``next_step_at`` of a
    ``switch`` whose next record certkit has not seen in DNS yet is the best case (``projected``: if DNS
    shows it now); ``certkit dane rollover status HOST`` looks and starts the clock.
    """

    host: str
    port: int
    #: ``stable``, ``next-published``, ``switched``; ``unreadable`` when the state could not be read (``error``)
    phase: str
    #: the TLSA RRset to have published now, as zone-file lines (``_25._tcp.HOST. TTL IN TLSA 3 1 1 ...``)
    records: tuple[str, ...] = ()
    #: ``switch``, ``retire`` or ``None`` (stable: nothing pending)
    next_step: str | None = None
    #: the earliest time of the next step
    next_step_at: dt.datetime | None = None
    projected: bool = False
    notes: tuple[str, ...] = ()
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain data for ``ca status --json`` (the JSON contract, docs/json.md)."""
        return {"host": self.host, "port": self.port, "phase": self.phase, "records": list(self.records),
                "next_step": self.next_step, "next_step_at": rfc3339_or_none(self.next_step_at),
                "projected": self.projected, "notes": list(self.notes), "error": self.error}


@dataclass(frozen=True)
class CAStatus:
    name: str
    root_not_after: dt.datetime
    issuer_not_after: dt.datetime
    certificates: int
    revoked: int
    expiring: tuple[CertRecord, ...]
    crls: tuple[CrlInfo, ...]
    findings: tuple[Finding, ...] = field(default=())
    #: files an interrupted run left behind that could not be removed (each says where and why)
    leftovers: tuple[str, ...] = field(default=())
    #: the DANE rollover state of each host that has one (``certkit dane rollover``), by host name
    dane: tuple[DaneHostStatus, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not any(f.severity == "error" for f in self.findings)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for ``ca status --json`` (the JSON contract, docs/json.md)."""
        return {"name": self.name, "root_not_after": rfc3339(self.root_not_after),
                "issuer_not_after": rfc3339(self.issuer_not_after), "certificates": self.certificates,
                "revoked": self.revoked, "expiring": [r.to_dict() for r in self.expiring],
                "crls": [c.to_dict() for c in self.crls], "dane": [d.to_dict() for d in self.dane],
                "findings": [f.to_dict() for f in self.findings], "leftovers": list(self.leftovers), "ok": self.ok}


class CertificateAuthority:
    """A CA in a home folder. Create one with :meth:`init`, open one with :meth:`open`.

    Reading (listing, the root, status) needs no passphrase; issuing, revoking and publishing CRLs
    do: pass ``passphrase`` to :meth:`open` or call :meth:`unlock`.
    """

    INDEX = "ca.db"

    def __init__(self, home: Path, index: CAIndex, *, clock: Clock | None = None) -> None:
        self.home = home
        self.index = index
        self.clock: Clock = clock or SystemClock()
        meta = index.meta()
        self.name = meta.get("name", "")
        self.crl_url = meta.get("crl_url") or None
        self.aia_url = meta.get("aia_url") or None
        self.root_crl_url = meta.get("root_crl_url") or None
        self.permitted_domains: tuple[str, ...] = tuple(json.loads(meta.get("permitted", "[]")))
        self.has_intermediate = meta.get("intermediate") == "1"
        self.root = _home_cert(home / "root.crt")
        self.issuer = _home_cert(home / "issuing.crt") if self.has_intermediate else self.root
        self._issuer_key: PrivateKey | None = None
        self._root_key: PrivateKey | None = None
        #: what the last cleanup after a killed run could not remove (see :meth:`recover`)
        self.leftovers: list[str] = []

    # --- life cycle -----------------------------------------------------------------------------
    @classmethod
    def init(cls, home: str | Path, *, name: str, passphrase: bytes, key_type: KeyType | str = KeyType.RSA3072,
             days: int = 3650, crl_url: str | None = None, aia_url: str | None = None,
             permit_domains: Sequence[str] = (), intermediate: bool = False,
             clock: Clock | None = None) -> CertificateAuthority:
        """Create a CA: a root (and an issuing intermediate), keys encrypted at rest with ``passphrase``."""
        home = Path(home)
        clock = clock or SystemClock()
        _check_init_args(name, passphrase, days, crl_url, aia_url)
        domains = [dns_name(d) for d in permit_domains]
        _refuse_existing_ca(home)
        make_dirs(home, PRIVATE_DIR)  # 0700 whatever the umask: nobody else may replace root.crt or ca.db
        with file_lock(home / ".lock", folder_mode=PRIVATE_DIR):
            if (home / "ca.db").exists():
                raise AlreadyExistsError(f"{home} already holds a CA.", "Choose another --home.")
            for leftover in home.glob(".*.tmp"):  # an earlier init that was killed
                wipe(leftover)
            now = clock.now()
            root_crl_url = _root_crl_url(crl_url) if intermediate else None
            files = _new_hierarchy(home, name, passphrase, key_type, now, days, domains, intermediate, root_crl_url)
            _publish_ca(home, home / cls.INDEX, files, {
                "name": name, "key_type": str(KeyType.parse(key_type)), "crl_url": crl_url or "",
                "aia_url": aia_url or "", "root_crl_url": root_crl_url or "", "permitted": json.dumps(domains),
                "intermediate": "1" if intermediate else "0", "created_at": now.isoformat(),
            })
        ca = cls.open(home, passphrase=passphrase, clock=clock)
        return ca

    @classmethod
    def open(cls, home: str | Path, *, passphrase: bytes | None = None,
             clock: Clock | None = None) -> CertificateAuthority:
        home = Path(home)
        index = CAIndex.open(home / cls.INDEX)
        for needed in ("root.crt",):
            if not (home / needed).is_file():
                raise StoreError(f"The CA home {home} has an index but no {needed}.",
                                 "Restore the CA home from a backup.")
        ca = cls(home, index, clock=clock)
        if any(home.glob(".txn-*.json")):
            # A killed run published files whose transaction never committed: whoever opens the CA next
            # finishes the cleanup (when the lock is free and the home writable), so that no reader sees
            # a certificate file without its record.
            ca._clean_up_for_status()
        if passphrase is not None:
            ca.unlock(passphrase)
        return ca

    def close(self) -> None:
        self.index.close()

    def __enter__(self) -> CertificateAuthority:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def unlock(self, passphrase: bytes) -> None:
        """Decrypt the signing keys with ``passphrase`` (wrong passphrase: :class:`PassphraseError`)."""
        key_file = "issuing.key" if self.has_intermediate else "root.key"
        self._issuer_key = load_private_key(_home_file(self.home / key_file), passphrase,
                                            source=f"the CA key {self.home / key_file}")
        if self.has_intermediate:
            self._root_key = load_private_key(_home_file(self.home / "root.key"), passphrase,
                                              source=f"the CA key {self.home / 'root.key'}")
        else:
            self._root_key = self._issuer_key
        # A home whose certificate was swapped for another CA's would sign certificates nobody can verify.
        for cert, key, label in ((self.issuer, self._issuer_key, "issuing CA"), (self.root, self._root_key, "root")):
            if not public_key_matches(key, cert.public_key()):
                self._issuer_key = self._root_key = None
                raise StoreError(f"The CA home is damaged: the {label} certificate does not belong to its key.",
                                 "Restore the CA home from a backup.")

    def _signing_key(self) -> PrivateKey:
        if self._issuer_key is None:
            raise PassphraseError("The CA key is locked.",
                                  "Give the CA passphrase ($CERTKIT_CA_PASSPHRASE or --passphrase-file).")
        return self._issuer_key

    @property
    def intermediates(self) -> tuple[x509.Certificate, ...]:
        return (self.issuer,) if self.has_intermediate else ()

    # --- issuing --------------------------------------------------------------------------------
    def _validity(self, days: int) -> Validity:
        """The validity of a certificate issued now: refused when the clock is before the CA's notBefore,
        notAfter cut back to the CA's (with a warning) when ``days`` would outlive it."""
        _check_days(days)
        return leaf_validity((self.issuer, self.root), now=self.clock.now(), days=days)

    def _sign(self, request: LeafRequest, public_key: PublicKey) -> x509.Certificate:
        return build_leaf(request, public_key=public_key, serial=random_serial(), issuer_cert=self.issuer,
                          issuer_key=self._signing_key(), crl_url=self.crl_url, aia_url=self.aia_url)

    def _issue_and_record(self, items: Sequence[tuple[LeafRequest, PublicKey, PrivateKey | None, int | None]],
                          write: WriteOptions | None = None, warnings: Sequence[tuple[str, ...]] | None = None
                          ) -> list[IssuedCertificate]:
        """Sign, then record and publish in one step under the CA lock (see :meth:`_commit`).

        ``warnings``: per item, what the admin must be told (carried in :attr:`IssuedCertificate.warnings`).
        On a (vanishingly rare) serial collision everything is signed again.
        """
        notes = list(warnings) if warnings is not None else [() for _ in items]
        if len(notes) != len(items):
            raise ValueError("one tuple of warnings per item")
        for _attempt in range(5):
            issued = [IssuedCertificate(self._sign(req, pub), key, self.intermediates, self.root, renewed_from=prev,
                                        warnings=tuple(notes[n]))
                      for n, (req, pub, key, prev) in enumerate(items)]
            files: list[tuple[Path, bytes, int]] = []
            own: list[dict[str, Path]] = [{} for _ in issued]
            if write is not None:
                per_item = [i.files(write.out_dir, key_passphrase=write.key_passphrase,
                                    pfx_password=write.pfx_password, pfx_target=write.pfx_target,
                                    write_key=write.write_key, p7b=write.p7b) for i in issued]
                own = [i._kinds(p for p, _, _ in fs) for i, fs in zip(issued, per_item, strict=True)]
                files = [f for fs in per_item for f in fs]

            def record(db: sqlite3.Connection, issued: list[IssuedCertificate] = issued,
                       own: list[dict[str, Path]] = own) -> None:
                issued_at = self.clock.now()
                for item, (req, _, _, prev), paths in zip(issued, items, own, strict=True):
                    self.index.insert(db, item.certificate, profile=str(req.profile), issued_at=issued_at,
                                      common_name=req.common_name, names=_san_text(req.sans), renewed_from=prev,
                                      files={k: str(v.resolve()) for k, v in paths.items()})
            try:
                with self._writing():
                    self._commit(files, overwrite=write.overwrite if write else False, record=record,
                                 serials=[i.serial for i in issued])
            except DuplicateSerial:
                continue
            return [replace(i, paths=paths) for i, paths in zip(issued, own, strict=True)]
        raise StoreError("Could not allocate unique serial numbers after 5 attempts.",
                         "The CA index may be damaged: check it with certkit ca status.")

    # --- changing the CA: the lock, the journal, recovery ----------------------------------------
    def locked(self) -> contextlib.AbstractContextManager[None]:
        """Hold the CA lock (after cleaning up what a killed run left) for a change to files in the home
        that the index does not record, such as the DANE rollover state. Not re-entrant: issue nothing inside."""
        return self._writing()

    @contextlib.contextmanager
    def _writing(self, *, wait: bool = True) -> Iterator[None]:
        """Hold the CA lock, after cleaning up what a killed run left (:meth:`recover`)."""
        self._check_writable()
        with file_lock(self.home / ".lock", folder_mode=PRIVATE_DIR, wait=wait):
            self.leftovers = self.recover()
            yield

    def _check_writable(self) -> None:
        """A home opened read-only (a read-only mount, a full disk) says so before anything is attempted."""
        error = self.index.read_only
        if error is not None:
            hint = ("Run the command on a writable copy of the CA home." if isinstance(error, InputError) else
                    "Free some space there and run the command again; nothing was changed.")
            raise type(error)(f"{error.message.rstrip('.')}; the CA can be read but not changed.", hint)

    def _commit(self, files: list[tuple[Path, bytes, int]], *, overwrite: bool,
                record: Callable[[sqlite3.Connection], None], serials: Sequence[int] = (),
                crls: Sequence[int] = ()) -> None:
        """Publish ``files`` and ``record`` them in one step: all of it or none of it, whatever fails.

        1. the journal (``.txn-<tag>.json`` in the home) names the files and their SHA-256;
        2. the files are written and synced under temporary names tagged ``<tag>``;
        3. in one index transaction: the rows are written, the files published (renames), and ``COMMIT``.
        If anything fails -- a file in the way, a full disk at any step, ``COMMIT`` itself -- the transaction
        rolls back and the published files are removed again (keys overwritten first), originals that
        ``overwrite`` replaced are put back, and the journal goes. A process killed in between leaves the
        journal, and the next run that takes the CA lock finishes the cleanup (:meth:`recover`).
        """
        if not files:
            with self.index.transaction() as db:
                record(db)
            return
        tag = secrets.token_hex(6)
        journal = self.home / f".txn-{tag}.json"
        doc = {"tag": tag, "serials": [serial_hex(s) for s in serials], "crls": list(crls),
               "files": [{"path": str(path.resolve()), "sha256": _sha256(data), "private": mode == PRIVATE}
                         for path, data, mode in files]}
        atomic_write(journal, json.dumps(doc).encode(), mode=PRIVATE)
        staged = None
        try:
            staged = Staged(files, overwrite=overwrite, tag=tag)
            with self.index.transaction() as db:
                record(db)
                staged.publish()
        except BaseException:
            undone = staged.unpublish() if staged is not None else True
            if undone:
                wipe(journal, secret=False)
            raise
        staged.finish()
        wipe(journal, secret=False)

    def recover(self) -> list[str]:
        """Clean up after runs that were killed: call with the CA lock held (every change does).

        For each journal left in the home: if its transaction committed, its files are all published and
        only temporaries and replaced originals are removed; if not, the files it published (those whose
        content still has the journal's SHA-256) are removed too and replaced originals put back. Key
        material is overwritten before it is unlinked. Returns what could not be removed.
        """
        left: list[str] = []
        for journal in sorted(self.home.glob(".txn-*.json")):
            try:
                doc = json.loads(journal.read_text("utf-8"))
                tag = str(doc["tag"])
                entries = [(Path(f["path"]), str(f["sha256"]), bool(f["private"])) for f in doc["files"]]
                serials = [int(x, 16) for x in doc.get("serials", [])]
                crl_numbers = [int(n) for n in doc.get("crls", [])]
            except (OSError, ValueError, KeyError, TypeError) as exc:
                left.append(f"{journal}: the journal of an interrupted run cannot be read ({exc}); "
                            "remove it by hand")
                continue
            committed = self.index.has_serials(serials) or any(self.index.has_crl(n) for n in crl_numbers)
            stuck: list[str] = []
            for path, digest, private in entries:
                if committed:
                    continue
                if sha256_file(path) == digest and not wipe(path, secret=private):
                    stuck.append(str(path))
                aside = path.with_name(f".{path.name}.{tag}.old")
                if os.path.lexists(aside):
                    try:
                        os.replace(aside, path)
                    except OSError:
                        stuck.append(str(aside))
            for folder in sorted({path.parent for path, _, _ in entries}):
                with contextlib.suppress(OSError):
                    for leftover in folder.glob(temp_pattern(tag)):
                        if not wipe(leftover):
                            stuck.append(str(leftover))
            if stuck:
                left.append(f"an interrupted run left {', '.join(stuck)}, which cannot be removed "
                            f"(journal {journal.name}); remove them by hand")
            else:
                wipe(journal, secret=False)
        for tmp in [*self.home.glob(".*.tmp"), *self.home.glob(".ca.db.init*")]:
            if not wipe(tmp):
                left.append(f"{tmp} (a temporary file of an interrupted run) cannot be removed; remove it by hand")
        return left

    def pending_leftovers(self) -> list[str]:
        """What killed runs left behind, found without changing anything (for a read-only home)."""
        found = [f"{j} (the journal of an interrupted run; the next change to the CA cleans up after it)"
                 for j in sorted(self.home.glob(".txn-*.json"))]
        found += [f"{t} (a temporary file of an interrupted run)" for t in
                  [*self.home.glob(".*.tmp"), *self.home.glob(".ca.db.init*")]]
        return found

    def issue(self, fqdn: str, *, accepted_domains: Iterable[str] = (), sans: Iterable[str] = (),
              profile: ProfileName | str = ProfileName.TRANSPORT, key_type: KeyType | str = KeyType.RSA2048,
              days: int = 397, key: PrivateKey | None = None, write: WriteOptions | None = None,
              allow_mixed_script: bool = False) -> IssuedCertificate:
        """Issue and record a certificate for ``fqdn`` (transport profile: CN = FQDN, SAN = FQDN + domains).

        With ``write``, its files are written in the same step (see :class:`WriteOptions`). A notAfter cut back
        to the CA's end is reported in :attr:`IssuedCertificate.warnings`.
        """
        return self.issue_many([IssueRequest(fqdn, tuple(accepted_domains), tuple(sans), profile, key_type, days,
                                             allow_mixed_script)], keys=[key], write=write)[0]

    def issue_many(self, requests: Sequence[IssueRequest], *, keys: Sequence[PrivateKey | None] | None = None,
                   write: WriteOptions | None = None) -> list[IssuedCertificate]:
        """Issue several certificates and record them all in one transaction (all or none)."""
        self._signing_key()
        prepared: list[tuple[LeafRequest, PublicKey, PrivateKey | None, int | None]] = []
        notes: list[tuple[str, ...]] = []
        seen: set[str] = set()
        for i, r in enumerate(requests):
            v = self._validity(r.days)
            leaf = LeafRequest.for_host(
                r.fqdn, accepted_domains=r.accepted_domains,
                extra_sans=[parse_san(s, allow_mixed_script=r.allow_mixed_script) for s in r.sans],
                profile=r.profile, not_before=v.not_before, not_after=v.not_after,
                allow_mixed_script=r.allow_mixed_script)
            if leaf.common_name in seen:
                raise InputError(f"{leaf.common_name} is listed more than once.", "Name each host once.")
            seen.add(leaf.common_name)
            key = (keys[i] if keys else None) or generate_key(r.key_type)
            check_key_strength(key)
            prepared.append((leaf, key.public_key(), key, None))
            notes.append(v.warnings)
        return self._issue_and_record(prepared, write, notes)

    def sign_csr(self, csr: x509.CertificateSigningRequest, *, profile: ProfileName | str = ProfileName.TRANSPORT,
                 days: int = 397, write: WriteOptions | None = None, allow_mixed_script: bool = False,
                 refuse_dropped: bool = False) -> IssuedCertificate:
        """Sign an external PKCS#10 request: the CSR gives names and key, the profile gives the extensions.

        SAN entries the profile does not carry (e-mail, URI, ...) are left out with a warning in
        :attr:`IssuedCertificate.warnings`, or refused (:class:`PolicyError`) with ``refuse_dropped``.
        """
        if not csr.is_signature_valid:
            raise InputError("The request's signature does not verify.", "Generate the request again.")
        public_key = csr.public_key()
        if not isinstance(public_key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
            raise PolicyError("The request's key is neither RSA nor EC.", "Generate an RSA 2048 request.")
        check_key_strength(public_key, what="The request's key")
        names = csr_names(csr, profile, allow_mixed_script=allow_mixed_script)
        if names.dropped and refuse_dropped:
            raise PolicyError(names.warning or "The request asks for names the profile does not carry.",
                              "Sign it without --strict-sans to issue without them.")
        v = self._validity(days)
        leaf = LeafRequest(names.common_name, names.sans, ProfileName.parse(profile), v.not_before, v.not_after)
        notes = v.warnings + ((names.warning,) if names.warning else ())
        return self._issue_and_record([(leaf, public_key, None, None)], write, [notes])[0]

    def renew(self, ref: str | int, *, rekey: bool = False, days: int | None = None,
              key_type: KeyType | str | None = None, write: WriteOptions | None = None,
              key: PrivateKey | None = None) -> IssuedCertificate:
        """A new certificate for the same names and profile; the same key unless ``rekey``.

        ``key`` (implies ``rekey``): the new key, prepared in advance (a DANE rollover publishes its
        TLSA record before the certificate exists) instead of a fresh one.
        """
        old = self.get(ref)
        old_cert = old.certificate
        validity = days or max(1, (old.not_after - old.not_before).days)
        v = self._validity(validity)
        san = old_cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        leaf = LeafRequest(old.common_name, tuple(san), ProfileName.parse(old.profile), v.not_before, v.not_after)
        old_public = old_cert.public_key()
        if not isinstance(old_public, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
            raise PolicyError("The certificate's key is neither RSA nor EC.", "Renew with --rekey.")
        if not rekey and old.status == "revoked" and old.reason == "keyCompromise":
            raise PolicyError(f"{old.common_name} was revoked for keyCompromise; its key must not be reused.",
                              "Renew with --rekey.")
        if key is not None:
            check_key_strength(key, what="The new key")
            rekey = True
        new_key = key or (generate_key(key_type or _key_type_of(old_public)) if rekey else None)
        if not rekey:
            check_key_strength(old_public, what=f"The key of {old.common_name}")
        public: PublicKey = new_key.public_key() if new_key else old_public
        return self._issue_and_record([(leaf, public, new_key, old.serial)], write, [v.warnings])[0]

    def record_files(self, serial: int, files: dict[str, Path]) -> None:
        """Remember where a certificate's files were written (shown by ``certkit ca show``)."""
        self.index.set_files(serial, {k: str(Path(v).resolve()) for k, v in files.items()})

    # --- revocation -----------------------------------------------------------------------------
    def revoke(self, ref: str | int, *, reason: str = "unspecified") -> CertRecord:
        """Mark a certificate revoked; it appears on the next CRL (:meth:`publish_crl`)."""
        canonical = reason.replace("-", "_")
        lookup = {k.lower().replace("_", ""): k for k in REASONS}
        key = lookup.get(canonical.lower().replace("_", ""))
        if key is None:
            raise InputError(f"Unknown revocation reason {reason!r}.",
                             "Choose one of: " + ", ".join(sorted(camel_case(k) for k in REASONS)) + ".")
        self._signing_key()
        rec = self.index.get(ref) if isinstance(ref, int) else self.index.find(ref, unique=True)
        with self._writing():
            return self.index.revoke(rec.serial, at=self.clock.now(), reason=camel_case(key))

    def publish_crl(self, *, days: int = 7) -> list[CrlInfo]:
        """Sign fresh CRLs (the issuing CA's, and the root's when there is an intermediate) into the home."""
        if days < 1 or days > 366:
            raise InputError(f"--days {days} is not a sensible CRL lifetime.", "Use 1 to 366 (default 7).")
        issuer_key = self._signing_key()
        now = self.clock.now()
        next_update = now + dt.timedelta(days=days)
        if next_update > self.issuer.not_valid_after_utc:
            next_update = self.issuer.not_valid_after_utc
        entries = [RevokedEntry(s, t, REASONS.get(snake_case(r or "unspecified"))) for s, t, r in
                   self.index.revoked_entries()]
        jobs: list[tuple[str, x509.Certificate, PrivateKey, list[RevokedEntry], str | None]] = [
            ("ca", self.issuer, issuer_key, entries, self.crl_url)]
        if self.has_intermediate:
            assert self._root_key is not None
            jobs.append(("root", self.root, self._root_key, [], self.root_crl_url))
        out: list[CrlInfo] = []
        with self._writing():
            # Numbers are drawn under the CA lock (every CRL writer holds it), so they cannot race.
            first = self.index.next_crl_number(self.index._db)
            signed: list[tuple[str, x509.CertificateRevocationList, int]] = []
            files: list[tuple[Path, bytes, int]] = []
            for n, (stem, cert, key, revoked, url) in enumerate(jobs):
                crl = build_crl(issuer_cert=cert, issuer_key=key, revoked=revoked, number=first + n,
                                this_update=now - BACKDATE, next_update=next_update)
                signed.append((stem, crl, first + n))
                files += [(self.home / f"{stem}.crl", crl.public_bytes(serialization.Encoding.DER), PUBLIC),
                          (self.home / f"{stem}.crl.pem", crl.public_bytes(serialization.Encoding.PEM), PUBLIC)]
                out.append(CrlInfo(stem, first + n, crl.last_update_utc, next_update, self.home / f"{stem}.crl",
                                   self.home / f"{stem}.crl.pem", url))

            def record(db: sqlite3.Connection) -> None:
                for stem, crl, number in signed:
                    self.index.record_crl(db, crl, number, stem)

            self._commit(files, overwrite=True, record=record, crls=[number for _, _, number in signed])
        return out

    def crl_info(self) -> list[CrlInfo]:
        infos = []
        for row in self.index.latest_crls():
            stem = row["issuer"]
            url = self.crl_url if stem == "ca" else self.root_crl_url
            infos.append(CrlInfo(stem, int(row["number"]), _index_time(row["this_update"]),
                                 _index_time(row["next_update"]), self.home / f"{stem}.crl",
                                 self.home / f"{stem}.crl.pem", url))
        return infos

    # --- reading --------------------------------------------------------------------------------
    def get(self, ref: str | int) -> CertRecord:
        return self.index.get(ref) if isinstance(ref, int) else self.index.find(ref)

    def newest_valid(self, name: str, *, at: dt.datetime, instead: str) -> CertRecord:
        """The certificate that stands for ``name`` now: the rule of ``probe --as`` and ``dane tlsa``.

        Records whose CN or a SAN equals ``name`` (case-insensitive), not revoked and within their validity
        at ``at``; the newest wins: one that still holds its certificate file (a ``--force`` reissue takes
        the files over), then the latest issuance, the latest expiry, the later row of the index.
        :class:`~certkit.errors.NotFoundError` when there is none; ``instead`` is the alternative the
        error offers (``"give --cert FILE"``).
        """
        wanted = name.strip().rstrip(".").lower()
        named = [r for r in self.records(revoked=False)
                 if wanted in {r.common_name.lower(), *(n.lower() for n in r.names)}]
        if not named:
            raise NotFoundError(f"The CA in {self.home} has no certificate for {name}.",
                                f"Issue one with: certkit ca issue NAME, or {instead}.")
        valid = [(i, r) for i, r in enumerate(named) if r.status == "valid" and r.not_before <= at <= r.not_after]
        if not valid:
            raise NotFoundError(f"The CA in {self.home} has no currently valid certificate for {name} "
                                f"({len(named)} expired or not yet valid).",
                                f"Renew it (certkit ca renew NAME), or {instead}.")

        def newest(pair: tuple[int, CertRecord]) -> tuple[bool, dt.datetime, dt.datetime, int]:
            r = pair[1]
            return bool(r.files.get("chain.pem") or r.files.get("crt")), r.issued_at, r.not_after, pair[0]

        return max(valid, key=newest)[1]

    def identity_for(self, name: str, *, at: dt.datetime | None = None, passphrase: bytes | None = None,
                     instead: str = "give --client-cert and --client-key") -> ClientIdentity:
        """Our client certificate for ``name`` (``probe --as NAME``): the :meth:`newest_valid` record, loaded
        from the files recorded when it was issued (:func:`~certkit.adapters.identity.load_identity`).

        ``chain.pem`` (else ``crt``) and ``key``; a certificate renewed without a new key (which writes no
        key file) uses the key file of the certificate it renewed (``renewed_from``, followed back while
        the key is the same). ``passphrase`` decrypts the key; ``instead`` is the alternative errors offer.
        """
        from certkit.adapters.identity import load_identity

        record = self.newest_valid(name, at=at or self.clock.now(), instead=instead)
        key_file = record.files.get("key") or self._renewed_key_file(record)
        cert_file = record.files.get("chain.pem") or record.files.get("crt")
        hint = f"{instead[:1].upper()}{instead[1:]} instead."
        if not cert_file or not Path(cert_file).is_file():
            raise NotFoundError(f"The certificate file of {name} (serial {record.serial_hex}) is not where the CA "
                                f"recorded it{f' ({cert_file})' if cert_file else ''}.", hint)
        if not key_file or not Path(key_file).is_file():
            raise NotFoundError(f"The key file of {name} (serial {record.serial_hex}) is "
                                f"{f'missing ({key_file})' if key_file else 'not recorded in the CA'}.", hint)
        identity = load_identity(cert_file, key_file, passphrase=passphrase, what="client certificate")
        if identity.cert.serial_number != record.serial:
            raise InputError(f"{cert_file} no longer holds {name} serial {record.serial_hex}.", hint)
        return identity

    def _renewed_key_file(self, record: CertRecord) -> str | None:
        """The key file of a certificate renewed without a new key: the one recorded for an earlier one.

        ``renew`` keeps the key and writes no key file; the ``renewed_from`` links lead back to the record
        that wrote it. Only records with the same public key are followed (a ``rekey`` renewal breaks the
        chain: its key was written with it, or not at all).
        """
        wanted = record.certificate.public_key()
        seen = {record.serial}
        current = record
        while current.renewed_from is not None and current.renewed_from not in seen:
            seen.add(current.renewed_from)
            try:
                current = self.get(current.renewed_from)
            except NotFoundError:
                return None
            if current.certificate.public_key() != wanted:
                return None
            if current.files.get("key"):
                return current.files["key"]
        return None

    def dane_certificates(self, name: str, *, at: dt.datetime, instead: str
                          ) -> tuple[x509.Certificate, x509.Certificate, bool]:
        """What TLSA records for ``name`` are made from: its current certificate (:meth:`newest_valid`), the CA
        certificate that issued it, and whether the chain the CA writes carries that CA (an intermediate
        does; the root does not, so a DANE-TA record for it matches only if the server sends it too)."""
        from certkit.core.dane import issued_by

        leaf = self.newest_valid(name, at=at, instead=instead).certificate
        issuer = next((c for c in (*self.intermediates, self.root) if issued_by(leaf, c)), None)
        if issuer is None:
            raise StoreError(f"No CA certificate in {self.home} verifies the certificate of {name}.",
                             f"Restore the CA home from a backup, or {instead}.")
        return leaf, issuer, any(issuer is c for c in self.intermediates)

    def records(self, *, revoked: bool | None = None, expiring_within: dt.timedelta | None = None
                ) -> list[CertRecord]:
        now = self.clock.now()
        if expiring_within is not None:
            return self.index.records(revoked=False, expiring_before=now + expiring_within, after=now)
        return self.index.records(revoked=revoked)

    def root_pem(self) -> bytes:
        return cert_pem(self.root)

    def root_der(self) -> bytes:
        return cert_der(self.root)

    def status(self, *, warn_within: dt.timedelta = dt.timedelta(days=30)) -> CAStatus:
        """CA validity, certificates expiring soon, and the CRLs' nextUpdate with warnings before they lapse.

        A CRL warns once less than half of its lifetime (and at most two days) remains: an expired CRL
        makes every partner's revocation check, and so Domain Security, fail.
        """
        now = self.clock.now()
        findings: list[Finding] = []
        for ca_cert, label in ((self.root, "root"), (self.issuer, "issuing CA")):
            left = ca_cert.not_valid_after_utc - now
            if left <= dt.timedelta(0):
                findings.append(Finding("cert.expired", f"The {label} certificate expired on "
                                        f"{ca_cert.not_valid_after_utc:%Y-%m-%d}.", subject=label, side=Side.OURS))
            elif left < dt.timedelta(days=90):
                findings.append(Finding("cert.expiring-soon", f"The {label} certificate expires in {left.days} days.",
                                        subject=label, side=Side.OURS))
        crls = self.crl_info()
        if self.crl_url and not crls:
            findings.append(Finding("revocation.unreachable", "No CRL has been published yet, but certificates name "
                                    f"{self.crl_url}: run certkit ca crl and publish ca.crl there.",
                                    subject="CRL", side=Side.OURS))
        for info in crls:
            left = info.next_update - now
            lifetime = info.next_update - info.this_update
            if left <= dt.timedelta(0):
                findings.append(Finding("revocation.crl-stale", f"The {info.issuer} CRL #{info.number} expired on "
                                        f"{info.next_update:%Y-%m-%d %H:%M}Z.", subject=f"{info.issuer} CRL",
                                        side=Side.OURS))
            elif left < max(lifetime / 2, dt.timedelta(days=2)):
                findings.append(Finding("revocation.crl-expiring",
                                        f"The {info.issuer} CRL #{info.number} expires in {duration_text(left)} "
                                        f"({info.next_update:%Y-%m-%d %H:%M}Z).", subject=f"{info.issuer} CRL",
                                        side=Side.OURS))
        expiring = tuple(self.records(expiring_within=warn_within))
        for rec in expiring:
            findings.append(Finding("cert.expiring-soon", f"{rec.common_name} (serial {rec.serial_hex}) expires on "
                                    f"{rec.not_after:%Y-%m-%d}.", subject=rec.common_name, side=Side.OURS))
        all_records = self.index.records()
        return CAStatus(self.name, self.root.not_valid_after_utc, self.issuer.not_valid_after_utc, len(all_records),
                        sum(1 for r in all_records if r.status == "revoked"), expiring, tuple(crls), tuple(findings),
                        tuple(self._clean_up_for_status()), tuple(self.dane_status()))

    def dane_status(self) -> list[DaneHostStatus]:
        """The DANE rollover of each host with a state in ``dane/`` (no DNS is asked; nothing is written)."""
        from certkit.dane_rollover import DaneRollover, Phase, earliest_retire, projected_switch

        folder = self.home / "dane"
        try:
            hosts = sorted(p.name for p in folder.iterdir() if (p / "state.json").is_file())
        except OSError:
            return []
        now = self.clock.now()
        out: list[DaneHostStatus] = []
        for host in hosts:
            try:
                rollover = DaneRollover(self, host)
                step = rollover.status()
            except CertkitError as exc:
                out.append(DaneHostStatus(host, 0, "unreadable", error=str(exc)))
                continue
            st = step.state
            next_step: str | None = None
            at: dt.datetime | None = None
            if st.phase is Phase.NEXT_PUBLISHED:
                next_step, at = "switch", projected_switch(st, now)
            elif st.phase is Phase.SWITCHED:
                next_step, at = "retire", earliest_retire(st)
            out.append(DaneHostStatus(st.host, st.port, str(st.phase), tuple(step.lines(step.records, st.ttl)),
                                      next_step, at, next_step == "switch" and st.seen_at is None,
                                      tuple(step.notes)))
        return out

    def _clean_up_for_status(self) -> list[str]:
        """Clean up after killed runs if the CA lock is free and the home writable; report what stays."""
        if self.index.read_only is not None:
            return self.pending_leftovers()
        try:
            with self._writing(wait=False):
                pass
        except LockBusy:
            return []  # the files in flight belong to a live process
        except CertkitError:
            return self.pending_leftovers()  # the home cannot be changed
        return list(self.leftovers)


def exchange_selfsigned(fqdn: str, *, key_type: KeyType | str = KeyType.RSA2048, days: int = 5 * 365,
                        clock: Clock | None = None, allow_mixed_script: bool = False) -> IssuedCertificate:
    """A certificate like ``New-ExchangeCertificate``'s default: self-signed, RSA 2048, five years.
    ``allow_mixed_script``: see :func:`~certkit.core.names.dns_name`."""
    _check_days(days)
    now = (clock or SystemClock()).now()
    key = generate_key(key_type)
    cert = build_exchange_selfsigned(fqdn, key, serial=random_serial(), not_before=now - BACKDATE, days=days,
                                     allow_mixed_script=allow_mixed_script)
    return IssuedCertificate(cert, key, (), None)


def _check_http_url(option: str, url: str) -> None:
    """A CDP or AIA URL goes into every certificate issued afterwards: refuse what Windows cannot fetch."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    bad = [c for c in url if c.isspace() or c in "\"'<>\\^`{|}" or ord(c) < 32 or ord(c) > 126]
    if parts.scheme != "http" or not parts.hostname or bad or parts.path in ("", "/"):
        raise InputError(f"{option} {url!r} is not a plain http:// URL of a file (no spaces or quotes).",
                         "Give e.g. http://pki.contoso.com/contoso.crl: Windows fetches CRLs and CA "
                         "certificates over plain HTTP (RFC 5280 4.2.1.13).")
    try:
        parts.port  # noqa: B018 -- parsing the port is the check
    except ValueError:
        raise InputError(f"{option} {url!r} has an invalid port.",
                         "Give e.g. http://pki.contoso.com:8080/ca.crl.") from None


def _sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def _home_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise StoreError(f"The CA home is damaged: {path} cannot be read ({exc.strerror}).",
                         "Restore the CA home from a backup.") from None


def _home_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(_home_file(path))
    except ValueError as exc:
        raise StoreError(f"The CA home is damaged: {path} is not a certificate ({exc}).",
                         "Restore the CA home from a backup.") from None


def _check_days(days: int) -> None:
    if not 1 <= days <= 36500:
        raise InputError(f"--days {days} is not a validity certkit issues.", "Give 1 to 36500 days (default 397).")


def _san_text(sans: Iterable[x509.GeneralName]) -> list[str]:
    """SAN entries as the index stores them: DNS names first, then IP addresses (as ``san_names`` reads them)."""
    dns = [str(g.value) for g in sans if isinstance(g, x509.DNSName)]
    return dns + [str(g.value) for g in sans if isinstance(g, x509.IPAddress)]


def _check_init_args(name: str, passphrase: bytes, days: int, crl_url: str | None, aia_url: str | None) -> None:
    if not name.strip():
        raise InputError("The CA needs a name.", 'Give --name "Contoso Transport CA".')
    if not passphrase:
        raise PassphraseError("The CA key needs a passphrase.", "Set $CERTKIT_CA_PASSPHRASE or --passphrase-file.")
    if days < 1 or days > 36500:
        raise InputError(f"--days {days} is not a sensible CA lifetime.", "Use 1 to 36500 days (default 3650).")
    for option, url in (("--crl-url", crl_url), ("--aia-url", aia_url)):
        if url is not None:
            _check_http_url(option, url)


def _refuse_existing_ca(home: Path) -> None:
    """A home that holds a CA, or the files of an interrupted ``ca init``, is not written over."""
    existing = [p for p in ("ca.db", "root.key", "root.crt", "issuing.crt", "issuing.key") if (home / p).exists()]
    if "ca.db" in existing:
        raise AlreadyExistsError(f"{home} already holds a CA ({', '.join(existing)}).",
                                 "Use it, or choose another --home for a new CA.")
    if existing:
        raise AlreadyExistsError(
            f"{home} holds the files of an interrupted 'ca init' ({', '.join(existing)}) but no index.",
            f"Delete {', '.join(existing)} in {home} and run certkit ca init again.")


def _root_crl_url(crl_url: str | None) -> str | None:
    """Where the root's CRL is published, next to the issuing CA's: ``ca.crl`` -> ``ca-root.crl``."""
    if not crl_url:
        return None
    stem, dot, ext = crl_url.rpartition(".")
    return f"{stem}-root.{ext}" if dot and "/" not in ext else crl_url + "-root"


def _new_hierarchy(home: Path, name: str, passphrase: bytes, key_type: KeyType | str, now: dt.datetime, days: int,
                   domains: Sequence[str], intermediate: bool,
                   root_crl_url: str | None) -> list[tuple[Path, bytes, int]]:
    """The new root (and issuing intermediate): certificates and encrypted keys, as files to write."""
    nb, na = now - BACKDATE, now + dt.timedelta(days=days)
    root_key = generate_key(key_type)
    root = build_ca(common_name=f"{name} Root" if intermediate else name, key=root_key,
                    serial=random_serial(), not_before=nb, not_after=na, permitted_domains=domains)
    files = [(home / "root.crt", cert_pem(root), PUBLIC), (home / "root.key", _key_pem(root_key, passphrase), PRIVATE)]
    if intermediate:
        issuing_key = generate_key(key_type)
        issuing = build_ca(common_name=name, key=issuing_key, serial=random_serial(), not_before=nb,
                           not_after=na - dt.timedelta(days=1), issuer_cert=root, issuer_key=root_key,
                           permitted_domains=domains, path_length=0, crl_url=root_crl_url, aia_url=None)
        files += [(home / "issuing.crt", cert_pem(issuing), PUBLIC),
                  (home / "issuing.key", _key_pem(issuing_key, passphrase), PRIVATE)]
    return files


def _publish_ca(home: Path, index_path: Path, files: list[tuple[Path, bytes, int]], settings: dict[str, str]) -> None:
    """Write ``files`` and then the index holding ``settings``, or nothing at all.

    The index is created last, under a temporary name: its presence is what makes the home a CA. Until then
    nothing is published, so a failure (a full disk) leaves the home as it was.
    """
    tmp = home / ".ca.db.init"
    staged = Staged(files, tag="init")
    try:
        for leftover in home.glob(".ca.db.init*"):
            wipe(leftover, secret=False)
        CAIndex.create(tmp, settings).close()
        for suffix in ("-wal", "-shm"):
            (home / f".ca.db.init{suffix}").unlink(missing_ok=True)
        staged.publish()
        try:
            tmp.rename(index_path)
        except OSError as exc:
            raise StoreError(f"Cannot create the CA index in {home} ({exc.strerror}).",
                             "Check the folder and run certkit ca init again.") from None
    except BaseException:
        staged.unpublish()
        for leftover in home.glob(".ca.db.init*"):
            wipe(leftover, secret=False)
        raise


def _index_time(text: str) -> dt.datetime:
    """A time as the CA index stores it (``2026-12-02T07:24:14Z``)."""
    return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)


