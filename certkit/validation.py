"""Validating a peer's chain as an MTA does, revocation included: the one place that fetches CRLs for it.

:func:`certkit.core.verify.verify_chain` judges a path against CRLs it is given. Here the CRLs come
from the distribution points of the presented chain and of the path that was built (an intermediate
from the store may name its own), fetched through a ``crl_source`` (a :class:`CrlCache`'s ``get``:
each URL once per run), and the validator's rules decide what revocation means:

* ``exchange`` (Windows, Domain Security): every CA-issued certificate of the path needs a CRL
  distribution point and a current, valid CRL; "revoked" and "could not check" both fail, and are
  different findings (``revocation.revoked`` vs ``revocation.unreachable``, as ``RevocationCheckFailure``).
* ``postfix``: no revocation check decides anything; what was seen (revoked, unreachable, stale) is
  kept as information, and a missing distribution point is not even mentioned.
* ``exchange-online`` (an Exchange Online connector): revocation as ``exchange`` (its ``CertificateValidation``
  "performs certificate chain validation and revocation lists checks"); the name is the connector's rule (the
  subject CN or a DNS subjectAltName matches the certificate domain, ``*.D`` standing for D and every host within
  it: ``name.connector-mismatch``, shown by Exchange Online as ``4.7.320 ... SubjectMismatch``); and the chain must
  end at a public root (``chain.not-public`` for a managed, private one: Exchange Online has no store for it).

The probe, the pre-flight, the lab's sender and the lab's Exchange-like server all validate this way.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from cryptography import x509

from certkit.adapters.crlfetch import CrlFetch
from certkit.core.findings import Finding, Severity
from certkit.core.personality import validator_rules
from certkit.core.verify import (
    Purpose,
    VerificationResult,
    VerifyOptions,
    certificate_name_matches,
    certificate_names,
    crl_urls,
    verify_chain,
)

__all__ = ["VALIDATOR_NAMES", "CrlSource", "PeerValidation", "Validator", "validate_peer"]

Validator = Literal["exchange", "postfix", "exchange-online"]
#: Every validator, in the order the command line offers them.
VALIDATOR_NAMES: tuple[Validator, ...] = ("exchange", "postfix", "exchange-online")
#: Where CRLs come from: a URL in, a :class:`CrlFetch` out (``CrlCache(timeout=...).get``).
CrlSource = Callable[[str], CrlFetch]


@dataclass(frozen=True)
class PeerValidation:
    """The verdict, and the CRL downloads it rests on (for reports: which URL failed, when a CRL lapses)."""

    result: VerificationResult
    fetches: tuple[CrlFetch, ...]


def _subject(cert: x509.Certificate) -> str:
    """How the verifier names a certificate in a finding's ``subject``."""
    return cert.subject.rfc4514_string() or "(empty subject)"


def _ok_without_revocation(result: VerificationResult) -> bool:
    """Postfix's verdict: a path was built and there is no error except about revocation."""
    return result.reason is None and not any(
        f.severity is Severity.ERROR and not f.code.startswith("revocation.") for f in result.findings)


def validate_peer(leaf: x509.Certificate, intermediates: Sequence[x509.Certificate], anchors: Any, *,
                  crl_source: CrlSource, purpose: Purpose = "server", validator: Validator = "exchange",
                  name: str | None = None, domain: str | None = None, at: _dt.datetime | None = None,
                  crls: Sequence[x509.CertificateRevocationList] = ()) -> PeerValidation:
    """Validate ``leaf`` + ``intermediates`` (as the peer presented them) with ``validator``'s rules.

    ``crls`` are CRLs the caller already has (files); more are fetched from the distribution points.
    Name, purpose and anchors are as for :func:`~certkit.core.verify.verify_chain`. Never raises for a
    certificate that fails: the answer is in ``.result``.
    """
    # The revocation rule is the personality's (certkit.core.personality): Exchange refuses on a revoked
    # certificate and on a CRL it cannot check; Postfix checks no CRL at all.
    rules = validator_rules(validator)
    decides_revocation = rules.checks_revocation
    connector_name = None
    if rules.name_rule == "certificate-name":
        # The connector's own name rule replaces the verifier's: the caller's domain D is configured as "*.D".
        connector_name = name if name is not None else f"*.{domain}" if domain is not None else None
        name = domain = None
    presented = [leaf, *intermediates]
    urls = crl_urls(presented)
    fetches = [crl_source(u) for u in urls]

    def run() -> VerificationResult:
        found = [*crls, *(f.crl for f in fetches if f.crl is not None)]
        options = VerifyOptions(purpose=purpose, crls=found, require_revocation=True)
        return verify_chain(leaf, intermediates, anchors, name=name, domain=domain, at=at, options=options)

    result = run()
    more = [u for u in crl_urls(c for c in result.chain if c not in presented) if u not in urls]
    if more:
        urls += more
        fetches += [crl_source(u) for u in more]
        result = run()
    failed = [{"url": f.url, "error": f.error} for f in fetches if not f.ok]
    findings: list[Finding] = []
    changed = False
    for f in result.findings:
        seen = f
        if f.code == "revocation.unreachable" and failed:
            # Only the downloads of that certificate's own distribution points: the finding is about it.
            own = set(crl_urls(c for c in (*result.chain, *presented) if _subject(c) == f.subject))
            mine = [n for n in failed if n["url"] in own]
            if mine:
                why = "; ".join(f"{n['url']}: {n['error']}" for n in mine)
                f = replace(f, detail=f"{f.detail} Download failed: {why}.",
                            evidence={**f.evidence, "crl_fetch": mine})
        if not decides_revocation and f.code.startswith("revocation."):
            if f.code == "revocation.no-cdp" or (not urls and not crls):
                continue  # Postfix has no notion of it; with no CRL anywhere there is nothing to report
            f = replace(f, severity=Severity.INFO)
        changed = changed or f is not seen
        findings.append(f)
    if not decides_revocation:
        result = replace(result, findings=tuple(findings), ok=_ok_without_revocation(result))
    elif changed:  # (the usual case needs no copy)
        result = replace(result, findings=tuple(findings))
    if rules.name_rule == "certificate-name" or rules.public_roots_only:
        result = _connector_rules(result, leaf, connector_name, public_only=rules.public_roots_only)
    return PeerValidation(result, tuple(fetches))


def _connector_rules(result: VerificationResult, leaf: x509.Certificate, reference: str | None, *,
                     public_only: bool) -> VerificationResult:
    """Exchange Online's connector rules on top of the path's verdict: the certificate domain, and a public root."""
    extra: list[Finding] = []
    if reference is not None and not certificate_name_matches(leaf, reference):
        names = certificate_names(leaf)
        extra.append(Finding("name.connector-mismatch",
                             f"{_subject(leaf)} names {', '.join(names) or 'nothing'}: neither its subject CN nor a "
                             f"DNS subjectAltName matches the connector's certificate domain {reference}.",
                             subject=_subject(leaf), evidence={"reference": reference, "names": names}))
    anchor = result.anchor
    if public_only and anchor is not None and anchor.origin != "certifi":
        root = _subject(anchor.cert)
        extra.append(Finding("chain.not-public",
                             f"The chain ends at {root}, a root trusted here (origin {anchor.origin}) that is not "
                             "one of the public CAs Exchange Online trusts.", subject=root,
                             evidence={"anchor": anchor.fingerprint, "origin": anchor.origin}))
    if not extra:
        return result
    return replace(result, findings=(*result.findings, *extra), ok=False)
