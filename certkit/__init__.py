"""certkit: certificate life cycle and trust for mail servers that use mutual TLS.

The public API is what :data:`__all__` lists; everything else may change.
"""

from __future__ import annotations

from certkit.ca import CAStatus, CertificateAuthority, CrlInfo, IssuedCertificate, IssueRequest, exchange_selfsigned
from certkit.clock import Clock, FixedClock, SystemClock
from certkit.core.findings import CATALOGUE, Code, Finding, Severity, Side
from certkit.core.formats import PfxTarget
from certkit.core.keys import KeyType
from certkit.core.lint import lint_certificate
from certkit.core.profiles import ProfileName
from certkit.errors import (
    AlreadyExistsError,
    CertkitError,
    InputError,
    MalformedInputError,
    NotFoundError,
    PassphraseError,
    PolicyError,
    StoreError,
    UsageError,
)

__all__ = [
    "CATALOGUE",
    "AlreadyExistsError",
    "CAStatus",
    "CertificateAuthority",
    "CertkitError",
    "Clock",
    "Code",
    "CrlInfo",
    "Finding",
    "FixedClock",
    "InputError",
    "IssueRequest",
    "IssuedCertificate",
    "KeyType",
    "MalformedInputError",
    "NotFoundError",
    "PassphraseError",
    "PfxTarget",
    "PolicyError",
    "ProfileName",
    "Severity",
    "Side",
    "StoreError",
    "SystemClock",
    "UsageError",
    "exchange_selfsigned",
    "lint_certificate",
]
