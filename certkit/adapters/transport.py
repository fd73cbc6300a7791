"""SMTP over real sockets: drives :class:`certkit.core.smtp.SmtpClient` and does TLS with pyOpenSSL.

This is the only module of certkit that imports pyOpenSSL. It does what the sans-I/O engine cannot:
sockets, timeouts and the TLS handshake. Everything it observes comes back as data in an
:class:`SmtpSession`; a refused connection, a timeout, a server that closes mid-reply, garbage or a TLS
alert is a :class:`Failure` in that session, never an exception.

Timeouts: every step (connect, each reply, the handshake) has ``timeout`` seconds, so a server that
trickles one byte a second cannot stretch a reply; the whole session also has an overall ``deadline``.
Sockets are non-blocking and waited on with ``poll``, so no read can block past a deadline.

TLS: the client accepts any certificate at the TLS layer (verification callback returning true) so
that the handshake completes and the presented chain can be judged by certkit's own verifier; it
offers TLS 1.0 and up with ``@SECLEVEL=0`` so that old servers are *observed* (and reported), not
refused. The probe never sends ``DATA``.

Server side (for the lab endpoint and the test servers): :func:`server_context` builds a context that
asks for a client certificate without requiring it and accepts whatever is presented, as Exchange does;
:meth:`Channel.start_tls_server` runs the handshake with a deadline.
"""

from __future__ import annotations

import contextlib
import functools
import select
import socket
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from OpenSSL import SSL

from certkit.core.names import is_ip_address
from certkit.core.smtp import (
    NEED_DATA,
    Command,
    ConnectionClosed,
    InjectedData,
    ProtocolError,
    Reply,
    SmtpClient,
    State,
    looks_like_smtp_text,
)
from certkit.errors import CertkitError

__all__ = [
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
    "run_session",
    "server_context",
]

_T = TypeVar("_T")

#: Replies after the handshake that mean the server refused us (Exchange 454, Postfix 421, RFC 3207 554, 530).
REJECTION_CODES = frozenset({421, 454, 530, 554})


# --- data -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClientIdentity:
    """The certificate we present as a TLS client, its key, and the intermediates sent with it."""

    cert: x509.Certificate
    key: CertificateIssuerPrivateKeyTypes
    chain: tuple[x509.Certificate, ...] = ()


@dataclass(frozen=True)
class TlsInfo:
    """What the TLS handshake showed."""

    version: str                                   # "TLSv1.3", "TLSv1.2", ...
    cipher: str | None
    peer_chain: tuple[x509.Certificate, ...]       # as presented, leaf first
    client_ca_names: tuple[x509.Name, ...]         # the server's acceptable client-certificate issuers
    certificate_requested: bool                    # the server sent a CertificateRequest
    client_cert_sent: bool                         # we had a certificate and the server asked for one
    server_name: str | None                        # SNI sent (client) or received (server)

    @property
    def old_protocol(self) -> bool:
        """TLS 1.0/1.1 or SSL: current clients disable them."""
        return self.version in ("SSLv3", "TLSv1", "TLSv1.1")

    def summary(self) -> str:
        """One line for the transcript."""
        leaf = self.peer_chain[0].subject.rfc4514_string() if self.peer_chain else "no certificate"
        cas = len(self.client_ca_names)
        ours = "sent" if self.client_cert_sent else ("requested, none sent" if self.certificate_requested
                                                     else "not requested")
        return (f"TLS handshake: {self.version} {self.cipher}; server certificate {leaf} "
                f"(chain of {len(self.peer_chain)}); client certificate {ours}; {cas} acceptable issuer(s)")


@dataclass(frozen=True)
class Failure:
    """Why a session stopped early. ``code`` is a finding code of :mod:`certkit.core.findings`."""

    code: str    # net.refused, net.timeout, net.closed, smtp.protocol-error, tls.handshake-failed
    stage: str   # connect, banner, ehlo, starttls, handshake, ehlo-tls, mail, rcpt, rset, quit
    detail: str


