"""SMTP over real sockets: the transport that drives :class:`certkit.core.smtp.dialogue.ClientDialogue`.

This is the only module of certkit that imports pyOpenSSL. It moves bytes, runs TLS and keeps time; it
knows nothing of SMTP's syntax or the order of commands (:mod:`certkit.core.smtp`). A refused connection,
a timeout or a TLS alert becomes a :class:`~certkit.core.smtp.dialogue.Failure` handed to the dialogue,
which records it in the :class:`~certkit.core.smtp.dialogue.SmtpSession`: never an exception.

Timeouts: every step (connect, each reply, the handshake) has ``timeout`` seconds, so a server that
trickles one byte a second cannot stretch a reply; the whole session also has an overall ``deadline``.
Sockets are non-blocking and waited on with ``poll``, so no read can block past a deadline.

TLS: the client accepts any certificate at the TLS layer (verification callback returning true) so
that the handshake completes and the presented chain can be judged by certkit's own verifier; it
offers TLS 1.0 and up with ``@SECLEVEL=0`` so that old servers are *observed* (and reported), not
refused.

Server side (the lab endpoint): :func:`server_context` builds a context that asks for a client
certificate without requiring it and accepts whatever is presented, as Exchange does;
:class:`ServerTls` runs server-side TLS over memory BIOs for an asyncio server, and
:meth:`Channel.start_tls_server` over a socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import select
import socket
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from OpenSSL import SSL

from certkit.core.names import is_ip_address
from certkit.core.personality import REJECTION_CODES
from certkit.core.smtp.client import NEED_DATA, InjectedData, NeedData
from certkit.core.smtp.dialogue import (
    ClientDialogue,
    Delivery,
    Exchange,
    Failure,
    HandshakeFailure,
    Outcome,
    Plan,
    SmtpSession,
    Step,
    TlsInfo,
    TranscriptLine,
)
from certkit.core.smtp.wire import Reply, looks_like_smtp_text
from certkit.errors import CertkitError

__all__ = [
    "REJECTION_CODES",
    "Channel",
    "ClientIdentity",
    "Delivery",
    "Failure",
    "ServerTls",
    "ServerTlsError",
    "SmtpSession",
    "Step",
    "TlsInfo",
    "TranscriptLine",
    "client_context",
    "deliver_message",
    "run_dialogue",
    "run_dialogue_async",
    "run_session",
    "run_session_async",
    "server_context",
]

_T = TypeVar("_T")


@dataclass(frozen=True)
class ClientIdentity:
    """The certificate we present as a TLS client, its key, and the intermediates sent with it."""

    cert: x509.Certificate
    key: CertificateIssuerPrivateKeyTypes
    chain: tuple[x509.Certificate, ...] = ()

# --- TLS contexts -----------------------------------------------------------------------------------


def _accept_any(conn: SSL.Connection, cert: object, errno: int, depth: int, ok: int) -> bool:
    # The TLS layer accepts everything: the verdict comes from certkit's verifier, with its findings.
    return True


def client_context(identity: ClientIdentity | None = None) -> SSL.Context:
    """A client context that accepts any server certificate and may present ``identity``."""
    ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
    ctx.set_min_proto_version(SSL.TLS1_VERSION)
    # SECLEVEL 0 lets OpenSSL 3 negotiate TLS 1.0/1.1 so that old servers are reported, not missed.
    ctx.set_cipher_list(b"DEFAULT:@SECLEVEL=0")
    ctx.set_verify(SSL.VERIFY_PEER, _accept_any)
    if identity is not None:
        _use_identity(ctx, identity)
    return ctx


def server_context(cert: x509.Certificate, key: CertificateIssuerPrivateKeyTypes,
                   chain: Sequence[x509.Certificate] = (), *, request_client_cert: bool = True,
                   client_cas: Sequence[x509.Certificate] = ()) -> SSL.Context:
    """A server context that asks for a client certificate without requiring one and accepts any.

    This is what an Exchange Receive connector with Domain Security does at the TLS layer: the
    certificate is validated afterwards, and refused with an SMTP reply. ``client_cas`` fills the
    list of acceptable issuers sent in the CertificateRequest.
    """
    ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
    ctx.set_min_proto_version(SSL.TLS1_2_VERSION)
    _use_identity(ctx, ClientIdentity(cert, key, tuple(chain)))
    if request_client_cert:
        ctx.set_verify(SSL.VERIFY_PEER, _accept_any)
        for ca in client_cas:
            ctx.add_client_ca(ca)
    else:
        ctx.set_verify(SSL.VERIFY_NONE)
    return ctx


def _use_identity(ctx: SSL.Context, identity: ClientIdentity) -> None:
    ctx.use_certificate(identity.cert)
    ctx.use_privatekey(identity.key)  # type: ignore[arg-type]  # X25519 etc. cannot sign; callers pass signing keys
    for extra in identity.chain:
        ctx.add_extra_chain_cert(extra)
    ctx.check_privatekey()


def _ssl_reason(err: Exception) -> str:
    """The OpenSSL reason strings of an error (``tlsv1 alert unknown ca``), or its text."""
    if isinstance(err, SSL.SysCallError):
        if err.args and err.args[0] == -1:
            return "connection closed by the server during the handshake"
        return f"system error during the handshake: {err.args[-1] if err.args else err}"
    reasons: list[str] = []
    for item in err.args[0] if err.args and isinstance(err.args[0], list) else []:
        if isinstance(item, tuple) and item:
            reasons.append(str(item[-1]))
    return "; ".join(r for r in reasons if r) or str(err) or type(err).__name__


# --- the channel --------------------------------------------------------------------------------------


class Channel:
    """A non-blocking socket, optionally wrapped in TLS, with deadline-bounded reads and writes.

    Deadlines are :func:`time.monotonic` values. Reads return ``b""`` at end of stream; a deadline
    that passes raises :class:`TimeoutError`.
    """

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.conn: SSL.Connection | None = None
        self.certificate_requested = False
        #: The first bytes the server sent during a client handshake (peeked, for injection checks).
        self.first_server_bytes = b""

    def _wait(self, write: bool, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("deadline passed")
        poller = select.poll()
        poller.register(self.sock, select.POLLOUT if write else select.POLLIN)
        if not poller.poll(remaining * 1000):
            raise TimeoutError("deadline passed")

    def _retry(self, op: Callable[[], _T], deadline: float) -> _T:
        while True:
            try:
                return op()
            except SSL.WantReadError:
                self._wait(False, deadline)
            except SSL.WantWriteError:
                self._wait(True, deadline)

    def recv(self, deadline: float, size: int = 65536) -> bytes:
        """Up to ``size`` bytes; ``b""`` when the peer closed the stream."""
        if self.conn is not None:
            conn = self.conn
            try:
                return self._retry(lambda: conn.recv(size), deadline)
            except SSL.ZeroReturnError:
                return b""
            except SSL.SysCallError:
                return b""
        while True:
            try:
                return self.sock.recv(size)
            except BlockingIOError:
                self._wait(False, deadline)
            except ConnectionResetError:
                return b""

    def recv_ready(self) -> bytes:
        """Whatever plaintext is already waiting, without waiting (for STARTTLS injection checks)."""
        if self.conn is not None:
            return b""
        try:
            return self.sock.recv(65536)
        except (BlockingIOError, ConnectionError):
            return b""

    def sendall(self, data: bytes, deadline: float) -> None:
        """Send all of ``data`` before ``deadline``."""
        view = memoryview(data)
        while view:
            if self.conn is not None:
                sent = self._retry(functools.partial(self.conn.send, bytes(view[:16384])), deadline)
            else:
                try:
                    sent = self.sock.send(view)
                except BlockingIOError:
                    self._wait(True, deadline)
                    continue
            view = view[sent:]

    def _tls(self, ctx: SSL.Context) -> SSL.Connection:
        _watch(ctx)
        conn = SSL.Connection(ctx, self.sock)
        conn.set_app_data(self)
        return conn

    def start_tls_client(self, ctx: SSL.Context, server_name: str | None, deadline: float) -> TlsInfo:
        """Run the client handshake; raises :class:`SSL.Error` or :class:`TimeoutError` on failure."""
        conn = self._tls(ctx)
        if server_name and not is_ip_address(server_name):
            conn.set_tlsext_host_name(server_name.encode("idna"))
        conn.set_connect_state()
        self.conn = conn
        self.first_server_bytes = b""
        while True:
            # Peek (without consuming) at the server's first bytes: if they are SMTP text rather than TLS
            # records, plaintext was injected after the 220 and the handshake is about to fail on it.
            self._peek_first()
            try:
                conn.do_handshake()
                break
            except SSL.WantReadError:
                self._wait(False, deadline)
            except SSL.WantWriteError:
                self._wait(True, deadline)
        return self.tls_info(server_name, client=True)

    def _peek_first(self) -> None:
        if self.first_server_bytes:
            return
        with contextlib.suppress(BlockingIOError, OSError):
            self.first_server_bytes = self.sock.recv(4096, socket.MSG_PEEK)

    def start_tls_server(self, ctx: SSL.Context, deadline: float) -> TlsInfo:
        """Run the server handshake; raises :class:`SSL.Error` or :class:`TimeoutError` on failure."""
        conn = SSL.Connection(ctx, self.sock)
        conn.set_accept_state()
        self.conn = conn
        self._retry(conn.do_handshake, deadline)
        sni = conn.get_servername()
        return self.tls_info(sni.decode("ascii", "replace") if sni else None, client=False)

    def tls_info(self, server_name: str | None, *, client: bool) -> TlsInfo:
        """The negotiated session. On the server side ``peer_chain`` is the client's chain."""
        assert self.conn is not None
        return _tls_info(self.conn, server_name, client=client, requested=self.certificate_requested)

    def close(self) -> None:
        """Close quietly (a TLS close_notify is attempted without waiting)."""
        if self.conn is not None:
            with contextlib.suppress(SSL.Error, OSError):
                self.conn.shutdown()
        with contextlib.suppress(OSError):
            self.sock.close()


