"""An HTTPS endpoint for TLS-RPT reports (RFC 8460 §5.4): ``POST`` a report, it is stored in a folder.

It faces the internet, so it trusts nothing it is sent. The rules, in the order they are applied:

* TLS with our certificate (TLS 1.2 at least); the handshake happens after the per-address checks, so a
  flood of idle connections costs a counter, not a handshake. At most ``max_connections_per_ip`` connections
  per address and ``max_connections`` in all; beyond that a connection is closed at once.
* The whole request head must arrive within ``header_timeout`` and the whole body within ``body_timeout``
  (slow senders, slowloris, are cut off at the deadline, not kept alive by a byte now and then); the head is
  at most ``max_header_bytes`` (431).
* Only ``POST`` (405) to one of ``paths`` (404: the path is compared exactly, never mapped to a file), at most
  ``rate_per_minute`` reports per address (429, token bucket), a body of at most ``max_body`` bytes (413,
  from Content-Length before anything is read, and while reading a chunked body), the media types
  ``application/tlsrpt+json`` or ``application/tlsrpt+gzip`` only (415), gzip decompressed with a cap of
  ``max_decompressed`` bytes read incrementally (413: a gzip bomb), and a body the report parser accepts
  (400, with its one-line reason).
* A report is stored atomically (temporary file, fsync, rename) as ``<received UTC>-<sha256 prefix>.json``:
  a name the server makes, never one from the request. The same report posted again is answered 200 and not
  stored twice; a new one 201.

Every connection is answered and closed (``Connection: close``): no keep-alive to hold slots. The server is
stdlib ``asyncio`` and ``ssl``: an HTTP framework would add a dependency for a single POST route, and the
limits above are easier to prove on a protocol handled in one page.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import hashlib
import re
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from certkit.adapters.aioserver import TaskServer
from certkit.adapters.fs import atomic_write, make_dirs
from certkit.adapters.tlsrpt_files import MEDIA_TYPES, DecompressionLimitError, gunzip
from certkit.clock import Clock, SystemClock
from certkit.core.text import printable
from certkit.core.tlsrpt_read import parse_report
from certkit.errors import AlreadyExistsError, CertkitError, InputError

__all__ = ["Event", "ReportServer", "ServeOptions", "tls_context"]

_REASONS = {200: "OK", 201: "Created", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            411: "Length Required", 413: "Content Too Large", 415: "Unsupported Media Type",
            429: "Too Many Requests", 431: "Request Header Fields Too Large", 500: "Internal Server Error",
            501: "Not Implemented", 503: "Service Unavailable", 505: "HTTP Version Not Supported"}
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_STORED = re.compile(r"^\d{8}T\d{6}Z-([0-9a-f]{20})\.json$")


@dataclass(frozen=True)
class ServeOptions:
    """Where reports go and the limits that keep the endpoint up (see the module's rules)."""

    out: Path
    max_body: int = 1024 * 1024
    max_decompressed: int = 20 * 1024 * 1024
    rate_per_minute: int = 60
    header_timeout: float = 10.0
    body_timeout: float = 60.0
    max_connections_per_ip: int = 4
    max_connections: int = 256
    max_header_bytes: int = 16 * 1024
    paths: tuple[str, ...] = ("/", "/tlsrpt", "/.well-known/tlsrpt")


@dataclass(frozen=True)
class Event:
    """What happened to one request (for the log): the answer, why, and the file stored."""

    at: _dt.datetime
    peer: str
    status: int
    reason: str
    file: Path | None = None
    organization: str | None = None
    report_id: str | None = None


class _Refused(Exception):
    def __init__(self, status: int, reason: str, headers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers


@dataclass
class _Request:
    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)


def tls_context(cert_file: str, key_file: str, password: bytes | None = None) -> ssl.SSLContext:
    """A server context (TLS 1.2 or later) with the certificate chain in ``cert_file`` and its key."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert_file, key_file, password=password)
    except ssl.SSLError as exc:
        raise InputError(f"The certificate {cert_file} and key {key_file} cannot be used for TLS "
                         f"({exc.reason or exc}).",
                         "Give the PEM certificate (with its chain) and the key that belongs to it; an encrypted "
                         "key needs $CERTKIT_KEY_PASSPHRASE.") from None
    except OSError as exc:
        raise InputError(f"Cannot read {exc.filename or cert_file}: {exc.strerror}.",
                         "Check the paths of --cert and --key.") from None
    return ctx


class _Buckets:
    """A token bucket per address: ``rate`` requests a minute, bursts of up to ``rate``."""

    def __init__(self, rate: int) -> None:
        self.rate = max(rate, 1)
        self.state: dict[str, tuple[float, float]] = {}

    def take(self, ip: str, now: float) -> float:
        """0 when a request may go ahead now (and it is counted), else the seconds until one may."""
        tokens, last = self.state.get(ip, (float(self.rate), now))
        tokens = min(float(self.rate), tokens + (now - last) * self.rate / 60.0)
        if tokens >= 1.0:
            self.state[ip] = (tokens - 1.0, now)
            self._prune(now)
            return 0.0
        self.state[ip] = (tokens, now)
        return (1.0 - tokens) * 60.0 / self.rate

    def _prune(self, now: float) -> None:
        if len(self.state) > 10_000:  # addresses whose bucket is full again carry no state worth keeping
            full = 60.0
            self.state = {k: v for k, v in self.state.items() if now - v[1] < full}


class ReportServer(TaskServer):
    """The TLS-RPT HTTPS endpoint on ``host:port`` (port 0: a free one, then :attr:`port` holds it).

    ``context`` is the TLS context (``None``: plain HTTP, for a TLS-terminating proxy in front); ``on_event``
    is called with an :class:`Event` for each request answered.
    """

    def __init__(self, options: ServeOptions, context: ssl.SSLContext | None, *, host: str = "127.0.0.1",
                 port: int = 0, on_event: Callable[[Event], None] | None = None, clock: Clock | None = None) -> None:
        super().__init__()
        self.options = options
        self.context = context
        self.host = host
        self.port = port
        self.on_event = on_event
        self.clock = clock or SystemClock()
        self.events: list[Event] = []
        self._per_ip: dict[str, int] = {}
        self._open = 0
        self._buckets = _Buckets(options.rate_per_minute)
        self._seen: set[str] = set()
        self._work = asyncio.Semaphore(2)

    # -- life cycle ----------------------------------------------------------------------------------
    async def start(self) -> None:
        """Create the folder, learn the reports already stored, and listen."""
        make_dirs(self.options.out)
        for f in self.options.out.iterdir():
            m = _STORED.match(f.name)
            if m:
                self._seen.add(m.group(1))
        self._server = await asyncio.start_server(self._accept, self.host, self.port,
                                                  limit=self.options.max_header_bytes, backlog=512)
        self.port = int(self._server.sockets[0].getsockname()[1])

    # stop() (cuts the requests in progress), serve_forever() and async with: TaskServer.

    # -- one connection ----------------------------------------------------------------------------
    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        ip = str(peer[0]) if isinstance(peer, tuple) and peer else "?"
        if (self._open >= self.options.max_connections
                or self._per_ip.get(ip, 0) >= self.options.max_connections_per_ip):
            writer.transport.abort()  # before TLS: a refused connection costs no handshake
            return
        self._open += 1
        self._per_ip[ip] = self._per_ip.get(ip, 0) + 1
        with self._track():
            try:
                await self._serve(reader, writer, ip)
            except asyncio.CancelledError:
                pass  # stop(): ending normally keeps start_server from logging the cancelled handler
            finally:
                self._open -= 1
                left = self._per_ip.get(ip, 1) - 1
                if left > 0:
                    self._per_ip[ip] = left
                else:
                    self._per_ip.pop(ip, None)
                writer.transport.abort()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, ip: str) -> None:
        try:
            async with asyncio.timeout(self.options.header_timeout):
                if self.context is not None:
                    await writer.start_tls(self.context)
                head = await reader.readuntil(b"\r\n\r\n")
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError, ssl.SSLError, OSError):
            return  # too slow, or gone, or not TLS: nothing to answer
        except asyncio.LimitOverrunError:
            await self._answer(writer, ip, _Refused(431, "request head too large"))
            return
        try:
            status, reason, event = await self._handle(head, reader, writer, ip)
        except _Refused as refused:
            await self._answer(writer, ip, refused)
            return
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, OSError):
            return  # too slow, gone, or a chunk line without end: the deadline or the peer ended it
        except Exception as exc:  # a bug must cost one request, not the server
            await self._answer(writer, ip, _Refused(500, f"internal error ({type(exc).__name__})"))
            return
        await self._answer(writer, ip, None, status, reason, event)

    async def _handle(self, head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      ip: str) -> tuple[int, str, Event]:
        request = _parse_head(head)
        if request.path not in self.options.paths:
            raise _Refused(404, "not a report path")
        if request.method != "POST":
            raise _Refused(405, "only POST", (("Allow", "POST"),))
        wait = self._buckets.take(ip, time.monotonic())
        if wait:
            raise _Refused(429, "rate limit", (("Retry-After", str(int(wait) + 1)),))
        media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media not in MEDIA_TYPES:
            raise _Refused(415, f"media type {printable(media, 60) or 'missing'}; "
                                f"send {' or '.join(MEDIA_TYPES)}")
        encoding = request.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("identity", "gzip", "x-gzip"):
            raise _Refused(415, "content encoding other than gzip")
        body = await self._body(request, reader, writer)
        data = await self._decoded(body, gzipped=media.endswith("+gzip") or encoding != "identity", ip=ip)
        return await self._store(data, ip)

    async def _body(self, request: _Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
        cap = self.options.max_body
        te = request.headers.get("transfer-encoding")
        length = request.headers.get("content-length")
        if te is not None and length is not None:
            raise _Refused(400, "both Transfer-Encoding and Content-Length")  # RFC 9112 6.1: a smuggling shape
        if te is not None and te.strip().lower() != "chunked":
            raise _Refused(501, "transfer coding other than chunked")
        if te is None:
            if length is None:
                raise _Refused(411, "Content-Length required")
            if not re.fullmatch(r"\d{1,15}", length.strip()):
                raise _Refused(400, "bad Content-Length")
            size = int(length)
            if size > cap:
                raise _Refused(413, f"body over {cap} bytes")
        if request.headers.get("expect", "").strip().lower() == "100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        async with asyncio.timeout(self.options.body_timeout):
            if te is None:
                return await reader.readexactly(size)
            return await _read_chunked(reader, cap)

    async def _decoded(self, body: bytes, *, gzipped: bool, ip: str) -> bytes:
        if not (gzipped or body[:2] == b"\x1f\x8b"):
            return body
        async with self._work:
            try:
                return await asyncio.get_running_loop().run_in_executor(
                    None, lambda: gunzip(body, limit=self.options.max_decompressed, source=f"POST from {ip}"))
            except DecompressionLimitError:
                raise _Refused(413, f"decompresses to more than {self.options.max_decompressed} bytes") from None
            except CertkitError:
                raise _Refused(400, "not valid gzip") from None

    async def _store(self, data: bytes, ip: str) -> tuple[int, str, Event]:
        at = self.clock.now().astimezone(_dt.UTC)
        digest = hashlib.sha256(data).hexdigest()[:20]
        loop = asyncio.get_running_loop()
        async with self._work:
            try:
                report = await loop.run_in_executor(None, lambda: parse_report(data, source=f"POST from {ip}"))
            except CertkitError as err:
                raise _Refused(400, err.message) from None
            if digest in self._seen:
                return 200, "already received", Event(at, ip, 200, "already received", None, report.organization,
                                                      report.report_id)
            path = self.options.out / f"{at:%Y%m%dT%H%M%SZ}-{digest}.json"
            try:
                await loop.run_in_executor(None, lambda: atomic_write(path, data))
            except AlreadyExistsError:
                pass
            except CertkitError:
                raise _Refused(503, "cannot store the report now") from None
        self._seen.add(digest)
        return 201, "stored", Event(at, ip, 201, "stored", path, report.organization, report.report_id)

    async def _answer(self, writer: asyncio.StreamWriter, ip: str, refused: _Refused | None, status: int = 0,
                      reason: str = "", event: Event | None = None) -> None:
        headers: tuple[tuple[str, str], ...] = ()
        if refused is not None:
            status, reason, headers = refused.status, refused.reason, refused.headers
            event = Event(self.clock.now().astimezone(_dt.UTC), ip, status, reason)
        body = f"{status} {printable(reason, 200)}\n".encode("ascii", "replace")
        lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}", "Content-Type: text/plain; charset=utf-8",
                 f"Content-Length: {len(body)}", "Connection: close", *(f"{k}: {v}" for k, v in headers)]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + body)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer.drain(), 5)
        if event is not None:
            self.events.append(event)
            if len(self.events) > 1000:
                del self.events[:500]
            if self.on_event is not None:
                self.on_event(event)


def _parse_head(head: bytes) -> _Request:
    try:
        text = head.decode("ascii")
    except UnicodeDecodeError:
        raise _Refused(400, "request head is not ASCII") from None
    lines = text[:-4].split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not _TOKEN.match(parts[0]):
        raise _Refused(400, "bad request line")
    method, target, version = parts
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise _Refused(505, "HTTP/1.1 only")
    path = target.split("?", 1)[0]
    if not path.startswith("/"):
        raise _Refused(400, "request target must be a path")
    request = _Request(method, path)
    if len(lines) > 101:
        raise _Refused(431, "too many header fields")
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not _TOKEN.match(name):
            raise _Refused(400, "bad header field")  # also obsolete line folding (RFC 9112 5.2)
        key = name.lower()
        value = value.strip(" \t")
        if key in request.headers and key in ("content-length", "transfer-encoding", "content-type"):
            raise _Refused(400, f"{key} given twice")
        request.headers[key] = value
    return request


async def _read_chunked(reader: asyncio.StreamReader, cap: int) -> bytes:
    """A chunked body (RFC 9112 7.1), refusing more than ``cap`` bytes of data."""
    out: list[bytes] = []
    total = 0
    while True:
        line = await reader.readuntil(b"\r\n")
        size_text = line[:-2].split(b";", 1)[0].strip()
        if not re.fullmatch(rb"[0-9A-Fa-f]{1,8}", size_text):
            raise _Refused(400, "bad chunk size")
        size = int(size_text, 16)
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailer fields, ignored
                pass
            return b"".join(out)
        total += size
        if total > cap:
            raise _Refused(413, f"body over {cap} bytes")
        out.append(await reader.readexactly(size))
        if await reader.readexactly(2) != b"\r\n":
            raise _Refused(400, "bad chunk end")
