"""The sending MTA's dialogue as pure code: which command comes next, and what each reply means.

One dialogue serves the probe (stop after ``RCPT TO``, ``RSET``, ``QUIT``: nothing is delivered) and the
lab sender (``DATA`` and the message once ``RCPT TO`` is accepted), chosen by a :class:`Plan`. It is a
generator driven by a transport, in the spirit of h11: :class:`ClientDialogue` yields a request
(:class:`Exchange`: send these bytes and bring back the reply; :class:`Handshake`: run TLS now), the
transport does the I/O and passes the outcome back (a :class:`~certkit.core.smtp.wire.Reply`, a protocol
event, a :class:`TlsInfo` or a :class:`Failure`). The dialogue never touches a socket or a clock, so the
same code runs over blocking sockets, asyncio or memory.

The order: banner; ``EHLO`` (``HELO`` when EHLO is refused, except when a refusal after the handshake is
the server refusing us); ``STARTTLS`` when offered (and wanted), the handshake, ``EHLO`` again;
``MAIL FROM``, ``RCPT TO``; then ``RSET`` (probe) or ``DATA`` and the message (sender); ``QUIT`` whenever
the session is still open. With ``require_tls`` (Domain Security) a server without STARTTLS gets ``QUIT``
and no ``MAIL FROM``. What the session observed lands in an :class:`SmtpSession`; a failure is data
(:attr:`SmtpSession.failure`), never an exception.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field

from cryptography import x509

from certkit.core.personality import REJECTION_CODES, is_security_refusal
from certkit.core.smtp.client import (
    Command,
    ConnectionClosed,
    ProtocolError,
    SmtpClient,
    State,
    TranscriptLine,
)
from certkit.core.smtp.wire import Reply

__all__ = [
    "ClientDialogue",
    "Delivery",
    "Exchange",
    "Failure",
    "Handshake",
    "HandshakeFailure",
    "Outcome",
    "Plan",
    "Request",
    "SmtpSession",
    "Step",
    "TlsInfo",
    "TranscriptLine",
]


# --- what a session observed ---------------------------------------------------------------------------


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

    code: str    # net.refused, net.timeout, net.closed, smtp.protocol-error, tls.handshake-failed, ...
    stage: str   # connect, banner, ehlo, starttls, handshake, ehlo-tls, mail, rcpt, data, message, rset, quit
    detail: str


@dataclass(frozen=True)
class Step:
    """One step of the dialogue, the reply it got (if any), and how long it took, in seconds."""

    name: str
    command: str | None
    reply: Reply | None
    seconds: float


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
        """The server refused us right after the handshake (454, 421, 530, 554 with a 4.7.x/5.7.x status or
        none): it rejected our certificate. A ``421 4.3.2`` (shutting down, busy) is not about us."""
        return self.after_tls is not None and is_security_refusal(self.after_tls)

    @property
    def starttls_missing(self) -> bool:
        """The server answered EHLO without offering STARTTLS, or refused STARTTLS, so no TLS was set up: a
        sender that requires TLS (DANE, MTA-STS) does not send in clear. Never for implicit TLS."""
        if self.implicit_tls or self.tls is not None:
            return False
        if self.starttls is not None and self.starttls.code != 220:
            return True
        return self.ehlo is not None and self.ehlo.positive and not self.starttls_offered

    @property
    def timings(self) -> dict[str, float]:
        """Seconds per step name."""
        return {s.name: s.seconds for s in self.steps}


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


# --- the plan, the requests, the outcomes -------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """What the dialogue should do.

    ``message``: deliver it (``DATA``) once ``RCPT TO`` is accepted; ``None`` (the probe) stops there with
    ``RSET``. ``approve`` is asked before ``DATA``: ``None`` to send, or the reason not to (the sending
    Edge's own check of the receiver's certificate). ``require_tls``: no STARTTLS, no mail.
    """

    helo_name: str = "localhost"
    mail_from: str | None = None
    rcpt_to: str | None = None
    starttls: bool = True
    implicit_tls: bool = False
    require_tls: bool = False
    message: bytes | None = None
    approve: Callable[[SmtpSession], str | None] | None = None


@dataclass(frozen=True)
class Exchange:
    """Send ``data`` (nothing for the banner) and bring back the next reply event of the engine."""

    stage: str
    data: bytes
    shown: str | None     # the command as the transcript shows it (None: the banner)


@dataclass(frozen=True)
class Handshake:
    """Run the TLS handshake now (after the ``220`` to STARTTLS, or first with implicit TLS)."""

    stage: str = "handshake"


@dataclass(frozen=True)
class HandshakeFailure:
    """The handshake failed; ``plaintext`` is SMTP text the server sent instead of TLS (injection), if any."""

    failure: Failure
    plaintext: bytes = b""


Request = Exchange | Handshake
Outcome = Reply | ProtocolError | ConnectionClosed | TlsInfo | Failure | HandshakeFailure | None


class _Stop(Exception):
    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.detail)
        self.failure = failure


_Gen = Generator[Request, Outcome, None]


class ClientDialogue:
    """One session's dialogue. ``request`` is what the transport must do next (``None``: done).

    >>> d = ClientDialogue(Plan(helo_name="probe.contoso.com"), SmtpSession("192.0.2.1", 25))
    >>> d.request
    Exchange(stage='banner', data=b'', shown=None)
    >>> d.engine.receive_data(b"554 go away\\r\\n")
    >>> d.advance(d.engine.next_event())
    Exchange(stage='quit', data=b'QUIT\\r\\n', shown='QUIT')
    """

    def __init__(self, plan: Plan, session: SmtpSession) -> None:
        self.plan = plan
        self.session = session
        self.engine = SmtpClient(implicit_tls=plan.implicit_tls)
        self.delivery: Delivery | None = Delivery(session) if plan.message is not None else None
        self._gen: _Gen = self._run()
        self.request: Request | None = next(self._gen)

    def advance(self, outcome: Outcome) -> Request | None:
        """Give the outcome of :attr:`request`; returns the next request (``None`` when the dialogue is over)."""
        try:
            self.request = self._gen.send(outcome)
        except StopIteration:
            self.request = None
        return self.request

    def stop(self, failure: Failure) -> None:
        """The transport gave up (connect failed, the overall deadline passed): record it and end."""
        self._gen.close()
        self.request = None
        self.engine.closed()
        self._record_failure(failure)

    def note(self, text: str) -> None:
        """Add a note to the transcript (the transport stamps the time)."""
        self.engine.transcript.append(TranscriptLine("*", text))

    def _record_failure(self, failure: Failure) -> None:
        if self.session.failure is None:
            self.session.failure = failure
            self.note(f"stopped at {failure.stage}: {failure.detail}")

    # -- the dialogue ----------------------------------------------------------------------------------

    def _run(self) -> _Gen:
        try:
            yield from self._dialogue()
        except _Stop as stop:
            self.engine.closed()
            self._record_failure(stop.failure)

    def _state(self) -> State:
        return self.engine.state

    def _dialogue(self) -> _Gen:
        s, plan = self.session, self.plan
        if plan.implicit_tls:
            yield from self._handshake()
        s.banner = yield from self._exchange("banner", b"", None)
        if self._state() is State.REJECTED:
            yield from self._quit()
            return
        if self._state() is State.CLOSED:
            return
        greeting = yield from self._greet(tls=plan.implicit_tls)
        if plan.implicit_tls:
            s.after_tls = greeting if s.banner.positive else s.banner
        else:
            s.ehlo = greeting
            s.capabilities = dict(self.engine.capabilities)
        if self._state() is not State.READY:
            yield from self._quit()
            return
        if not plan.implicit_tls:
            s.starttls_offered = self.engine.starttls_offered
            if plan.require_tls and not s.starttls_offered:
                yield from self._quit()
                raise _Stop(Failure("smtp.no-starttls", "ehlo",
                                    "TLS is required, but the server did not offer STARTTLS"))
            if s.starttls_offered and (plan.starttls or plan.require_tls):
                started = yield from self._starttls()
                if not started and plan.require_tls and self._state() is State.READY:
                    yield from self._quit()
                    refused = s.starttls.text if s.starttls is not None else "no reply"
                    raise _Stop(Failure("smtp.starttls-refused", "starttls", f"STARTTLS was refused: {refused}"))
                if self._state() is not State.READY:
                    yield from self._quit()
                    return
        yield from self._transaction()

    def _starttls(self) -> Generator[Request, Outcome, bool]:
        """STARTTLS, the handshake and EHLO again; False when the server did not answer 220 to STARTTLS."""
        s = self.session
        s.starttls = yield from self._command("starttls", Command.starttls())
        if self._state() is not State.TLS_PENDING:
            return False
        yield from self._handshake()
        s.after_tls = yield from self._greet(tls=True)
        return True

    def _handshake(self) -> Generator[Request, Outcome, None]:
        s = self.session
        outcome = yield Handshake()
        s.injected = self.engine.injected
        if isinstance(outcome, HandshakeFailure):
            if outcome.plaintext:
                # Plaintext that arrived after our ClientHello broke the handshake: the injection, seen late.
                s.injected += outcome.plaintext
                self.note(f"the server sent {len(outcome.plaintext)} plaintext octets during the TLS handshake: "
                          f"{outcome.plaintext[:60]!r}")
            raise _Stop(outcome.failure)
        if isinstance(outcome, Failure):
            raise _Stop(outcome)
        if not isinstance(outcome, TlsInfo):
            raise TypeError(f"a handshake outcome must be TlsInfo or a failure, not {outcome!r}")
        s.tls = outcome
        self.note(outcome.summary())
        if not self.plan.implicit_tls:
            self.engine.tls_established()

    def _greet(self, *, tls: bool) -> Generator[Request, Outcome, Reply]:
        s, name = self.session, self.plan.helo_name
        reply = yield from self._command("ehlo-tls" if tls else "ehlo", Command.ehlo(name))
        # A refusal right after the handshake is the server refusing us (Postfix 421), not an EHLO problem.
        if not reply.positive and self._state() is State.GREETED and not (tls and reply.code in REJECTION_CODES):
            reply = yield from self._command("helo-tls" if tls else "helo", Command.helo(name))
        if tls:
            s.tls_ehlo = reply
            s.tls_capabilities = dict(self.engine.capabilities)
        return reply

    def _transaction(self) -> _Gen:
        s, plan = self.session, self.plan
        if plan.mail_from is not None:
            s.mail = yield from self._command("mail", Command.mail(plan.mail_from))
            if self._state() is State.MAIL and plan.rcpt_to is not None:
                s.rcpt = yield from self._command("rcpt", Command.rcpt(plan.rcpt_to))
            if self.delivery is not None:
                if self._state() is State.RCPT:
                    yield from self._deliver(self.delivery)
            elif self._state() in (State.MAIL, State.RCPT):
                s.rset = yield from self._command("rset", Command.rset())
        yield from self._quit()

    def _deliver(self, delivery: Delivery) -> _Gen:
        plan = self.plan
        assert plan.message is not None
        if plan.approve is not None:
            delivery.refused_locally = plan.approve(self.session)
            if delivery.refused_locally is not None:
                self.note(f"not sending the message: {delivery.refused_locally}")
                return
        delivery.data = yield from self._command("data", Command.data())
        if self._state() is State.DATA:
            data = self.engine.send_message(plan.message)
            delivery.accepted = yield from self._exchange("message", data, f"<message of {len(plan.message)} octets>")

    def _quit(self) -> _Gen:
        if self._state() not in (State.CLOSED, State.ERROR, State.TLS_PENDING, State.DATA) \
                and self.engine.pending is None:
            self.session.quit = yield from self._command("quit", Command.quit())

    # -- one step ----------------------------------------------------------------------------------------

    def _command(self, stage: str, command: Command) -> Generator[Request, Outcome, Reply]:
        data = self.engine.send(command)
        return (yield from self._exchange(stage, data, command.line()))

    def _exchange(self, stage: str, data: bytes, shown: str | None) -> Generator[Request, Outcome, Reply]:
        outcome = yield Exchange(stage, data, shown)
        if isinstance(outcome, Reply):
            return outcome
        if isinstance(outcome, ProtocolError):
            raise _Stop(Failure("smtp.protocol-error", stage, f"{outcome.reason}: {outcome.data[:60]!r}"))
        if isinstance(outcome, ConnectionClosed):
            how = "in the middle of a reply" if outcome.mid_reply else "without a reply"
            raise _Stop(Failure("net.closed", stage, f"the server closed the connection {how}"))
        if isinstance(outcome, Failure):
            raise _Stop(outcome)
        raise TypeError(f"an exchange outcome must be a reply event or a failure, not {outcome!r}")
