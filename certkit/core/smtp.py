"""A sans-I/O SMTP client engine: bytes in, events out; commands in, bytes out.

The engine never touches a socket or a clock (the design of h11). A transport feeds it what the peer
sent with :meth:`SmtpClient.receive_data`, pulls parsed events with :meth:`SmtpClient.next_event`, and
turns commands into wire bytes with :meth:`SmtpClient.send`. The TLS handshake itself belongs to the
transport: after the ``220`` reply to ``STARTTLS`` the engine waits in :attr:`State.TLS_PENDING` until
the transport calls :meth:`SmtpClient.tls_established`.

Rules of this module (they mirror h11's header):

* All state transitions sit in one table, :data:`TRANSITIONS`. A command not in the table for the
  current state is local misuse and raises :class:`LocalProtocolError`; nothing is sent.
* One command is in flight at a time (no PIPELINING): a probe wants each reply tied to its command.
* The peer breaking the protocol is never an exception from ``next_event``: it is a
  :class:`ProtocolError` event, after which the engine is in :attr:`State.ERROR` and stays there.
  End of stream is a :class:`ConnectionClosed` event (with the partial reply, if one was cut short).
* A ``421`` reply ends the session wherever it comes (RFC 5321 4.2.5), also as an unsolicited reply.
* Plaintext after the ``220`` reply to ``STARTTLS`` is never parsed: it is discarded and reported as an
  :class:`InjectedData` event (STARTTLS response injection, Poddebniak et al., USENIX Security 2021).
  After TLS starts, everything learnt before (EHLO capabilities) is forgotten (RFC 3207 4.2), and
  ``EHLO`` (or ``HELO``) is required again.
* Limits bound memory whatever the peer sends: :data:`MAX_LINE` octets per reply line (RFC 5321
  allows 512; real servers send longer texts), :data:`MAX_REPLY` octets and :data:`MAX_LINES` lines
  per reply. Crossing one is a protocol error reported as soon as it is seen, not after waiting.
* The engine never sends ``DATA``: certkit probes, it does not deliver mail.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field

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
    "Reply",
    "SmtpClient",
    "State",
    "TranscriptEntry",
    "Verb",
    "looks_like_smtp_text",
    "parse_capabilities",
    "printable",
]

#: Longest reply line accepted, in octets without the line ending.
MAX_LINE = 2048
#: Largest reply accepted, in octets.
MAX_REPLY = 64 * 1024
#: Most lines accepted in one multi-line reply.
MAX_LINES = 512
#: Longest command line the engine sends, CRLF included (RFC 5321 4.5.3.1.4).
MAX_COMMAND = 512


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
    REJECTED = "rejected"        # the greeting was negative (554): only QUIT makes sense
    CLOSED = "closed"            # QUIT answered, 421 received, or the peer closed
    ERROR = "error"              # the peer broke the protocol; nothing more is parsed


class Verb(enum.StrEnum):
    """The commands the engine knows; ``GREETING`` and ``HANDSHAKE`` are the pseudo-commands of the table."""

    GREETING = "GREETING"
    EHLO = "EHLO"
    HELO = "HELO"
    STARTTLS = "STARTTLS"
    HANDSHAKE = "HANDSHAKE"
    MAIL = "MAIL"
    RCPT = "RCPT"
    RSET = "RSET"
    NOOP = "NOOP"
    QUIT = "QUIT"


_S = State
_V = Verb

#: ``(state, verb) -> (state after a positive reply, state after a negative reply)``.
#: Positive means 2xx (and 3xx, which no command here expects); a 421 always leads to CLOSED.
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
    (_S.REJECTED, _V.QUIT): (_S.CLOSED, _S.CLOSED),
}


# --- events -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """One complete server reply: the code, the RFC 3463 enhanced status (if any) and the text lines.

    ``command`` is the verb it answers (``GREETING`` for the banner, ``None`` for an unsolicited reply).
    ``lines`` hold the text after ``NNN-``/``NNN `` of each line, the enhanced code left in place.
    """

    code: int
    enhanced: str | None
    lines: tuple[str, ...]
    command: Verb | None = None

    @property
    def positive(self) -> bool:
        """2xx or 3xx."""
        return 200 <= self.code < 400

    @property
    def transient(self) -> bool:
        """4xx."""
        return 400 <= self.code < 500

    @property
    def permanent(self) -> bool:
        """5xx."""
        return self.code >= 500

    @property
    def text(self) -> str:
        """The reply as one line of text, as an admin would quote it: ``454 4.7.5 Certificate ...``."""
        return f"{self.code} {' '.join(line for line in self.lines if line)}".rstrip()

    def wire_lines(self) -> list[str]:
        """The reply lines as they were on the wire (without line endings)."""
        last = len(self.lines) - 1
        return [f"{self.code}{' ' if i == last else '-'}{line}" for i, line in enumerate(self.lines)]


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
class TranscriptEntry:
    """One line of the dialogue: ``direction`` is ``"C"`` (client), ``"S"`` (server) or ``"*"`` (a note)."""

    direction: str
    text: str


# --- commands ---------------------------------------------------------------------------------------

_VERB_RE = re.compile(r"^([A-Za-z]+)(?:[ ](.*))?$", re.DOTALL)


@dataclass(frozen=True)
class Command:
    """A client command. Build it with the helpers (``Command.ehlo("probe.example")``) or from a string."""

    verb: Verb
    argument: str = ""

    @classmethod
    def parse(cls, line: str) -> Command:
        """``"MAIL FROM:<a@b>"`` -> ``Command(Verb.MAIL, "FROM:<a@b>")``. Unknown verbs and DATA are refused."""
        m = _VERB_RE.match(line.removesuffix("\r\n"))
        if not m:
            raise LocalProtocolError(f"Not an SMTP command: {line[:60]!r}.", "Pass e.g. 'EHLO probe.example'.")
        word = m.group(1).upper()
        if word == "DATA":
            raise LocalProtocolError("certkit never sends DATA.", "The probe stops after RCPT TO; use RSET/QUIT.")
        if word in (Verb.GREETING, Verb.HANDSHAKE) or word not in Verb.__members__:
            raise LocalProtocolError(f"The engine does not send {word!r}.",
                                     "Use EHLO, HELO, STARTTLS, MAIL, RCPT, RSET, NOOP or QUIT.")
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


# --- reply parsing ----------------------------------------------------------------------------------

_LINE_RE = re.compile(rb"^([2-5][0-9][0-9])([ -]?)(.*)$", re.DOTALL)
# RFC 3463: class "." subject "." detail; class must agree with the reply code's first digit.
_ENHANCED_RE = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?=\s|$)")


def _enhanced(code: int, text: str) -> str | None:
    m = _ENHANCED_RE.match(text)
    if m and int(m.group(1)) == code // 100:
        return m.group(0)
    return None


def parse_capabilities(reply: Reply) -> dict[str, str]:
    """EHLO keywords (upper case) and their parameters, from a positive EHLO reply (RFC 5321 4.1.1.1)."""
    caps: dict[str, str] = {}
    for line in reply.lines[1:]:
        words = line.strip().split(None, 1)
        if words:
            caps[words[0].upper()] = words[1] if len(words) > 1 else ""
    return caps


# C0 and C1 controls (ESC starts terminal sequences, CR rewrites a line), DEL, and the Unicode controls
# that reorder or break displayed text (bidi overrides and isolates, line and paragraph separators).
_UNSAFE_RE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\r": "\\r", "\n": "\\n", "\t": "\\t"}


def _escape(m: re.Match[str]) -> str:
    c = m.group(0)
    return _NAMED.get(c) or (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")


def printable(text: str | bytes, limit: int | None = None) -> str:
    """Peer-controlled text (replies, certificate names, injected bytes) made safe for a terminal or a log.

    Control characters are escaped (``\\x1b``, ``\\r``), so a server cannot move the cursor, recolour or
    overwrite what certkit prints; bytes are read as UTF-8 with undecodable octets escaped. With ``limit``,
    at most that many characters of the input are kept, and ``...`` marks the cut.
    """
    t = text.decode("utf-8", "backslashreplace") if isinstance(text, bytes) else text
    cut = limit is not None and len(t) > limit
    if cut:
        t = t[:limit]
    return _UNSAFE_RE.sub(_escape, t) + ("..." if cut else "")


_SMTP_LINE_RE = re.compile(rb"[2-5][0-9][0-9][ -]")
_TEXT_RE = re.compile(rb"[\t\r\n\x20-\x7e]+")


def looks_like_smtp_text(data: bytes) -> bool:
    """Whether ``data`` is SMTP-like plaintext (``NNN text`` or printable ASCII lines), not TLS records.

    Used on what a server sent where the TLS handshake was expected: text there is plaintext sent after
    the ``220`` to ``STARTTLS`` (response injection), not a broken TLS stack.
    """
    if not data or data[0] in (0x14, 0x15, 0x16, 0x17):  # TLS record content types
        return False
    return bool(_SMTP_LINE_RE.match(data) or _TEXT_RE.fullmatch(data))


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
        self.transcript: list[TranscriptEntry] = []
        #: Everything discarded after the 220 to STARTTLS (STARTTLS response injection).
        self.injected: bytes = b""
        self._buffer = bytearray()
        self._pending: Verb | None = Verb.GREETING
        self._reply = _ReplyBuilder()
        self._eof = False
        self._error: ProtocolError | None = None
        self._queued: list[Event] = []

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
        self._buffer += data

    def next_event(self) -> Event:
        """The next event, or :data:`NEED_DATA` when more bytes are needed."""
        if self._queued:
            return self._queued.pop(0)
        if self._error is not None:
            return self._error
        if self.state is State.CLOSED:
            return ConnectionClosed()
        while True:
            nl = self._buffer.find(b"\n")
            if nl < 0:
                if len(self._buffer) > MAX_LINE:
                    return self._fail(f"reply line longer than {MAX_LINE} octets", bytes(self._buffer[:80]))
                if self._eof:
                    partial = self._partial_bytes() + bytes(self._buffer)
                    self._buffer.clear()
                    self.state = State.CLOSED
                    self._pending = None
                    self.transcript.append(TranscriptEntry("*", "connection closed by the server"
                                                           + (" in the middle of a reply" if partial else "")))
                    return ConnectionClosed(partial)
                return NEED_DATA
            raw = bytes(self._buffer[:nl])
            del self._buffer[: nl + 1]
            if raw.endswith(b"\r"):
                raw = raw[:-1]
            if len(raw) > MAX_LINE:
                return self._fail(f"reply line longer than {MAX_LINE} octets", raw[:80])
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
        if b.size > MAX_REPLY or len(b.lines) > MAX_LINES:
            return self._fail(f"a reply larger than {MAX_REPLY} octets or {MAX_LINES} lines", raw[:80])
        if sep == b"-":
            return None
        self._reply = _ReplyBuilder()
        return self._complete(int(code), tuple(b.lines))

    def _complete(self, code: int, lines: tuple[str, ...]) -> Event:
        verb = self._pending
        reply = Reply(code, _enhanced(code, lines[0]) if lines else None, lines, verb)
        for wire in reply.wire_lines():
            self.transcript.append(TranscriptEntry("S", wire))
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
            self.state = on_ok if reply.positive else on_fail
        if verb is Verb.EHLO and reply.positive:
            self.capabilities = parse_capabilities(reply)
        elif verb is Verb.HELO and reply.positive:
            self.capabilities = {}
        if verb is Verb.STARTTLS and self.state is State.TLS_PENDING:
            self.capabilities = {}
            if self._buffer:
                self._discard_injected(bytes(self._buffer))
                self._buffer.clear()
            if self.injected:
                self._queued.append(InjectedData(self.injected))
        return reply

    def _discard_injected(self, data: bytes) -> None:
        self.injected += data
        self.transcript.append(TranscriptEntry("*", f"discarded {len(data)} plaintext octets sent after the "
                                                    f"220 to STARTTLS: {data[:60]!r}"))

    def _fail(self, reason: str, data: bytes) -> ProtocolError:
        self._error = ProtocolError(reason, data)
        self.state = State.ERROR
        self._pending = None
        self._buffer.clear()
        self.transcript.append(TranscriptEntry("*", f"protocol error: {reason}"))
        return self._error

    # -- output --------------------------------------------------------------------------------------

    def send(self, command: Command | str) -> bytes:
        """Check ``command`` against the state table and return its wire bytes (with CRLF)."""
        cmd = command if isinstance(command, Command) else Command.parse(command)
        if cmd.verb in (Verb.GREETING, Verb.HANDSHAKE):
            raise LocalProtocolError(f"{cmd.verb.value} is not a command.", "Send EHLO, MAIL, RCPT, QUIT, ...")
        if self._pending is not None:
            raise LocalProtocolError(f"Cannot send {cmd.verb.value} while waiting for the reply to "
                                     f"{self._pending.value}.", "Read events until the reply arrives.")
        if (self.state, cmd.verb) not in TRANSITIONS:
            raise LocalProtocolError(f"Cannot send {cmd.verb.value} in state {self.state.value}.",
                                     "Follow banner, EHLO, STARTTLS, EHLO, MAIL, RCPT, QUIT.")
        if cmd.verb is Verb.STARTTLS and self.tls:
            raise LocalProtocolError("TLS is already active.", "Send EHLO after the handshake, not STARTTLS.")
        line = cmd.line()
        if "\r" in line or "\n" in line:
            raise LocalProtocolError("A command must not contain a line break.",
                                     "Check addresses and names for CR or LF (command injection).")
        data = line.encode("utf-8") + b"\r\n"
        if len(data) > MAX_COMMAND:
            raise LocalProtocolError(f"The command is longer than {MAX_COMMAND} octets.", "Shorten the argument.")
        self._pending = cmd.verb
        self.transcript.append(TranscriptEntry("C", line))
        return data

    def tls_established(self) -> None:
        """The transport completed the TLS handshake after STARTTLS: forget the plaintext phase."""
        if self.state is not State.TLS_PENDING:
            raise LocalProtocolError(f"No STARTTLS is waiting for a handshake (state {self.state.value}).",
                                     "Call tls_established() only after the 220 reply to STARTTLS.")
        self.state = TRANSITIONS[(State.TLS_PENDING, Verb.HANDSHAKE)][0]
        self.tls = True
        self.capabilities = {}
        self._buffer.clear()
        self.transcript.append(TranscriptEntry("*", "TLS established; capabilities forgotten, EHLO required"))

    def closed(self) -> None:
        """The transport gave up on the session (timeout, TLS failure): no more events will be parsed."""
        self.state = State.CLOSED
        self._pending = None