@dataclass(frozen=True)
class Step:
    """One step of the dialogue, the reply it got (if any), and how long it took, in seconds."""

    name: str
    command: str | None
    reply: Reply | None
    seconds: float


@dataclass(frozen=True)
class TranscriptLine:
    """``direction`` is ``C`` (us), ``S`` (server) or ``*`` (a note); ``elapsed`` counts from connect."""

    direction: str
    text: str
    elapsed: float

    def __str__(self) -> str:
        return f"{self.elapsed:7.3f} {self.direction}: {self.text}"


@dataclass
class SmtpSession:
    """Everything one SMTP session observed. Plain data: failures are in :attr:`failure`."""

    address: str
    port: int
    server_name: str | None = None
    implicit_tls: bool = False
    connected: bool = False
    banner: Reply | None = None
    ehlo: Reply | None = None                   # EHLO (or HELO fallback) in plaintext
    capabilities: dict[str, str] = field(default_factory=dict)
    starttls_offered: bool = False
    starttls: Reply | None = None
    injected: bytes = b""                       # plaintext after the 220 to STARTTLS, discarded
    tls: TlsInfo | None = None
    tls_ehlo: Reply | None = None               # EHLO after the handshake
    tls_capabilities: dict[str, str] = field(default_factory=dict)
    after_tls: Reply | None = None              # the first reply after the handshake
    mail: Reply | None = None
    rcpt: Reply | None = None
    rset: Reply | None = None
    quit: Reply | None = None
    failure: Failure | None = None
    steps: list[Step] = field(default_factory=list)
    transcript: list[TranscriptLine] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def rejected_after_tls(self) -> bool:
        """The server refused us right after the handshake (454, 421, 530, 554): it rejected our certificate."""
        return self.after_tls is not None and self.after_tls.code in REJECTION_CODES

    @property
    def timings(self) -> dict[str, float]:
        """Seconds per step name."""
        return {s.name: s.seconds for s in self.steps}


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


class _Timeout(Exception):
    pass


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

    def plaintext_in_handshake(self) -> bytes:
        """After a failed client handshake: the SMTP-like plaintext the server sent instead of TLS (as peeked
        before OpenSSL read it), or ``b""`` when its first bytes were TLS records, binary, or nothing."""
        first = self.first_server_bytes
        return first if looks_like_smtp_text(first) else b""

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
        conn = self.conn
        chain = conn.get_peer_cert_chain(as_cryptography=True) or []
        if not client:
            peer = conn.get_peer_certificate(as_cryptography=True)
            chain = ([peer] + [c for c in chain if c != peer]) if peer is not None else list(chain)
        cas = conn.get_client_ca_list(as_cryptography=True) if client else []
        has_cert = conn.get_certificate() is not None
        return TlsInfo(version=conn.get_protocol_version_name(), cipher=conn.get_cipher_name(),
                       peer_chain=tuple(chain), client_ca_names=tuple(cas),
                       certificate_requested=self.certificate_requested,
                       client_cert_sent=client and has_cert and self.certificate_requested,
                       server_name=server_name)

    def close(self) -> None:
        """Close quietly (a TLS close_notify is attempted without waiting)."""
        if self.conn is not None:
            with contextlib.suppress(SSL.Error, OSError):
                self.conn.shutdown()
        with contextlib.suppress(OSError):
            self.sock.close()


def _on_info(conn: SSL.Connection, where: int, ret: int) -> None:
    # Notes on the connection's Channel (its app data) that the server sent a CertificateRequest.
    if where & SSL.SSL_CB_LOOP and b"certificate request" in conn.get_state_string():
        channel = conn.get_app_data()
        if isinstance(channel, Channel):
            channel.certificate_requested = True


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


class _Stop(Exception):
    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.detail)
        self.failure = failure


