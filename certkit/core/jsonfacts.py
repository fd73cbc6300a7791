"""The JSON contract's facts: one name and one format for each fact, in every ``--json`` document and ``to_dict()``.

A thumbprint is ``thumbprint_sha1`` (40 upper-case hex digits, as Exchange's Get-ExchangeCertificate shows it),
a fingerprint ``fingerprint_sha256`` (64 upper-case hex digits), a serial ``serial`` (upper-case hex, no
separators, an even number of digits: what ``openssl x509 -serial`` and Windows print), names are RFC 4514
strings, SAN DNS names are ``dns_names``, and every time is RFC 3339 in UTC with ``Z``, to the second
(``2026-12-02T03:13:13Z``). docs/json.md documents the contract; certkit/schemas/ holds one JSON Schema per
document. Every document carries ``schema_version``; a field is never renamed or removed without a new one.
"""

from __future__ import annotations

import datetime as _dt
import re
from typing import Any

from cryptography import x509

from certkit.core.extensions import san_dns_names, san_ip_addresses
from certkit.core.formats import sha1_thumbprint, sha256_fingerprint

__all__ = [
    "RFC3339_PATTERN",
    "certificate_facts",
    "rfc3339",
    "rfc3339_or_none",
    "serial_hex",
]

#: What every time in a JSON document matches.
RFC3339_PATTERN = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$")


def rfc3339(at: _dt.datetime) -> str:
    """``at`` as RFC 3339 UTC with ``Z``, to the second (``2026-12-02T03:13:13Z``).

    A naive datetime is taken as UTC: certkit's own naive values (SQLite columns, cryptography's
    ``*_utc`` fallbacks) are all UTC.
    """
    if at.tzinfo is None or at.utcoffset() is None:
        at = at.replace(tzinfo=_dt.UTC)
    return at.astimezone(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def rfc3339_or_none(at: _dt.datetime | None) -> str | None:
    """:func:`rfc3339`, with ``None`` for no time."""
    return None if at is None else rfc3339(at)


def serial_hex(serial: int) -> str:
    """A serial number as Windows and ``openssl x509 -serial`` print it: upper-case hex, no separators, padded
    to an even number of digits (``08C95D62...``)."""
    text = format(serial, "X")
    return text if len(text) % 2 == 0 else "0" + text


def _san_texts(cert: x509.Certificate) -> tuple[list[str], list[str]]:
    """The SAN's DNS names and IP addresses as text, in order (both empty without a readable SAN)."""
    try:
        return san_dns_names(cert), [str(ip) for ip in san_ip_addresses(cert)]
    except ValueError:  # extensions that cannot be parsed (inspect shows why)
        return [], []


def certificate_facts(cert: x509.Certificate) -> dict[str, Any]:
    """The facts every document names the same way: ``subject``, ``issuer``, ``serial``, ``thumbprint_sha1``,
    ``fingerprint_sha256``, ``not_before``, ``not_after``, ``dns_names`` and ``ip_addresses``."""
    dns_names, ip_addresses = _san_texts(cert)
    return {
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "serial": serial_hex(cert.serial_number),
        "thumbprint_sha1": sha1_thumbprint(cert),
        "fingerprint_sha256": sha256_fingerprint(cert),
        "not_before": rfc3339(cert.not_valid_before_utc),
        "not_after": rfc3339(cert.not_valid_after_utc),
        "dns_names": dns_names,
        "ip_addresses": ip_addresses,
    }
