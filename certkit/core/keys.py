"""Key types certkit issues, and the rules it holds keys to.

``serialization`` is imported by the functions that use it, for start-up time (see :mod:`certkit.core.formats`).
"""

from __future__ import annotations

import enum

from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from certkit.errors import InputError, MalformedInputError, PassphraseError, PolicyError

__all__ = [
    "MIN_RSA_BITS",
    "KeyType",
    "PrivateKey",
    "PublicKey",
    "check_key_strength",
    "generate_key",
    "key_description",
    "load_private_key",
    "private_key_pem",
    "public_key_matches",
]

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey

#: RSA below 2048 bits is refused for issuance and flagged by the lint (NIST SP 800-131A).
MIN_RSA_BITS = 2048


class KeyType(enum.StrEnum):
    """The key types certkit generates. RSA 2048 is what Exchange 2010 expects (its default)."""

    RSA2048 = "rsa2048"
    RSA3072 = "rsa3072"
    RSA4096 = "rsa4096"
    EC_P256 = "ec-p256"
    EC_P384 = "ec-p384"

    @classmethod
    def parse(cls, value: str | KeyType) -> KeyType:
        try:
            return cls(str(value).lower())
        except ValueError:
            choices = ", ".join(k.value for k in cls)
            if str(value).lower().startswith("rsa"):
                raise PolicyError(f"Key type {value!r} is not offered: RSA keys must be at least 2048 bits.",
                                  f"Choose one of {choices}.") from None
            raise InputError(f"Unknown key type {value!r}.", f"Choose one of {choices}.") from None

    @property
    def is_rsa(self) -> bool:
        return self.value.startswith("rsa")


def generate_key(key_type: KeyType | str) -> PrivateKey:
    """Generate a fresh private key of ``key_type``."""
    kt = KeyType.parse(key_type)
    if kt.is_rsa:
        return rsa.generate_private_key(public_exponent=65537, key_size=int(kt.value[3:]))
    curve: ec.EllipticCurve = ec.SECP256R1() if kt is KeyType.EC_P256 else ec.SECP384R1()
    return ec.generate_private_key(curve)


def key_description(key: object) -> str:
    """``RSA 2048``, ``EC secp256r1``, ``Ed25519``: how the lint and ``inspect`` name a key."""
    if isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey):
        return f"RSA {key.key_size}"
    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        return f"EC {key.curve.name}"
    if isinstance(key, ed25519.Ed25519PublicKey | ed25519.Ed25519PrivateKey):
        return "Ed25519"
    if isinstance(key, ed448.Ed448PublicKey | ed448.Ed448PrivateKey):
        return "Ed448"
    return type(key).__name__


def check_key_strength(key: object, *, what: str = "The key") -> None:
    """Refuse keys certkit will not put into a certificate."""
    if isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey) and key.key_size < MIN_RSA_BITS:
        raise PolicyError(f"{what} is RSA {key.key_size}, below the minimum of {MIN_RSA_BITS} bits.",
                          "Generate a new key of at least 2048 bits (e.g. --key rsa2048 or --rekey).")
    if not isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey | ec.EllipticCurvePublicKey
                      | ec.EllipticCurvePrivateKey):
        raise PolicyError(f"{what} is {key_description(key)}, which mail servers do not accept for TLS.",
                          "Use an RSA (2048 or more) or EC P-256/P-384 key.")


def private_key_pem(key: PrivateKey, passphrase: bytes | None = None) -> bytes:
    """PKCS#8 PEM, encrypted with the best available scheme when a passphrase is given."""
    from cryptography.hazmat.primitives import serialization

    enc: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    )
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)


def load_private_key(data: bytes, passphrase: bytes | None = None, *, source: str = "the key") -> PrivateKey:
    """Load a PEM or DER private key; errors say whether the passphrase or the file is at fault."""
    from cryptography.hazmat.primitives import serialization

    loaders = (serialization.load_pem_private_key,) if b"-----BEGIN" in data else (
        serialization.load_der_private_key,)
    for loader in loaders:
        try:
            key = loader(data, password=passphrase)
        except TypeError as exc:
            if "encrypted" in str(exc) and passphrase is None:
                raise PassphraseError(f"{source} is encrypted and no passphrase was given.",
                                      "Give its passphrase (see --help for where it is read from).") from None
            if passphrase is not None:
                # An unencrypted key with a passphrase given: use it as it is.
                return load_private_key(data, None, source=source)
            raise MalformedInputError(f"{source} cannot be read: {exc}.") from None
        except ValueError as exc:
            text = str(exc).lower()
            # A wrong passphrase now and then decrypts to padding that looks valid, and then fails as an
            # ASN.1 error: for a PEM that says it is encrypted, any failure with a passphrase is the passphrase.
            encrypted_pem = b"ENCRYPTED PRIVATE KEY" in data or b"Proc-Type: 4,ENCRYPTED" in data
            if passphrase is not None and (encrypted_pem or "decrypt" in text or "password" in text or "bad" in text):
                raise PassphraseError(f"The passphrase for {source} is wrong.",
                                      "Check the passphrase source and try again.") from None
            raise MalformedInputError(f"{source} is not a readable private key ({exc}).",
                                      "Give a PEM or DER private key file.") from None
        except Exception as exc:
            raise MalformedInputError(f"{source} is not a readable private key ({exc}).",
                                      "Give a PEM or DER private key file.") from None
        if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
            raise PolicyError(f"{source} is {key_description(key)}, which certkit does not use for mail TLS.",
                              "Use an RSA or EC key.")
        return key
    raise MalformedInputError(f"{source} is not a private key.")


def public_key_matches(private_key: PrivateKey, public_key: object) -> bool:
    """True when ``private_key`` is the private half of ``public_key``."""
    from cryptography.hazmat.primitives import serialization

    mine = private_key.public_key().public_bytes(serialization.Encoding.DER,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo)
    try:
        theirs = public_key.public_bytes(serialization.Encoding.DER,  # type: ignore[attr-defined]
                                         serialization.PublicFormat.SubjectPublicKeyInfo)
    except AttributeError:
        return False
    return bool(mine == theirs)