class _Driver:
    def __init__(self, session: SmtpSession, timeout: float, deadline: float) -> None:
        self.s = session
        self.timeout = timeout
        self.deadline = deadline
        self.engine = SmtpClient(implicit_tls=session.implicit_tls)
        self.start = time.monotonic()
        self.channel: Channel | None = None
        self._seen = 0

    def state(self) -> State:
        return self.engine.state

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def step_deadline(self) -> float:
        return min(time.monotonic() + self.timeout, self.deadline)

    def note(self, text: str) -> None:
        self.s.transcript.append(TranscriptLine("*", text, round(self.elapsed(), 4)))

    def sync_transcript(self) -> None:
        now = round(self.elapsed(), 4)
        for entry in self.engine.transcript[self._seen:]:
            self.s.transcript.append(TranscriptLine(entry.direction, entry.text, now))
        self._seen = len(self.engine.transcript)

    def connect(self) -> None:
        t0 = time.monotonic()
        try:
            sock = socket.create_connection((self.s.address, self.s.port),
                                            timeout=max(0.001, self.step_deadline() - t0))
        except ConnectionRefusedError as e:
            raise _Stop(Failure("net.refused", "connect", f"connection refused ({e.strerror})")) from e
        except TimeoutError as e:
            raise _Stop(Failure("net.timeout", "connect", f"no connection within {self.timeout:g} s")) from e
        except OSError as e:
            raise _Stop(Failure("net.refused", "connect", f"cannot connect: {e.strerror or e}")) from e
        self.channel = Channel(sock)
        self.s.connected = True
        self.note(f"connected to {self.s.address}:{self.s.port}")
        self.s.steps.append(Step("connect", None, None, time.monotonic() - t0))

    def read_reply(self, stage: str) -> Reply:
        assert self.channel is not None
        deadline = self.step_deadline()
        while True:
            event = self.engine.next_event()
            if event is NEED_DATA:
                try:
                    data = self.channel.recv(deadline)
                except TimeoutError as e:
                    self.engine.closed()
                    self.sync_transcript()
                    raise _Stop(Failure("net.timeout", stage,
                                        f"no complete reply within {self.timeout:g} s")) from e
                except OSError as e:
                    data = b""
                    self.note(f"read error: {e}")
                self.engine.receive_data(data)
                continue
            self.sync_transcript()
            if isinstance(event, Reply):
                return event
            if isinstance(event, InjectedData):
                self.s.injected = self.engine.injected
                continue
            if isinstance(event, ProtocolError):
                raise _Stop(Failure("smtp.protocol-error", stage, f"{event.reason}: {event.data[:60]!r}"))
            if isinstance(event, ConnectionClosed):
                how = "in the middle of a reply" if event.mid_reply else "without a reply"
                raise _Stop(Failure("net.closed", stage, f"the server closed the connection {how}"))

    def command(self, stage: str, command: Command) -> Reply:
        assert self.channel is not None
        t0 = time.monotonic()
        data = self.engine.send(command)
        self.sync_transcript()
        try:
            self.channel.sendall(data, self.step_deadline())
        except TimeoutError as e:
            raise _Stop(Failure("net.timeout", stage, f"could not send {command.verb.value} in time")) from e
        except (OSError, SSL.Error) as e:
            raise _Stop(Failure("net.closed", stage, f"the connection broke while sending: {e}")) from e
        reply = self.read_reply(stage)
        self.s.steps.append(Step(stage, command.line(), reply, time.monotonic() - t0))
        return reply

    def handshake(self, identity: ClientIdentity | None) -> None:
        assert self.channel is not None
        t0 = time.monotonic()
        try:
            ctx = _shared_client_context(identity)
        except SSL.Error as e:
            raise _Stop(Failure("tls.handshake-failed", "handshake",
                                f"our certificate and key cannot be used: {_ssl_reason(e)}")) from e
        try:
            info = self.channel.start_tls_client(ctx, self.s.server_name, self.step_deadline())
        except TimeoutError as e:
            raise _Stop(Failure("net.timeout", "handshake", f"TLS handshake not done within {self.timeout:g} s")) from e
        except (SSL.Error, OSError) as e:
            reason = _ssl_reason(e)
            self.note(f"TLS handshake failed: {reason}")
            raise _Stop(Failure("tls.handshake-failed", "handshake", reason)) from e
        self.s.tls = info
        self.note(info.summary())
        self.s.steps.append(Step("handshake", None, None, time.monotonic() - t0))


