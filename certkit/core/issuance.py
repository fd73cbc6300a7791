"""Building and signing certificates and CRLs: pure functions over ``cryptography`` objects.

No files, no index, no clock: the caller passes the time and the serial. :mod:`certkit.ca` puts
these together with the CA home.
"""

from __future__ import annotations

import datetime as dt
import functools
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

from certkit.clock import aware
from certkit.core.extensions import extension_value, san_dns_names
from certkit.core.keys import PrivateKey, PublicKey, check_key_strength
from certkit.core.names import dns_name, general_name, is_ip_address
from certkit.core.profiles import PROFILES, ProfileName
from certkit.core.text import duration_text, utc_text
from certkit.errors import InputError, PolicyError

__all__ = [
    "BACKDATE",
    "MAX_CN",
    "CsrNames",
    "LeafRequest",
    "RevokedEntry",
    "Validity",
    "build_ca",
    "build_crl",
    "build_exchange_selfsigned",
    "build_leaf",
    "check_name_constraints",
    "csr_names",
    "fqdn_of",
    "leaf_validity",
    "random_serial",
]

#: RFC 5280 ub-common-name: the CN (the Edge FQDN, the CA's name) holds at most 64 characters.
MAX_CN = 64

#: notBefore is set this far in the past, so a partner whose clock is a little behind accepts it.
BACKDATE = dt.timedelta(minutes=5)


def random_serial() -> int:
    """A positive serial with 159 random bits: at least 64 bits of entropy (CA/B BR 7.1), at most 20 octets."""
    while True:
        serial = secrets.randbits(159)
        if serial >= 1 << 64:
            return serial


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attrs)


def _ski(public_key: PublicKey) -> x509.SubjectKeyIdentifier:
    return x509.SubjectKeyIdentifier.from_public_key(public_key)


@functools.lru_cache(maxsize=64)
def _aki(issuer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    ski = extension_value(issuer, x509.SubjectKeyIdentifier)
    if ski is not None:
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    return x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.public_key())  # type: ignore[arg-type]


def _cdp(url: str) -> x509.CRLDistributionPoints:
    return x509.CRLDistributionPoints(
        [x509.DistributionPoint([x509.UniformResourceIdentifier(url)], None, None, None)])


def _aia(url: str) -> x509.AuthorityInformationAccess:
    return x509.AuthorityInformationAccess(
        [x509.AccessDescription(AuthorityInformationAccessOID.CA_ISSUERS, x509.UniformResourceIdentifier(url))])


def _check_within_issuer(not_before: dt.datetime, not_after: dt.datetime, issuer_cert: x509.Certificate, *,
                         what: str) -> None:
    """Refuse a validity that starts before or ends after the issuer's (RFC 5280 6.1.3: such a certificate is
    outside its issuer's validity for part of its life, and validators disagree on what that means)."""
    issuer_nb, issuer_na = issuer_cert.not_valid_before_utc, issuer_cert.not_valid_after_utc
    if aware(not_after) <= aware(not_before):
        raise PolicyError(f"{what} would end ({_at(not_after)}) before it begins ({_at(not_before)}).",
                          "Give a positive number of --days.")
    if aware(not_before) < issuer_nb:
        raise PolicyError(
            f"{what} would be valid from {_at(not_before)}, before its issuer {_cn(issuer_cert)} is "
            f"(notBefore {_at(issuer_nb)}).",
            "Check the clock: a certificate's validity must lie within its issuer's.",
        )
    if aware(not_after) > issuer_na:
        raise PolicyError(
            f"{what} would be valid until {_at(not_after)}, after the CA itself expires ({_cn(issuer_cert)}, "
            f"notAfter {_at(issuer_na)}).",
            "Choose fewer --days, or renew the CA first.",
        )


def _at(t: dt.datetime) -> str:
    return utc_text(aware(t))


def _cn(cert: x509.Certificate) -> str:
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return repr(str(cns[0].value)) if cns else cert.subject.rfc4514_string()


