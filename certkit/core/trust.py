"""Trust anchors as data: who is trusted, since when, for which partner, and why.

This module is pure: it holds anchors in memory and decides whether a certificate is fit to be an
anchor. Storage on disk lives in :mod:`certkit.adapters.truststore`; Mozilla's roots in
:mod:`certkit.adapters.roots`.

An *anchor* is either a CA certificate (the usual case: a partner's root) or a *pinned* end-entity
certificate (a partner's self-signed Edge certificate, trusted as exactly itself).
"""

from __future__ import annotations

import datetime as _dt
import functools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import dsa, rsa
from cryptography.x509.verification import Store

from certkit.core.extensions import extension_value
from certkit.core.formats import sha1_thumbprint, sha256_fingerprint
from certkit.core.jsonfacts import rfc3339, rfc3339_or_none, serial_hex
from certkit.core.keys import MIN_RSA_BITS
from certkit.errors import MalformedInputError, UsageError

__all__ = [
    "Anchor",
    "AnchorSet",
    "AnchorSource",
    "Override",
    "Refusal",
    "anchor_refusals",
    "extension_problem",
    "is_ca",
    "is_self_signed",
    "is_sha1_signed",
    "weak_key_bits",
]


def extension_problem(cert: x509.Certificate) -> str | None:
    """Why the certificate's extensions cannot be parsed, or ``None`` when they can."""
    try:
        cert.extensions  # noqa: B018 -- parsing is the check
    except ValueError as exc:
        return str(exc)
    return None


def is_ca(cert: x509.Certificate) -> bool:
    """True when basicConstraints says CA:TRUE."""
    bc = extension_value(cert, x509.BasicConstraints)
    return bc is not None and bc.ca


def is_self_signed(cert: x509.Certificate) -> bool:
    """True when subject and issuer are the same name (self-issued; the signature is not checked here)."""
    return cert.subject == cert.issuer


def is_sha1_signed(cert: x509.Certificate) -> bool:
    """True when the certificate's signature uses SHA-1 (or MD5/MD2, which are worse)."""
    return cert.signature_algorithm_oid.dotted_string in _LEGACY_SIG_OIDS


# md2/md5/sha1 with RSA, ecdsa-with-SHA1, dsa-with-sha1: compared by OID, which is cheap on the hot path.
_LEGACY_SIG_OIDS = frozenset({"1.2.840.113549.1.1.2", "1.2.840.113549.1.1.4", "1.2.840.113549.1.1.5",
                              "1.2.840.10045.4.1", "1.2.840.10040.4.3", "1.3.14.3.2.29"})
_RSA_DSA_KEY_OIDS = frozenset({"1.2.840.113549.1.1.1", "1.2.840.113549.1.1.10", "1.2.840.10040.4.1"})


def weak_key_bits(cert: x509.Certificate) -> int | None:
    """The key size when the public key is RSA/DSA below :data:`MIN_RSA_BITS`, else ``None``."""
    try:
        if cert.public_key_algorithm_oid.dotted_string not in _RSA_DSA_KEY_OIDS:
            return None  # EC and EdDSA keys: no size rule here
        key = cert.public_key()
    except (ValueError, TypeError):  # unsupported or malformed key: the verifier reports it
        return None
    if isinstance(key, rsa.RSAPublicKey | dsa.DSAPublicKey) and key.key_size < MIN_RSA_BITS:
        return key.key_size
    return None


class Override(StrEnum):
    """What accepts a refused certificate as an anchor anyway (``TrustStore.add(pin=, force=)``, ``--pin``,
    ``--force``)."""

    PIN = "pin"  # trust exactly this certificate, which is not a CA
    FORCE = "force"  # trust it although it is expired, not yet valid, weak or SHA-1-signed


@dataclass(frozen=True)
class Refusal:
    """Why a certificate is not accepted as an anchor, and what accepts it anyway."""

    reason: str
    override: Override


def anchor_refusals(cert: x509.Certificate, *, at: _dt.datetime) -> list[Refusal]:
    """Every reason ``cert`` should not become an anchor at time ``at`` (empty list = fine).

    A non-CA certificate needs :attr:`Override.PIN` (trust exactly this certificate); an expired, not yet
    valid, weak-key (RSA < 2048) or SHA-1-signed one needs :attr:`Override.FORCE`.
    """
    broken = extension_problem(cert)
    if broken is not None:
        raise MalformedInputError(f"The certificate {cert.subject.rfc4514_string()} has an extension that cannot be "
                                  f"parsed ({broken}).", "It cannot be an anchor; get a correct copy from its owner.")
    out: list[Refusal] = []
    if not is_ca(cert):
        out.append(Refusal("it is not a CA certificate (basicConstraints CA:TRUE is missing), so trusting it "
                           "as a root would trust nothing it issued; to trust exactly this certificate, pin it",
                           Override.PIN))
    if at > cert.not_valid_after_utc:
        out.append(Refusal(f"it expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC", Override.FORCE))
    if at < cert.not_valid_before_utc:
        out.append(Refusal(f"it is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M:%S} UTC", Override.FORCE))
    bits = weak_key_bits(cert)
    if bits is not None:
        out.append(Refusal(f"its key is RSA {bits} bits, below the minimum of {MIN_RSA_BITS}", Override.FORCE))
    if is_sha1_signed(cert):
        out.append(Refusal("it is signed with SHA-1", Override.FORCE))
    return out