def _tls_info(conn: SSL.Connection, server_name: str | None, *, client: bool, requested: bool) -> TlsInfo:
    """The negotiated session of ``conn``. On the server side ``peer_chain`` is the client's chain."""
    chain = conn.get_peer_cert_chain(as_cryptography=True) or []
    if not client:
        peer = conn.get_peer_certificate(as_cryptography=True)
        chain = ([peer] + [c for c in chain if c != peer]) if peer is not None else list(chain)
    cas = conn.get_client_ca_list(as_cryptography=True) if client else []
    has_cert = conn.get_certificate() is not None
    return TlsInfo(version=conn.get_protocol_version_name(), cipher=conn.get_cipher_name(),
                   peer_chain=tuple(chain), client_ca_names=tuple(cas), certificate_requested=requested,
                   client_cert_sent=client and has_cert and requested, server_name=server_name)


class _Requested:
    """A client connection's app data: whether the server sent a CertificateRequest."""

    certificate_requested = False


def _on_info(conn: SSL.Connection, where: int, ret: int) -> None:
    # Notes on the connection's app data (a Channel or a _Requested) that the server sent a CertificateRequest.
    if where & SSL.SSL_CB_LOOP and b"certificate request" in conn.get_state_string():
        holder = conn.get_app_data()
        if isinstance(holder, (Channel, _Requested)):
            holder.certificate_requested = True


