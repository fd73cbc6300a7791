"""Mozilla's root certificates, from certifi. The only module that imports certifi.

Exchange trusts the Windows root store, so certkit's default validation uses the managed anchors
plus these public roots; ``managed_only`` restricts validation to the managed anchors.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

import certifi
from cryptography import x509
from cryptography.utils import CryptographyDeprecationWarning

from certkit.core.trust import AnchorSet

__all__ = ["certifi_version", "public_roots", "public_roots_pem"]


def certifi_version() -> str:
    """The version of the certifi bundle in use (it is dated: YYYY.MM.DD)."""
    return str(certifi.__version__)


@functools.cache
def public_roots() -> AnchorSet:
    """Mozilla's roots as an anchor set (origin ``certifi``), loaded once per process."""
    pem = Path(certifi.where()).read_bytes()
    with warnings.catch_warnings():
        # One Mozilla root has a non-positive serial number; cryptography warns but loads it.
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        certs = x509.load_pem_x509_certificates(pem)
    return AnchorSet.of(certs, origin="certifi")


@functools.cache
def public_roots_pem() -> str:
    """Mozilla's roots as one PEM text, for an :class:`ssl.SSLContext` (``cadata``): the Web PKI of MTA-STS."""
    return Path(certifi.where()).read_text("ascii")
