"""DANE for SMTP (RFC 6698, RFC 7671, RFC 7672): TLSA records, and matching a server's chain against them.

Pure: no DNS, no sockets, no clock. The caller brings the TLSA RRset (already DNSSEC-validated, or
read from a zone), the chain the server presented (leaf first) and the time.

What counts (RFC 7672 3.1):

* Only DANE-TA(2) and DANE-EE(3) records are usable for SMTP; PKIX-TA(0) and PKIX-EE(1), unknown
  selectors and matching types, and digests of the wrong length are *unusable*. When every record is
  unusable, DANE authenticates nothing, but STARTTLS stays mandatory -- the caller's policy, from
  :attr:`DaneResult.usable_records`.
* DANE-EE(3) matches the leaf's certificate (selector 0) or its SubjectPublicKeyInfo (selector 1), in
  full (matching 0), by SHA-256 (1) or by SHA-512 (2). Names and validity dates are not checked.
* DANE-TA(2) matches a CA certificate the server *sent* (not the leaf itself: OpenSSL and Postfix
  match TA records only at depth 1 and above). The leaf must chain to it through the presented
  certificates (issuer names and signatures), the leaf and any intermediate below the trust anchor
  must be within their validity, and the leaf must name one of the reference identifiers
  (RFC 7672 3.2.2: the TLSA base domain -- the MX host -- and the next-hop domain): a DNS-ID SAN, a
  wildcard allowed as the whole leftmost label; the CN only when there is no DNS SAN.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import NameOID

from certkit.core.extensions import san_dns_identifiers
from certkit.core.findings import Finding
from certkit.core.names import dns_name, wildcard_covers
from certkit.core.trust import is_ca
from certkit.errors import InputError, MalformedInputError

__all__ = ["DaneResult", "Matching", "RecordCheck", "Selector", "TlsaRecord", "Usage", "associated_data",
           "dane_match", "issued_by", "owner_name", "tlsa_for", "zone_line"]


class Usage(enum.IntEnum):
    """TLSA certificate usage (RFC 6698 2.1.1, mnemonics of RFC 7218)."""

    PKIX_TA = 0
    PKIX_EE = 1
    DANE_TA = 2
    DANE_EE = 3


class Selector(enum.IntEnum):
    """TLSA selector: the whole certificate or its SubjectPublicKeyInfo."""

    CERT = 0
    SPKI = 1


class Matching(enum.IntEnum):
    """TLSA matching type: the selected content in full, or its SHA-256 or SHA-512 digest."""

    FULL = 0
    SHA2_256 = 1
    SHA2_512 = 2


_DIGEST_LENGTH = {Matching.SHA2_256: 32, Matching.SHA2_512: 64}
_MNEMONICS = {
    "usage": {"pkix-ta": 0, "pkix-ee": 1, "dane-ta": 2, "dane-ee": 3},
    "selector": {"cert": 0, "spki": 1},
    "matching type": {"full": 0, "sha2-256": 1, "sha2-512": 2},
}


@dataclass(frozen=True)
class TlsaRecord:
    """One TLSA record's data: usage, selector, matching type and the certificate association data."""

    usage: int
    selector: int
    matching_type: int
    data: bytes

    def text(self) -> str:
        """The RDATA in presentation form: ``3 1 1 <lower-case hex>``."""
        return f"{self.usage} {self.selector} {self.matching_type} {self.data.hex()}"

    @classmethod
    def parse(cls, text: str) -> TlsaRecord:
        """A record from presentation text: the RDATA (``3 1 1 ab12...``) or a whole zone-file line.

        Hex may be split by spaces and wrapped in parentheses; the RFC 7218 mnemonics (``DANE-EE SPKI
        SHA2-256``) are accepted. Raises :class:`~certkit.errors.MalformedInputError`.
        """
        tokens = text.split(";", 1)[0].replace("(", " ").replace(")", " ").split()
        upper = [t.upper() for t in tokens]
        if "TLSA" in upper:
            tokens = tokens[upper.index("TLSA") + 1:]
        if len(tokens) < 4:
            raise MalformedInputError(f"{text.strip()[:80]!r} is not a TLSA record.",
                                      "Write it as: 3 1 1 <hex>, or a zone line ... IN TLSA 3 1 1 <hex>.")
        fields = [_field(tok, what) for tok, what in zip(tokens[:3], ("usage", "selector", "matching type"),
                                                            strict=True)]
        hexdata = "".join(tokens[3:])
        if not re.fullmatch(r"(?:[0-9a-fA-F]{2})+", hexdata):
            raise MalformedInputError(f"The TLSA data {hexdata[:80]!r} is not hexadecimal.",
                                      "Give the certificate association data as hex digits (an even number).")
        return cls(fields[0], fields[1], fields[2], bytes.fromhex(hexdata))

    @property
    def unusable_reason(self) -> str | None:
        """Why RFC 7672 says this record is unusable for SMTP, or ``None`` when it is usable."""
        if self.usage in (Usage.PKIX_TA, Usage.PKIX_EE):
            return f"usage {self.usage} (PKIX) is unusable for SMTP (RFC 7672 3.1.3)"
        if self.usage not in (Usage.DANE_TA, Usage.DANE_EE):
            return f"usage {self.usage} is unknown"
        if self.selector not in (Selector.CERT, Selector.SPKI):
            return f"selector {self.selector} is unknown"
        if self.matching_type not in (Matching.FULL, Matching.SHA2_256, Matching.SHA2_512):
            return f"matching type {self.matching_type} is unknown"
        want = _DIGEST_LENGTH.get(Matching(self.matching_type))
        if want is not None and len(self.data) != want:
            return f"matching type {self.matching_type} needs {want} bytes of data, not {len(self.data)}"
        return None

    @property
    def usable(self) -> bool:
        """Whether an SMTP client may use this record (RFC 7672 3.1)."""
        return self.unusable_reason is None