_watched: weakref.WeakSet[SSL.Context] = weakref.WeakSet()
_watched_lock = threading.Lock()


def _watch(ctx: SSL.Context) -> None:
    """Install :func:`_on_info` on ``ctx`` once (replacing a context's callback mid-handshake is unsafe)."""
    with _watched_lock:
        if ctx not in _watched:
            ctx.set_info_callback(_on_info)
            _watched.add(ctx)


@functools.lru_cache(maxsize=16)
def _shared_client_context(identity: ClientIdentity | None) -> SSL.Context:
    """One client context per identity for the whole process: building one costs more than a handshake."""
    ctx = client_context(identity)
    _watch(ctx)
    return ctx


# --- the session --------------------------------------------------------------------------------------


class _DriverBase:
    """What both drivers share: the dialogue, the clock, the transcript's time stamps, the failure texts."""

    def __init__(self, dialogue: ClientDialogue, identity: ClientIdentity | None, timeout: float,
                 deadline: float) -> None:
        self.dialogue = dialogue
        self.session = dialogue.session
        self.engine = dialogue.engine
        self.identity = identity
        self.timeout = timeout
        self.deadline = deadline
        self.start = time.monotonic()
        self._seen = 0

    def step_deadline(self) -> float:
        return min(time.monotonic() + self.timeout, self.deadline)

    def sync_transcript(self) -> None:
        entries = self.engine.transcript
        if self._seen < len(entries):
            now = round(time.monotonic() - self.start, 4)
            for entry in entries[self._seen:]:
                self.session.transcript.append(replace(entry, elapsed=now))
            self._seen = len(entries)

    def connected(self, t0: float) -> None:
        self.session.connected = True
        self.dialogue.note(f"connected to {self.session.address}:{self.session.port}")
        self.session.steps.append(Step("connect", None, None, time.monotonic() - t0))

    def connect_failure(self, error: OSError) -> Failure:
        if isinstance(error, ConnectionRefusedError):
            return Failure("net.refused", "connect", f"connection refused ({error.strerror})")
        if isinstance(error, TimeoutError):
            return Failure("net.timeout", "connect", f"no connection within {self.timeout:g} s")
        return Failure("net.refused", "connect", f"cannot connect: {error.strerror or error}")

    def client_context(self) -> SSL.Context | HandshakeFailure:
        try:
            return _shared_client_context(self.identity)
        except SSL.Error as e:
            return HandshakeFailure(Failure("tls.handshake-failed", "handshake",
                                            f"our certificate and key cannot be used: {_ssl_reason(e)}"))

    def handshake_failure(self, error: Exception, first: bytes) -> HandshakeFailure:
        """The outcome of a failed handshake; ``first``: what the server sent first (injected plaintext?)."""
        plaintext = first if looks_like_smtp_text(first) else b""
        if isinstance(error, TimeoutError):
            return HandshakeFailure(Failure("net.timeout", "handshake",
                                            f"TLS handshake not done within {self.timeout:g} s"), plaintext)
        reason = _ssl_reason(error)
        self.dialogue.note(f"TLS handshake failed: {reason}")
        return HandshakeFailure(Failure("tls.handshake-failed", "handshake", reason), plaintext)

    def replied(self, request: Exchange, event: object, t0: float) -> None:
        if isinstance(event, Reply):
            self.session.steps.append(Step(request.stage, request.shown, event, time.monotonic() - t0))


