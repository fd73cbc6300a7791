"""Plain-data descriptions of certificates, requests and CRLs (for ``inspect``, ``show`` and JSON).

They use the JSON contract's names and formats (:mod:`certkit.core.jsonfacts`, docs/json.md)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from cryptography import x509

from certkit.core.findings import Side
from certkit.core.jsonfacts import certificate_facts, rfc3339, rfc3339_or_none, serial_hex
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
    facts = certificate_facts(cert)
    info: dict[str, Any] = {
        "role": role,
        "subject": facts["subject"],
        "issuer": facts["issuer"],
        "serial": facts["serial"],
        "not_before": facts["not_before"],
        "not_after": facts["not_after"],
        "key": key_description(cert.public_key()),
        "signature": cert.signature_algorithm_oid._name,
        "thumbprint_sha1": facts["thumbprint_sha1"],
        "fingerprint_sha256": facts["fingerprint_sha256"],
        "self_signed": is_self_signed(cert),
        "lint": None,
        "extension_error": extension_problem(cert),
    }
    if info["extension_error"] is None:
        info.update(dns_names=facts["dns_names"], ip_addresses=facts["ip_addresses"], eku=_eku(cert),
                    key_usage=_key_usage(cert), is_ca=is_ca(cert), cdp=_cdp(cert))
    else:  # shown as it is: the lint says why no validator will accept it
        info.update(dns_names=[], ip_addresses=[], eku=None, key_usage=[], is_ca=False, cdp=[])
    if lint and at is not None and not info["is_ca"]:
        info["lint"] = [f.to_dict() for f in lint_certificate(cert, at=at, side=Side.OURS)]
    return info


def describe_csr(csr: x509.CertificateSigningRequest) -> dict[str, Any]:
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns_names = [str(v) for v in san.get_values_for_type(x509.DNSName)]
        ip_addresses = [str(v) for v in san.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        dns_names, ip_addresses = [], []
    return {"subject": csr.subject.rfc4514_string(), "dns_names": dns_names, "ip_addresses": ip_addresses,
            "key": key_description(csr.public_key()), "signature_ok": csr.is_signature_valid}


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
        revoked.append({"serial": serial_hex(entry.serial_number), "revoked_at": rfc3339(entry.revocation_date_utc),
                        "reason": reason})
    nxt = crl.next_update_utc
    return {"issuer": crl.issuer.rfc4514_string(), "number": number, "this_update": rfc3339(crl.last_update_utc),
            "next_update": rfc3339_or_none(nxt), "stale": bool(at and nxt and at >= nxt), "revoked": revoked}
