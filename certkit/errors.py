"""The one error hierarchy of certkit.

Every error says what is wrong and what to do about it, in one line. The CLI maps each class to an
exit code through :attr:`CertkitError.exit_code`:

* ``2`` -- misuse: the input or the request is wrong (bad file, bad name, wrong passphrase, a file
  that would be overwritten). Fix the command and run it again.
* ``1`` -- failure: the request was fine but could not be carried out (a corrupt index, a store
  changed behind certkit's back).
* ``3`` -- nothing could be reached: the network peer the command needs did not answer.

A certificate that fails validation is *not* an error: the verifier returns findings as data.
"""

from __future__ import annotations

__all__ = [
    "AlreadyExistsError",
    "CertkitError",
    "InputError",
    "MalformedInputError",
    "NotFoundError",
    "PassphraseError",
    "PolicyError",
    "StoreError",
    "UnreachableError",
    "UsageError",
]


class CertkitError(Exception):
    """Root of every error certkit raises on purpose.

    ``message`` says what is wrong; ``hint`` says what to do. ``str(err)`` joins them into one line.
    """

    exit_code: int = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message, hint)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message.rstrip('.')}. {self.hint}"
        return self.message

    def __reduce__(self) -> tuple[type[CertkitError], tuple[str, str | None]]:
        return (type(self), (self.message, self.hint))


class UsageError(CertkitError):
    """The library or the command was called the wrong way."""

    exit_code = 2


class InputError(UsageError):
    """An input value (a name, a key size, a validity, an option) is not acceptable."""


class MalformedInputError(InputError):
    """A file or blob cannot be parsed as what it claims to be (PEM, DER, PKCS#7, PKCS#12, CSR, CRL)."""


class PassphraseError(InputError):
    """A passphrase or PFX password is missing or wrong."""


class PolicyError(InputError):
    """A request contradicts the CA's policy (weak key, validity beyond the CA, name outside constraints)."""


class AlreadyExistsError(UsageError):
    """Carrying out the request would overwrite something that already exists."""


class NotFoundError(UsageError):
    """The certificate, anchor or home named does not exist."""


class StoreError(CertkitError):
    """A CA home or trust store on disk is damaged, locked, or was changed behind certkit's back."""


class UnreachableError(CertkitError):
    """The network peer a command needs (an SMTP endpoint, a DNS server) could not be reached."""

    exit_code = 3
