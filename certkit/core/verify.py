"""Chain verification with explanations: would we accept this partner's certificate, and if not, why?

The verdict on the path comes from ``cryptography.x509.verification`` (path building, signatures,
validity, basicConstraints, name constraints, key usage, EKU, subjectAltName matching for host names).
certkit adds what it lacks and explains every failure as :class:`~certkit.core.findings.Finding` data:

* which certificate expired or is not yet valid, and by how long (``cert.expired``, ``cert.not-yet-valid``);
* self-signed vs issuer not trusted vs intermediate not sent (``chain.self-signed``,
  ``chain.unknown-issuer``, ``chain.missing-intermediate``) vs a path longer than the depth limit or a CA's
  pathLenConstraint allows (``chain.too-deep``, ``chain.path-length``), anything else as ``chain.invalid``;
* name mismatches with the names the certificate does carry (``name.host-mismatch``,
  ``name.domain-mismatch``), including the Domain Security rule that cryptography cannot express;
* the wrong EKU for the purpose (``eku.no-server-auth``, ``eku.no-client-auth``);
* weak keys (RSA < 2048, which cryptography does not check on the leaf) and SHA-1 signatures;
* pinned leaves (``chain.pinned-leaf``) and revocation against the CRLs given (``revocation.*``).

Nothing here reads the wall clock except ``at=None`` at the API edge, prints, or touches files.
"""

from __future__ import annotations

import datetime as _dt
import functools
import ipaddress
import itertools
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    Subject,
    VerificationError,
)

from certkit.clock import aware, utcnow
from certkit.core.extensions import eku_of, extension_value, key_usage_of, san_dns_identifiers, san_ip_addresses
from certkit.core.findings import Finding, Severity
from certkit.core.formats import sha256_fingerprint
from certkit.core.jsonfacts import certificate_facts, rfc3339, rfc3339_or_none, serial_hex
from certkit.core.names import dns_name, domain_rank, is_ip_address, wildcard_covers
from certkit.core.text import duration_text, utc_text
from certkit.core.trust import (
    Anchor,
    AnchorSet,
    AnchorSource,
    as_anchor_set,
    extension_problem,
    is_self_signed,
    is_sha1_signed,
    organisations_of,
    weak_key_bits,
)
from certkit.errors import UsageError

__all__ = ["Purpose", "VerificationResult", "VerifyOptions", "certificate_name_matches", "certificate_names",
           "crl_urls", "domain_matches", "host_matches", "verify_chain"]

Purpose = Literal["server", "client"]

_PURPOSE_EKU = {"server": ExtendedKeyUsageOID.SERVER_AUTH, "client": ExtendedKeyUsageOID.CLIENT_AUTH}
#: How far certkit follows issuers to explain a rejected path (well past any limit a verifier applies).
_MAX_DIAG_DEPTH = 64
#: cryptography's default chain depth: intermediate CAs between the leaf and the trust anchor.
DEFAULT_MAX_DEPTH = 8


@dataclass(frozen=True)
class VerificationResult:
    """The outcome of :func:`verify_chain`.

    ``ok`` is True only when cryptography built a path to an anchor *and* certkit found no error.
    ``chain`` is the path, leaf first: the one cryptography built when it succeeded, otherwise the
    best path certkit could assemble for the explanation. ``findings`` lists every problem found
    (errors, warnings, and facts such as ``chain.pinned-leaf``).
    """

    ok: bool
    chain: tuple[x509.Certificate, ...]
    findings: tuple[Finding, ...]
    anchor: Anchor | None = None
    pinned: bool = False
    purpose: str = "server"
    at: _dt.datetime | None = None
    reference: str | None = None
    rule: str | None = None
    reason: str | None = None  # cryptography's own message when it rejected the path

    @property
    def errors(self) -> tuple[Finding, ...]:
        """The findings of severity error."""
        return tuple(f for f in self.findings if f.severity is Severity.ERROR)

    @property
    def codes(self) -> tuple[str, ...]:
        """The finding codes, in order."""
        return tuple(f.code for f in self.findings)

    def to_dict(self) -> dict[str, Any]:
        """The result as plain data (``trust verify --json``; the JSON contract, docs/json.md)."""
        return {
            "ok": self.ok,
            "purpose": self.purpose,
            "rule": self.rule,
            "reference": self.reference,
            "at": rfc3339_or_none(self.at),
            "pinned": self.pinned,
            "anchor": self.anchor.describe() if self.anchor else None,
            "chain": [dict(_chain_entry(c)) for c in self.chain],
            "reason": self.reason,
            "findings": [f.to_dict() for f in self.findings],
        }


@functools.lru_cache(maxsize=4096)
def _chain_entry(cert: x509.Certificate) -> dict[str, str]:
    """How a chain member is described in JSON (its facts without the SAN lists); remembered per certificate,
    because a probe of many MX hosts describes the same intermediate and root hundreds of times (each name
    formatting costs microseconds)."""
    facts = certificate_facts(cert)
    return {k: facts[k] for k in ("subject", "issuer", "serial", "thumbprint_sha1", "fingerprint_sha256",
                                  "not_before", "not_after")}


# ---------------------------------------------------------------------------------------------
# names