@dataclass(frozen=True)
class Validity:
    """The validity a leaf gets (see :func:`leaf_validity`), and what the admin must be told about it."""

    not_before: dt.datetime
    not_after: dt.datetime
    #: True when notAfter was cut back to the issuer's (the certificate is shorter than asked for).
    clamped: bool = False
    #: Sentences for the admin (empty when the validity is what was asked for).
    warnings: tuple[str, ...] = ()

    @property
    def days(self) -> int:
        return (self.not_after - self.not_before).days


def leaf_validity(issuers: Sequence[x509.Certificate], *, now: dt.datetime, days: int,
                  backdate: dt.timedelta = BACKDATE) -> Validity:
    """The validity of a certificate issued at ``now`` for ``days``, kept within every issuer's validity.

    ``issuers``: the issuing CA first, then its issuers up to the root. Policy:

    * ``now`` before an issuer's notBefore: refused (:class:`~certkit.errors.PolicyError`). The clock is wrong
      (a wrong system clock, or an injected one); a certificate issued now would start before its issuer.
    * ``now`` at or after an issuer's notAfter: refused; the CA has expired.
    * notBefore (``now - backdate``) before an issuer's notBefore: moved up to it, silently -- only the
      back-dating margin is lost.
    * notAfter (``now + days``) after an issuer's notAfter: cut back to it, with a warning in
      :attr:`Validity.warnings` that the caller must show.
    """
    if not issuers:
        raise InputError("leaf_validity needs the issuing CA certificate.", "Pass the issuer (then its issuers).")
    if not isinstance(days, int) or isinstance(days, bool) or days < 1:
        raise InputError(f"A validity of {days!r} days is not possible.", "Give --days of 1 or more.")
    now = aware(now).replace(microsecond=0)
    for issuer in issuers:
        if now < issuer.not_valid_before_utc:
            raise PolicyError(
                f"The clock says {_at(now)}, before the CA certificate {_cn(issuer)} is valid (notBefore "
                f"{_at(issuer.not_valid_before_utc)}); a certificate issued now would be valid before its issuer.",
                "This machine's clock (or the clock given to certkit) is wrong: correct it (w32tm /resync, "
                "timedatectl) and issue again.",
            )
        if now >= issuer.not_valid_after_utc:
            raise PolicyError(f"The CA certificate {_cn(issuer)} expired on {_at(issuer.not_valid_after_utc)}.",
                              "Create a new CA (certkit ca init) and distribute its root; an expired CA "
                              "cannot issue.")
    not_before = max([now - backdate, *(i.not_valid_before_utc for i in issuers)])
    wanted = now + dt.timedelta(days=days)
    limit = min(issuers, key=lambda i: i.not_valid_after_utc)
    if wanted <= limit.not_valid_after_utc:
        return Validity(not_before, wanted)
    not_after = limit.not_valid_after_utc
    left = not_after - now
    return Validity(not_before, not_after, clamped=True, warnings=(
        f"The certificate is valid until {_at(not_after)}, when the CA certificate {_cn(limit)} expires: "
        f"{duration_text(left)} instead of the {days} days asked for. Plan a new CA before then.",))


@dataclass(frozen=True)
class CsrNames:
    """The names a CSR asks for, split by what the profile carries (see :func:`csr_names`)."""

    common_name: str
    #: The subjectAltName entries the certificate gets: the CN first (a host name or an address), then the SANs.
    sans: tuple[x509.GeneralName, ...]
    #: The CSR's subjectAltName entries the profile does not carry (e-mail, URI, directory, other names).
    dropped: tuple[x509.GeneralName, ...] = ()
    profile: ProfileName = ProfileName.TRANSPORT

    @property
    def dropped_text(self) -> tuple[str, ...]:
        """The dropped entries as text (``email:a@b``, ``URI:http://...``)."""
        return tuple(_general_name_text(n) for n in self.dropped)

    @property
    def warning(self) -> str | None:
        """The sentence to show when entries are dropped; ``None`` when the certificate names everything asked."""
        if not self.dropped:
            return None
        return (f"The request also asks for {', '.join(self.dropped_text)}; the {self.profile} profile carries only "
                "DNS names and IP addresses, so the certificate will not contain "
                f"{'it' if len(self.dropped) == 1 else 'them'}.")


