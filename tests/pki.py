"""A small test PKI built with plain ``cryptography``: roots, intermediates, leaves and CRLs in memory.

Shared by several test modules (read-only for everyone but the trust-store work). Fast by default:
EC P-256 keys; RSA keys are generated once per size and cached, so asking for many RSA
certificates costs one key generation per size (pass ``fresh_key=True`` for a distinct key).

Times: every builder takes ``not_before``/``not_after`` (aware datetimes). The default window is
``NOW - 1 day`` .. ``NOW + 365 days`` where :data:`NOW` is the wall clock at import, truncated to the
second, so certificates also work in real TLS handshakes. Tests that need exact edges pass their
own window and an explicit ``at=``.

Usage::

    root = make_root()
    inter = make_intermediate(root)
    leaf = make_leaf(inter, ["mx.fabrikam.com"])
    crl = make_crl(inter, revoked=[leaf.cert.serial_number])
"""

from __future__ import annotations

import datetime as dt
import functools
import ipaddress
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID

__all__ = [
    "CLIENT",
    "NOW",
    "SERVER",
    "Issued",
    "PrivateKey",
    "make_crl",
    "make_csr",
    "make_intermediate",
    "make_key",
    "make_leaf",
    "make_root",
    "make_self_signed",
    "make_unparseable_san",
]

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

#: The reference "now" of the test PKI (aware UTC, whole seconds).
NOW: dt.datetime = dt.datetime.now(dt.UTC).replace(microsecond=0)

DAY = dt.timedelta(days=1)
SERVER = ExtendedKeyUsageOID.SERVER_AUTH
CLIENT = ExtendedKeyUsageOID.CLIENT_AUTH

_serials = itertools.count(0x1000)


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key."""

    cert: x509.Certificate
    key: PrivateKey

    @property
    def pem(self) -> bytes:
        """The certificate as PEM."""
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def der(self) -> bytes:
        """The certificate as DER."""
        return self.cert.public_bytes(serialization.Encoding.DER)

    @property
    def key_pem(self) -> bytes:
        """The private key as unencrypted PKCS#8 PEM."""
        return self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())

    @property
    def subject(self) -> x509.Name:
        return self.cert.subject


@functools.cache
def _cached_rsa(bits: int) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def make_key(key_type: str = "ec", bits: int = 2048, *, fresh_key: bool = False) -> PrivateKey:
    """An EC P-256 key (``"ec"``, always fresh: cheap) or an RSA key of ``bits`` (cached unless ``fresh_key``)."""
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "rsa":
        if fresh_key:
            return rsa.generate_private_key(public_exponent=65537, key_size=bits)
        return _cached_rsa(bits)
    raise ValueError(f"unknown key type {key_type!r}")