class _Driver(_DriverBase):
    """Runs one :class:`ClientDialogue` over a blocking :class:`Channel`: the I/O and the clock, nothing else."""

    def __init__(self, dialogue: ClientDialogue, identity: ClientIdentity | None, timeout: float,
                 deadline: float) -> None:
        super().__init__(dialogue, identity, timeout, deadline)
        self.channel: Channel | None = None

    def run(self) -> None:
        try:
            failure = self.connect()
            if failure is not None:
                self.dialogue.stop(failure)
            request = self.dialogue.request
            while request is not None:
                outcome: Outcome = self.exchange(request) if isinstance(request, Exchange) else self.handshake()
                self.sync_transcript()
                request = self.dialogue.advance(outcome)
        finally:
            if self.channel is not None:
                self.channel.close()
            self.sync_transcript()
            self.session.seconds = time.monotonic() - self.start

    def connect(self) -> Failure | None:
        t0 = time.monotonic()
        try:
            sock = socket.create_connection((self.session.address, self.session.port),
                                            timeout=max(0.001, self.step_deadline() - t0))
        except OSError as e:
            return self.connect_failure(e)
        self.channel = Channel(sock)
        self.connected(t0)
        return None

    def exchange(self, request: Exchange) -> Outcome:
        """Send the request's bytes, then read until the engine has a reply event."""
        assert self.channel is not None
        t0 = time.monotonic()
        self.sync_transcript()
        if request.data:
            try:
                self.channel.sendall(request.data, self.step_deadline())
            except TimeoutError:
                return Failure("net.timeout", request.stage, f"could not send {request.shown} in time")
            except (OSError, SSL.Error) as e:
                return Failure("net.closed", request.stage, f"the connection broke while sending: {e}")
        deadline = self.step_deadline()
        while True:
            event = self.engine.next_event()
            if event is NEED_DATA:
                try:
                    data = self.channel.recv(deadline)
                except TimeoutError:
                    return Failure("net.timeout", request.stage, f"no complete reply within {self.timeout:g} s")
                except (OSError, SSL.Error) as e:
                    # A TLS alert after the handshake (TLS 1.3 "certificate required") ends the stream.
                    data = b""
                    self.dialogue.note(f"read error: {_ssl_reason(e) if isinstance(e, SSL.Error) else e}")
                self.engine.receive_data(data)
                continue
            if isinstance(event, (InjectedData, NeedData)):
                continue
            self.replied(request, event, t0)
            return event

    def handshake(self) -> TlsInfo | HandshakeFailure:
        assert self.channel is not None
        t0 = time.monotonic()
        # Plaintext already waiting before our ClientHello was injected after the 220: the engine
        # discards it and reports it (STARTTLS response injection).
        early = self.channel.recv_ready()
        if early:
            self.engine.receive_data(early)
        ctx = self.client_context()
        if isinstance(ctx, HandshakeFailure):
            return ctx
        try:
            info = self.channel.start_tls_client(ctx, self.session.server_name, self.step_deadline())
        except (TimeoutError, SSL.Error, OSError) as e:
            return self.handshake_failure(e, self.channel.first_server_bytes)
        self.session.steps.append(Step("handshake", None, None, time.monotonic() - t0))
        return info


