"""Host names and subject alternative names as mail admins type them.

RFC 1035/1123 host names: labels of letters, digits and hyphens, 1..63 octets each, at most 253 in
all. Internationalised names are converted to A-labels (``xn--``) before they enter a certificate,
because RFC 5280 SANs are IA5String.
"""

from __future__ import annotations

import ipaddress
import re

from cryptography import x509

from certkit.errors import InputError

__all__ = ["dns_name", "general_name", "is_ip_address", "parse_san"]

_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


def is_ip_address(value: str) -> bool:
    """True when ``value`` is an IPv4 or IPv6 address literal."""
    try:
        ipaddress.ip_address(value.strip("[]"))
    except ValueError:
        return False
    return True


def _to_alabel(label: str, whole: str) -> str:
    if label.isascii():
        return label
    try:
        return label.encode("idna").decode("ascii")
    except UnicodeError:
        raise InputError(
            f"{whole!r} is not a valid internationalised host name (label {label!r} cannot be converted).",
            "Check the spelling, or give the name in its xn-- (A-label) form.",
        ) from None


def dns_name(name: str, *, allow_wildcard: bool = False) -> str:
    """Return ``name`` as a lower-case A-label host name, or raise :class:`InputError` saying why not."""
    if not isinstance(name, str):
        raise InputError(f"A host name must be text, not {type(name).__name__}.")
    raw = name.strip()
    if raw.endswith("."):
        raw = raw[:-1]
    if not raw:
        raise InputError("The host name is empty.", "Give a fully qualified name such as mail.contoso.com.")
    if any(c.isspace() for c in raw):
        raise InputError(f"{name!r} is not a valid host name: it contains a space.",
                         "Remove the space; host names are letters, digits, hyphens and dots.")
    labels = raw.split(".")
    out: list[str] = []
    for i, label in enumerate(labels):
        if label == "*" and i == 0:
            if not allow_wildcard:
                raise InputError(f"{name!r} is a wildcard name, which is not allowed here.",
                                 "Domain Security needs the real host and domain names; name them explicitly.")
            out.append("*")
            continue
        if not label:
            raise InputError(f"{name!r} is not a valid host name: it has an empty label (two dots in a row).",
                             "Remove the extra dot.")
        alabel = _to_alabel(label, name).lower()
        if len(alabel) > 63:
            raise InputError(
                f"{name!r} is not a valid host name: the label {label[:20]!r}... is {len(alabel)} characters "
                "long, over the limit of 63.",
                "Shorten that part of the name.",
            )
        if "_" in alabel:
            raise InputError(f"{name!r} is not a valid host name: it contains an underscore.",
                             "Host names in certificates may hold only letters, digits and hyphens.")
        if not _LABEL.match(alabel):
            raise InputError(
                f"{name!r} is not a valid host name: the label {label!r} has a character that is not a letter, "
                "digit or hyphen, or starts or ends with a hyphen.",
                "Use letters, digits and inner hyphens only.",
            )
        out.append(alabel)
    result = ".".join(out)
    if len(result) > 253:
        raise InputError(f"The host name is {len(result)} characters long, over the limit of 253.",
                         "Use a shorter name.")
    return result


def general_name(value: str) -> x509.GeneralName:
    """A SAN entry for a bare value: an IP address literal or a DNS name."""
    if is_ip_address(value):
        return x509.IPAddress(ipaddress.ip_address(value.strip("[]")))
    return x509.DNSName(dns_name(value))


def parse_san(spec: str) -> x509.GeneralName:
    """Parse ``DNS:name`` or ``IP:address`` (the form ``--san`` takes); a bare value is guessed."""
    kind, sep, value = spec.partition(":")
    if not sep or kind.upper() not in {"DNS", "IP"}:
        if is_ip_address(spec):
            return general_name(spec)
        if ":" not in spec:
            return x509.DNSName(dns_name(spec))
        raise InputError(f"{spec!r} is not a SAN entry certkit understands.",
                         "Write DNS:mail.contoso.com or IP:192.0.2.25.")
    if kind.upper() == "IP":
        try:
            return x509.IPAddress(ipaddress.ip_address(value.strip("[]")))
        except ValueError:
            raise InputError(f"{value!r} is not an IP address.", "Write IP:192.0.2.25 or IP:2001:db8::25.") from None
    return x509.DNSName(dns_name(value))
