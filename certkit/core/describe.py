"""Plain-data descriptions of certificates, requests and CRLs (for ``inspect``, ``show`` and JSON).

They use the JSON contract's names and formats (:mod:`certkit.core.jsonfacts`, docs/json.md)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from cryptography import x509

from certkit.core.extensions import eku_of, extension_value, key_usage_of, san_dns_names, san_ip_addresses
from certkit.core.findings import Side
from certkit.core.jsonfacts import certificate_facts, rfc3339, rfc3339_or_none, serial_hex
from certkit.core.keys import key_description
from certkit.core.lint import is_self_signed, lint_certificate
from certkit.core.text import camel_case
from certkit.core.trust import extension_problem, is_ca

__all__ = ["describe_certificate", "describe_crl", "describe_csr"]

_KU_FIELDS = ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment", "key_agreement",
              "key_cert_sign", "crl_sign")


def _eku(cert: x509.Certificate) -> list[str] | None:
    ext = eku_of(cert)
    if ext is None:
        return None
    return [oid._name if oid._name != "Unknown OID" else oid.dotted_string for oid in ext]


def _key_usage(cert: x509.Certificate) -> list[str]:
    ku = key_usage_of(cert)
    if ku is None:
        return []
    return [camel_case(name) for name in _KU_FIELDS if getattr(ku, name)]



def _cdp(cert: x509.Certificate) -> list[str]:
    ext = extension_value(cert, x509.CRLDistributionPoints)
    return [str(n.value) for dp in ext or () for n in (dp.full_name or [])]


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
    return {"subject": csr.subject.rfc4514_string(), "dns_names": san_dns_names(csr),
            "ip_addresses": [str(ip) for ip in san_ip_addresses(csr)], "key": key_description(csr.public_key()),
            "signature_ok": csr.is_signature_valid}


def describe_crl(crl: x509.CertificateRevocationList, *, at: dt.datetime | None = None) -> dict[str, Any]:
    crl_number = extension_value(crl, x509.CRLNumber)
    number = None if crl_number is None else crl_number.crl_number
    revoked = []
    for entry in crl:
        crl_reason = extension_value(entry, x509.CRLReason)
        reason = "unspecified" if crl_reason is None else camel_case(crl_reason.reason.name)
        revoked.append({"serial": serial_hex(entry.serial_number), "revoked_at": rfc3339(entry.revocation_date_utc),
                        "reason": reason})
    nxt = crl.next_update_utc
    return {"issuer": crl.issuer.rfc4514_string(), "number": number, "this_update": rfc3339(crl.last_update_utc),
            "next_update": rfc3339_or_none(nxt), "stale": bool(at and nxt and at >= nxt), "revoked": revoked}
