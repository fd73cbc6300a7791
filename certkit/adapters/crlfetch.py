"""Fetching CRLs from their distribution points, as Windows does for Domain Security.

Deliberately small and strict: only ``http://`` URLs (CRL distribution points are plain HTTP by
convention, RFC 5280 4.2.1.13, and the CRL is signed, so TLS adds nothing), one GET, no redirects
(a probe does not follow a server anywhere else), a ``timeout`` for the whole download, and at most
``max_bytes`` (10 MiB by default). The body is parsed as a DER or PEM CRL. Every failure is data in
:class:`CrlFetch`: "could not check revocation" (``error`` set) is a different finding from "revoked".
"""

from __future__ import annotations

import http.client
import threading
import time
import urllib.parse
from dataclasses import dataclass

from cryptography import x509

__all__ = ["MAX_CRL_BYTES", "CrlCache", "CrlFetch", "fetch_crl"]

#: The largest CRL downloaded.
MAX_CRL_BYTES = 10 * 1024 * 1024


@dataclass(frozen=True)
class CrlFetch:
    """The outcome of one download: the CRL, or ``error`` saying why there is none."""

    url: str
    crl: x509.CertificateRevocationList | None = None
    data: bytes | None = None
    status: int | None = None
    error: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.crl is not None


def _parse(data: bytes) -> x509.CertificateRevocationList:
    if data.lstrip().startswith(b"-----BEGIN"):
        return x509.load_pem_x509_crl(data)
    return x509.load_der_x509_crl(data)


def fetch_crl(url: str, *, timeout: float = 5.0, max_bytes: int = MAX_CRL_BYTES) -> CrlFetch:
    """Download and parse the CRL at ``url`` (``http://`` only, no redirects, bounded in time and size)."""
    start = time.monotonic()

    def done(**kwargs: object) -> CrlFetch:
        return CrlFetch(url=url, seconds=time.monotonic() - start, **kwargs)  # type: ignore[arg-type]

    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() != "http" or not parts.hostname:
        return done(error=f"not an http:// URL: {url!r} (certkit fetches CRLs over plain HTTP only)")
    try:
        port = parts.port or 80
    except ValueError:
        return done(error=f"bad port in {url!r}")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    deadline = start + timeout
    conn = http.client.HTTPConnection(parts.hostname, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Accept": "application/pkix-crl, */*", "User-Agent": "certkit",
                                           "Connection": "close"})
        response = conn.getresponse()
        if response.status != 200:
            where = response.getheader("Location")
            extra = f" (redirect to {where} not followed)" if where and 300 <= response.status < 400 else ""
            return done(status=response.status, error=f"HTTP {response.status} {response.reason}{extra}")
        length = response.getheader("Content-Length")
        if length and length.isdigit() and int(length) > max_bytes:
            return done(status=200, error=f"the CRL is {length} bytes, more than the limit of {max_bytes}")
        body = bytearray()
        while True:
            if time.monotonic() > deadline:
                return done(status=200, error=f"the download took longer than {timeout:g} s")
            chunk = response.read1(65536)
            if not chunk:
                break
            body += chunk
            if len(body) > max_bytes:
                return done(status=200, error=f"the CRL is larger than the limit of {max_bytes} bytes")
    except TimeoutError:
        return done(error=f"no answer from {parts.netloc} within {timeout:g} s")
    except ConnectionRefusedError:
        return done(error=f"connection to {parts.netloc} refused")
    except (OSError, http.client.HTTPException) as e:
        return done(error=f"cannot download from {parts.netloc}: {e}")
    finally:
        conn.close()
    data = bytes(body)
    try:
        crl = _parse(data)
    except ValueError as e:
        return done(status=200, data=data, error=f"the download is not a CRL: {e}")
    return done(status=200, data=data, crl=crl)


class CrlCache:
    """Fetches each URL once per run (many endpoints share a distribution point); thread-safe."""

    def __init__(self, *, timeout: float = 5.0, max_bytes: int = MAX_CRL_BYTES) -> None:
        self.timeout = timeout
        self.max_bytes = max_bytes
        self._results: dict[str, CrlFetch] = {}
        self._lock = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}

    def get(self, url: str) -> CrlFetch:
        """The (cached) result of :func:`fetch_crl` for ``url``."""
        with self._lock:
            lock = self._locks.setdefault(url, threading.Lock())
        with lock:
            if url not in self._results:
                self._results[url] = fetch_crl(url, timeout=self.timeout, max_bytes=self.max_bytes)
            return self._results[url]
