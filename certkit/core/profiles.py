"""Certificate profiles as data: which usages a certificate gets, and why.

A profile decides the extensions; a request (a CSR, a name on the command line) decides only the
names and the key. That is how ``certkit ca sign`` can accept a CSR from ``New-ExchangeCertificate``
without trusting whatever extensions it asks for.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, ObjectIdentifier

from certkit.errors import InputError

__all__ = ["PROFILES", "Profile", "ProfileName"]


class ProfileName(enum.StrEnum):
    """The certificate profiles ``certkit ca issue --profile`` offers."""

    TRANSPORT = "transport"
    SERVER = "server"
    CLIENT = "client"

    @classmethod
    def parse(cls, value: str | ProfileName) -> ProfileName:
        try:
            return cls(str(value).lower())
        except ValueError:
            raise InputError(f"Unknown profile {value!r}.", "Choose transport, server or client.") from None


@dataclass(frozen=True)
class Profile:
    """A profile: its name, its extended key usages, and what it is for."""

    name: ProfileName
    #: Extended key usages, in the order they appear in the certificate.
    eku: tuple[ObjectIdentifier, ...]
    description: str
    #: The kinds of subjectAltName entry the profile carries. A mail server is known by its host names and
    #: addresses; a CSR's e-mail, URI, directory or other names are not put into its certificate.
    san_types: tuple[type[x509.GeneralName], ...] = (x509.DNSName, x509.IPAddress)

    def carries(self, name: x509.GeneralName) -> bool:
        """True when a subjectAltName entry of this kind goes into certificates of this profile."""
        return isinstance(name, self.san_types)


PROFILES: dict[ProfileName, Profile] = {
    # An Edge is a TLS server for inbound mail and a TLS client for outbound mail, and Domain
    # Security validates the certificate in both roles: it needs both EKUs.
    ProfileName.TRANSPORT: Profile(
        ProfileName.TRANSPORT,
        (ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH),
        "SMTP transport (Domain Security): serverAuth + clientAuth",
    ),
    ProfileName.SERVER: Profile(ProfileName.SERVER, (ExtendedKeyUsageOID.SERVER_AUTH,), "TLS server only"),
    ProfileName.CLIENT: Profile(ProfileName.CLIENT, (ExtendedKeyUsageOID.CLIENT_AUTH,), "TLS client only"),
}
