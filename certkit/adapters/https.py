"""One HTTPS GET, the way RFC 8461 3.3 fetches an MTA-STS policy: the only module that speaks HTTPS.

:func:`https_get` connects to ``host`` (or to an ``address`` the caller resolved, with ``host`` as the TLS
server name and the ``Host`` header), verifies the server's certificate for ``host`` against the Web PKI
(Mozilla's roots through :mod:`certkit.adapters.roots`) or the roots given as PEM, sends one GET, and reads
at most ``max_bytes`` of the body within ``timeout`` seconds in all (connection, handshake, headers and
body). A redirect is never followed (RFC 8461 3.3: "HTTP 3xx redirects MUST NOT be followed") and nothing
is cached. Failures are data (:attr:`HttpsFetch.error`), never exceptions.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import ssl
import threading
import time
from dataclasses import dataclass

__all__ = ["HttpsFetch", "https_get", "tls_context"]

#: RFC 8461 3.3's suggested limit of a policy's size (64 KB).
MAX_BYTES = 64 * 1024


@dataclass(frozen=True)
class HttpsFetch:
    """What one GET gave: the status, media type and body, or why there is none.

    ``certificate_error`` is set when the server's certificate failed verification for the host name
    (RFC 8460's ``sts-webpki-invalid`` for a policy host); ``location`` is a redirect's target (not
    followed); ``body`` is set only for a complete response within the limits.
    """

    url: str
    address: str | None = None
    status: int | None = None
    content_type: str | None = None
    body: bytes | None = None
    error: str | None = None
    certificate_error: bool = False
    location: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.body is not None


def tls_context(cadata: str | None = None) -> ssl.SSLContext:
    """A client context that verifies the server for its host name against ``cadata`` (PEM roots), or the
    Web PKI (Mozilla's roots from certifi) when none are given; TLS 1.2 or later."""
    if cadata is None:
        from certkit.adapters.roots import public_roots_pem

        cadata = public_roots_pem()
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=cadata)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


class _Deadline:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        remaining = self.end - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        return remaining


def https_get(host: str, path: str = "/", *, address: str | None = None, port: int = 443,
              cadata: str | None = None, timeout: float = 60.0, max_bytes: int = MAX_BYTES,
              context: ssl.SSLContext | None = None) -> HttpsFetch:
    """GET ``https://host[:port]/path`` (see the module docstring); ``context`` overrides ``cadata``."""
    url = f"https://{host}{'' if port == 443 else f':{port}'}{path}"
    deadline = _Deadline(timeout)
    ctx = context or tls_context(cadata)
    conn = http.client.HTTPSConnection(host, port, context=ctx, timeout=timeout)
    late = f"no complete answer within {timeout:g} s"
    cut = threading.Event()
    watchdog: threading.Timer | None = None
    try:
        raw = socket.create_connection((address or host, port), timeout=deadline.left())
        # Each read is bounded by the socket's timeout; the watchdog bounds them all: a server that sends a
        # byte a second ends no read, but it ends the deadline.
        watchdog = threading.Timer(deadline.left(), _cut, (raw, cut))
        watchdog.daemon = True
        watchdog.start()
        try:
            tls = ctx.wrap_socket(raw, server_hostname=host)
        except ssl.SSLCertVerificationError as e:
            raw.close()
            return HttpsFetch(url, address, error=f"the certificate of {host} is not valid for it: "
                                                  f"{e.verify_message or e.reason}", certificate_error=True)
        except BaseException:
            raw.close()
            raise
        conn.sock = tls
        fetched = _exchange(conn, tls, url, address, path, deadline, max_bytes)
        return HttpsFetch(url, address, error=late) if cut.is_set() else fetched
    except TimeoutError:
        return HttpsFetch(url, address, error=late)
    except ssl.SSLError as e:
        return HttpsFetch(url, address, error=late if cut.is_set() else f"TLS failed: {e.reason or e}")
    except (OSError, http.client.HTTPException) as e:
        if cut.is_set():
            return HttpsFetch(url, address, error=late)
        return HttpsFetch(url, address, error=f"{type(e).__name__}: {e}" if str(e) else type(e).__name__)
    finally:
        if watchdog is not None:
            watchdog.cancel()
        conn.close()


def _cut(sock: socket.socket, cut: threading.Event) -> None:
    cut.set()
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def _exchange(conn: http.client.HTTPSConnection, tls: ssl.SSLSocket, url: str, address: str | None, path: str,
              deadline: _Deadline, max_bytes: int) -> HttpsFetch:
    tls.settimeout(deadline.left())
    # No cache anywhere (RFC 8461 3.3): this client keeps nothing, and asks caches on the way for a fresh copy.
    conn.request("GET", path, headers={"User-Agent": "certkit", "Accept": "text/plain",
                                       "Cache-Control": "no-cache", "Connection": "close"})
    resp = conn.getresponse()
    try:
        return _read(resp, tls, url, address, deadline, max_bytes)
    finally:
        resp.close()
        tls.close()


def _read(resp: http.client.HTTPResponse, tls: ssl.SSLSocket, url: str, address: str | None, deadline: _Deadline,
          max_bytes: int) -> HttpsFetch:
    media = resp.getheader("Content-Type")
    if 300 <= resp.status < 400:
        where = resp.getheader("Location")
        return HttpsFetch(url, address, resp.status, media, location=where,
                          error=f"HTTP {resp.status} redirect to {where or '(no Location)'}; redirects are not "
                                "followed (RFC 8461 3.3)")
    if resp.status != 200:
        return HttpsFetch(url, address, resp.status, media, error=f"HTTP {resp.status} {resp.reason}".rstrip())
    declared = resp.getheader("Content-Length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        return HttpsFetch(url, address, resp.status, media,
                          error=f"the policy is {int(declared)} bytes, over the limit of {max_bytes}")
    body = bytearray()
    while True:
        tls.settimeout(deadline.left())
        chunk = resp.read1(min(16384, max_bytes + 1 - len(body)))
        if not chunk:
            break
        body += chunk
        if len(body) > max_bytes:
            return HttpsFetch(url, address, resp.status, media, error=f"the policy is over the limit of {max_bytes} "
                                                                      "bytes")
    return HttpsFetch(url, address, resp.status, media, bytes(body))
