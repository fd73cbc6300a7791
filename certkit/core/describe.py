"""Plain-data descriptions of certificates, requests and CRLs (for ``inspect``, ``show`` and JSON)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from cryptography import x509

from certkit.core.findings import Side
from certkit.core.formats import sha1_thumbprint, sha256_fingerprint
from certkit.core.issuance import san_names
from certkit.core.keys import key_description
from certkit.core.lint import is_self_signed, lint_certificate
from certkit.core.trust import extension_problem, is_ca

__all__ = ["describe_certificate", "describe_crl", "describe_csr"]

_KU_FIELDS = ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment", "key_agreement",
              "key_cert_sign", "crl_sign")


def _eku(cert: x509.Certificate) -> list[str] | None:
    try:
        ext = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return None
    return [oid._name if oid._name != "Unknown OID" else oid.dotted_string for oid in ext]


def _key_usage(cert: x509.Certificate) -> list[str]:
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return []
    out = []
    for name in _KU_FIELDS:
        if getattr(ku, name):
            out.append("".join(w.title() if i else w for i, w in enumerate(name.split("_"))))
    return out


def _cdp(cert: x509.Certificate) -> list[str]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    except x509.ExtensionNotFound:
        return []
    return [str(n.value) for dp in ext for n in (dp.full_name or [])]


def describe_certificate(cert: x509.Certificate, *, at: dt.datetime | None = None, role: str = "certificate",
                         lint: bool = True) -> dict[str, Any]:
    """Everything an admin asks about a certificate, plus the domain-security lint for leaves."""
    info: dict[str, Any] = {
        "role": role,
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "serial": format(cert.serial_number, "x"),
        "not_before": cert.not_valid_before_utc,
        "not_after": cert.not_valid_after_utc,
        "key": key_description(cert.public_key()),
        "signature": cert.signature_algorithm_oid._name,
        "sha1": sha1_thumbprint(cert),
        "sha256": sha256_fingerprint(cert),
        "self_signed": is_self_signed(cert),
        "lint": None,
        "extension_error": extension_problem(cert),
    }
    if info["extension_error"] is None:
        info.update(sans=san_names(cert), eku=_eku(cert), key_usage=_key_usage(cert), is_ca=is_ca(cert), cdp=_cdp(cert))
    else:  # shown as it is: the lint says why no validator will accept it
        info.update(sans=[], eku=None, key_usage=[], is_ca=False, cdp=[])
    if lint and at is not None and not info["is_ca"]:
        info["lint"] = [f.to_dict() for f in lint_certificate(cert, at=at, side=Side.OURS)]
    return info


def describe_csr(csr: x509.CertificateSigningRequest) -> dict[str, Any]:
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        sans = [str(v) for v in san.get_values_for_type(x509.DNSName)] + [
            str(v) for v in san.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        sans = []
    return {"subject": csr.subject.rfc4514_string(), "sans": sans, "key": key_description(csr.public_key()),
            "signature_ok": csr.is_signature_valid}


def describe_crl(crl: x509.CertificateRevocationList, *, at: dt.datetime | None = None) -> dict[str, Any]:
    try:
        number: int | None = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        number = None
    revoked = []
    for entry in crl:
        try:
            name = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason.name
            head, *rest = name.split("_")
            reason = head + "".join(w.title() for w in rest)
        except x509.ExtensionNotFound:
            reason = "unspecified"
        revoked.append({"serial": format(entry.serial_number, "x"), "date": entry.revocation_date_utc,
                        "reason": reason})
    nxt = crl.next_update_utc
    return {"issuer": crl.issuer.rfc4514_string(), "number": number, "this_update": crl.last_update_utc,
            "next_update": nxt, "stale": bool(at and nxt and at >= nxt), "revoked": revoked}