def _general_name_text(name: x509.GeneralName) -> str:
    if isinstance(name, x509.RFC822Name):
        return f"email:{name.value}"
    if isinstance(name, x509.UniformResourceIdentifier):
        return f"URI:{name.value}"
    if isinstance(name, x509.DirectoryName):
        return f"DirName:{name.value.rfc4514_string()}"
    if isinstance(name, x509.RegisteredID):
        return f"RID:{name.value.dotted_string}"
    if isinstance(name, x509.OtherName):
        upn = "1.3.6.1.4.1.311.20.2.3"
        kind = "UPN" if name.type_id.dotted_string == upn else name.type_id.dotted_string
        return f"otherName:{kind}"
    if isinstance(name, x509.DNSName):
        return f"DNS:{name.value}"
    return f"IP:{name.value}"


def csr_names(csr: x509.CertificateSigningRequest, profile: ProfileName | str = ProfileName.TRANSPORT, *,
              allow_mixed_script: bool = False) -> CsrNames:
    """What a certificate for ``csr`` under ``profile`` names, and which of the CSR's SANs it leaves out.

    The CN (when present) comes first; DNS names go through IDNA 2008 (a mixed-script or look-alike name is
    refused unless ``allow_mixed_script``); SAN kinds the profile does not carry are returned in
    :attr:`CsrNames.dropped` -- never dropped silently: show :attr:`CsrNames.warning`, or refuse.
    Raises :class:`~certkit.errors.InputError` for a name that is not acceptable, or when nothing names a host.
    """
    prof = PROFILES[ProfileName.parse(profile)]
    names: list[x509.GeneralName] = []
    dropped: list[x509.GeneralName] = []
    for entry in extension_value(csr, x509.SubjectAlternativeName) or ():
        if not prof.carries(entry):
            if entry not in dropped:
                dropped.append(entry)
            continue
        if isinstance(entry, x509.DNSName):
            try:
                entry = x509.DNSName(dns_name(entry.value, allow_mixed_script=allow_mixed_script))
            except InputError as exc:
                raise InputError(f"The request's subjectAltName DNS:{entry.value}: {exc.message}", exc.hint) from None
        if entry not in names:
            names.append(entry)
    cn_attrs = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    cn = str(cn_attrs[0].value) if cn_attrs else ""
    if cn:
        try:
            cn_name = general_name(cn, allow_mixed_script=allow_mixed_script)
        except InputError as exc:
            raise InputError(f"The request's subject CN={cn}: {exc.message}", exc.hint) from None
        if cn_name in names:
            names.remove(cn_name)
        names.insert(0, cn_name)
    if not names:
        raise InputError("The request names no host (no CN, no DNS or IP subjectAltName)"
                         + (f"; it asks only for {', '.join(_general_name_text(n) for n in dropped)}" if dropped
                            else "") + ".",
                         "Generate the request with the Edge's FQDN as subject.")
    first = names[0]
    common_name = first.value if isinstance(first, x509.DNSName) else str(first.value)
    return CsrNames(common_name, tuple(names), tuple(dropped), prof.name)