def _field(token: str, what: str) -> int:
    named = _MNEMONICS[what].get(token.lower())
    if named is not None:
        return named
    if not token.isdigit() or int(token) > 255:
        raise MalformedInputError(f"The TLSA {what} {token[:20]!r} is not a number from 0 to 255.",
                                  "Write the record as: 3 1 1 <hex>.")
    return int(token)


def associated_data(cert: x509.Certificate, selector: int, matching: int) -> bytes:
    """The certificate association data of ``cert`` for ``selector`` and ``matching`` type."""
    if selector == Selector.CERT:
        content = cert.public_bytes(Encoding.DER)
    elif selector == Selector.SPKI:
        content = cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    else:
        raise InputError(f"TLSA selector {selector} is not 0 (certificate) or 1 (public key).")
    if matching == Matching.FULL:
        return content
    if matching == Matching.SHA2_256:
        return hashlib.sha256(content).digest()
    if matching == Matching.SHA2_512:
        return hashlib.sha512(content).digest()
    raise InputError(f"TLSA matching type {matching} is not 0 (full), 1 (SHA-256) or 2 (SHA-512).")


def tlsa_for(cert: x509.Certificate, usage: int, selector: int = 1, matching: int = 1) -> TlsaRecord:
    """The TLSA record with ``usage`` that matches ``cert`` (default selector SPKI, matching SHA-256)."""
    if not 0 <= usage <= 255:
        raise InputError(f"TLSA usage {usage} is not a number from 0 to 255.")
    return TlsaRecord(usage, selector, matching, associated_data(cert, selector, matching))


def owner_name(host: str, port: int = 25, protocol: str = "tcp") -> str:
    """The TLSA owner name of a service: ``_25._tcp.mx.contoso.com.`` (``host`` checked as a host name)."""
    if not 0 < port < 65536:
        raise InputError(f"Port {port} is not a TCP port.", "Give a port from 1 to 65535 (SMTP: 25).")
    return f"_{port}._{protocol}.{dns_name(host)}."


def zone_line(record: TlsaRecord, host: str, port: int = 25, *, ttl: int | None = None) -> str:
    """One zone-file line: ``_25._tcp.mx.contoso.com. [TTL] IN TLSA 3 1 1 <hex>``."""
    ttl_part = f" {ttl}" if ttl is not None else ""
    return f"{owner_name(host, port)}{ttl_part} IN TLSA {record.text()}"


# ---------------------------------------------------------------------------------------------
# matching


@dataclass(frozen=True)
class RecordCheck:
    """The verdict on one record: usable or not, matched or not, and why."""

    record: TlsaRecord
    usable: bool
    matched: bool
    reason: str
    #: the certificate the record matched: the leaf (DANE-EE) or the trust anchor (DANE-TA)
    certificate: x509.Certificate | None = None


@dataclass(frozen=True)
class DaneResult:
    """The outcome of :func:`dane_match`."""

    #: the first record that authenticated the server, or ``None``
    matched: TlsaRecord | None
    checks: tuple[RecordCheck, ...]
    #: at least one record is usable: DANE applies (when none is, STARTTLS is still mandatory)
    usable_records: bool
    findings: tuple[Finding, ...]

    @property
    def ok(self) -> bool:
        """Whether a record authenticated the server's chain."""
        return self.matched is not None


def _names(cert: x509.Certificate) -> list[str]:
    """The identifiers of ``cert`` for DANE-TA: its DNS SANs, else (no DNS SAN) its CNs."""
    sans = san_dns_identifiers(cert)
    if sans:
        return sans
    return [str(a.value).lower().rstrip(".") for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]


def issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Whether ``issuer`` signed ``cert`` (names match and the signature verifies)."""
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _subject(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string() or "(empty subject)"


def _within(cert: x509.Certificate, at: dt.datetime) -> str | None:
    if at > cert.not_valid_after_utc:
        return f"expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M}Z"
    if at < cert.not_valid_before_utc:
        return f"not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M}Z"
    return None


def _path_to(leaf: x509.Certificate, anchor: x509.Certificate, sent: Sequence[x509.Certificate]
             ) -> list[x509.Certificate] | None:
    """The certificates from the leaf up to ``anchor`` (excluding both), each issued by the next; or ``None``."""
    below: list[x509.Certificate] = []
    current = leaf
    for _ in range(len(sent) + 1):
        if issued_by(current, anchor):
            return below
        step = next((c for c in sent if c is not anchor and c not in below and c is not current
                     and is_ca(c) and issued_by(current, c)), None)
        if step is None:
            return None
        below.append(step)
        current = step
    return None


def _check_ee(record: TlsaRecord, leaf: x509.Certificate) -> RecordCheck:
    if associated_data(leaf, record.selector, record.matching_type) == record.data:
        return RecordCheck(record, True, True, f"matches the server's {'key' if record.selector else 'certificate'} "
                                               f"({_subject(leaf)})", leaf)
    return RecordCheck(record, True, False,
                       f"does not match the server's {'key' if record.selector else 'certificate'} "
                       f"({_subject(leaf)})")


def _check_ta(record: TlsaRecord, chain: Sequence[x509.Certificate], hosts: Sequence[str],
              at: dt.datetime) -> RecordCheck:
    leaf, sent = chain[0], list(chain[1:])
    anchors = [c for c in sent if associated_data(c, record.selector, record.matching_type) == record.data]
    if not anchors:
        if associated_data(leaf, record.selector, record.matching_type) == record.data:
            return RecordCheck(record, True, False, "matches the server's own certificate, which is not a trust "
                                                    "anchor; publish it as DANE-EE (3 1 1)")
        return RecordCheck(record, True, False, "matches no CA certificate the server sent (a DANE-TA trust anchor "
                                                "must be in the chain the server presents)")
    problems: list[str] = []
    for anchor in anchors:
        below = _path_to(leaf, anchor, sent)
        if below is None:
            problems.append(f"the server's certificate does not chain to {_subject(anchor)} (issuer name or "
                            "signature)")
            continue
        lapsed = [f"{_subject(c)} {why}" for c in [leaf, *below] if (why := _within(c, at))]
        if lapsed:
            problems.append("; ".join(lapsed))
            continue
        names = _names(leaf)
        if not any(n == h or wildcard_covers(n, h) for n in names for h in hosts):
            problems.append(f"the server's certificate names {', '.join(names) or 'nothing'}, not "
                            f"{' or '.join(hosts) or 'the MX host'}")
            continue
        return RecordCheck(record, True, True, f"trust anchor {_subject(anchor)} sent by the server", anchor)
    return RecordCheck(record, True, False, "; ".join(dict.fromkeys(problems)))


def dane_match(records: Iterable[TlsaRecord], chain: Sequence[x509.Certificate], *, host_names: Iterable[str],
               at: dt.datetime) -> DaneResult:
    """Match the server's ``chain`` (leaf first, as presented) against a TLSA RRset (RFC 7672).

    ``host_names`` are the reference identifiers for DANE-TA: the TLSA base domain (the MX host name)
    and the next-hop domain. Every record gets a :class:`RecordCheck`; findings: ``dane.unusable-records``
    when records were given but none is usable, ``dane.no-match`` when none of the usable ones matched.
    An empty RRset is not DANE: no findings and ``usable_records`` false.
    """
    recs = tuple(records)
    if not chain:
        raise InputError("The server presented no certificate to match against TLSA records.")
    hosts = [h.strip().lower().rstrip(".") for h in host_names if h.strip()]
    checks: list[RecordCheck] = []
    for rec in recs:
        why = rec.unusable_reason
        if why is not None:
            checks.append(RecordCheck(rec, False, False, why))
        elif rec.usage == Usage.DANE_EE:
            checks.append(_check_ee(rec, chain[0]))
        else:
            checks.append(_check_ta(rec, chain, hosts, at))
    usable = any(c.usable for c in checks)
    matched = next((c.record for c in checks if c.matched), None)
    subject = hosts[0] if hosts else None
    evidence = {"records": [c.record.text() for c in checks], "reasons": [c.reason for c in checks]}
    findings: list[Finding] = []
    if recs and not usable:
        findings.append(Finding("dane.unusable-records",
                                f"None of the {len(recs)} TLSA record(s) is usable for SMTP: "
                                + "; ".join(dict.fromkeys(c.reason for c in checks)) + ".",
                                subject=subject, evidence=evidence))
    elif usable and matched is None:
        findings.append(Finding("dane.no-match",
                                "No usable TLSA record matches the server's certificate chain: "
                                + "; ".join(f"{c.record.usage} {c.record.selector} {c.record.matching_type}: "
                                            f"{c.reason}" for c in checks if c.usable) + ".",
                                subject=subject, evidence=evidence))
    return DaneResult(matched, tuple(checks), usable, tuple(findings))
