"""certkit: certificate life cycle and trust for mail servers that use mutual TLS.

The public API is what :data:`__all__` lists; everything else may change.
"""

from __future__ import annotations

from certkit.clock import Clock, FixedClock, SystemClock
from certkit.core.findings import CATALOGUE, Code, Finding, Severity, Side
from certkit.core.formats import PfxTarget
from certkit.core.keys import KeyType
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
    "CertkitError",
    "Clock",
    "Code",
    "Finding",
    "FixedClock",
    "InputError",
    "KeyType",
    "MalformedInputError",
    "NotFoundError",
    "PassphraseError",
    "PfxTarget",
    "PolicyError",
    "Severity",
    "Side",
    "StoreError",
    "SystemClock",
    "UsageError",
]