def build_ca(*, common_name: str, key: PrivateKey, serial: int, not_before: dt.datetime, not_after: dt.datetime,
             issuer_cert: x509.Certificate | None = None, issuer_key: PrivateKey | None = None,
             permitted_domains: Sequence[str] = (), path_length: int | None = None,
             crl_url: str | None = None, aia_url: str | None = None) -> x509.Certificate:
    """A root (self-signed when ``issuer_cert`` is None) or an intermediate CA certificate."""
    check_key_strength(key, what="The CA key")
    if not 0 < len(common_name) <= MAX_CN:
        raise InputError(f"The CA name {common_name!r} is {len(common_name)} characters; a certificate's common "
                         f"name holds 1 to {MAX_CN} (RFC 5280).", "Choose a shorter --name.")
    if issuer_cert is not None:
        _check_within_issuer(not_before, not_after, issuer_cert, what="The intermediate CA")
    subject = _name(common_name)
    signer_key = issuer_key or key
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_cert.subject if issuer_cert else subject)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        # keyCertSign and cRLSign: this key signs certificates and the CRLs that revoke them.
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(_ski(key.public_key()), critical=False)
    )
    if issuer_cert is not None:
        builder = builder.add_extension(_aki(issuer_cert), critical=False)
        if crl_url:
            builder = builder.add_extension(_cdp(crl_url), critical=False)
        if aia_url:
            builder = builder.add_extension(_aia(aia_url), critical=False)
    if permitted_domains:
        # RFC 5280 4.2.1.10: a DNS constraint "contoso.com" permits contoso.com and every name below it.
        builder = builder.add_extension(
            x509.NameConstraints(permitted_subtrees=[x509.DNSName(dns_name(d)) for d in permitted_domains],
                                 excluded_subtrees=None),
            critical=True,
        )
    return builder.sign(signer_key, hashes.SHA256())


@dataclass(frozen=True)
class LeafRequest:
    """What a leaf certificate should say: its names, profile and validity. Immutable."""

    common_name: str
    sans: tuple[x509.GeneralName, ...]
    profile: ProfileName = ProfileName.TRANSPORT
    not_before: dt.datetime = field(default_factory=lambda: dt.datetime(1970, 1, 1, tzinfo=dt.UTC))
    not_after: dt.datetime = field(default_factory=lambda: dt.datetime(1970, 1, 1, tzinfo=dt.UTC))

    @staticmethod
    def for_host(fqdn: str, *, accepted_domains: Iterable[str] = (), extra_sans: Iterable[x509.GeneralName] = (),
                 profile: ProfileName | str = ProfileName.TRANSPORT, not_before: dt.datetime,
                 not_after: dt.datetime, allow_mixed_script: bool = False) -> LeafRequest:
        """The Domain Security layout: CN = the FQDN; SAN = the FQDN, every accepted domain, then extras.

        Names are converted by IDNA 2008 (see :func:`~certkit.core.names.dns_name`); a mixed-script or
        look-alike name is refused unless ``allow_mixed_script`` (``extra_sans`` are already parsed: parse them
        with the same flag).
        """
        if is_ip_address(fqdn):
            raise InputError(f"{fqdn} is an IP address, not a host name.",
                             "Give the Edge's FQDN and add the address with --san IP:ADDRESS.")
        host = dns_name(fqdn, allow_mixed_script=allow_mixed_script)
        if len(host) > MAX_CN:
            raise InputError(f"{host} is {len(host)} characters long; a certificate's common name holds at most "
                             f"{MAX_CN} (RFC 5280).", "Use a shorter host name for the Edge.")
        if "." not in host:
            raise InputError(f"{fqdn!r} is not a fully qualified name.",
                             "Give the Edge's public FQDN, e.g. mail.contoso.com.")
        sans: list[x509.GeneralName] = [x509.DNSName(host)]
        for domain in accepted_domains:
            entry = x509.DNSName(dns_name(domain, allow_mixed_script=allow_mixed_script))
            if entry not in sans:
                sans.append(entry)
        for extra in extra_sans:
            if extra not in sans:
                sans.append(extra)
        return LeafRequest(host, tuple(sans), ProfileName.parse(profile), not_before, not_after)


@functools.lru_cache(maxsize=64)
def _permitted_dns(ca_cert: x509.Certificate) -> tuple[str, ...]:
    nc = extension_value(ca_cert, x509.NameConstraints)
    if nc is None:
        return ()
    return tuple(g.value.lower() for g in (nc.permitted_subtrees or []) if isinstance(g, x509.DNSName))


def check_name_constraints(ca_cert: x509.Certificate, sans: Iterable[x509.GeneralName]) -> None:
    """Refuse to issue a name the CA's own name constraints forbid (the partner would reject it anyway)."""
    permitted = _permitted_dns(ca_cert)
    if not permitted:
        return
    for san in sans:
        if isinstance(san, x509.DNSName):
            name = san.value.lower()
            if not any(name == p or name.endswith("." + p) for p in permitted):
                raise PolicyError(
                    f"{name} is outside the CA's name constraints (permitted: {', '.join(permitted)}).",
                    "Issue only names within the permitted domains, or use a CA without --permit-domain.",
                )