class _Stream(asyncio.Protocol):
    """Bytes from the server into a buffer, and a way to wait for more (the socket stays registered with
    the event loop for the whole session: no register/unregister per read)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.buffer = bytearray()
        self.eof = False
        self.transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def take(self) -> bytes:
        """Whatever has arrived, without waiting."""
        data = bytes(self.buffer)
        self.buffer.clear()
        return data

    async def read(self) -> bytes:
        """The bytes that arrived (waiting for some); ``b""`` at end of stream."""
        while not self.buffer and not self.eof:
            self._waiter = self.loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self.take()

    def write(self, data: bytes) -> None:
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)


class _AsyncDriver(_DriverBase):
    """Runs one :class:`ClientDialogue` on an asyncio event loop: an asyncio transport for the bytes, and TLS
    through pyOpenSSL memory BIOs (no thread per session). Same outcomes as :class:`_Driver`, step for step."""

    def __init__(self, dialogue: ClientDialogue, identity: ClientIdentity | None, timeout: float,
                 deadline: float) -> None:
        super().__init__(dialogue, identity, timeout, deadline)
        self.loop = asyncio.get_running_loop()
        self.stream: _Stream | None = None
        self.conn: SSL.Connection | None = None
        #: The end of our handshake flight (TLS 1.3 Finished), sent together with the next command.
        self._unsent = b""

    async def run(self) -> None:
        try:
            failure = await self.connect()
            if failure is not None:
                self.dialogue.stop(failure)
            request = self.dialogue.request
            while request is not None:
                outcome: Outcome
                if isinstance(request, Exchange):
                    outcome = await self.exchange(request)
                else:
                    outcome = await self.handshake()
                self.sync_transcript()
                request = self.dialogue.advance(outcome)
        finally:
            self.close()
            self.sync_transcript()
            self.session.seconds = time.monotonic() - self.start

    async def connect(self) -> Failure | None:
        t0 = time.monotonic()
        address, port = self.session.address, self.session.port
        try:
            async with asyncio.timeout_at(self.step_deadline()):
                _, self.stream = await self.loop.create_connection(lambda: _Stream(self.loop), address, port)
        except OSError as e:
            return self.connect_failure(e)
        self.connected(t0)
        return None

    def _tls_out(self) -> bytes:
        assert self.conn is not None
        out = b""
        while True:
            try:
                chunk = self.conn.bio_read(65536)
            except SSL.WantReadError:
                return out
            if not chunk:
                return out
            out += chunk

    def _flush(self) -> None:
        assert self.stream is not None
        if self._unsent:
            self.stream.write(self._unsent)
            self._unsent = b""

    async def recv(self) -> bytes:
        """Plaintext from the server (decrypted under TLS); ``b""`` at end of stream."""
        assert self.stream is not None
        self._flush()
        conn = self.conn
        if conn is None:
            return await self.stream.read()
        while True:
            try:
                return conn.recv(65536)
            except SSL.WantReadError:
                self.stream.write(self._tls_out())  # e.g. a key update to acknowledge
                data = await self.stream.read()
                if not data:
                    return b""
                conn.bio_write(data)
            except (SSL.ZeroReturnError, SSL.SysCallError):
                return b""

    def send(self, data: bytes) -> None:
        assert self.stream is not None
        if self.conn is not None:
            self.conn.sendall(data)
            data = self._tls_out()
        self.stream.write(self._unsent + data)
        self._unsent = b""

    async def exchange(self, request: Exchange) -> Outcome:
        """Send the request's bytes, then read until the engine has a reply event."""
        t0 = time.monotonic()
        self.sync_transcript()
        if request.data:
            try:
                self.send(request.data)
            except (OSError, SSL.Error) as e:
                return Failure("net.closed", request.stage, f"the connection broke while sending: {e}")
        try:
            async with asyncio.timeout_at(self.step_deadline()):
                while True:
                    event = self.engine.next_event()
                    if isinstance(event, NeedData):
                        try:
                            data = await self.recv()
                        except (OSError, SSL.Error) as e:
                            data = b""
                            self.dialogue.note(f"read error: {e}")
                        self.engine.receive_data(data)
                        continue
                    if isinstance(event, InjectedData):
                        continue
                    self.replied(request, event, t0)
                    return event
        except TimeoutError:
            return Failure("net.timeout", request.stage, f"no complete reply within {self.timeout:g} s")

    async def handshake(self) -> TlsInfo | HandshakeFailure:
        stream = self.stream
        assert stream is not None
        t0 = time.monotonic()
        # Plaintext already here before our ClientHello was injected after the 220: the engine discards it
        # and reports it (STARTTLS response injection).
        early = stream.take()
        if early:
            self.engine.receive_data(early)
        ctx = self.client_context()
        if isinstance(ctx, HandshakeFailure):
            return ctx
        state = _Requested()
        conn = SSL.Connection(ctx, None)
        conn.set_app_data(state)
        name = self.session.server_name
        if name and not is_ip_address(name):
            conn.set_tlsext_host_name(name.encode("idna"))
        conn.set_connect_state()
        self.conn = conn
        first = b""
        try:
            async with asyncio.timeout_at(self.step_deadline()):
                while True:
                    try:
                        conn.do_handshake()
                        break
                    except SSL.WantReadError:
                        stream.write(self._tls_out())
                        data = await stream.read()
                        first = first or data
                        if not data:
                            conn.bio_shutdown()
                            raise SSL.SysCallError(-1, "Unexpected EOF") from None
                        conn.bio_write(data)
        except (TimeoutError, SSL.Error, OSError) as e:
            return self.handshake_failure(e, first)
        # Our last handshake flight goes out with the next command (one segment instead of two).
        self._unsent = self._tls_out()
        self.session.steps.append(Step("handshake", None, None, time.monotonic() - t0))
        return _tls_info(conn, name, client=True, requested=state.certificate_requested)

    def close(self) -> None:
        """Close: a TLS close_notify is queued, and the transport closes once it has written it."""
        stream = self.stream
        if stream is None or stream.transport is None:
            return
        if self.conn is not None:
            with contextlib.suppress(SSL.Error, OSError):
                self.conn.shutdown()
                self._unsent += self._tls_out()
        self._flush()
        stream.transport.close()