def crl_urls(certs: Iterable[x509.Certificate]) -> list[str]:
    """The ``http://`` CRL distribution point URLs of ``certs``, in order, each once.

    Only plain HTTP counts: Windows fetches CRLs over HTTP (LDAP and HTTPS points are not fetched).
    """
    urls: list[str] = []
    for cert in certs:
        urls.extend(_cert_crl_urls(cert))
    return list(dict.fromkeys(urls))


@functools.lru_cache(maxsize=1024)
def _cert_crl_urls(cert: x509.Certificate) -> tuple[str, ...]:
    # Memoised per certificate (equal = same DER): a probe asks for the same intermediates' points for
    # every endpoint, and validate_peer asks again for the path it built.
    try:
        cdp = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    except (x509.ExtensionNotFound, ValueError):
        return ()
    return tuple(gn.value for dp in cdp for gn in dp.full_name or ()
                 if isinstance(gn, x509.UniformResourceIdentifier) and gn.value.lower().startswith("http://"))


def _common_names(cert: x509.Certificate) -> list[str]:
    return [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]


def _names_text(cert: x509.Certificate) -> list[str]:
    names = [f"DNS:{n}" for n in san_dns_identifiers(cert)] + [f"IP:{ip}" for ip in san_ip_addresses(cert)]
    return names or [f"CN={cn} (no subjectAltName)" for cn in _common_names(cert)] or ["(no names)"]


def host_matches(cert: x509.Certificate, host: str) -> bool:
    """The host-name rule (Postfix ``verify``): a DNS SAN equal to ``host`` or a wildcard covering it;
    an IP literal matches an IP SAN. With no SAN at all the CN is not consulted (RFC 6125, and what
    cryptography enforces)."""
    if _is_ip(host):
        want = ipaddress.ip_address(host.strip("[]"))
        return any(ip == want for ip in san_ip_addresses(cert))
    h = host.lower().rstrip(".")
    return any(n == h or wildcard_covers(n, h) for n in san_dns_identifiers(cert))


def domain_matches(cert: x509.Certificate, domain: str) -> str | None:
    """The Domain Security rule; returns the DNS SAN that satisfied it, or ``None``.

    The certificate must carry a DNS subjectAltName that is the partner domain ``D`` itself, or a
    host within it (a name ending in ``.D``, at any depth) -- Postfix ``secure`` with
    ``match=D:.D``, the closest analogue of Exchange's rule. A wildcard SAN ``*.D`` or ``*.sub.D``
    counts as naming a host within ``D`` (with a ``name.wildcard`` warning: Exchange's own lists take
    no wildcards). Comparison is case-insensitive on A-labels; the CN is not consulted; a name
    that merely ends in ``D`` without the dot (``evilfabrikam.com``) does not match.
    """
    ranked = [(rank, i, n) for i, n in enumerate(san_dns_identifiers(cert))
              if (rank := domain_rank(n, domain)) is not None]
    return min(ranked)[2] if ranked else None


def certificate_names(cert: x509.Certificate) -> list[str]:
    """The names an Exchange Online connector compares: the subject CNs, then the DNS subjectAltNames (lower case)."""
    out: list[str] = []
    for n in [c.lower().rstrip(".") for c in _common_names(cert)] + san_dns_identifiers(cert):
        if n not in out:
            out.append(n)
    return out


def certificate_name_matches(cert: x509.Certificate, reference: str) -> bool:
    """Exchange Online's connector rule (``TlsSenderCertificateName``, ``TlsDomain``): the subject CN or a DNS
    subjectAltName matches ``reference``, an SMTP domain where ``*.D`` stands for D and every host within it
    (Microsoft Learn, New-InboundConnector). A wildcard in the certificate (``*.D``) stands for one label, as in
    TLS (inferred: Microsoft documents only the connector's wildcard): it names hosts within D, not D itself.
    """
    ref = reference.lower().rstrip(".")
    for n in certificate_names(cert):
        if ref.startswith("*."):
            base = ref[2:]
            if n == base or n.endswith("." + base):
                return True
        elif n == ref or wildcard_covers(n, ref):
            return True
    return False


# ---------------------------------------------------------------------------------------------
# who


