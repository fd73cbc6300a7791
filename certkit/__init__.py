"""certkit: certificate life cycle and trust for mail servers that use mutual TLS.

The public API is what :data:`__all__` lists; everything else may change. Names are imported on
first use (PEP 562), so ``import certkit`` and the command line stay fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from certkit.adapters.truststore import TrustStore
    from certkit.ca import CAStatus, CertificateAuthority, CrlInfo, IssuedCertificate, IssueRequest, exchange_selfsigned
    from certkit.checks.preflight import PreflightReport, preflight
    from certkit.checks.probe import AddressResult, ProbeResult, probe, probe_sync
    from certkit.clock import Clock, FixedClock, SystemClock
    from certkit.configgen import exchange_script, partner_kit, postfix_config
    from certkit.core.clientauth import AuditReport, ClientCertificate, audit_client_certificates
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
        UnreachableError,
        UsageError,
    )
    from certkit.tlsrpt import tlsrpt_report

#: public name -> the module that defines it
_WHERE: dict[str, str] = {
    "AddressResult": "certkit.checks.probe",
    "AlreadyExistsError": "certkit.errors",
    "Anchor": "certkit.core.trust",
    "anchor_refusals": "certkit.core.trust",
    "audit_client_certificates": "certkit.core.clientauth",
    "AuditReport": "certkit.core.clientauth",
    "AnchorSet": "certkit.core.trust",
    "CAStatus": "certkit.ca",
    "CATALOGUE": "certkit.core.findings",
    "CertificateAuthority": "certkit.ca",
    "CertkitError": "certkit.errors",
    "ClientCertificate": "certkit.core.clientauth",
    "Clock": "certkit.clock",
    "Code": "certkit.core.findings",
    "CrlInfo": "certkit.ca",
    "domain_matches": "certkit.core.verify",
    "exchange_script": "certkit.configgen",
    "exchange_selfsigned": "certkit.ca",
    "Finding": "certkit.core.findings",
    "FixedClock": "certkit.clock",
    "host_matches": "certkit.core.verify",
    "InputError": "certkit.errors",
    "IssuedCertificate": "certkit.ca",
    "IssueRequest": "certkit.ca",
    "KeyType": "certkit.core.keys",
    "lint_certificate": "certkit.core.lint",
    "MalformedInputError": "certkit.errors",
    "NotFoundError": "certkit.errors",
    "partner_kit": "certkit.configgen",
    "PassphraseError": "certkit.errors",
    "PfxTarget": "certkit.core.formats",
    "PolicyError": "certkit.errors",
    "postfix_config": "certkit.configgen",
    "preflight": "certkit.checks.preflight",
    "PreflightReport": "certkit.checks.preflight",
    "probe": "certkit.checks.probe",
    "probe_sync": "certkit.checks.probe",
    "ProbeResult": "certkit.checks.probe",
    "ProfileName": "certkit.core.profiles",
    "Severity": "certkit.core.findings",
    "Side": "certkit.core.findings",
    "StoreError": "certkit.errors",
    "SystemClock": "certkit.clock",
    "tlsrpt_report": "certkit.tlsrpt",
    "TrustStore": "certkit.adapters.truststore",
    "UnreachableError": "certkit.errors",
    "UsageError": "certkit.errors",
    "VerificationResult": "certkit.core.verify",
    "verify_chain": "certkit.core.verify",
}

__all__ = [
    "CATALOGUE",
    "AddressResult",
    "AlreadyExistsError",
    "Anchor",
    "AnchorSet",
    "AuditReport",
    "CAStatus",
    "CertificateAuthority",
    "CertkitError",
    "ClientCertificate",
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
    "UnreachableError",
    "UsageError",
    "VerificationResult",
    "anchor_refusals",
    "audit_client_certificates",
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


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'certkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function (and beat a same-named submodule)
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