async def run_dialogue_async(dialogue: ClientDialogue, *, identity: ClientIdentity | None = None,
                             timeout: float = 10.0, deadline: float | None = None) -> SmtpSession:
    """:func:`run_dialogue` on the running asyncio loop: no thread, TLS through memory BIOs."""
    start = time.monotonic()
    await _AsyncDriver(dialogue, identity, timeout,
                       start + (deadline if deadline is not None else 4 * timeout)).run()
    return dialogue.session


async def run_session_async(address: str, port: int = 25, *, server_name: str | None = None,
                            helo_name: str = "localhost", mail_from: str | None = None, rcpt_to: str | None = None,
                            identity: ClientIdentity | None = None, implicit_tls: bool = False,
                            starttls: bool = True, timeout: float = 10.0,
                            deadline: float | None = None) -> SmtpSession:
    """:func:`run_session` as a coroutine on the running loop (the probe runs many at once this way)."""
    session = SmtpSession(address=address, port=port, server_name=server_name, implicit_tls=implicit_tls)
    plan = Plan(helo_name=helo_name, mail_from=mail_from, rcpt_to=rcpt_to, starttls=starttls,
                implicit_tls=implicit_tls)
    return await run_dialogue_async(ClientDialogue(plan, session), identity=identity, timeout=timeout,
                                    deadline=deadline)