def _name(cn: str, org: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


def _general_names(names: Iterable[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for n in names:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            out.append(x509.DNSName(n))
    return out


def _der_len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def _der_tlv(tag: int, content: bytes) -> bytes:
    return bytes([tag]) + _der_len(len(content)) + content


def _der_content(tlv: bytes) -> bytes:
    n = tlv[1]
    if n < 0x80:
        return tlv[2:2 + n]
    k = n & 0x7F
    length = int.from_bytes(tlv[2:2 + k], "big")
    return tlv[2 + k:2 + k + length]


# AlgorithmIdentifiers (DER) that cryptography writes, and their SHA-1 twins.
_RSA_SHA256 = bytes.fromhex("300d06092a864886f70d01010b0500")
_RSA_SHA1 = bytes.fromhex("300d06092a864886f70d0101050500")
_ECDSA_SHA256 = bytes.fromhex("300a06082a8648ce3d040302")
_ECDSA_SHA1 = bytes.fromhex("300906072a8648ce3d0401")


def _sign(builder: x509.CertificateBuilder, key: PrivateKey, sha1: bool) -> x509.Certificate:
    """Sign with SHA-256, or re-sign the TBS with SHA-1 by hand.

    cryptography refuses to *create* SHA-1 signatures, but the verifier must still meet them (old
    partner CAs), so the test PKI swaps the algorithm identifier and signs the TBS bytes itself.
    """
    cert = builder.sign(key, hashes.SHA256())
    if not sha1:
        return cert
    if isinstance(key, rsa.RSAPrivateKey):
        old, new = _RSA_SHA256, _RSA_SHA1
    else:
        old, new = _ECDSA_SHA256, _ECDSA_SHA1
    tbs_content = _der_content(cert.tbs_certificate_bytes)
    assert old in tbs_content
    tbs = _der_tlv(0x30, tbs_content.replace(old, new, 1))
    if isinstance(key, rsa.RSAPrivateKey):
        sig = key.sign(tbs, padding.PKCS1v15(), hashes.SHA1())
    else:
        sig = key.sign(tbs, ec.ECDSA(hashes.SHA1()))
    return x509.load_der_x509_certificate(_der_tlv(0x30, tbs + new + _der_tlv(0x03, b"\x00" + sig)))


def _window(not_before: dt.datetime | None, not_after: dt.datetime | None) -> tuple[dt.datetime, dt.datetime]:
    # A window given on one side only keeps the other side sensible (an already expired certificate
    # starts a year before it ends; a not-yet-valid one lasts a year).
    nb = not_before if not_before is not None else min(NOW - DAY, (not_after or NOW) - 365 * DAY)
    na = not_after if not_after is not None else max(NOW + 365 * DAY, nb + 365 * DAY)
    return nb, na


def _ca_builder(subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey,
                issuer_public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey, *,
                not_before: dt.datetime, not_after: dt.datetime, path_length: int | None,
                cdp: str | None, permitted_dns: Sequence[str] | None) -> x509.CertificateBuilder:
    b = (x509.CertificateBuilder()
         .subject_name(subject).issuer_name(issuer).public_key(public_key)
         .serial_number(next(_serials))
         .not_valid_before(not_before).not_valid_after(not_after)
         .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
         # keyCertSign + cRLSign: a CA signs certificates and its own CRLs (RFC 5280 4.2.1.3).
         .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                      data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                      crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
         .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
         .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_public_key), critical=False))
    if cdp:
        b = b.add_extension(_cdp(cdp), critical=False)
    if permitted_dns is not None:
        b = b.add_extension(x509.NameConstraints(permitted_subtrees=[x509.DNSName(d) for d in permitted_dns],
                                                 excluded_subtrees=None), critical=True)
    return b


def _cdp(url: str) -> x509.CRLDistributionPoints:
    return x509.CRLDistributionPoints([x509.DistributionPoint(full_name=[x509.UniformResourceIdentifier(url)],
                                                              relative_name=None, reasons=None, crl_issuer=None)])


def make_root(cn: str = "Certkit Test Root", *, org: str | None = "Certkit Tests", key_type: str = "ec",
              bits: int = 2048, fresh_key: bool = False, not_before: dt.datetime | None = None,
              not_after: dt.datetime | None = None, sha1: bool = False, path_length: int | None = None,
              permitted_dns: Sequence[str] | None = None) -> Issued:
    """A self-signed root CA (basicConstraints CA:TRUE critical, keyCertSign|cRLSign)."""
    key = make_key(key_type, bits, fresh_key=fresh_key)
    nb, na = _window(not_before, not_after)
    name = _name(cn, org)
    b = _ca_builder(name, name, key.public_key(), key.public_key(), not_before=nb, not_after=na,
                    path_length=path_length, cdp=None, permitted_dns=permitted_dns)
    return Issued(_sign(b, key, sha1), key)


def make_intermediate(issuer: Issued, cn: str = "Certkit Test Intermediate", *, org: str | None = "Certkit Tests",
                      key_type: str = "ec", bits: int = 2048, fresh_key: bool = False,
                      not_before: dt.datetime | None = None, not_after: dt.datetime | None = None,
                      sha1: bool = False, path_length: int | None = None, cdp: str | None = None,
                      permitted_dns: Sequence[str] | None = None) -> Issued:
    """An intermediate CA signed by ``issuer``."""
    key = make_key(key_type, bits, fresh_key=fresh_key)
    nb, na = _window(not_before, not_after)
    b = _ca_builder(_name(cn, org), issuer.cert.subject, key.public_key(), issuer.key.public_key(),
                    not_before=nb, not_after=na, path_length=path_length, cdp=cdp, permitted_dns=permitted_dns)
    return Issued(_sign(b, issuer.key, sha1), key)


_DEFAULT_EKU = (SERVER, CLIENT)


def make_leaf(issuer: Issued | None, names: Sequence[str] = ("mx.example.com",), *, cn: str | None = None,
              eku: Sequence[x509.ObjectIdentifier] | None = _DEFAULT_EKU, key_type: str = "ec", bits: int = 2048,
              fresh_key: bool = False, not_before: dt.datetime | None = None, not_after: dt.datetime | None = None,
              sha1: bool = False, cdp: str | None = None, self_signed: bool = False,
              san: bool = True, key_usage: bool = True) -> Issued:
    """An end-entity certificate for ``names`` (DNS names or IP literals in the SAN; CN = first name).

    ``issuer=None`` or ``self_signed=True`` makes a self-signed leaf (like New-ExchangeCertificate's
    default: basicConstraints CA:FALSE). ``eku=None`` leaves the EKU extension out (RFC 5280 allows it);
    the default carries serverAuth and clientAuth, as transport certificates do.
    """
    key = make_key(key_type, bits, fresh_key=fresh_key)
    nb, na = _window(not_before, not_after)
    subject = _name(cn or (names[0] if names else "leaf"))
    self_signed = self_signed or issuer is None
    issuer_name = subject if self_signed or issuer is None else issuer.cert.subject
    signer: PrivateKey = key if self_signed or issuer is None else issuer.key
    b = (x509.CertificateBuilder()
         .subject_name(subject).issuer_name(issuer_name).public_key(key.public_key())
         .serial_number(next(_serials))
         .not_valid_before(nb).not_valid_after(na)
         .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
         .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
         .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), critical=False))
    if key_usage:
        # digitalSignature for ECDHE handshakes; keyEncipherment for RSA key transport (old Exchange peers).
        b = b.add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                          key_encipherment=isinstance(key, rsa.RSAPrivateKey),
                                          data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                          crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
    if san and names:
        b = b.add_extension(x509.SubjectAlternativeName(_general_names(names)), critical=False)
    if eku is not None:
        b = b.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
    if cdp:
        b = b.add_extension(_cdp(cdp), critical=False)
    return Issued(_sign(b, signer, sha1), key)


