"""certkit: certificate life cycle and trust for mail servers that use mutual TLS.

The public API is what :data:`__all__` lists; everything else may change.
"""

from __future__ import annotations

from certkit.adapters.truststore import TrustStore
from certkit.ca import CAStatus, CertificateAuthority, CrlInfo, IssuedCertificate, IssueRequest, exchange_selfsigned
from certkit.clock import Clock, FixedClock, SystemClock
from certkit.core.findings import CATALOGUE, Code, Finding, Severity, Side
from certkit.core.formats import PfxTarget
from certkit.core.keys import KeyType
from certkit.core.lint import lint_certificate
from certkit.core.profiles import ProfileName
from certkit.core.trust import Anchor, AnchorSet, anchor_refusals
from certkit.core.verify import VerificationResult, domain_matches, host_matches, verify_chain
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
    "Anchor",
    "AnchorSet",
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
    "TrustStore",
    "UsageError",
    "VerificationResult",
    "anchor_refusals",
    "domain_matches",
    "exchange_selfsigned",
    "host_matches",
    "lint_certificate",
    "verify_chain",
]
