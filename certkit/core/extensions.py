"""Reading extensions: "the extension's value, or ``None`` when it is absent", written once.

Every reader here treats a missing extension as absent (RFC 5280: no EKU means any purpose, no SAN means
no names). An extension that cannot be parsed raises :class:`ValueError` from cryptography as before;
callers that must survive such a certificate check :func:`certkit.core.trust.extension_problem` first.
"""

from __future__ import annotations

import ipaddress
from typing import Protocol, TypeVar

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

__all__ = [
    "allows_client_auth",
    "eku_of",
    "extension_value",
    "key_usage_of",
    "san_dns_identifiers",
    "san_dns_names",
    "san_ip_addresses",
    "san_names",
]

_E = TypeVar("_E", bound=x509.ExtensionType)


class _HasExtensions(Protocol):
    """A certificate, a request, a CRL or a CRL entry."""

    @property
    def extensions(self) -> x509.Extensions: ...


def extension_value(holder: _HasExtensions, kind: type[_E]) -> _E | None:
    """The value of ``holder``'s extension of type ``kind``, or ``None`` when it has none."""
    try:
        return holder.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def san_dns_names(holder: _HasExtensions) -> list[str]:
    """The DNS names of the subjectAltName, as carried (no SAN = no names)."""
    san = extension_value(holder, x509.SubjectAlternativeName)
    return [] if san is None else list(san.get_values_for_type(x509.DNSName))


def san_dns_identifiers(holder: _HasExtensions) -> list[str]:
    """The DNS names of the subjectAltName as names are compared: lower case, no trailing dot."""
    return [n.lower().rstrip(".") for n in san_dns_names(holder)]


def san_ip_addresses(holder: _HasExtensions) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The IP addresses of the subjectAltName (no SAN = none)."""
    san = extension_value(holder, x509.SubjectAlternativeName)
    if san is None:
        return []
    return [ip for ip in san.get_values_for_type(x509.IPAddress)
            if isinstance(ip, ipaddress.IPv4Address | ipaddress.IPv6Address)]


def san_names(holder: _HasExtensions) -> list[str]:
    """The DNS and IP names in the subjectAltName, as text: DNS names first, then IP addresses."""
    san = extension_value(holder, x509.SubjectAlternativeName)
    if san is None:
        return []
    return [*san.get_values_for_type(x509.DNSName), *(str(ip) for ip in san.get_values_for_type(x509.IPAddress))]


def eku_of(cert: x509.Certificate) -> x509.ExtendedKeyUsage | None:
    """The extended key usage, or ``None`` when the certificate has none (RFC 5280: any purpose)."""
    return extension_value(cert, x509.ExtendedKeyUsage)


def key_usage_of(cert: x509.Certificate) -> x509.KeyUsage | None:
    """The keyUsage extension, or ``None`` when the certificate has none."""
    return extension_value(cert, x509.KeyUsage)


def allows_client_auth(cert: x509.Certificate) -> bool:
    """Whether the certificate may be a TLS client's: no EKU at all, clientAuth, or anyExtendedKeyUsage."""
    eku = eku_of(cert)
    return eku is None or ExtendedKeyUsageOID.CLIENT_AUTH in eku or ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE in eku