def run_session(address: str, port: int = 25, *, server_name: str | None = None, helo_name: str = "localhost",
                mail_from: str | None = None, rcpt_to: str | None = None, identity: ClientIdentity | None = None,
                implicit_tls: bool = False, starttls: bool = True, timeout: float = 10.0,
                deadline: float | None = None) -> SmtpSession:
    """Talk SMTP to ``address:port`` as a sending MTA would, up to RCPT TO, and never send DATA.

    The dialogue: banner, EHLO (HELO if EHLO is refused), STARTTLS if offered (and ``starttls``), the TLS
    handshake (SNI ``server_name``; ``identity`` presented if the server asks), EHLO again, then
    ``MAIL FROM`` if ``mail_from`` is given, ``RCPT TO`` if ``rcpt_to`` is given, ``RSET`` and ``QUIT``.
    ``implicit_tls`` starts with the handshake (port 465 style). Each step may take ``timeout`` seconds;
    the whole session at most ``deadline`` seconds (default: four times ``timeout``).
    """
    session = SmtpSession(address=address, port=port, server_name=server_name, implicit_tls=implicit_tls)
    start = time.monotonic()
    d = _Driver(session, timeout, start + (deadline if deadline is not None else 4 * timeout))
    with _running(d, start):
        _dialogue(d, helo_name, mail_from, rcpt_to, identity, starttls)
    return session


@contextlib.contextmanager
def _running(d: _Driver, start: float) -> Iterator[None]:
    """Run a dialogue: a stop becomes the session's failure; the socket is closed and the clock read."""
    try:
        yield
    except _Stop as stop:
        d.s.failure = stop.failure
        d.note(f"stopped at {stop.failure.stage}: {stop.failure.detail}")
    finally:
        if d.channel is not None:
            d.channel.close()
        d.sync_transcript()
        d.s.seconds = time.monotonic() - start


def _dialogue(d: _Driver, helo_name: str, mail_from: str | None, rcpt_to: str | None,
              identity: ClientIdentity | None, starttls: bool) -> None:
    s = d.s
    d.connect()
    if s.implicit_tls:
        d.handshake(identity)
    t0 = time.monotonic()
    s.banner = d.read_reply("banner")
    s.steps.append(Step("banner", None, s.banner, time.monotonic() - t0))
    if d.state() is State.REJECTED:
        s.quit = d.command("quit", Command.quit())
        return
    if d.state() is State.CLOSED:
        return
    greeting = _greet(d, helo_name, tls=s.implicit_tls)
    if s.implicit_tls:
        s.after_tls = greeting if s.banner.positive else s.banner
    else:
        s.ehlo = greeting
        s.capabilities = dict(d.engine.capabilities)
    if d.state() is not State.READY:
        if d.state() is not State.CLOSED:
            s.quit = d.command("quit", Command.quit())
        return
    if not s.implicit_tls:
        s.starttls_offered = d.engine.starttls_offered
        if s.starttls_offered and starttls:
            if _starttls(d, helo_name, identity):
                if d.state() is not State.READY:
                    if d.state() is not State.CLOSED:
                        s.quit = d.command("quit", Command.quit())
                    return
            elif d.state() is State.CLOSED:
                return
    _transaction(d, mail_from, rcpt_to)


def _starttls(d: _Driver, helo_name: str, identity: ClientIdentity | None) -> bool:
    """STARTTLS, the handshake and EHLO again; False when the server did not answer 220 to STARTTLS."""
    s = d.s
    s.starttls = d.command("starttls", Command.starttls())
    if d.state() is not State.TLS_PENDING:
        return False
    # Plaintext already waiting before our ClientHello was injected after the 220: the engine
    # discards it and reports it (STARTTLS response injection).
    assert d.channel is not None
    early = d.channel.recv_ready()
    if early:
        d.engine.receive_data(early)
    s.injected = d.engine.injected
    d.sync_transcript()
    try:
        d.handshake(identity)
    except _Stop:
        # Plaintext that arrived after our ClientHello broke the handshake: the same injection, seen later.
        late = d.channel.plaintext_in_handshake()
        if late:
            s.injected += late
            d.note(f"the server sent {len(late)} plaintext octets during the TLS handshake: {late[:60]!r}")
        raise
    d.engine.tls_established()
    d.sync_transcript()
    s.after_tls = _greet(d, helo_name, tls=True)
    return True


