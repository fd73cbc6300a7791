"""Reading and writing the file formats mail admins meet: PEM, DER, PKCS#7, PKCS#12 (PFX), CSR, CRL.

Every loader takes bytes and a ``source`` (a file name, for messages) and raises
:class:`~certkit.errors.MalformedInputError` or :class:`~certkit.errors.PassphraseError` with one
line that names the file and what to do.

``cryptography.hazmat.primitives.serialization`` (with its ssh, pkcs7 and pkcs12 modules, which bring
the cipher modules and much of the email package) is imported by the functions that use it: reading a
trust store, probing and verifying never need it, and importing it shows in the CLI's start-up time.
"""

from __future__ import annotations

import base64
import binascii
import enum
import re
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from certkit.core.keys import PrivateKey
from certkit.errors import InputError, MalformedInputError, PassphraseError

__all__ = [
    "MAX_INPUT_BYTES",
    "Kind",
    "Loaded",
    "PfxTarget",
    "cert_der",
    "cert_pem",
    "detect",
    "load_certificates",
    "load_crl",
    "load_csr",
    "load_pfx",
    "pfx_bytes",
    "sha1_thumbprint",
    "sha256_fingerprint",
]

#: Inputs larger than this are refused before parsing: no certificate file is legitimately this big.
MAX_INPUT_BYTES = 16 * 1024 * 1024

_LABEL = re.compile(rb"[A-Z0-9 #]{1,64}")


class Kind(enum.StrEnum):
    CERTIFICATES = "certificates"
    CSR = "csr"
    CRL = "crl"
    PFX = "pfx"
    PRIVATE_KEY = "private-key"


class PfxTarget(enum.StrEnum):
    """Which importer the PFX is for.

    ``legacy``: PBE-SHA1-3DES with a SHA-1 MAC, the only form Windows Server 2016 and older (and so
    Exchange 2010) can import. ``modern``: PBES2 with AES-256-CBC and a SHA-256 MAC.
    """

    LEGACY = "legacy"
    MODERN = "modern"


@dataclass(frozen=True)
class Loaded:
    """What :func:`detect` found in a blob."""

    kind: Kind
    certificates: tuple[x509.Certificate, ...] = ()
    csr: x509.CertificateSigningRequest | None = None
    crl: x509.CertificateRevocationList | None = None
    key: PrivateKey | None = None
    notes: tuple[str, ...] = field(default=())


def _check_size(data: bytes, source: str) -> None:
    if len(data) > MAX_INPUT_BYTES:
        raise MalformedInputError(
            f"{source} is {len(data) // 1024 // 1024} MiB, too large to be a certificate file "
            f"(limit {MAX_INPUT_BYTES // 1024 // 1024} MiB).",
            "Check that the right file was given.",
        )
    if not data.strip():
        raise MalformedInputError(f"{source} is empty.", "Give a file that holds the certificate.")


def sha1_thumbprint(cert: x509.Certificate) -> str:
    """The thumbprint as Exchange shows it: SHA-1 of the DER certificate, 40 upper-case hex digits."""
    return cert.fingerprint(hashes.SHA1()).hex().upper()


