"""The client side of SMTP without I/O: bytes in, events out; commands in, bytes out.

The engine never touches a socket or a clock (the design of h11). A transport feeds it what the peer
sent with :meth:`SmtpClient.receive_data`, pulls parsed events with :meth:`SmtpClient.next_event`, and
turns commands into wire bytes with :meth:`SmtpClient.send`. The TLS handshake belongs to the transport:
after the ``220`` reply to ``STARTTLS`` the engine waits in :attr:`State.TLS_PENDING` until the transport
calls :meth:`SmtpClient.tls_established`. The order of commands a sending MTA follows is not here but in
:mod:`certkit.core.smtp.dialogue`; this engine only enforces what SMTP allows.

Rules of this module (they mirror h11's header):

* All state transitions sit in one table, :data:`TRANSITIONS`. A command not in the table for the
  current state is local misuse and raises :class:`LocalProtocolError`; nothing is sent.
* One command is in flight at a time (no PIPELINING): a probe wants each reply tied to its command.
* The peer breaking the protocol is never an exception from ``next_event``: it is a
  :class:`ProtocolError` event, after which the engine is in :attr:`State.ERROR` and stays there.
  End of stream is a :class:`ConnectionClosed` event (with the partial reply, if one was cut short).
* A ``421`` reply ends the session wherever it comes (RFC 5321 4.2.5), also as an unsolicited reply.
* Plaintext after the ``220`` reply to ``STARTTLS`` is never parsed: it is discarded and reported as one
  :class:`InjectedData` event once the plaintext phase is over (:meth:`SmtpClient.tls_established` or
  :meth:`SmtpClient.closed`), whatever the packets (STARTTLS response injection, Poddebniak et al.,
  USENIX Security 2021).
  After TLS starts, everything learnt before (EHLO capabilities) is forgotten (RFC 3207 4.2), and
  ``EHLO`` (or ``HELO``) is required again.
* Limits are those of :mod:`certkit.core.smtp.wire`: :data:`MAX_REPLY_LINE` octets per reply line,
  :data:`MAX_REPLY` octets and :data:`MAX_REPLY_LINES` lines per reply. Crossing one is a protocol error
  reported as soon as it is seen, not after waiting.
* ``DATA`` is a command like the others; after its ``354`` the message goes out with
  :meth:`SmtpClient.send_message`, dot-stuffed (:func:`~certkit.core.smtp.wire.dot_stuff`).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field

from certkit.core.smtp.wire import (
    MAX_COMMAND_LINE,
    MAX_REPLY,
    MAX_REPLY_LINE,
    MAX_REPLY_LINES,
    TOO_LONG,
    LineBuffer,
    Reply,
    Verb,
    dot_stuff,
    enhanced_status,
    parse_capabilities,
)
from certkit.errors import CertkitError, UsageError

__all__ = [
    "MAX_COMMAND",
    "MAX_LINE",
    "MAX_LINES",
    "MAX_REPLY",
    "NEED_DATA",
    "TRANSITIONS",
    "Command",
    "ConnectionClosed",
    "Event",
    "InjectedData",
    "LocalProtocolError",
    "NeedData",
    "ProtocolError",
    "RemoteProtocolError",
    "SmtpClient",
    "State",
    "TranscriptLine",
]

#: Longest reply line accepted, in octets without the line ending (an alias of :data:`MAX_REPLY_LINE`).
MAX_LINE = MAX_REPLY_LINE
#: Most lines accepted in one multi-line reply (an alias of :data:`MAX_REPLY_LINES`).
MAX_LINES = MAX_REPLY_LINES
#: Longest command line the engine sends, CRLF included (an alias of :data:`MAX_COMMAND_LINE`).
MAX_COMMAND = MAX_COMMAND_LINE


class LocalProtocolError(UsageError):
    """The engine was used the wrong way (a command out of order, a command with a line break, DATA)."""


class RemoteProtocolError(CertkitError):
    """The peer broke SMTP. Carried as a :class:`ProtocolError` event; transports may raise it internally."""


class State(enum.StrEnum):
    """Where the client is in the dialogue."""

    BANNER = "banner"            # connected, waiting for the 220 greeting
    GREETED = "greeted"          # greeting (or TLS) done: EHLO/HELO required
    READY = "ready"              # EHLO/HELO accepted, no transaction
    TLS_PENDING = "tls-pending"  # 220 to STARTTLS received: the transport must do the handshake
    MAIL = "mail"                # MAIL FROM accepted
    RCPT = "rcpt"                # at least one RCPT TO accepted
    DATA = "data"                # 354 to DATA received: the message must follow
    REJECTED = "rejected"        # the greeting was negative (554): only QUIT makes sense
    CLOSED = "closed"            # QUIT answered, 421 received, or the peer closed
    ERROR = "error"              # the peer broke the protocol; nothing more is parsed


_S = State
_V = Verb

#: ``(state, verb) -> (state after a positive reply, state after a negative reply)``.
#: Positive means 2xx or 3xx (354 to DATA); a 421 always leads to CLOSED.
TRANSITIONS: dict[tuple[State, Verb], tuple[State, State]] = {
    (_S.BANNER, _V.GREETING): (_S.GREETED, _S.REJECTED),
    (_S.GREETED, _V.EHLO): (_S.READY, _S.GREETED),         # a refused EHLO leaves room for HELO
    (_S.GREETED, _V.HELO): (_S.READY, _S.GREETED),
    (_S.GREETED, _V.NOOP): (_S.GREETED, _S.GREETED),
    (_S.GREETED, _V.RSET): (_S.GREETED, _S.GREETED),
    (_S.GREETED, _V.QUIT): (_S.CLOSED, _S.CLOSED),
    (_S.READY, _V.EHLO): (_S.READY, _S.READY),
    (_S.READY, _V.HELO): (_S.READY, _S.READY),
    (_S.READY, _V.STARTTLS): (_S.TLS_PENDING, _S.READY),
    (_S.READY, _V.MAIL): (_S.MAIL, _S.READY),
    (_S.READY, _V.RSET): (_S.READY, _S.READY),
    (_S.READY, _V.NOOP): (_S.READY, _S.READY),
    (_S.READY, _V.QUIT): (_S.CLOSED, _S.CLOSED),
    (_S.TLS_PENDING, _V.HANDSHAKE): (_S.GREETED, _S.ERROR),
    (_S.MAIL, _V.RCPT): (_S.RCPT, _S.MAIL),
    (_S.MAIL, _V.RSET): (_S.READY, _S.MAIL),
    (_S.MAIL, _V.NOOP): (_S.MAIL, _S.MAIL),
    (_S.MAIL, _V.QUIT): (_S.CLOSED, _S.CLOSED),
    (_S.RCPT, _V.RCPT): (_S.RCPT, _S.RCPT),
    (_S.RCPT, _V.RSET): (_S.READY, _S.RCPT),
    (_S.RCPT, _V.NOOP): (_S.RCPT, _S.RCPT),
    (_S.RCPT, _V.QUIT): (_S.CLOSED, _S.CLOSED),
    (_S.RCPT, _V.DATA): (_S.DATA, _S.RCPT),
    (_S.DATA, _V.MESSAGE): (_S.READY, _S.READY),          # RFC 5321 4.1.1.4: either way a new transaction
    (_S.REJECTED, _V.QUIT): (_S.CLOSED, _S.CLOSED),
}


# --- events -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProtocolError:
    """The peer broke SMTP; ``data`` holds (a bounded prefix of) the offending bytes."""

    reason: str
    data: bytes = b""

    def error(self) -> RemoteProtocolError:
        """This event as an exception, for transports that prefer raising."""
        return RemoteProtocolError(f"The server broke SMTP: {self.reason}.")


@dataclass(frozen=True)
class ConnectionClosed:
    """The peer closed the stream. ``partial`` is a reply that was cut short (empty when none was)."""

    partial: bytes = b""

    @property
    def mid_reply(self) -> bool:
        return bool(self.partial)


@dataclass(frozen=True)
class InjectedData:
    """Plaintext the peer sent after its ``220`` to ``STARTTLS``: discarded, never parsed."""

    data: bytes


class NeedData:
    """Sentinel type of :data:`NEED_DATA`: no complete event yet; feed more bytes."""

    _instance: NeedData | None = None

    def __new__(cls) -> NeedData:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA = NeedData()

Event = Reply | ProtocolError | ConnectionClosed | InjectedData | NeedData


@dataclass(frozen=True)
class TranscriptLine:
    """One line of the dialogue: ``direction`` is ``"C"`` (client), ``"S"`` (server) or ``"*"`` (a note).

    ``elapsed``: seconds from connect, stamped by the transport that carried the line (the engine, which
    has no clock, leaves it ``None``).
    """

    direction: str
    text: str
    elapsed: float | None = None

    def __str__(self) -> str:
        stamp = "       " if self.elapsed is None else f"{self.elapsed:7.3f}"
        return f"{stamp} {self.direction}: {self.text}"


# --- commands ---------------------------------------------------------------------------------------

_VERB_RE = re.compile(r"^([A-Za-z]+)(?:[ ](.*))?$", re.DOTALL)


@dataclass(frozen=True)
class Command:
    """A command line: a verb and its argument. Build it with the helpers (``Command.ehlo("probe.example")``)
    or parse a line with :meth:`parse` (both roles: the server engine parses what clients send this way)."""

    verb: Verb
    argument: str = ""

    @classmethod
    def parse(cls, line: str) -> Command:
        """``"MAIL FROM:<a@b>"`` -> ``Command(Verb.MAIL, "FROM:<a@b>")``. Unknown verbs are refused."""
        m = _VERB_RE.match(line.removesuffix("\r\n"))
        if not m:
            raise LocalProtocolError(f"Not an SMTP command: {line[:60]!r}.", "Pass e.g. 'EHLO probe.example'.")
        word = m.group(1).upper()
        if word not in Verb.__members__ or Verb(word).pseudo:
            raise LocalProtocolError(f"The engine does not send {word!r}.",
                                     "Use EHLO, HELO, STARTTLS, MAIL, RCPT, DATA, RSET, NOOP, VRFY, HELP or QUIT.")
        return cls(Verb(word), m.group(2) or "")

    @classmethod
    def ehlo(cls, name: str) -> Command:
        return cls(Verb.EHLO, name)

    @classmethod
    def helo(cls, name: str) -> Command:
        return cls(Verb.HELO, name)

    @classmethod
    def starttls(cls) -> Command:
        return cls(Verb.STARTTLS)

    @classmethod
    def mail(cls, sender: str) -> Command:
        """``MAIL FROM:<sender>`` (an empty sender is the null reverse-path ``<>``)."""
        return cls(Verb.MAIL, f"FROM:<{sender}>")

    @classmethod
    def rcpt(cls, recipient: str) -> Command:
        return cls(Verb.RCPT, f"TO:<{recipient}>")

    @classmethod
    def data(cls) -> Command:
        return cls(Verb.DATA)

    @classmethod
    def rset(cls) -> Command:
        return cls(Verb.RSET)

    @classmethod
    def noop(cls) -> Command:
        return cls(Verb.NOOP)

    @classmethod
    def quit(cls) -> Command:
        return cls(Verb.QUIT)

    def line(self) -> str:
        """The command as sent, without CRLF."""
        return f"{self.verb.value} {self.argument}" if self.argument else self.verb.value


# --- the engine -------------------------------------------------------------------------------------

_LINE_RE = re.compile(rb"^([2-5][0-9][0-9])([ -]?)(.*)$", re.DOTALL)


@dataclass
class _ReplyBuilder:
    code: bytes | None = None
    lines: list[str] = field(default_factory=list)
    size: int = 0


class SmtpClient:
    """The client side of one SMTP session, without I/O.

    >>> c = SmtpClient()
    >>> c.receive_data(b"220 mx.fabrikam.com ESMTP\\r\\n")
    >>> c.next_event().code
    220
    >>> c.send(Command.ehlo("probe.contoso.com"))
    b'EHLO probe.contoso.com\\r\\n'
    """

    def __init__(self, *, implicit_tls: bool = False) -> None:
        self.state: State = State.BANNER
        #: True once the transport reported a completed TLS handshake (STARTTLS or implicit TLS).
        self.tls: bool = implicit_tls
        #: EHLO keywords of the current session phase; reset when TLS starts (RFC 3207 4.2).
        self.capabilities: dict[str, str] = {}
        self.transcript: list[TranscriptLine] = []
        #: Everything discarded after the 220 to STARTTLS (STARTTLS response injection).
        self.injected: bytes = b""
        self._lines = LineBuffer(MAX_REPLY_LINE, ending_counts=False)
        self._pending: Verb | None = Verb.GREETING
        self._reply = _ReplyBuilder()
        self._eof = False
        self._error: ProtocolError | None = None
        self._queued: list[Event] = []
        self._injected_reported = False

    # -- properties --------------------------------------------------------------------------------

    @property
    def pending(self) -> Verb | None:
        """The command whose reply is awaited (``GREETING`` before the banner), or ``None``."""
        return self._pending

    @property
    def starttls_offered(self) -> bool:
        """Whether the last EHLO reply advertised STARTTLS."""
        return "STARTTLS" in self.capabilities

    # -- input ---------------------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Feed bytes received from the peer; ``b""`` means the peer closed the stream."""
        if not data:
            self._eof = True
            return
        if self.state is State.TLS_PENDING:
            # Nothing legitimate can arrive in plaintext between the 220 and the handshake.
            self._discard_injected(bytes(data))
            return
        if self.state in (State.ERROR, State.CLOSED):
            return
        self._lines.feed(data)

    def next_event(self) -> Event:
        """The next event, or :data:`NEED_DATA` when more bytes are needed."""
        if self._queued:
            return self._queued.pop(0)
        if self._error is not None:
            return self._error
        if self.state is State.CLOSED:
            return ConnectionClosed()
        while True:
            raw = self._lines.next_line()
            if raw is TOO_LONG:
                return self._fail(f"reply line longer than {MAX_REPLY_LINE} octets", b"")
            if raw is None:
                if self._eof:
                    partial = self._partial_bytes() + self._lines.take_all()
                    self.state = State.CLOSED
                    self._pending = None
                    self.transcript.append(TranscriptLine("*", "connection closed by the server"
                                                           + (" in the middle of a reply" if partial else "")))
                    return ConnectionClosed(partial)
                return NEED_DATA
            assert isinstance(raw, bytes)
            event = self._line(raw)
            if event is not None:
                return event

    def _partial_bytes(self) -> bytes:
        if self._reply.code is None:
            return b""
        return "\r\n".join(f"{self._reply.code.decode()}-{t}" for t in self._reply.lines).encode() + b"\r\n"

    def _line(self, raw: bytes) -> Event | None:
        m = _LINE_RE.match(raw)
        if not m or (m.group(2) == b"" and m.group(3) != b""):
            return self._fail("a reply line that is not 'NNN text'", raw[:80])
        code, sep, rest = m.group(1), m.group(2), m.group(3)
        b = self._reply
        if b.code is not None and code != b.code:
            return self._fail(f"a multi-line reply changed its code from {b.code.decode()} to {code.decode()}",
                              raw[:80])
        b.code = code
        b.lines.append(rest.decode("utf-8", errors="replace"))
        b.size += len(raw) + 2
        if b.size > MAX_REPLY or len(b.lines) > MAX_REPLY_LINES:
            return self._fail(f"a reply larger than {MAX_REPLY} octets or {MAX_REPLY_LINES} lines", raw[:80])
        if sep == b"-":
            return None
        self._reply = _ReplyBuilder()
        return self._complete(int(code), tuple(b.lines))

    def _complete(self, code: int, lines: tuple[str, ...]) -> Event:
        verb = self._pending
        reply = Reply(code, enhanced_status(code, lines[0]) if lines else None, lines, verb)
        for wire in reply.wire_lines():
            self.transcript.append(TranscriptLine("S", wire))
        self._pending = None
        if verb is None:
            if code == 421:  # RFC 5321 4.2.5: the server may close at any time with 421
                self.state = State.CLOSED
                return reply
            return self._fail(f"an unsolicited reply '{reply.text[:80]}'", reply.text.encode()[:80])
        if code == 421:
            self.state = State.CLOSED
        else:
            on_ok, on_fail = TRANSITIONS[(self.state, verb)]
            positive = reply.code == 354 if verb is Verb.DATA else reply.positive
            self.state = on_ok if positive else on_fail
        if verb is Verb.EHLO and reply.positive:
            self.capabilities = parse_capabilities(reply)
        elif verb is Verb.HELO and reply.positive:
            self.capabilities = {}
        if verb is Verb.STARTTLS and self.state is State.TLS_PENDING:
            self.capabilities = {}
            if len(self._lines):
                self._discard_injected(self._lines.take_all())
        return reply

    def _discard_injected(self, data: bytes) -> None:
        # Reported once, when the plaintext phase is over (tls_established or closed), so that the events
        # do not depend on how the bytes were split into packets.
        self.injected += data

    def _report_injected(self) -> None:
        if self.injected and not self._injected_reported:
            self._injected_reported = True
            data = self.injected
            self._queued.append(InjectedData(data))
            self.transcript.append(TranscriptLine("*", f"discarded {len(data)} plaintext octets sent after the "
                                                        f"220 to STARTTLS: {data[:60]!r}"))

    def _fail(self, reason: str, data: bytes) -> ProtocolError:
        self._error = ProtocolError(reason, data)
        self.state = State.ERROR
        self._pending = None
        self._lines.take_all()
        self.transcript.append(TranscriptLine("*", f"protocol error: {reason}"))
        return self._error

    # -- output --------------------------------------------------------------------------------------

    def send(self, command: Command | str) -> bytes:
        """Check ``command`` against the state table and return its wire bytes (with CRLF)."""
        cmd = command if isinstance(command, Command) else Command.parse(command)
        if cmd.verb.pseudo:
            raise LocalProtocolError(f"{cmd.verb.value} is not a command.", "Send EHLO, MAIL, RCPT, QUIT, ...")
        self._check(cmd.verb)
        if cmd.verb is Verb.STARTTLS and self.tls:
            raise LocalProtocolError("TLS is already active.", "Send EHLO after the handshake, not STARTTLS.")
        line = cmd.line()
        if "\r" in line or "\n" in line or "\x00" in line:
            raise LocalProtocolError("A command must not contain a line break or NUL.",
                                     "Check addresses and names for CR, LF or NUL (command injection).")
        data = line.encode("utf-8") + b"\r\n"
        if len(data) > MAX_COMMAND_LINE:
            raise LocalProtocolError(f"The command is longer than {MAX_COMMAND_LINE} octets.",
                                     "Shorten the argument.")
        self._pending = cmd.verb
        self.transcript.append(TranscriptLine("C", line))
        return data

    def send_message(self, message: bytes) -> bytes:
        """After ``354``: the message's wire bytes, dot-stuffed, with the final ``.`` line."""
        self._check(Verb.MESSAGE)
        self._pending = Verb.MESSAGE
        self.transcript.append(TranscriptLine("C", f"<message of {len(message)} octets>"))
        return dot_stuff(message)

    def _check(self, verb: Verb) -> None:
        if self._pending is not None:
            raise LocalProtocolError(f"Cannot send {verb.value} while waiting for the reply to "
                                     f"{self._pending.value}.", "Read events until the reply arrives.")
        if (self.state, verb) not in TRANSITIONS:
            raise LocalProtocolError(f"Cannot send {verb.value} in state {self.state.value}.",
                                     "Follow banner, EHLO, STARTTLS, EHLO, MAIL, RCPT, DATA, QUIT.")

    def tls_established(self) -> None:
        """The transport completed the TLS handshake after STARTTLS: forget the plaintext phase."""
        if self.state is not State.TLS_PENDING:
            raise LocalProtocolError(f"No STARTTLS is waiting for a handshake (state {self.state.value}).",
                                     "Call tls_established() only after the 220 reply to STARTTLS.")
        self.state = TRANSITIONS[(State.TLS_PENDING, Verb.HANDSHAKE)][0]
        self.tls = True
        self.capabilities = {}
        self._lines.take_all()
        self._report_injected()
        self.transcript.append(TranscriptLine("*", "TLS established; capabilities forgotten, EHLO required"))

    def closed(self) -> None:
        """The transport gave up on the session (timeout, TLS failure): no more events will be parsed."""
        self._report_injected()
        self.state = State.CLOSED
        self._pending = None
