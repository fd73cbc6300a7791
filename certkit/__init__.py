"""certkit: certificate life cycle and trust for mail servers that use mutual TLS.

The public API is the set of names imported in the ``if TYPE_CHECKING:`` block below -- declared there
once; everything else may change. Type checkers read those imports. At run time nothing is imported with
``certkit`` itself, so ``import certkit`` and the command line stay fast (importing every module eagerly
costs about a quarter of a second and pulls in cryptography's serialization); on first use of a public
name, :func:`__getattr__` reads the same block from this file (PEP 562) to learn where the name lives.
``__all__`` is derived from it too.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the public API (each name as itself, so that type checkers re-export it)
    from certkit.adapters.truststore import TrustStore as TrustStore
    from certkit.ca import CAStatus as CAStatus
    from certkit.ca import CertificateAuthority as CertificateAuthority
    from certkit.ca import CrlInfo as CrlInfo
    from certkit.ca import IssuedCertificate as IssuedCertificate
    from certkit.ca import IssueRequest as IssueRequest
    from certkit.ca import exchange_selfsigned as exchange_selfsigned
    from certkit.checks.ourcert import OurCertificate as OurCertificate
    from certkit.checks.ourcert import check_our_certificate as check_our_certificate
    from certkit.checks.preflight import PreflightOptions as PreflightOptions
    from certkit.checks.preflight import PreflightReport as PreflightReport
    from certkit.checks.preflight import preflight as preflight
    from certkit.checks.probe import AddressResult as AddressResult
    from certkit.checks.probe import ProbeOptions as ProbeOptions
    from certkit.checks.probe import ProbeResult as ProbeResult
    from certkit.checks.probe import probe as probe
    from certkit.checks.probe import probe_sync as probe_sync
    from certkit.checks.watch import Watcher as Watcher
    from certkit.clock import Clock as Clock
    from certkit.clock import FixedClock as FixedClock
    from certkit.clock import SystemClock as SystemClock
    from certkit.configgen import exchange_script as exchange_script
    from certkit.configgen import partner_kit as partner_kit
    from certkit.configgen import postfix_config as postfix_config
    from certkit.core.clientauth import AuditReport as AuditReport
    from certkit.core.clientauth import ClientCertificate as ClientCertificate
    from certkit.core.clientauth import audit_client_certificates as audit_client_certificates
    from certkit.core.findings import CATALOGUE as CATALOGUE
    from certkit.core.findings import Code as Code
    from certkit.core.findings import Finding as Finding
    from certkit.core.findings import Severity as Severity
    from certkit.core.findings import Side as Side
    from certkit.core.formats import PfxTarget as PfxTarget
    from certkit.core.keys import KeyType as KeyType
    from certkit.core.lint import lint_certificate as lint_certificate
    from certkit.core.profiles import ProfileName as ProfileName
    from certkit.core.trust import Anchor as Anchor
    from certkit.core.trust import AnchorSet as AnchorSet
    from certkit.core.trust import Override as Override
    from certkit.core.trust import anchor_refusals as anchor_refusals
    from certkit.core.verify import VerificationResult as VerificationResult
    from certkit.core.verify import VerifyOptions as VerifyOptions
    from certkit.core.verify import domain_matches as domain_matches
    from certkit.core.verify import host_matches as host_matches
    from certkit.core.verify import verify_chain as verify_chain
    from certkit.core.watch import WatchTarget as WatchTarget
    from certkit.errors import AlreadyExistsError as AlreadyExistsError
    from certkit.errors import CertkitError as CertkitError
    from certkit.errors import InputError as InputError
    from certkit.errors import MalformedInputError as MalformedInputError
    from certkit.errors import NotFoundError as NotFoundError
    from certkit.errors import PassphraseError as PassphraseError
    from certkit.errors import PolicyError as PolicyError
    from certkit.errors import StoreError as StoreError
    from certkit.errors import UnreachableError as UnreachableError
    from certkit.errors import UsageError as UsageError
    from certkit.tlsrpt import tlsrpt_report as tlsrpt_report

_where: dict[str, str] | None = None  # public name -> its module, read from the block above on first use


def _public_api() -> dict[str, str]:
    """The public names and their modules, as the ``if TYPE_CHECKING:`` block of this file imports them.

    A regular expression, not :mod:`ast`: it costs half a millisecond on first use (``ast`` ten);
    tests/test_public_api.py checks that it reads the block as Python does.
    """
    global _where
    if _where is None:
        import re  # (already imported by typing; pathlib would cost 20 ms)

        loader = __spec__.loader if __spec__ is not None else None
        text = loader.get_source(__name__) if loader is not None and hasattr(loader, "get_source") else None
        if text is None:  # no loader that knows the source: read the file itself
            with open(__file__, encoding="utf-8") as source:
                text = source.read()
        _where = {name: module for module, name in re.findall(_PUBLIC_IMPORT, text)}
    return _where


#: One line of the block: ``from MODULE import NAME as NAME`` (ruff keeps such imports one to a line).
_PUBLIC_IMPORT = r"(?m)^    from (certkit[\w.]*) import (\w+) as \2$"


def __getattr__(name: str) -> Any:
    if name == "__all__":
        return sorted(_public_api())
    module = _public_api().get(name)
    if module is None:
        raise AttributeError(f"module 'certkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function (and beat a same-named submodule)
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_public_api()])
