"""Our TLS client identity from files: a certificate (leaf first, chain after), its key, more chain.

:func:`load_identity` is the one place that reads them and checks that the key belongs to the
certificate (:func:`certkit.core.keys.public_key_matches`): the probe (``--client-cert``), the lab
sender (``--cert``) and the CA (:meth:`certkit.ca.CertificateAuthority.identity_for`, ``--as NAME``)
all load through it.
"""

from __future__ import annotations

from cryptography import x509

from certkit.adapters.inputs import read_input
from certkit.adapters.transport import ClientIdentity
from certkit.core.formats import load_certificates
from certkit.core.keys import load_private_key, public_key_matches
from certkit.errors import InputError

__all__ = ["load_identity"]


def load_identity(cert: str, key: str, *, chain: str | None = None, passphrase: bytes | None = None,
                  what: str = "certificate") -> ClientIdentity:
    """The certificate in ``cert`` (its first one), the key in ``key``, and the intermediates after the
    leaf in ``cert`` and in ``chain`` (each once, the leaf never among them).

    ``passphrase`` decrypts an encrypted key; ``what`` names the certificate in messages ("client
    certificate"). A key that is not the certificate's is an :class:`~certkit.errors.InputError`.
    """
    certs = load_certificates(read_input(cert, what=what), source=cert)
    extra: list[x509.Certificate] = []
    if chain:
        extra = load_certificates(read_input(chain, what="chain"), source=chain)
    private = load_private_key(read_input(key, what=f"{what.removesuffix('certificate')}key".strip()), passphrase,
                               source=key)
    if not public_key_matches(private, certs[0].public_key()):
        raise InputError(f"The key {key} does not belong to the certificate in {cert}.",
                         "Give the key that was generated with the certificate.")
    intermediates = [c for c in [*certs[1:], *extra] if c != certs[0]]
    return ClientIdentity(certs[0], private, tuple(dict.fromkeys(intermediates)))