def _greet(d: _Driver, helo_name: str, *, tls: bool) -> Reply:
    s = d.s
    stage = "ehlo-tls" if tls else "ehlo"
    reply = d.command(stage, Command.ehlo(helo_name))
    if not reply.positive and d.state() is State.GREETED and not (tls and reply.code in REJECTION_CODES):
        reply = d.command("helo-tls" if tls else "helo", Command.helo(helo_name))
    if tls:
        s.tls_ehlo = reply
        s.tls_capabilities = dict(d.engine.capabilities)
    return reply


def _transaction(d: _Driver, mail_from: str | None, rcpt_to: str | None) -> None:
    s = d.s
    if mail_from is not None:
        s.mail = d.command("mail", Command.mail(mail_from))
        if d.state() is State.MAIL and rcpt_to is not None:
            s.rcpt = d.command("rcpt", Command.rcpt(rcpt_to))
        if d.state() in (State.MAIL, State.RCPT):
            s.rset = d.command("rset", Command.rset())
    if d.state() is not State.CLOSED and d.engine.pending is None:
        s.quit = d.command("quit", Command.quit())


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


# --- delivering one message (the lab sender) -----------------------------------------------------------


@dataclass
class Delivery:
    """One delivery attempt: the SMTP session up to RCPT TO, and the replies to ``DATA`` and to the message."""

    session: SmtpSession
    data: Reply | None = None        # the reply to DATA (354 expected)
    accepted: Reply | None = None    # the reply after the final "." (250 expected)
    refused_locally: str | None = None  # why we stopped before DATA (our check of the receiver failed)

    @property
    def delivered(self) -> bool:
        """The receiver took responsibility for the message."""
        return self.accepted is not None and self.accepted.positive

    @property
    def last_reply(self) -> Reply | None:
        """The receiver's reply that ended the attempt (the one a queue shows), if any."""
        s = self.session
        for reply in (self.accepted, self.data, s.rcpt, s.mail, s.after_tls, s.starttls, s.ehlo, s.banner):
            if reply is not None and not reply.positive:
                return reply
        return None


def _dot_stuff(message: bytes) -> bytes:
    lines = message.replace(b"\r\n", b"\n").split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    body = b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n" for line in lines)
    return body + b".\r\n"


def _raw_step(d: _Driver, stage: str, data: bytes, shown: str) -> Reply:
    """Send ``data`` outside the engine (DATA and the message, which the probe engine refuses) and read one reply."""
    assert d.channel is not None
    t0 = time.monotonic()
    d.s.transcript.append(TranscriptLine("C", shown, round(d.elapsed(), 4)))
    try:
        d.channel.sendall(data, d.step_deadline())
    except TimeoutError as e:
        raise _Stop(Failure("net.timeout", stage, f"could not send {shown} in time")) from e
    except (OSError, SSL.Error) as e:
        raise _Stop(Failure("net.closed", stage, f"the connection broke while sending: {e}")) from e
    # A fresh client engine awaits exactly one reply of any code: a one-shot reply parser.
    parser = SmtpClient()
    deadline = d.step_deadline()
    while True:
        event = parser.next_event()
        if event is NEED_DATA:
            try:
                parser.receive_data(d.channel.recv(deadline))
            except TimeoutError as e:
                raise _Stop(Failure("net.timeout", stage, f"no complete reply within {d.timeout:g} s")) from e
            continue
        if isinstance(event, Reply):
            for line in event.wire_lines():
                d.s.transcript.append(TranscriptLine("S", line, round(d.elapsed(), 4)))
            d.s.steps.append(Step(stage, shown, event, time.monotonic() - t0))
            return event
        if isinstance(event, ConnectionClosed):
            raise _Stop(Failure("net.closed", stage, "the server closed the connection without a reply"))
        if isinstance(event, ProtocolError):
            raise _Stop(Failure("smtp.protocol-error", stage, f"{event.reason}: {event.data[:60]!r}"))


