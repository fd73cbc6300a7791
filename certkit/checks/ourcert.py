"""Our certificate as the partner's validator will judge it: one set of checks for the probe and the pre-flight.

The pre-flight's first step (:mod:`certkit.checks.preflight`) and the probe's check before it connects
(:func:`check_our_certificate`, :mod:`certkit.checks.probe`) both judge the certificate we present with
these functions:

* :func:`our_chain_verdict`: our chain as a TLS client certificate, up to a root we know (the trust store
  used, plus the roots in our own chain), with the validator's revocation rules
  (:func:`certkit.validation.validate_peer`: under ``exchange`` our CRL is fetched from our CDP and a
  revoked certificate, or one whose CRL cannot be fetched, fails; ``postfix`` checks no CRL). Expiry and
  clientAuth come with it.
* :func:`our_domain_findings`: the Domain Security name rule for our domain(s) -- the receiving Exchange
  checks that the sender's certificate names the sender's domain (shared/docs/domain.md section 2).
* :func:`crls_expiring`: our CRLs close to their nextUpdate.

Nothing here prints; every finding is ``side=ours``.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from certkit.adapters.crlfetch import CrlFetch
from certkit.core.extensions import eku_of, san_names
from certkit.core.findings import Finding, Severity, Side
from certkit.core.formats import sha256_fingerprint
from certkit.core.personality import validator_rules
from certkit.core.text import duration_text
from certkit.core.trust import AnchorSet, extension_problem, is_self_signed
from certkit.core.verify import VerificationResult, VerifyOptions, domain_matches, verify_chain
from certkit.validation import Validator, validate_peer

__all__ = [
    "CRL_WARNING",
    "OurCertificate",
    "check_our_certificate",
    "crls_expiring",
    "once_each",
    "our_chain_verdict",
    "our_domain_findings",
    "self_signed_warning",
]

#: A CRL whose nextUpdate is nearer than this (or than half its lifetime) is a warning.
CRL_WARNING = _dt.timedelta(days=2)

#: Where the probe's remedies for our chain differ from the catalogue's (written for the partner's chain).
_PROBE_REMEDY = {
    "chain.unknown-issuer": "Give the probe our root so that it can follow our chain: --as NAME with --home (our "
                            "CA's root), or add the root to the trust store (certkit trust add ROOT.crt); and make "
                            "sure the partner imports that root (certkit config partner-kit).",
    "chain.missing-intermediate": "Our Edge must send the intermediates with its certificate: put them after the "
                                  "leaf in --client-cert (certkit ca issue writes <fqdn>.chain.pem) and install "
                                  "the whole chain on the Edge.",
    "chain.self-signed": "Give the partner this exact certificate to trust (certkit config partner-kit), again at "
                         "every renewal; or better, issue a transport certificate from our CA (certkit ca issue FQDN "
                         "--accepted-domain DOMAIN) and give the partner our root.",
}

_SERVER_AUTH = ExtendedKeyUsageOID.SERVER_AUTH
_ANY = ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE


def as_ours(f: Finding) -> Finding:
    """``f`` with ``side=ours`` (the verifier and the catalogue speak of the peer's certificate)."""
    return f if f.side is Side.OURS else replace(f, side=Side.OURS)


def our_chain_verdict(cert: x509.Certificate, chain: Sequence[x509.Certificate], anchors: AnchorSet,
                      at: _dt.datetime, validator: Validator,
                      crl_source: Callable[[str], CrlFetch] | None) -> tuple[VerificationResult, tuple[CrlFetch, ...]]:
    """Our certificate as a TLS client, up to a root: our own chain's roots and ``anchors`` count; a self-signed
    certificate is pinned (and has no CRL to fetch). CRLs come from ``crl_source`` (a ``CrlCache``'s ``get``);
    ``None``: no CRL is fetched and revocation is not judged (what a Postfix partner does)."""
    own_roots = [c for c in chain if is_self_signed(c)]
    if is_self_signed(cert):
        own_roots.append(cert)
    trust = anchors.union(AnchorSet.of(own_roots, origin="our chain")) if own_roots else anchors
    inters = [c for c in chain if not is_self_signed(c)]
    if is_self_signed(cert) or crl_source is None:
        result = verify_chain(cert, inters, trust, at=at, options=VerifyOptions(purpose="client"))
        return replace(result, findings=tuple(f for f in result.findings if not f.code.startswith("revocation."))), ()
    check = validate_peer(cert, inters, trust, crl_source=crl_source, purpose="client", validator=validator, at=at)
    return check.result, check.fetches


def our_domain_findings(cert: x509.Certificate, domains: Sequence[str]) -> list[Finding]:
    """The Domain Security name rule for each of our ``domains``: named itself, or a host within it (a warning:
    Microsoft's advice is to list the domain itself in the SAN)."""
    who = cert.subject.rfc4514_string()
    sans = [n.lower() for n in san_names(cert)]
    out: list[Finding] = []
    for domain in domains:
        matched = domain_matches(cert, domain)
        if matched is None:
            out.append(Finding("name.domain-mismatch", f"The certificate names neither {domain} nor a host within "
                               f"it (it names {', '.join(sans) or 'nothing'}); the partner's Edge checks our domain "
                               "against its TLSReceiveDomainSecureList.", subject=who, side=Side.OURS,
                               evidence={"expected": domain, "names": sans}))
        elif domain not in sans:
            out.append(Finding("name.domain-not-listed", f"{domain} is matched only through {matched}; Microsoft's "
                               f"advice is to list the domain {domain} itself in the SAN.", subject=who,
                               side=Side.OURS, evidence={"expected": domain}))
    return out


def self_signed_warning(cert: x509.Certificate) -> Finding:
    """A self-signed certificate of ours: the partner must pin exactly it."""
    return Finding("chain.self-signed", "Our certificate is self-signed: the partner must pin this exact "
                   "certificate (import it into Cert:\\LocalMachine\\Root), and pin it again at every "
                   "renewal. A CA-signed certificate is better.", subject=cert.subject.rfc4514_string(),
                   side=Side.OURS, severity=Severity.WARNING)


def crls_expiring(fetches: Sequence[CrlFetch], at: _dt.datetime) -> list[Finding]:
    """Our CRLs near their nextUpdate: one not republished in time fails every certificate of its CA."""
    out: list[Finding] = []
    for fetch in fetches:
        crl = fetch.crl
        if crl is None or crl.next_update_utc is None or crl.next_update_utc <= at:
            continue
        left = crl.next_update_utc - at
        lifetime = crl.next_update_utc - crl.last_update_utc
        if left < max(CRL_WARNING, lifetime / 2) and left < CRL_WARNING * 4:
            out.append(Finding("revocation.crl-expiring", f"Our CRL at {fetch.url} expires in {duration_text(left)} "
                               f"(nextUpdate {crl.next_update_utc:%Y-%m-%d %H:%M}Z).", subject=fetch.url,
                               side=Side.OURS))
    return out


def once_each(findings: Sequence[Finding]) -> list[Finding]:
    """One finding per (code, subject): the lint and the verifier see some things twice (EKU, expiry, CDP).
    Name findings are kept each: they differ by the name expected."""
    seen: set[tuple[str, str | None]] = set()
    unique: list[Finding] = []
    for f in findings:
        if not f.code.startswith("name."):
            if (f.code, f.subject) in seen:
                continue
            seen.add((f.code, f.subject))
        unique.append(f)
    return unique


@dataclass(frozen=True)
class OurCertificate:
    """The certificate we present, judged as the partner's ``validator`` will judge it, before connecting.

    ``domain``: our (the sender's) domain the name rule was checked against (``None``: not checked -- the
    validator does not apply it, or there is no sender domain); ``chain``: the path built to our root;
    ``fetches``: our CRL downloads.
    """

    cert: x509.Certificate
    validator: Validator
    domain: str | None
    findings: tuple[Finding, ...]
    chain: tuple[x509.Certificate, ...]
    fetches: tuple[CrlFetch, ...]

    @property
    def errors(self) -> tuple[Finding, ...]:
        """The findings that make the partner refuse our certificate."""
        return tuple(f for f in self.findings if f.severity is Severity.ERROR)

    @property
    def ok(self) -> bool:
        """No error: the partner's validator would accept our certificate (as far as we can tell from here)."""
        return not self.errors

    def remedy(self, f: Finding) -> str:
        """What to do about ``f``: the catalogue's remedy, or ours where the catalogue speaks of the partner's chain."""
        return _PROBE_REMEDY.get(f.code, f.entry.remedy)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (the ``our_certificate`` object of ``certkit/schemas/probe.schema.json``)."""
        return {
            "subject": self.cert.subject.rfc4514_string(),
            "fingerprint_sha256": sha256_fingerprint(self.cert),
            "validator": self.validator,
            "domain": self.domain,
            "ok": self.ok,
            "chain": [c.subject.rfc4514_string() for c in self.chain],
            "crls": [{"url": f.url, "ok": f.ok, "error": f.error} for f in self.fetches],
            "findings": [{**f.to_dict(), "remedy": self.remedy(f)} for f in self.findings],
        }


def check_our_certificate(cert: x509.Certificate, chain: Sequence[x509.Certificate], anchors: AnchorSet, *,
                          at: _dt.datetime, validator: Validator, crl_source: Callable[[str], CrlFetch],
                          domain: str | None) -> OurCertificate:
    """Judge the certificate we present (``cert``, with the intermediates ``chain`` we send) as the partner's
    ``validator`` will: expiry, clientAuth and serverAuth, revocation through our CDP (``exchange``; Postfix
    checks no CRL, so under ``postfix`` none is fetched), the Domain Security name rule for our ``domain``
    (the sender's; ``exchange`` only), and a chain to our root (``anchors`` plus the roots in ``chain``) in
    which every intermediate is sent.

    We cannot know the partner's store: a chain that ends at an issuer unknown here is a warning (we could not
    follow it), not an error; an intermediate missing from what we send is an error. Never raises for what it
    finds.
    """
    rules = validator_rules(validator)
    # Postfix checks no CRL: nothing is fetched, and nothing about revocation is said.
    result, fetches = our_chain_verdict(cert, chain, anchors, at, validator,
                                        crl_source if rules.checks_revocation else None)
    out = [_unknown_root_warning(f) if f.code == "chain.unknown-issuer" else as_ours(f)
           for f in result.findings if f.code != "chain.pinned-leaf"]
    # An extension that cannot be parsed is the verifier's chain.invalid: no EKU or name to read.
    readable = extension_problem(cert) is None
    if readable:
        out += _no_server_auth(cert)
    if is_self_signed(cert):
        out.append(self_signed_warning(cert))
    # Exchange's Domain Security rule for the sender's domain; Postfix checks no name of a client certificate,
    # and an Exchange Online connector's TlsSenderCertificateName is not known here.
    checked = domain if rules.name_rule == "domain-security" else None
    if checked is not None and readable:
        out += our_domain_findings(cert, [checked])
    out += crls_expiring(fetches, at)
    return OurCertificate(cert, validator, checked, tuple(once_each(out)), tuple(result.chain), tuple(fetches))


def _no_server_auth(cert: x509.Certificate) -> list[Finding]:
    """An Edge is a TLS server for the mail the partner sends us: its transport certificate needs serverAuth too."""
    eku = eku_of(cert)
    if eku is None or _SERVER_AUTH in eku or _ANY in eku:
        return []
    return [Finding("eku.no-server-auth", "Our certificate's EKU lacks serverAuth: the partner's Edge refuses it "
                    "when it delivers to us.", subject=cert.subject.rfc4514_string(), side=Side.OURS)]


def _unknown_root_warning(f: Finding) -> Finding:
    return replace(f, side=Side.OURS, severity=Severity.WARNING,
                   detail=f"{f.detail} The probe could not follow our chain to a root it knows; the partner must "
                   "trust our root.")