@dataclass(frozen=True)
class Anchor:
    """One trusted certificate and its provenance."""

    cert: x509.Certificate
    label: str | None = None
    partners: tuple[str, ...] = ()
    source: str | None = None
    added_at: _dt.datetime | None = None
    pinned: bool = False
    origin: str = "managed"  # "managed" (the store) or "certifi" (Mozilla's roots)

    @functools.cached_property
    def fingerprint(self) -> str:
        """SHA-256 of the DER certificate, 64 upper-case hex digits."""
        return sha256_fingerprint(self.cert)

    @property
    def thumbprint(self) -> str:
        """SHA-1 thumbprint as Exchange/Windows show it."""
        return sha1_thumbprint(self.cert)

    def describe(self) -> dict[str, Any]:
        """The anchor as plain data (``trust verify --json``'s anchor; the JSON contract, docs/json.md)."""
        c = self.cert
        return {
            "fingerprint_sha256": self.fingerprint,
            "thumbprint_sha1": self.thumbprint,
            "subject": c.subject.rfc4514_string(),
            "issuer": c.issuer.rfc4514_string(),
            "serial": serial_hex(c.serial_number),
            "not_before": rfc3339(c.not_valid_before_utc),
            "not_after": rfc3339(c.not_valid_after_utc),
            "is_ca": is_ca(c),
            "self_signed": is_self_signed(c),
            "pinned": self.pinned,
            "label": self.label,
            "partners": list(self.partners),
            "source": self.source,
            "added_at": rfc3339_or_none(self.added_at),
            "origin": self.origin,
        }


@runtime_checkable
class AnchorSource(Protocol):
    """Anything that can hand the verifier an :class:`AnchorSet` (an AnchorSet itself, a TrustStore)."""

    def anchor_set(self) -> AnchorSet: ...


@dataclass(frozen=True, eq=False)
class AnchorSet:
    """An immutable set of anchors, indexed for the verifier.

    The ``cryptography`` :class:`~cryptography.x509.verification.Store` and the subject index are built
    once, on first use, and reused by every verification: that is what keeps verifying against 10,000
    anchors close to the cost of 150.
    """

    anchors: tuple[Anchor, ...] = ()
    _by_fp: Mapping[str, Anchor] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        by_fp: dict[str, Anchor] = {}
        for a in self.anchors:
            # A managed entry wins over the same certificate from certifi: it carries provenance.
            if a.fingerprint not in by_fp or by_fp[a.fingerprint].origin != "managed":
                by_fp[a.fingerprint] = a
        object.__setattr__(self, "_by_fp", by_fp)

    @classmethod
    def of(cls, certs: Iterable[x509.Certificate | Anchor], *, origin: str = "managed") -> AnchorSet:
        """An anchor set from certificates (without provenance) or anchors."""
        items = list(certs)
        for c in items:
            if not isinstance(c, Anchor | x509.Certificate):
                raise UsageError(f"Trust anchors must be certificates, not {type(c).__name__}.",
                                 "Pass cryptography x509.Certificate objects, an AnchorSet or a TrustStore.")
        return cls(tuple(c if isinstance(c, Anchor) else Anchor(c, origin=origin) for c in items))

    def anchor_set(self) -> AnchorSet:
        return self

    def __len__(self) -> int:
        return len(self._by_fp)

    def __iter__(self) -> Iterator[Anchor]:
        return iter(self._by_fp.values())

    def __bool__(self) -> bool:
        return bool(self._by_fp)

    def union(self, other: AnchorSet) -> AnchorSet:
        """This set plus ``other`` (entries of this set win on duplicates)."""
        return AnchorSet(tuple(self) + tuple(a for a in other if a.fingerprint not in self._by_fp))

    @functools.cached_property
    def certificates(self) -> tuple[x509.Certificate, ...]:
        return tuple(a.cert for a in self._by_fp.values())

    @functools.cached_property
    def store(self) -> Store | None:
        """The ``cryptography`` store for these anchors (``None`` when the set is empty)."""
        return Store(list(self.certificates)) if self._by_fp else None

    @functools.cached_property
    def _by_subject(self) -> Mapping[bytes, tuple[Anchor, ...]]:
        index: dict[bytes, list[Anchor]] = {}
        for a in self._by_fp.values():
            index.setdefault(a.cert.subject.public_bytes(), []).append(a)
        return {k: tuple(v) for k, v in index.items()}

    def with_subject(self, name: x509.Name) -> tuple[Anchor, ...]:
        """Anchors whose subject is ``name`` (candidate issuers)."""
        return self._by_subject.get(name.public_bytes(), ())

    def find(self, cert: x509.Certificate) -> Anchor | None:
        """The anchor that is exactly ``cert``, if any."""
        return self._by_fp.get(sha256_fingerprint(cert))

    def organisations(self) -> frozenset[str]:
        """The organisation (O=) values of the anchors' subjects (for the missing-intermediate hint)."""
        return self._orgs

    @functools.cached_property
    def _orgs(self) -> frozenset[str]:
        out: set[str] = set()
        for a in self._by_fp.values():
            out.update(_org_values(a.cert.subject))
        return frozenset(out)


def _org_values(name: x509.Name) -> list[str]:
    return [str(attr.value).strip().lower() for attr in name.get_attributes_for_oid(x509.NameOID.ORGANIZATION_NAME)]


def organisations_of(name: x509.Name) -> list[str]:
    """The organisation (O=) values of a name, lower-cased."""
    return _org_values(name)


def as_anchor_set(anchors: AnchorSource | Sequence[x509.Certificate | Anchor] | Iterable[x509.Certificate]
                  ) -> AnchorSet:
    """Normalise what callers pass as ``anchors``: a set, a store, or certificates."""
    if isinstance(anchors, AnchorSet):
        return anchors
    if isinstance(anchors, AnchorSource):
        return anchors.anchor_set()
    return AnchorSet.of(anchors)