def sha256_fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the DER certificate, 64 upper-case hex digits."""
    return cert.fingerprint(hashes.SHA256()).hex().upper()


def cert_pem(*certs: x509.Certificate) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding

    return b"".join(c.public_bytes(Encoding.PEM) for c in certs)


def cert_der(cert: x509.Certificate) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding

    return cert.public_bytes(Encoding.DER)


def _pem_blocks(data: bytes) -> list[tuple[str, bytes]]:
    """Every complete ``-----BEGIN X-----`` ... ``-----END X-----`` block, in order.

    A linear scan (a regular expression with a lazy body and a back-reference is quadratic on hostile
    input: thousands of BEGIN lines without an END took minutes).
    """
    out: list[tuple[str, bytes]] = []
    last_end: dict[bytes, int] = {}
    pos = 0
    while True:
        begin = data.find(b"-----BEGIN ", pos)
        if begin < 0:
            return out
        close = data.find(b"-----", begin + 11)
        if close < 0:
            return out
        label = data[begin + 11:close]
        pos = close + 5
        if not _LABEL.fullmatch(label):
            continue
        end_marker = b"-----END " + label + b"-----"
        if label not in last_end:
            last_end[label] = data.rfind(end_marker)
        if last_end[label] < pos:
            continue  # no END for this label after here: a truncated block
        end = data.find(end_marker, pos)
        out.append((label.decode("ascii"), data[begin:end + len(end_marker)]))
        pos = end + len(end_marker)


def _broken_pem(source: str, label: str, exc: Exception) -> MalformedInputError:
    return MalformedInputError(
        f"{source} holds a {label} PEM block that cannot be decoded ({exc}).",
        "The file is damaged or truncated: export it again from its source.",
    )


def load_certificates(data: bytes, *, source: str = "the input", password: bytes | None = None
                      ) -> list[x509.Certificate]:
    """All certificates in a PEM bundle, a DER certificate, a PKCS#7 (PEM or DER) or a PFX."""
    _check_size(data, source)
    if b"-----BEGIN" in data:
        certs: list[x509.Certificate] = []
        blocks = _pem_blocks(data)
        if not blocks:
            raise MalformedInputError(f"{source} has a PEM header but no complete PEM block.",
                                      "The file is truncated: export it again.")
        for label, block in blocks:
            if label in {"CERTIFICATE", "X509 CERTIFICATE", "TRUSTED CERTIFICATE"}:
                try:
                    certs.append(x509.load_pem_x509_certificate(block.replace(b"TRUSTED CERTIFICATE",
                                                                              b"CERTIFICATE")))
                except ValueError as exc:
                    raise _broken_pem(source, label, exc) from None
            elif label == "PKCS7":
                from cryptography.hazmat.primitives.serialization import pkcs7

                try:
                    certs.extend(pkcs7.load_pem_pkcs7_certificates(block))
                except ValueError as exc:
                    raise _p7_error(source, exc) from None
        if not certs:
            kinds = ", ".join(sorted({label for label, _ in blocks}))
            raise MalformedInputError(f"{source} holds no certificate (it has: {kinds}).",
                                      "Give the certificate file, not the key or request.")
        return certs
    # Binary: DER certificate, DER PKCS#7, or PKCS#12.
    try:
        return [x509.load_der_x509_certificate(data)]
    except ValueError:
        pass
    from cryptography.hazmat.primitives.serialization import pkcs7

    try:
        return list(pkcs7.load_der_pkcs7_certificates(data))
    except ValueError as exc:
        if "no certificate" in str(exc).lower() or "empty" in str(exc).lower():
            raise _p7_error(source, exc) from None
    if _looks_like_pfx(data):
        _, cert, extra = load_pfx(data, password, source=source)
        return ([cert] if cert else []) + list(extra)
    raise MalformedInputError(
        f"{source} is not a certificate in any format certkit reads (PEM, DER, PKCS#7, PFX).",
        "Check that the file is a certificate and not damaged.",
    )


def _p7_error(source: str, exc: Exception) -> MalformedInputError:
    if "no certificate" in str(exc).lower():
        return MalformedInputError(f"{source} is a PKCS#7 file that holds no certificates.",
                                   "Export it again with the certificates included (certutil -ca.chain / p7b).")
    return MalformedInputError(f"{source} is a PKCS#7 file that cannot be read ({exc}).",
                               "Export it again.")


def _looks_like_pfx(data: bytes) -> bool:
    # PFX is a DER SEQUENCE whose first element is INTEGER 3 (the version).
    return len(data) > 8 and data[0] == 0x30 and b"\x02\x01\x03" in data[:8]


def load_pfx(data: bytes, password: bytes | None, *, source: str = "the PFX"
             ) -> tuple[PrivateKey | None, x509.Certificate | None, list[x509.Certificate]]:
    """The key, the certificate and the extra certificates of a PKCS#12 file."""
    from cryptography.hazmat.primitives.serialization import pkcs12

    _check_size(data, source)
    try:
        key, cert, extra = pkcs12.load_key_and_certificates(data, password)
    except ValueError as exc:
        text = str(exc).lower()
        if "password" in text or "decrypt" in text or "mac" in text:
            if password is None:
                raise PassphraseError(f"{source} is password-protected and no password was given.",
                                      "Give its password ($CERTKIT_PFX_PASSWORD or --pfx-password-file).") from None
            raise PassphraseError(f"The password for {source} is wrong.",
                                  "Check the PFX password and try again.") from None
        raise MalformedInputError(f"{source} is not a readable PFX/PKCS#12 file ({exc}).",
                                  "Export it again from its source.") from None
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    if key is not None and not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise MalformedInputError(f"{source} holds a key type certkit does not use for mail TLS.")
    return key, cert, list(extra)