def deliver_message(address: str, port: int = 25, *, mail_from: str, rcpt_to: str, message: bytes,
                    server_name: str | None = None, helo_name: str = "localhost",
                    identity: ClientIdentity | None = None, require_tls: bool = False,
                    approve: Callable[[SmtpSession], str | None] | None = None, timeout: float = 10.0,
                    deadline: float | None = None) -> Delivery:
    """Deliver ``message`` to ``address:port`` as a sending MTA does: the dialogue of :func:`run_session`
    (STARTTLS when offered, ``identity`` presented when asked) up to RCPT TO, then ``DATA``, the
    dot-stuffed message and ``QUIT``. With ``require_tls`` (Domain Security) a server that offers no
    STARTTLS gets ``QUIT`` and no ``MAIL FROM``. ``approve`` is called once RCPT TO is accepted: it
    returns ``None`` to send the message, or the reason not to (then ``QUIT``; the sending Edge's own check
    of the receiver's certificate). Failures are data in the returned :class:`Delivery`, never exceptions.
    """
    session = SmtpSession(address=address, port=port, server_name=server_name)
    result = Delivery(session)
    start = time.monotonic()
    d = _Driver(session, timeout, start + (deadline if deadline is not None else 6 * timeout))
    with _running(d, start):
        _dialogue_to_rcpt(d, helo_name, mail_from, rcpt_to, identity, require_tls)
        if d.state() is State.RCPT and approve is not None:
            result.refused_locally = approve(session)
            if result.refused_locally is not None:
                d.note(f"not sending the message: {result.refused_locally}")
        if d.state() is State.RCPT and result.refused_locally is None:
            result.data = _raw_step(d, "data", b"DATA\r\n", "DATA")
            if result.data.code == 354:
                result.accepted = _raw_step(d, "message", _dot_stuff(message),
                                            f"<message of {len(message)} octets>")
            if result.data.code != 421 and (result.accepted is None or result.accepted.code != 421):
                session.quit = d.command("quit", Command.quit())
        elif d.state() in (State.MAIL, State.RCPT, State.READY, State.GREETED):
            session.quit = d.command("quit", Command.quit())
    return result


def _dialogue_to_rcpt(d: _Driver, helo_name: str, mail_from: str, rcpt_to: str,
                      identity: ClientIdentity | None, require_tls: bool) -> None:
    s = d.s
    d.connect()
    t0 = time.monotonic()
    s.banner = d.read_reply("banner")
    s.steps.append(Step("banner", None, s.banner, time.monotonic() - t0))
    if d.state() is not State.GREETED:
        return
    s.ehlo = _greet(d, helo_name, tls=False)
    s.capabilities = dict(d.engine.capabilities)
    if d.state() is not State.READY:
        return
    s.starttls_offered = d.engine.starttls_offered
    if require_tls and not s.starttls_offered:
        s.quit = d.command("quit", Command.quit())
        raise _Stop(Failure("smtp.no-starttls", "ehlo", "TLS is required, but the server did not offer STARTTLS"))
    if s.starttls_offered:
        if _starttls(d, helo_name, identity):
            if d.state() is not State.READY:
                return
        elif d.state() is not State.READY:
            return
        elif require_tls:
            s.quit = d.command("quit", Command.quit())
            refused = s.starttls.text if s.starttls is not None else "no reply"
            raise _Stop(Failure("smtp.starttls-refused", "starttls", f"STARTTLS was refused: {refused}"))
    s.mail = d.command("mail", Command.mail(mail_from))
    if d.state() is State.MAIL:
        s.rcpt = d.command("rcpt", Command.rcpt(rcpt_to))
