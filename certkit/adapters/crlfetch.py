"""Fetching CRLs from their distribution points, as Windows does for Domain Security.

Deliberately small and strict: only ``http://`` URLs (CRL distribution points are plain HTTP by
convention, RFC 5280 4.2.1.13, and the CRL is signed, so TLS adds nothing), one GET, no redirects
(a probe does not follow a server anywhere else), a ``timeout`` for the whole download, and at most
``max_bytes`` (10 MiB by default). The deadline covers connecting, the headers and the body: the
socket's timeout is the time left before every read, so a server trickling bytes cannot stretch it.
The body is parsed as a DER or PEM CRL. Every failure is data in :class:`CrlFetch`: "could not
check revocation" (``error`` set) is a different finding from "revoked".
"""

from __future__ import annotations

import http.client
import io
import socket
import threading
import time
import urllib.parse
from dataclasses import dataclass

from cryptography import x509

from certkit.errors import UsageError

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


#: The most header bytes accepted before the body.
MAX_HEADER_BYTES = 64 * 1024


class _Replay:
    """A socket stand-in that replays received bytes, so :class:`http.client.HTTPResponse` can parse them."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def makefile(self, *args: object, **kwargs: object) -> io.BytesIO:
        return io.BytesIO(self._data)


class _TooBig(Exception):
    pass


def _check_timeout(timeout: float) -> None:
    if not isinstance(timeout, int | float) or not timeout > 0 or timeout != timeout:
        raise UsageError(f"A CRL download timeout must be a positive number of seconds, not {timeout!r}.",
                         "Pass e.g. timeout=5.")


def _head_complete(buf: bytearray) -> tuple[int, int | None, int] | None:
    """``(status, content length or None, body offset)`` once the status line and headers are in ``buf``."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    lines = bytes(buf[:end]).split(b"\r\n")
    parts = lines[0].split(None, 2)
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    length: int | None = None
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"transfer-encoding":
            return status, None, end + 4  # chunked: read to the end of the stream
        if name.strip().lower() == b"content-length" and value.strip().isdigit():
            length = int(value.strip())
    return status, length, end + 4


def _download(host: str, port: int, request: bytes, deadline: float, max_bytes: int) -> bytes:
    """The raw HTTP response, read under one ``deadline`` for connect, headers and body together.

    The socket's timeout is set to the time left before every operation, so a server that trickles its
    headers or its body one byte at a time cannot stretch the download past the deadline.
    """

    def left() -> float:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("deadline passed")
        return remaining

    sock = socket.create_connection((host, port), timeout=left())
    try:
        sock.settimeout(left())
        sock.sendall(request)
        buf = bytearray()
        while True:
            sock.settimeout(left())
            chunk = sock.recv(65536)
            if not chunk:
                return bytes(buf)
            buf += chunk
            head = _head_complete(buf)
            if head is None:
                if len(buf) > MAX_HEADER_BYTES:
                    raise http.client.HTTPException(f"more than {MAX_HEADER_BYTES} bytes of headers")
                continue
            status, length, body_at = head
            if status != 200:
                return bytes(buf)  # status and headers are all that is used
            if (length if length is not None else len(buf) - body_at) > max_bytes:
                raise _TooBig(str(length) if length is not None else "")
            if length is not None and len(buf) - body_at >= length:
                return bytes(buf)
    finally:
        sock.close()


def fetch_crl(url: str, *, timeout: float = 5.0, max_bytes: int = MAX_CRL_BYTES) -> CrlFetch:
    """Download and parse the CRL at ``url`` (``http://`` only, no redirects, bounded in time and size).

    ``timeout`` bounds the whole download (connect, headers and body); a non-positive one is a
    :class:`~certkit.errors.UsageError`.
    """
    _check_timeout(timeout)
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
    if any(c in path or c in parts.netloc for c in "\r\n "):
        return done(error=f"bad URL {url!r}")
    request = (f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nAccept: application/pkix-crl, */*\r\n"
               "User-Agent: certkit\r\nConnection: close\r\n\r\n").encode("ascii", "replace")
    try:
        raw = _download(parts.hostname, port, request, start + timeout, max_bytes)
        response = http.client.HTTPResponse(_Replay(raw))  # type: ignore[arg-type]
        response.begin()
        if response.status != 200:
            where = response.getheader("Location")
            extra = f" (redirect to {where} not followed)" if where and 300 <= response.status < 400 else ""
            return done(status=response.status, error=f"HTTP {response.status} {response.reason}{extra}")
        body = response.read()
    except _TooBig as e:
        size = f"{e} bytes, more than" if str(e) else "larger than"
        return done(status=200, error=f"the CRL is {size} the limit of {max_bytes} bytes")
    except TimeoutError:
        return done(error=f"no complete answer from {parts.netloc} within {timeout:g} s")
    except ConnectionRefusedError:
        return done(error=f"connection to {parts.netloc} refused")
    except (OSError, http.client.HTTPException) as e:
        return done(error=f"cannot download from {parts.netloc}: {e or type(e).__name__}")
    if len(body) > max_bytes:
        return done(status=200, error=f"the CRL is larger than the limit of {max_bytes} bytes")
    data = bytes(body)
    try:
        crl = _parse(data)
    except ValueError as e:
        return done(status=200, data=data, error=f"the download is not a CRL: {e}")
    return done(status=200, data=data, crl=crl)


class CrlCache:
    """Fetches each URL once per run (many endpoints share a distribution point); thread-safe."""

    def __init__(self, *, timeout: float = 5.0, max_bytes: int = MAX_CRL_BYTES) -> None:
        _check_timeout(timeout)
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