def pfx_bytes(key: PrivateKey, cert: x509.Certificate, chain: list[x509.Certificate], password: bytes,
              *, target: PfxTarget | str = PfxTarget.LEGACY, friendly_name: str | None = None) -> bytes:
    """A PFX Windows can import. See :class:`PfxTarget` for why ``legacy`` exists."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.serialization import pkcs12

    if not password:
        raise InputError("A PFX needs a password.",
                         "Set $CERTKIT_PFX_PASSWORD or use --pfx-password-file; Windows refuses empty ones.")
    target = PfxTarget(target)
    builder = serialization.PrivateFormat.PKCS12.encryption_builder()
    if target is PfxTarget.LEGACY:
        enc = (builder.kdf_rounds(2048)
               .key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC)
               .hmac_hash(hashes.SHA1())
               .build(password))
    else:
        enc = (builder.kdf_rounds(100_000)
               .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
               .hmac_hash(hashes.SHA256())
               .build(password))
    name = (friendly_name or "").encode("utf-8") or None
    return pkcs12.serialize_key_and_certificates(name, key, cert, chain or None, enc)


def _base64_body(data: bytes) -> bytes | None:
    try:
        text = b"".join(data.split())
        return base64.b64decode(text, validate=True) if text else None
    except (binascii.Error, ValueError):
        return None


def load_csr(data: bytes, *, source: str = "the request") -> x509.CertificateSigningRequest:
    """A PKCS#10 request: PEM (``CERTIFICATE REQUEST`` or ``NEW CERTIFICATE REQUEST``), DER, or bare Base64.

    The request's own signature is checked: a request that is not signed by the key it carries is refused.
    """
    _check_size(data, source)
    csr: x509.CertificateSigningRequest | None = None
    try:
        if b"-----BEGIN" in data:
            blocks = [b for label, b in _pem_blocks(data) if "REQUEST" in label]
            if not blocks:
                raise MalformedInputError(f"{source} holds no certificate request PEM block.",
                                          "Give the .req/.csr file written by New-ExchangeCertificate or openssl req.")
            if len(blocks) > 1:
                raise MalformedInputError(f"{source} holds {len(blocks)} certificate requests; certkit signs one "
                                          "at a time.", "Split the file and sign each request on its own.")
            block = blocks[0].replace(b"NEW CERTIFICATE REQUEST", b"CERTIFICATE REQUEST")
            csr = x509.load_pem_x509_csr(block)
        else:
            try:
                csr = x509.load_der_x509_csr(data)
            except ValueError:
                der = _base64_body(data)
                if der is None:
                    raise
                csr = x509.load_der_x509_csr(der)
    except MalformedInputError:
        raise
    except ValueError as exc:
        raise MalformedInputError(f"{source} is not a readable certificate request ({exc}).",
                                  "Generate the request again (New-ExchangeCertificate -GenerateRequest).") from None
    try:
        valid = csr.is_signature_valid
    except Exception:
        valid = False
    if not valid:
        raise MalformedInputError(f"The signature on {source} does not verify: the request was altered or "
                                  "not signed by its own key.", "Generate the request again.")
    return csr


def load_crl(data: bytes, *, source: str = "the CRL") -> x509.CertificateRevocationList:
    """A CRL in PEM or DER."""
    _check_size(data, source)
    try:
        if b"-----BEGIN" in data:
            blocks = [b for label, b in _pem_blocks(data) if label == "X509 CRL"]
            if not blocks:
                raise MalformedInputError(f"{source} holds no X509 CRL PEM block.", "Give a CRL file.")
            return x509.load_pem_x509_crl(blocks[0])
        return x509.load_der_x509_crl(data)
    except MalformedInputError:
        raise
    except ValueError as exc:
        raise MalformedInputError(f"{source} is not a readable CRL ({exc}).",
                                  "Download or publish the CRL again.") from None


def detect(data: bytes, *, source: str = "the input", password: bytes | None = None) -> Loaded:
    """Find out what a blob is and load it (for ``certkit inspect``)."""
    _check_size(data, source)
    if b"-----BEGIN" in data:
        labels = {label for label, _ in _pem_blocks(data)}
        if not labels:
            raise MalformedInputError(f"{source} has a PEM header but no complete PEM block.",
                                      "The file is truncated: export it again.")
        if any("REQUEST" in label for label in labels):
            return Loaded(Kind.CSR, csr=load_csr(data, source=source))
        if "X509 CRL" in labels:
            return Loaded(Kind.CRL, crl=load_crl(data, source=source))
        if labels & {"CERTIFICATE", "X509 CERTIFICATE", "TRUSTED CERTIFICATE", "PKCS7"}:
            return Loaded(Kind.CERTIFICATES, certificates=tuple(load_certificates(data, source=source)))
        if any("PRIVATE KEY" in label for label in labels):
            return Loaded(Kind.PRIVATE_KEY, notes=("private key (contents not shown)",))
        raise MalformedInputError(f"{source} holds PEM blocks certkit does not read ({', '.join(sorted(labels))}).")
    try:
        return Loaded(Kind.CERTIFICATES, certificates=(x509.load_der_x509_certificate(data),))
    except ValueError:
        pass
    try:
        from cryptography.hazmat.primitives.serialization import pkcs7

        return Loaded(Kind.CERTIFICATES, certificates=tuple(pkcs7.load_der_pkcs7_certificates(data)))
    except ValueError:
        pass
    try:
        return Loaded(Kind.CRL, crl=x509.load_der_x509_crl(data))
    except ValueError:
        pass
    try:
        return Loaded(Kind.CSR, csr=load_csr(data, source=source))
    except MalformedInputError:
        pass
    if _looks_like_pfx(data):
        key, cert, extra = load_pfx(data, password, source=source)
        return Loaded(Kind.PFX, certificates=tuple(([cert] if cert else []) + extra), key=key)
    raise MalformedInputError(
        f"{source} is not a certificate, chain, request, CRL or PFX certkit can read.",
        "Check that the file is complete; PEM files start with -----BEGIN.",
    )