def run_dialogue(dialogue: ClientDialogue, *, identity: ClientIdentity | None = None, timeout: float = 10.0,
                 deadline: float | None = None) -> SmtpSession:
    """Connect to the session's address and run ``dialogue`` to its end (blocking); returns its session.

    Each step may take ``timeout`` seconds; the whole session at most ``deadline`` seconds (default: four
    times ``timeout``). ``identity`` is presented when the server asks for a client certificate.
    """
    start = time.monotonic()
    _Driver(dialogue, identity, timeout, start + (deadline if deadline is not None else 4 * timeout)).run()
    return dialogue.session


def run_session(address: str, port: int = 25, *, server_name: str | None = None, helo_name: str = "localhost",
                mail_from: str | None = None, rcpt_to: str | None = None, identity: ClientIdentity | None = None,
                implicit_tls: bool = False, starttls: bool = True, timeout: float = 10.0,
                deadline: float | None = None) -> SmtpSession:
    """Talk SMTP to ``address:port`` as a sending MTA would, up to RCPT TO, and never send DATA.

    The dialogue (:class:`~certkit.core.smtp.dialogue.ClientDialogue`): banner, EHLO (HELO if EHLO is
    refused), STARTTLS if offered (and ``starttls``), the TLS handshake (SNI ``server_name``; ``identity``
    presented if the server asks), EHLO again, then ``MAIL FROM`` if ``mail_from`` is given, ``RCPT TO`` if
    ``rcpt_to`` is given, ``RSET`` and ``QUIT``. ``implicit_tls`` starts with the handshake (port 465
    style). Each step may take ``timeout`` seconds; the whole session at most ``deadline`` seconds
    (default: four times ``timeout``).
    """
    session = SmtpSession(address=address, port=port, server_name=server_name, implicit_tls=implicit_tls)
    plan = Plan(helo_name=helo_name, mail_from=mail_from, rcpt_to=rcpt_to, starttls=starttls,
                implicit_tls=implicit_tls)
    return run_dialogue(ClientDialogue(plan, session), identity=identity, timeout=timeout, deadline=deadline)


def deliver_message(address: str, port: int = 25, *, mail_from: str, rcpt_to: str, message: bytes,
                    server_name: str | None = None, helo_name: str = "localhost",
                    identity: ClientIdentity | None = None, require_tls: bool = False,
                    approve: Callable[[SmtpSession], str | None] | None = None, timeout: float = 10.0,
                    deadline: float | None = None) -> Delivery:
    """Deliver ``message`` to ``address:port`` as a sending MTA does: the dialogue of :func:`run_session`
    up to RCPT TO, then ``DATA``, the dot-stuffed message and ``QUIT``. With ``require_tls`` (Domain
    Security) a server that offers no STARTTLS gets ``QUIT`` and no ``MAIL FROM``. ``approve`` is called
    once RCPT TO is accepted: it returns ``None`` to send the message, or the reason not to (then
    ``QUIT``). Failures are data in the returned :class:`Delivery`, never exceptions.
    """
    session = SmtpSession(address=address, port=port, server_name=server_name)
    plan = Plan(helo_name=helo_name, mail_from=mail_from, rcpt_to=rcpt_to, require_tls=require_tls,
                message=message, approve=approve)
    dialogue = ClientDialogue(plan, session)
    run_dialogue(dialogue, identity=identity, timeout=timeout,
                 deadline=deadline if deadline is not None else 6 * timeout)
    assert dialogue.delivery is not None
    return dialogue.delivery


