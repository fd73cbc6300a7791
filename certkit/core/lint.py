"""The domain-security lint: what in a certificate will make Domain Security fail, before it does.

Checks (each a catalogue finding, side = ours): missing clientAuth or serverAuth, RSA below 2048,
a non-RSA key (Exchange 2010 supports RSA only), a SHA-1 signature, wildcard names, no CRL
distribution point on a CA-signed certificate, expired, or expiring within 30 days.
"""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from certkit.core.extensions import eku_of, extension_value, san_names
from certkit.core.findings import Finding, Side
from certkit.core.keys import MIN_RSA_BITS, key_description
from certkit.core.trust import extension_problem, is_ca

__all__ = ["EXPIRY_WARNING", "is_self_signed", "lint_certificate"]

EXPIRY_WARNING = dt.timedelta(days=30)


def is_self_signed(cert: x509.Certificate) -> bool:
    """True when the certificate's issuer is its subject and its own key verifies its signature."""
    if cert.issuer != cert.subject:
        return False
    try:
        cert.verify_directly_issued_by(cert)
    except Exception:
        return False
    return True


def lint_certificate(cert: x509.Certificate, *, at: dt.datetime, side: Side = Side.OURS,
                     exchange2010: bool = True) -> list[Finding]:
    """Every domain-security problem in ``cert`` (a leaf), as findings; an empty list means none found."""
    subject = cert.subject.rfc4514_string()
    out: list[Finding] = []
    broken = extension_problem(cert)
    if broken is not None:
        return [Finding("chain.invalid", f"The certificate has an extension that cannot be parsed ({broken}); "
                        "no validator will accept it.", subject=subject, side=side, evidence={"reason": broken})]
    if is_ca(cert):
        return out
    eku = eku_of(cert)  # None: RFC 5280's "any purpose"
    if eku is not None and ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE not in eku:
        if ExtendedKeyUsageOID.CLIENT_AUTH not in eku:
            out.append(Finding("eku.no-client-auth", "The certificate's EKU lacks clientAuth: the receiving Edge "
                               "rejects it when we send.", subject=subject, side=side))
        if ExtendedKeyUsageOID.SERVER_AUTH not in eku:
            out.append(Finding("eku.no-server-auth", "The certificate's EKU lacks serverAuth: sending Edges reject "
                               "it when they deliver to us.", subject=subject, side=side))
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            out.append(Finding("key.weak", f"The key is RSA {key.key_size}, below {MIN_RSA_BITS} bits.",
                               subject=subject, side=side))
    elif exchange2010:
        out.append(Finding("key.not-rsa", f"The key is {key_description(key)}; Exchange 2010 supports RSA keys only.",
                           subject=subject, side=side))
    algo = cert.signature_hash_algorithm
    if algo is not None and algo.name == "sha1":
        out.append(Finding("sig.sha1", "The certificate is signed with SHA-1.", subject=subject, side=side))
    wild = [n for n in san_names(cert) if n.startswith("*")]
    cn = [str(a.value) for a in cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)]
    wild += [n for n in cn if n.startswith("*") and n not in wild]
    if wild:
        out.append(Finding("name.wildcard", f"Wildcard name(s): {', '.join(wild)}.", subject=subject, side=side))
    if not is_self_signed(cert) and extension_value(cert, x509.CRLDistributionPoints) is None:
        out.append(Finding("revocation.no-cdp", "The CA-signed certificate has no CRL distribution point.",
                           subject=subject, side=side))
    if at >= cert.not_valid_after_utc:
        out.append(Finding("cert.expired", f"Expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M}Z.",
                           subject=subject, side=side))
    elif cert.not_valid_after_utc - at <= EXPIRY_WARNING:
        days = (cert.not_valid_after_utc - at).days
        out.append(Finding("cert.expiring-soon", f"Expires in {days} days ({cert.not_valid_after_utc:%Y-%m-%d}).",
                           subject=subject, side=side))
    if at < cert.not_valid_before_utc:
        out.append(Finding("cert.not-yet-valid", f"Not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M}Z.",
                           subject=subject, side=side))
    return out