def _who(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string() or "(empty subject)"


# ---------------------------------------------------------------------------------------------
# path assembly for explanations


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool | None:
    """True/False when the signature could be checked; None when the algorithm is not supported."""
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return None
    except InvalidSignature:
        return False
    return True


@dataclass
class _Path:
    certs: list[x509.Certificate]
    end: Literal["anchor", "self-signed", "missing", "too-deep"]
    anchor: Anchor | None = None


def _assemble(leaf: x509.Certificate, intermediates: Sequence[x509.Certificate], anchors: AnchorSet) -> _Path:
    """A best-effort path from ``leaf`` towards an anchor, preferring signature-verified issuers.

    Only used to explain a failure (or to find the anchor of a success); the verdict is cryptography's.
    """
    path = [leaf]
    seen = {sha256_fingerprint(leaf)}
    current = leaf
    while len(path) <= _MAX_DIAG_DEPTH:
        pinned = anchors.find(current)
        if pinned is not None:
            return _Path(path, "anchor", pinned)
        candidates: list[tuple[int, x509.Certificate, Anchor | None]] = []
        for a in anchors.with_subject(current.issuer):
            candidates.append((0, a.cert, a))
        for c in intermediates:
            if c.subject == current.issuer and sha256_fingerprint(c) not in seen:
                candidates.append((1, c, None))
        ranked: list[tuple[int, int, x509.Certificate, Anchor | None]] = []
        for pref, cand, anchor in candidates:
            ok = _signed_by(current, cand)
            if ok is False:
                continue
            ranked.append((0 if ok else 1, pref, cand, anchor))
        if is_self_signed(current) and not any(r[3] is not None for r in ranked):
            return _Path(path, "self-signed")
        ranked = [r for r in ranked if sha256_fingerprint(r[2]) not in seen or r[3] is not None]
        if not ranked:
            return _Path(path, "missing")
        ranked.sort(key=lambda r: (r[0], r[1]))
        _, _, nxt, anchor = ranked[0]
        if anchor is not None:
            path.append(nxt)
            return _Path(path, "anchor", anchor)
        seen.add(sha256_fingerprint(nxt))
        path.append(nxt)
        current = nxt
    return _Path(path, "too-deep")


def _intermediate_count(chain: Sequence[x509.Certificate], end: str) -> int:
    """The intermediate CAs of a path (leaf first): all but the leaf, and the anchor when the path reaches one."""
    return max(0, len(chain) - (2 if end == "anchor" else 1))


def _path_length_findings(chain: Sequence[x509.Certificate]) -> list[Finding]:
    """RFC 5280 6.1.4(l)(m): each CA's pathLenConstraint against the CA certificates below it in ``chain``
    (self-issued ones do not count). The trust anchor's own constraint counts too, as cryptography applies it."""
    out: list[Finding] = []
    for j in range(1, len(chain)):
        ca = chain[j]
        try:
            bc = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
        except (x509.ExtensionNotFound, ValueError):
            continue
        if not bc.ca or bc.path_length is None:
            continue
        below = [c for c in chain[1:j] if c.subject != c.issuer]
        if len(below) > bc.path_length:
            allowed = "no intermediate CA" if bc.path_length == 0 else (
                f"at most {bc.path_length} intermediate CA{'s' if bc.path_length != 1 else ''}")
            out.append(Finding(
                "chain.path-length",
                f"{_who(ca)} allows {allowed} below it (pathLenConstraint {bc.path_length}), but the path has "
                f"{len(below)}: {', '.join(_who(c) for c in below)}.", subject=_who(ca),
                evidence={"ca": _who(ca), "path_length": bc.path_length, "below": [_who(c) for c in below]}))
    return out


# ---------------------------------------------------------------------------------------------
# revocation


def _crl_static_problem(crl: x509.CertificateRevocationList, issuer: x509.Certificate) -> str | None:
    """Why a correctly signed CRL still cannot be used whatever the time, or ``None`` (the time is
    :func:`_crl_findings`'s to check)."""
    ku = key_usage_of(issuer)
    if ku is not None and not ku.crl_sign:
        return "is signed by a CA whose keyUsage does not allow CRL signing (no cRLSign)"
    if extension_value(crl, x509.CRLNumber) is None:
        return "has no CRL number (RFC 5280 5.2.3 requires one)"
    return None


@dataclass(frozen=True, slots=True)
class _CrlVsIssuer:
    """What one CRL is with respect to one CA certificate, whatever the time (see :func:`_crl_vs_issuer`)."""

    names_issuer: bool  # the CRL's issuer name is the CA's subject
    signed: bool  # ... and its signature verifies with the CA's key
    problem: str | None  # ... and why it still cannot be used, time aside (_crl_static_problem)


#: CA certificate -> {CRL SHA-256 fingerprint -> facts}; bounded, oldest out first (see _crl_vs_issuer).
_crl_memo: dict[x509.Certificate, dict[bytes, _CrlVsIssuer]] = {}
_crl_memo_lock = threading.Lock()
_MEMO_ISSUERS = 1024
_MEMO_CRLS_PER_ISSUER = 64


def _bounded_put(memo: dict[Any, Any], key: Any, value: Any, size: int) -> None:
    """``memo[key] = value``, first dropping the oldest entries beyond ``size``; hold ``_crl_memo_lock``."""
    while len(memo) >= size:
        del memo[next(iter(memo))]
    memo[key] = value


def _crl_memo_of(issuer: x509.Certificate) -> dict[bytes, _CrlVsIssuer]:
    """What is known of CRLs against ``issuer`` (a certificate is hashed once per pair of the path)."""
    known = _crl_memo.get(issuer)
    if known is None:
        with _crl_memo_lock:
            known = _crl_memo.get(issuer)
            if known is None:
                known = {}
                _bounded_put(_crl_memo, issuer, known, _MEMO_ISSUERS)
    return known


def _crl_vs_issuer(crl: x509.CertificateRevocationList, fingerprint: bytes, issuer: x509.Certificate,
                   known: dict[bytes, _CrlVsIssuer]) -> _CrlVsIssuer:
    """Name match, signature and time-independent problems of ``crl`` against ``issuer``, memoised in ``known``.

    The key is the CA certificate (equal = same DER, so the same name, key and extensions) and the
    CRL's SHA-256 fingerprint (its whole DER, signature included): a probe checks the same few CRLs
    against the same few CAs for every endpoint, and the signature check is the costliest part. The
    memo is bounded and holds no CRL.
    """
    found = known.get(fingerprint)
    if found is not None:
        return found
    if crl.issuer != issuer.subject:
        facts = _CrlVsIssuer(names_issuer=False, signed=False, problem=None)
    else:
        try:
            good = crl.is_signature_valid(issuer.public_key())  # type: ignore[arg-type]
        except (TypeError, ValueError, UnsupportedAlgorithm):
            good = False
        facts = _CrlVsIssuer(names_issuer=True, signed=good,
                             problem=_crl_static_problem(crl, issuer) if good else None)
    with _crl_memo_lock:
        _bounded_put(known, fingerprint, facts, _MEMO_CRLS_PER_ISSUER)
    return facts


class _CrlReport:
    """The revocation findings of one path; a CRL's own problem is reported once, however many certificates
    it was consulted for."""

    def __init__(self, at: _dt.datetime) -> None:
        self.at = at
        self.findings: list[Finding] = []
        self._reported: set[bytes] = set()

    def first_time(self, crl_key: bytes) -> bool:
        """Whether the CRL with this fingerprint has had no finding yet (and from now on has one)."""
        if crl_key in self._reported:
            return False
        self._reported.add(crl_key)
        return True


def _crl_findings(chain: Sequence[x509.Certificate], crls: Sequence[x509.CertificateRevocationList],
                  at: _dt.datetime, require: bool) -> list[Finding]:
    report = _CrlReport(at)
    fingerprinted = [(crl, crl.fingerprint(hashes.SHA256())) for crl in crls]
    # Every CA-issued certificate of the path: each but the last (the anchor, or a pinned leaf).
    for cert, issuer in itertools.pairwise(chain):
        had_crl = _check_against_crls(cert, issuer, fingerprinted, report)
        if require:
            report.findings.extend(_required_revocation(cert, issuer, had_crl))
    return report.findings


def _check_against_crls(cert: x509.Certificate, issuer: x509.Certificate,
                        fingerprinted: Sequence[tuple[x509.CertificateRevocationList, bytes]],
                        report: _CrlReport) -> bool:
    """Look ``cert`` up in every usable CRL of ``issuer`` (findings go on ``report``); whether any CRL of that
    issuer was given at all."""
    had_crl = False
    known = _crl_memo_of(issuer)
    for crl, key in fingerprinted:
        facts = _crl_vs_issuer(crl, key, issuer, known)
        if not facts.names_issuer:
            continue
        had_crl = True
        if not _usable_crl(crl, key, issuer, facts, report):
            continue
        revoked = _revocation_of(cert, crl)
        if revoked is not None:
            report.findings.append(revoked)
            break
    return had_crl


def _usable_crl(crl: x509.CertificateRevocationList, key: bytes, issuer: x509.Certificate, facts: _CrlVsIssuer,
                report: _CrlReport) -> bool:
    """Whether ``crl`` (of ``issuer``) may be consulted; why not, or that it is stale, goes on ``report`` once."""
    if not facts.signed:
        if report.first_time(key):
            report.findings.append(Finding(
                "revocation.crl-bad-signature", f"The CRL from {crl.issuer.rfc4514_string()} is not signed by the key "
                f"of {_who(issuer)}; it was ignored.", subject=_who(issuer),
                evidence={"crl_issuer": crl.issuer.rfc4514_string()}))
        return False
    problem = facts.problem
    if problem is None and crl.last_update_utc > report.at:
        problem = f"is dated in the future (thisUpdate {utc_text(crl.last_update_utc)})"
    if problem is not None:
        if report.first_time(key):
            report.findings.append(Finding("revocation.crl-invalid", f"The CRL from {_who(issuer)} {problem}; it was "
                                           "ignored.", subject=_who(issuer), evidence={"problem": problem}))
        return False
    next_update = crl.next_update_utc
    if next_update is not None and report.at > next_update and report.first_time(key):
        report.findings.append(Finding(
            "revocation.crl-stale", f"The CRL from {_who(issuer)} expired {duration_text(report.at - next_update)} "
            f"ago (nextUpdate {utc_text(next_update)}).", subject=_who(issuer),
            evidence={"next_update": rfc3339(next_update)}))
    return True


def _revocation_of(cert: x509.Certificate, crl: x509.CertificateRevocationList) -> Finding | None:
    """``revocation.revoked`` when ``crl`` lists ``cert``."""
    entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
    if entry is None:
        return None
    crl_reason = extension_value(entry, x509.CRLReason)
    reason = "unspecified" if crl_reason is None else crl_reason.reason.value
    revoked_at = entry.revocation_date_utc
    who = _who(cert)
    return Finding("revocation.revoked", f"{who} (serial {cert.serial_number:X}) was revoked on "
                   f"{utc_text(revoked_at)}, reason: {reason}.", subject=who,
                   evidence={"serial": serial_hex(cert.serial_number), "revoked_at": rfc3339(revoked_at),
                             "reason": reason})


def _required_revocation(cert: x509.Certificate, issuer: x509.Certificate, had_crl: bool) -> list[Finding]:
    """Exchange's rule: a CA-issued certificate needs a distribution point, and a CRL of its issuer."""
    if extension_value(cert, x509.CRLDistributionPoints) is None:
        return [Finding("revocation.no-cdp", f"{_who(cert)} has no CRL distribution point, so its revocation cannot "
                        "be checked.", subject=_who(cert))]
    if not had_crl:
        # A CRL that was had but is stale, invalid or badly signed has its own finding above:
        # "could not be had" is only for an issuer of whom no CRL was available at all.
        return [Finding("revocation.unreachable", f"No CRL from {_who(issuer)} was available to check "
                        f"{_who(cert)}.", subject=_who(cert))]
    return []


# ---------------------------------------------------------------------------------------------
# the call


def _ca_key_usage(policy: object, cert: x509.Certificate, ku: x509.KeyUsage | None) -> None:
    # RFC 5280 6.1.4(n): *if* a CA certificate has keyUsage, keyCertSign must be set. Private CAs
    # (old Windows ADCS and openssl configurations) exist without the extension; the path algorithm
    # accepts them, and so does certkit (cryptography's Web PKI default requires the extension).
    if ku is not None and not ku.key_cert_sign:
        raise ValueError("keyUsage.keyCertSign must be asserted in a CA certificate")


def _ca_policy() -> ExtensionPolicy:
    return ExtensionPolicy.webpki_defaults_ca().may_be_present(x509.KeyUsage, Criticality.AGNOSTIC,
                                                               _ca_key_usage)


@functools.cache
def _policies(purpose: str, relaxed: bool) -> tuple[ExtensionPolicy, ExtensionPolicy] | None:
    """The extension policies for ``purpose``; ``None`` means cryptography's defaults (the fast path).

    ``relaxed`` is private-PKI reality, tried only after the Web PKI defaults refused a path for one of
    these reasons: a CA without keyUsage (checked only when present, RFC 5280 6.1.4(n)), and an end-entity
    certificate without an authorityKeyIdentifier (old openssl and ADCS templates, and Exchange's own
    self-signed certificates, which a partner pins).
    """
    ca = _ca_policy() if relaxed else ExtensionPolicy.webpki_defaults_ca()
    ee = ExtensionPolicy.webpki_defaults_ee()
    if relaxed:
        ee = ee.may_be_present(x509.AuthorityKeyIdentifier, Criticality.AGNOSTIC, None)
    if purpose == "server":
        return (ca, ee) if relaxed else None
    # Client certificates of mail servers often carry only a CN (Postfix and Exchange do not require
    # a SAN on the client side); cryptography's client default requires one, so certkit relaxes that.
    return ca, ee.may_be_present(x509.SubjectAlternativeName, Criticality.AGNOSTIC, None)


# cryptography's messages when a CA lacks keyUsage (2.5.29.15) or a leaf lacks its AKI (2.5.29.35).
_RELAXABLE = ("2.5.29.15: Certificate is missing required extension",
              "2.5.29.35: Certificate is missing required extension")


@functools.lru_cache(maxsize=4096)
def _is_ip(value: str) -> bool:
    return is_ip_address(value)


@functools.lru_cache(maxsize=4096)
def _reference(value: str) -> str:
    """A reference name normalised once: an IP literal as given, a host name as lower-case A-labels.

    A mixed-script name is compared, not issued: it is accepted here (whether to connect to it is the caller's
    decision)."""
    return value if _is_ip(value) else dns_name(value, allow_wildcard=False, allow_mixed_script=True)


def _subject_for(leaf: x509.Certificate, rule: _Rule, reference: str | None) -> Subject:
    """The name cryptography checks the path for (certkit explains a mismatch itself)."""
    if rule == "host" and reference is not None:
        if _is_ip(reference):
            return x509.IPAddress(ipaddress.ip_address(reference.strip("[]")))
        return x509.DNSName(reference)
    if rule == "domain" and reference is not None:
        matched = domain_matches(leaf, reference)
        if matched is None:
            return x509.DNSName(reference)
        # A wildcard SAN covers any one label: check the path for a representative host of it.
        return x509.DNSName(matched.replace("*", "certkit-domain-check", 1))
    dns = san_dns_identifiers(leaf)
    if dns:
        return x509.DNSName(dns[0].replace("*", "certkit-any-host", 1))
    ips = san_ip_addresses(leaf)
    if ips:
        return x509.IPAddress(ips[0])
    return x509.DNSName("invalid")  # no SAN: cryptography rejects, certkit explains


@dataclass(frozen=True)
class VerifyOptions:
    """How :func:`verify_chain` judges a path, beyond the name and the time; checked once, when made.

    ``purpose``: ``"server"`` needs serverAuth, ``"client"`` clientAuth -- when the leaf has an EKU
    extension at all; a leaf without one is accepted (RFC 5280 4.2.1.12). ``max_depth``: the most
    intermediate CAs between the leaf and the anchor (``None``: cryptography's default of 8).
    ``crls``: CRLs to check every CA-issued certificate of the path against; with
    ``require_revocation`` (Exchange's behaviour) each such certificate must have a CRL distribution
    point and a valid, current CRL among ``crls``.
    """

    purpose: Purpose = "server"
    max_depth: int | None = None
    crls: Sequence[x509.CertificateRevocationList] = ()
    require_revocation: bool = False

    def __post_init__(self) -> None:
        if self.purpose not in _PURPOSE_EKU:
            raise UsageError(f"Unknown purpose {self.purpose!r}.", "Use 'server' or 'client'.")
        depth = self.max_depth
        if depth is not None and (not isinstance(depth, int) or not 0 <= depth <= 255):
            raise UsageError(f"max_depth {depth!r} is not a chain depth.", "Use an integer from 0 to 255.")
        crls = tuple(self.crls)
        if any(not isinstance(c, x509.CertificateRevocationList) for c in crls):
            raise UsageError("crls must be cryptography x509.CertificateRevocationList objects.",
                             "Load them with certkit.core.formats.load_crl.")
        object.__setattr__(self, "crls", crls)


_DEFAULT_OPTIONS = VerifyOptions()

#: Which name rule a call applies: the MX host's, the partner domain's (Domain Security), or none.
_Rule = Literal["host", "domain"] | None


@dataclass(slots=True)
class _Call:
    """One call of :func:`verify_chain`, checked and normalised."""

    leaf: x509.Certificate
    intermediates: list[x509.Certificate]
    anchors: AnchorSet
    at: _dt.datetime
    options: VerifyOptions
    rule: _Rule
    reference: str | None


def _check_call(leaf: object, intermediates: object, name: object, domain: object, options: object) -> None:
    if not isinstance(leaf, x509.Certificate):
        raise UsageError(f"verify_chain needs a cryptography x509.Certificate as the leaf, not {type(leaf).__name__}.",
                         "Load it with certkit.core.formats.load_certificates.")
    if isinstance(intermediates, x509.Certificate | str | bytes):
        raise UsageError("intermediates must be a sequence of certificates.", "Wrap a single one in a list.")
    if name is not None and domain is not None:
        raise UsageError("Give either a host name or a partner domain, not both.",
                         "Use name= for the MX host rule or domain= for the Domain Security rule.")
    if any(not isinstance(c, x509.Certificate) for c in intermediates):  # type: ignore[attr-defined]
        raise UsageError("intermediates must be cryptography x509.Certificate objects.",
                         "Load them with certkit.core.formats.load_certificates.")
    for label, value in (("name", name), ("domain", domain)):
        if value is not None and not isinstance(value, str):
            raise UsageError(f"{label} must be text, not {type(value).__name__}.", f"Pass {label}='fabrikam.com'.")
    if options is not None and not isinstance(options, VerifyOptions):
        raise UsageError(f"options must be a VerifyOptions, not {type(options).__name__}.",
                         "Pass options=VerifyOptions(purpose='client', crls=[...]).")


def _name_rule(name: str | None, domain: str | None) -> tuple[_Rule, str | None]:
    """The name rule and its reference name, normalised (see :func:`_reference`)."""
    if name is not None:
        return "host", _reference(name)
    if domain is not None:
        if _is_ip(domain):
            raise UsageError(f"{domain!r} is an IP address, not a partner domain.", "Use name= for addresses.")
        return "domain", _reference(domain)
    return None, None


def verify_chain(leaf: x509.Certificate, intermediates: Sequence[x509.Certificate] = (),
                 anchors: AnchorSource | Sequence[x509.Certificate | Anchor] | Iterable[x509.Certificate] = (),
                 *, name: str | None = None, domain: str | None = None, at: _dt.datetime | None = None,
                 options: VerifyOptions | None = None) -> VerificationResult:
    """Verify ``leaf`` (with the ``intermediates`` a peer sent, in any order) against ``anchors``.

    ``anchors``: certificates, an :class:`~certkit.core.trust.AnchorSet`, or anything with
    ``anchor_set()`` (a :class:`~certkit.adapters.truststore.TrustStore`). A pinned certificate (an
    anchor that is not a CA) validates as exactly itself.

    Name rules (mutually exclusive; neither = no name check):

    * ``name`` -- host rule (Postfix ``verify``, the MX host): a DNS subjectAltName equal to the name
      (case-insensitive) or a wildcard ``*.rest`` whose ``*`` stands for exactly the first label; an
      IP literal must equal an IP subjectAltName. The CN is not used.
    * ``domain`` -- Domain Security rule (Postfix ``secure`` with ``match=D:.D``): a DNS
      subjectAltName equal to the partner domain ``D`` or ending in ``.D`` (a host within it, any
      depth); a wildcard ``*.D``/``*.sub.D`` counts, with a ``name.wildcard`` warning. See
      :func:`domain_matches`.

    ``at``: an aware datetime (``None`` = now). ``options``: a :class:`VerifyOptions` for the purpose
    (server, the default, or client), the depth limit and revocation.

    Never raises for a certificate that fails validation: the answer is ``.ok`` and ``.findings``.
    Raises :class:`~certkit.errors.UsageError` (or :class:`~certkit.errors.InputError` for a name that
    is not a host name) only when called wrongly.
    """
    _check_call(leaf, intermediates, name, domain, options)
    opts = _DEFAULT_OPTIONS if options is None else options
    at = utcnow() if at is None else aware(at)
    rule, reference = _name_rule(name, domain)
    broken = extension_problem(leaf)
    if broken is not None:
        return _unparseable_leaf(leaf, broken, opts.purpose, at)
    # An intermediate whose extensions cannot be parsed can never be part of a valid path: leave it out.
    call = _Call(leaf, [c for c in intermediates if extension_problem(c) is None], as_anchor_set(anchors), at, opts,
                 rule, reference)
    verified, reason = _cryptography_verdict(call)
    if verified is not None:
        path = _Path(list(verified), "anchor", call.anchors.find(verified[-1]))
    else:
        path = _assemble(leaf, call.intermediates, call.anchors)
    findings = _explanation(call, path, verified is not None)
    if verified is None and not any(f.severity is Severity.ERROR for f in findings):
        # cryptography rejected the path for a reason certkit has no words of its own for.
        findings.append(Finding("chain.invalid", f"The path was rejected: {reason}.", subject=_who(leaf),
                                evidence={"reason": reason}))
    ok = verified is not None and not any(f.severity is Severity.ERROR for f in findings)
    return VerificationResult(ok=ok, chain=tuple(path.certs), findings=tuple(findings), anchor=path.anchor,
                              pinned=_pinned(path), purpose=opts.purpose, at=at, reference=reference, rule=rule,
                              reason=reason if verified is None else None)


def _unparseable_leaf(leaf: x509.Certificate, broken: str, purpose: str, at: _dt.datetime) -> VerificationResult:
    who = _who(leaf)
    return VerificationResult(ok=False, chain=(leaf,), purpose=purpose, at=at, reason=broken,
                              findings=(Finding("chain.invalid", f"{who} has an extension that cannot be parsed "
                                                f"({broken}).", subject=who, evidence={"reason": broken}),))


def _pinned(path: _Path) -> bool:
    return path.anchor is not None and len(path.certs) == 1


# ---------------------------------------------------------------------------------------------
# the verdict, from cryptography


def _cryptography_verdict(call: _Call) -> tuple[list[x509.Certificate] | None, str | None]:
    """The path cryptography built (leaf first), or ``None`` and its reason for refusing one."""
    try:
        store = call.anchors.store
    except ValueError as exc:  # an anchor cryptography cannot use
        return None, f"the trust anchors cannot be used ({exc})"
    if store is None:
        return None, "no trust anchors were given"
    builder = PolicyBuilder().store(store).time(call.at)
    if call.options.max_depth is not None:
        builder = builder.max_chain_depth(call.options.max_depth)
    # First with cryptography's Web PKI policies (fast); only a path refused for a reason private PKIs
    # commonly have (see _policies) is tried again with certkit's relaxed policies.
    reason: str | None = None
    for relaxed in (False, True):
        try:
            return _built_path(builder, call, relaxed), None
        except VerificationError as exc:
            reason = str(exc).removeprefix("validation failed: ")
            if not any(r in reason for r in _RELAXABLE):
                break
        except ValueError as exc:  # e.g. an extension cryptography cannot parse
            reason = str(exc)
            break
    return None, reason


def _built_path(builder: PolicyBuilder, call: _Call, relaxed: bool) -> list[x509.Certificate]:
    """cryptography's path for ``call`` with the Web PKI or the relaxed policies; raises when it finds none."""
    purpose = call.options.purpose
    policies = _policies(purpose, relaxed)
    if policies is not None:
        builder = builder.extension_policies(ca_policy=policies[0], ee_policy=policies[1])
    if purpose == "server":
        subject = _subject_for(call.leaf, call.rule, call.reference)
        return builder.build_server_verifier(subject).verify(call.leaf, call.intermediates)
    return builder.build_client_verifier().verify(call.leaf, call.intermediates).chain


# ---------------------------------------------------------------------------------------------
# the explanation, from certkit: everything that can be named, whatever the verdict


def _explanation(call: _Call, path: _Path, verified: bool) -> list[Finding]:
    findings = _certificate_findings(path, call.at)
    if not verified:
        findings += _depth_findings(path, call.options.max_depth)
        findings += _untrusted_findings(path, call.anchors)
    findings += _name_findings(call.leaf, call.rule, call.reference)
    findings += _eku_findings(call.leaf, call.options.purpose)
    if _pinned(path) and path.anchor is not None:
        findings.append(Finding("chain.pinned-leaf", f"{_who(call.leaf)} is trusted as a pinned certificate.",
                                subject=_who(call.leaf), evidence={"fingerprint_sha256": path.anchor.fingerprint}))
    opts = call.options
    if (opts.crls or opts.require_revocation) and (verified or path.end == "anchor"):
        findings += _crl_findings(path.certs, opts.crls, call.at, opts.require_revocation)
    return findings


def _certificate_findings(path: _Path, at: _dt.datetime) -> list[Finding]:
    """Each certificate's own faults: its validity period at ``at``, a weak key, a SHA-1 signature."""
    findings: list[Finding] = []
    last = len(path.certs) - 1
    for i, cert in enumerate(path.certs):
        is_anchor = path.anchor is not None and i == last
        role = "leaf" if i == 0 else "trust anchor" if is_anchor else "intermediate"
        findings += _validity_findings(cert, role, at)
        bits = weak_key_bits(cert)
        if bits is not None:
            findings.append(Finding("key.weak",
                                    f"The {role} {_who(cert)} has an RSA key of {bits} bits (minimum 2048).",
                                    subject=_who(cert), evidence={"role": role, "bits": bits}))
        # An anchor's self-signature is never checked (RFC 5280 6.1: trust comes from the store).
        if is_sha1_signed(cert) and not is_anchor:
            findings.append(Finding("sig.sha1", f"The {role} {_who(cert)} is signed with SHA-1.", subject=_who(cert),
                                    evidence={"role": role}))
    return findings


def _validity_findings(cert: x509.Certificate, role: str, at: _dt.datetime) -> list[Finding]:
    # Certificate times have whole seconds (RFC 5280 4.1.2.5); like cryptography, compare at that grain.
    at_s = at.replace(microsecond=0)
    not_after, not_before = cert.not_valid_after_utc, cert.not_valid_before_utc
    if at_s > not_after:
        return [Finding("cert.expired", f"The {role} {_who(cert)} expired {duration_text(at - not_after)} ago "
                        f"(notAfter {utc_text(not_after)}).", subject=_who(cert),
                        evidence={"role": role, "not_after": rfc3339(not_after),
                                  "seconds": int((at - not_after).total_seconds())})]
    if at_s < not_before:
        return [Finding("cert.not-yet-valid", f"The {role} {_who(cert)} becomes valid only in "
                        f"{duration_text(not_before - at)} (notBefore {utc_text(not_before)}).", subject=_who(cert),
                        evidence={"role": role, "not_before": rfc3339(not_before),
                                  "seconds": int((not_before - at).total_seconds())})]
    return []


def _depth_findings(path: _Path, max_depth: int | None) -> list[Finding]:
    """When every certificate was there and the path reaches (or heads for) a trust anchor, a limit on its
    length is the reason, not trust: say which one."""
    if path.end not in ("anchor", "too-deep"):
        return []
    findings: list[Finding] = []
    limit = DEFAULT_MAX_DEPTH if max_depth is None else max_depth
    count = _intermediate_count(path.certs, path.end)
    if path.end == "too-deep" or count > limit:
        findings.append(_too_deep(path, count, limit))
    return findings + _path_length_findings(path.certs)


def _too_deep(path: _Path, count: int, limit: int) -> Finding:
    leaf, last = path.certs[0], path.certs[-1]
    if path.end == "too-deep":
        detail = (f"The path from {_who(leaf)} has more than {count} intermediate CAs (certkit stopped "
                  f"following issuers at {_who(last)}), over the limit of {limit}.")
    else:
        detail = (f"The path from {_who(leaf)} to the trusted root {_who(last)} has {count} "
                  f"intermediate CA{'s' if count != 1 else ''}, over the limit of {limit}; the path is "
                  "complete and its root is trusted.")
    return Finding("chain.too-deep", detail, subject=_who(leaf),
                   evidence={"intermediates": count, "limit": limit, "reaches_anchor": path.end == "anchor"})


def _untrusted_findings(path: _Path, anchors: AnchorSet) -> list[Finding]:
    """Why a path that ends before a trust anchor is not trusted: self-signed, an untrusted root, or an
    issuer that was neither sent nor trusted (a missing intermediate when its organisation's root is)."""
    last = path.certs[-1]
    if path.end == "self-signed":
        if len(path.certs) == 1:
            return [Finding("chain.self-signed", f"{_who(last)} is self-signed and is not a trusted anchor here.",
                            subject=_who(last))]
        return [Finding("chain.unknown-issuer", f"The chain ends at the root {_who(last)}, which is not trusted here.",
                        subject=_who(last), evidence={"root": _who(last)})]
    if path.end != "missing":
        return []
    missing = last.issuer.rfc4514_string()
    related = set(organisations_of(last.issuer)) & anchors.organisations()
    if related and not is_self_signed(last):
        return [Finding("chain.missing-intermediate", f"The issuer of {_who(last)}, {missing}, was not sent and is "
                        "not in the store; a trusted root of the same organisation is, so an intermediate is "
                        "probably missing.", subject=_who(last), evidence={"issuer": missing})]
    return [Finding("chain.unknown-issuer", f"The issuer of {_who(last)}, {missing}, is not trusted here (not a "
                    "trust anchor, and not sent as an intermediate).", subject=_who(last),
                    evidence={"issuer": missing})]


def _name_findings(leaf: x509.Certificate, rule: _Rule, reference: str | None) -> list[Finding]:
    if reference is None:
        return []
    if rule == "host":
        if host_matches(leaf, reference):
            return []
        return [Finding("name.host-mismatch", f"{_who(leaf)} does not name {reference}; it names "
                        f"{', '.join(_names_text(leaf))}.", subject=_who(leaf),
                        evidence={"expected": reference, "names": _names_text(leaf)})]
    matched = domain_matches(leaf, reference)
    if matched is None:
        return [Finding("name.domain-mismatch", f"{_who(leaf)} names neither {reference} nor a host within it; it "
                        f"names {', '.join(_names_text(leaf))}.", subject=_who(leaf),
                        evidence={"expected": reference, "names": _names_text(leaf)})]
    if matched.startswith("*."):
        return [Finding("name.wildcard", f"{_who(leaf)} matches {reference} only through the wildcard {matched}.",
                        subject=_who(leaf), evidence={"wildcard": matched})]
    return []


def _eku_findings(leaf: x509.Certificate, purpose: str) -> list[Finding]:
    eku = eku_of(leaf)  # the leaf's extensions parse (checked first): no ValueError here
    if eku is None or _PURPOSE_EKU[purpose] in eku:
        return []
    code = "eku.no-server-auth" if purpose == "server" else "eku.no-client-auth"
    usages = ", ".join(getattr(o, "_name", o.dotted_string) for o in eku) or "(empty)"
    return [Finding(code, f"{_who(leaf)} may be used for {usages}, not as a TLS {purpose}.", subject=_who(leaf),
                    evidence={"eku": [o.dotted_string for o in eku]})]