# --- server-side TLS over memory BIOs (the lab endpoint) ----------------------------------------------


class ServerTlsError(CertkitError):
    """The server-side TLS handshake or record layer failed; the message is OpenSSL's reason."""


class ServerTls:
    """One server-side TLS session driven through memory BIOs: ciphertext in and out, no socket.

    An asyncio transport (or anything else) feeds what the client sent with :meth:`receive`, calls
    :meth:`handshake` until it returns true, then moves plaintext with :meth:`read` and :meth:`write`;
    after each call it sends :meth:`outgoing` to the client. This keeps pyOpenSSL inside this module
    while the lab's event loop does plain sockets. The context comes from :func:`server_context`, which
    asks for a client certificate and accepts any, as an Exchange Receive connector does.
    """

    def __init__(self, ctx: SSL.Context) -> None:
        self.conn = SSL.Connection(ctx, None)
        self.conn.set_accept_state()
        self.done = False
        #: The client closed the TLS session (close_notify) or the stream.
        self.closed = False

    def receive(self, data: bytes) -> None:
        """Ciphertext from the client; ``b""`` means the client closed the stream."""
        if data:
            self.conn.bio_write(data)
        else:
            self.conn.bio_shutdown()
            self.closed = True

    def handshake(self) -> bool:
        """Advance the handshake; true once it is complete. Raises :class:`ServerTlsError` on failure."""
        if self.done:
            return True
        try:
            self.conn.do_handshake()
        except SSL.WantReadError:
            return False
        except (SSL.Error, OSError) as e:
            raise ServerTlsError(_ssl_reason(e)) from e
        self.done = True
        return True

    def read(self) -> bytes:
        """All plaintext decrypted so far (``b""`` when none is complete yet)."""
        out = bytearray()
        while True:
            try:
                chunk = self.conn.recv(65536)
            except SSL.WantReadError:
                break
            except SSL.ZeroReturnError:
                self.closed = True
                break
            except (SSL.Error, OSError) as e:
                raise ServerTlsError(_ssl_reason(e)) from e
            if not chunk:
                break
            out += chunk
        return bytes(out)

    def write(self, data: bytes) -> None:
        """Encrypt ``data``; the records are then in :meth:`outgoing`."""
        view = memoryview(data)
        while view:
            try:
                sent = self.conn.send(bytes(view[:16384]))
            except (SSL.Error, OSError) as e:
                raise ServerTlsError(_ssl_reason(e)) from e
            view = view[sent:]

    def outgoing(self) -> bytes:
        """Ciphertext waiting to go to the client."""
        out = bytearray()
        while True:
            try:
                chunk = self.conn.bio_read(65536)
            except SSL.WantReadError:
                break
            if not chunk:
                break
            out += chunk
        return bytes(out)

    def close(self) -> None:
        """Queue a close_notify (send :meth:`outgoing` afterwards)."""
        with contextlib.suppress(SSL.Error, OSError):
            self.conn.shutdown()

    def info(self) -> TlsInfo:
        """The negotiated session; ``peer_chain`` is the client's chain, leaf first (empty: no certificate)."""
        conn = self.conn
        chain = conn.get_peer_cert_chain(as_cryptography=True) or []
        peer = conn.get_peer_certificate(as_cryptography=True)
        full = ([peer] + [c for c in chain if c != peer]) if peer is not None else list(chain)
        sni = conn.get_servername()
        return TlsInfo(version=conn.get_protocol_version_name(), cipher=conn.get_cipher_name(),
                       peer_chain=tuple(full), client_ca_names=(), certificate_requested=True,
                       client_cert_sent=peer is not None,
                       server_name=sni.decode("ascii", "replace") if sni else None)