def make_self_signed(names: Sequence[str] = ("edge.example.com",), **kwargs: object) -> Issued:
    """A self-signed end-entity certificate, like an Exchange Edge's default certificate."""
    return make_leaf(None, names, **kwargs)  # type: ignore[arg-type]


def make_unparseable_san(issuer: Issued | None = None, cn: str = "broken.contoso.com") -> x509.Certificate:
    """A certificate whose subjectAltName cannot be decoded (a BOOLEAN inside the SEQUENCE): it loads, but
    reading its extensions fails. Signed by ``issuer`` (with its subject as issuer name), else self-signed."""
    key = make_key()
    subject = _name(cn) if issuer is None else issuer.cert.subject
    nb, na = NOW - DAY, NOW + 30 * DAY
    b = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
         .serial_number(next(_serials)).not_valid_before(nb).not_valid_after(na)
         .add_extension(x509.UnrecognizedExtension(ExtensionOID.SUBJECT_ALTERNATIVE_NAME, b"\x30\x03\x01"),
                        critical=False))
    return b.sign(key if issuer is None else issuer.key, hashes.SHA256())


def make_csr(cn: str | None = "mx.contoso.com", sans: Iterable[str | x509.GeneralName] = (), *,
             key: PrivateKey | None = None, ca_ext: bool = False) -> x509.CertificateSigningRequest:
    """A CSR for ``cn`` (none: an empty subject) with ``sans`` (strings as DNS names or IP literals, or
    general names as given); ``ca_ext`` asks for basicConstraints CA:TRUE. A fresh EC key unless ``key``."""
    names = [n if isinstance(n, x509.GeneralName) else _general_names([n])[0] for n in sans]
    b = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)] if cn else []))
    if names:
        b = b.add_extension(x509.SubjectAlternativeName(names), critical=False)
    if ca_ext:
        b = b.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    return b.sign(key or make_key(), hashes.SHA256())


def make_crl(issuer: Issued, revoked: Iterable[int | tuple[int, dt.datetime, x509.ReasonFlags | None]] = (), *,
             this_update: dt.datetime | None = None, next_update: dt.datetime | None = None,
             wrong_key: bool = False, crl_number: int = 1) -> x509.CertificateRevocationList:
    """A CRL issued by ``issuer`` listing ``revoked`` serials (or ``(serial, date, reason)`` triples).

    ``wrong_key=True`` signs it with an unrelated key (same issuer name): its signature must not verify.
    Defaults: thisUpdate = NOW - 1 hour, nextUpdate = NOW + 7 days.
    """
    tu = this_update if this_update is not None else NOW - dt.timedelta(hours=1)
    nu = next_update if next_update is not None else NOW + 7 * DAY
    b = (x509.CertificateRevocationListBuilder()
         .issuer_name(issuer.cert.subject).last_update(tu).next_update(nu)
         .add_extension(x509.CRLNumber(crl_number), critical=False)
         .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()), critical=False))
    for item in revoked:
        if isinstance(item, int):
            serial, when, reason = item, tu - dt.timedelta(minutes=5), None
        else:
            serial, when, reason = item
        rb = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when)
        if reason is not None:
            rb = rb.add_extension(x509.CRLReason(reason), critical=False)
        b = b.add_revoked_certificate(rb.build())
    key: PrivateKey = ec.generate_private_key(ec.SECP256R1()) if wrong_key else issuer.key
    return b.sign(key, hashes.SHA256())
