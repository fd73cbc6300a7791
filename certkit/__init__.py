"""certkit: certificate life cycle and trust for mail servers that use mutual TLS.

The public API is what :data:`__all__` lists; everything else may change.
"""

from __future__ import annotations

from certkit.adapters.truststore import TrustStore
from certkit.ca import CAStatus, CertificateAuthority, CrlInfo, IssuedCertificate, IssueRequest, exchange_selfsigned
from certkit.clock import Clock, FixedClock, SystemClock
from certkit.configgen import exchange_script, partner_kit, postfix_config
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
from certkit.preflight import PreflightReport, preflight
from certkit.probe import AddressResult, ProbeResult, probe, probe_sync
from certkit.tlsrpt import tlsrpt_report

__all__ = [
    "CATALOGUE",
    "AddressResult",
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
    "PreflightReport",
    "ProbeResult",
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
    "exchange_script",
    "exchange_selfsigned",
    "host_matches",
    "lint_certificate",
    "partner_kit",
    "postfix_config",
    "preflight",
    "probe",
    "probe_sync",
    "tlsrpt_report",
    "verify_chain",
]