def build_leaf(request: LeafRequest, *, public_key: PublicKey, serial: int, issuer_cert: x509.Certificate,
               issuer_key: PrivateKey, crl_url: str | None = None, aia_url: str | None = None) -> x509.Certificate:
    """An end-entity certificate for ``request``, signed by the issuing CA with SHA-256."""
    check_key_strength(public_key)
    _check_within_issuer(request.not_before, request.not_after, issuer_cert, what="The certificate")
    check_name_constraints(issuer_cert, request.sans)
    profile = PROFILES[request.profile]
    is_rsa = isinstance(public_key, rsa.RSAPublicKey)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(request.common_name))
        .issuer_name(issuer_cert.subject)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(request.not_before)
        .not_valid_after(request.not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        # digitalSignature for (EC)DHE handshakes; keyEncipherment only for RSA, where TLS 1.2 RSA key
        # transport still exists (and old Windows stacks expect it on RSA certificates).
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=is_rsa,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(list(profile.eku)), critical=False)
        .add_extension(x509.SubjectAlternativeName(list(request.sans)), critical=False)
        .add_extension(_ski(public_key), critical=False)
        .add_extension(_aki(issuer_cert), critical=False)
    )
    if crl_url:
        builder = builder.add_extension(_cdp(crl_url), critical=False)
    if aia_url:
        builder = builder.add_extension(_aia(aia_url), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def build_exchange_selfsigned(fqdn: str, key: PrivateKey, *, serial: int, not_before: dt.datetime,
                              days: int = 5 * 365, allow_mixed_script: bool = False) -> x509.Certificate:
    """What ``New-ExchangeCertificate`` makes by default: CN = the server's short name, SAN = short name + FQDN,
    serverAuth + clientAuth, five years, signed by its own key. ``allow_mixed_script``: see
    :func:`~certkit.core.names.dns_name`."""
    host = dns_name(fqdn, allow_mixed_script=allow_mixed_script)
    short = host.split(".")[0]
    sans: list[x509.GeneralName] = [x509.DNSName(short)]
    if host != short:
        sans.append(x509.DNSName(host))
    subject = _name(short)
    is_rsa = isinstance(key, rsa.RSAPrivateKey)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_before + dt.timedelta(days=days))
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=is_rsa,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                       critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(_ski(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )


@dataclass(frozen=True)
class RevokedEntry:
    serial: int
    revoked_at: dt.datetime
    reason: x509.ReasonFlags | None = None


def build_crl(*, issuer_cert: x509.Certificate, issuer_key: PrivateKey, revoked: Iterable[RevokedEntry],
              number: int, this_update: dt.datetime, next_update: dt.datetime) -> x509.CertificateRevocationList:
    """A CRL with the CRL number and AKI extensions (RFC 5280 5.2: both required for conforming CAs)."""
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer_cert.subject)
        .last_update(this_update)
        .next_update(next_update)
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(_aki(issuer_cert), critical=False)
    )
    for entry in revoked:
        rb = x509.RevokedCertificateBuilder().serial_number(entry.serial).revocation_date(entry.revoked_at)
        if entry.reason is not None and entry.reason is not x509.ReasonFlags.unspecified:
            rb = rb.add_extension(x509.CRLReason(entry.reason), critical=False)
        builder = builder.add_revoked_certificate(rb.build())
    return builder.sign(issuer_key, hashes.SHA256())


def fqdn_of(cert: x509.Certificate) -> str | None:
    """The certificate's host name: its first fully qualified, non-wildcard DNS name in the SAN.

    For a transport certificate that is the CN; for Exchange's self-signed layout (CN and first SAN
    = the short name) it is the FQDN that follows.
    """
    return next((n for n in san_dns_names(cert) if "." in n and "*" not in n), None)


