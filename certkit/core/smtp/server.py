"""The server side of SMTP without I/O: bytes in, events out; replies in, bytes out.

The twin of :class:`certkit.core.smtp.client.SmtpClient`, on the same wire format
(:mod:`certkit.core.smtp.wire`). The engine never touches a socket, a clock or a certificate. A transport
feeds what the client sent with :meth:`SmtpServerEngine.receive_data`, pulls events with
:meth:`SmtpServerEngine.next_event`, answers each :class:`CommandReceived` / :class:`MessageReceived`
with :meth:`SmtpServerEngine.reply`, and sends :meth:`SmtpServerEngine.data_to_send` to the client.

Rules of this module:

* All state transitions sit in one table, :data:`SERVER_TRANSITIONS`: ``(state, verb) -> (state after a
  positive reply, state after a negative reply)``. A known command not in the table for the current
  state is answered ``503`` by the engine itself, an unknown verb ``500``/``502``, a malformed argument
  (an address or an EHLO name with control characters, say) ``501``. Such commands never reach the
  application. Their texts come from :class:`Refusals`, which a personality
  (:mod:`certkit.core.personality`) fills.
* Every reply the engine makes itself is in :meth:`~SmtpServerEngine.data_to_send` as soon as the command
  is read: :meth:`~SmtpServerEngine.next_event` returns :data:`NEED_DATA` only after the last complete
  line was answered, so a transport that flushes before it reads never leaves a client waiting.
* One command is answered at a time: pipelined commands wait in the buffer until the previous one has
  its reply (RFC 2920 keeps the order). When replies pile up unsent (a client that sends and never
  reads), the engine stops parsing and returns :data:`PAUSED` until the transport has taken them, so
  memory stays bounded whatever the client does.
* An overlong command line gets exactly one ``500`` and the next line is read from its start
  (:class:`~certkit.core.smtp.wire.LineBuffer`). A DATA body ends only at ``CRLF . CRLF``
  (:class:`~certkit.core.smtp.wire.BodyReader`).
* A ``421`` reply (or ``221`` to QUIT) closes the session: nothing more is parsed. After ``max_errors``
  refused commands the engine answers ``421`` itself and closes (Postfix's ``smtpd_hard_error_limit``).
* After the ``220`` to ``STARTTLS`` every plaintext octet already received is discarded, never
  executed (CVE-2011-0411), and reported in :attr:`SmtpServerEngine.discarded`. After the handshake
  the session starts again at EHLO (RFC 3207 4.2).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from certkit.core.smtp.client import LocalProtocolError
from certkit.core.smtp.wire import (
    MAX_COMMAND_LINE,
    MAX_TEXT_LINE,
    NO_ARGUMENT,
    TOO_LONG,
    BodyReader,
    LineBuffer,
    Path,
    Verb,
    check_domain,
    format_reply,
    parse_path,
    printable,
)

__all__ = [
    "MAX_COMMAND_LINE",
    "MAX_TEXT_LINE",
    "PAUSED",
    "SERVER_TRANSITIONS",
    "ClientClosed",
    "CommandReceived",
    "MessageReceived",
    "Refusals",
    "ServerEvent",
    "ServerState",
    "SmtpServerEngine",
]

#: Unsent reply octets after which the engine stops parsing until the transport takes them.
MAX_UNSENT = 16 * 1024
#: Refused commands remembered for the session log (the count goes on).
MAX_REFUSED_KEPT = 20


class ServerState(enum.StrEnum):
    """Where the session is, seen from the server."""

    GREETING = "greeting"        # connected; the banner has not been sent
    GREETED = "greeted"          # banner sent (or TLS started): EHLO/HELO expected
    READY = "ready"              # EHLO/HELO done, no transaction
    TLS_PENDING = "tls-pending"  # 220 to STARTTLS sent: the transport must run the handshake
    MAIL = "mail"                # MAIL FROM accepted
    RCPT = "rcpt"                # at least one RCPT TO accepted
    DATA = "data"                # 354 sent: collecting the message
    MESSAGE = "message"          # the message is complete and awaits its reply
    CLOSED = "closed"            # 221 or 421 sent, or the client went away


_S = ServerState
_V = Verb
_SESSION = (_S.GREETED, _S.READY, _S.MAIL, _S.RCPT)

#: ``(state, verb) -> (state after a positive reply, state after a negative reply)``.
SERVER_TRANSITIONS: dict[tuple[ServerState, Verb], tuple[ServerState, ServerState]] = {
    **{(s, _V.EHLO): (_S.READY, s) for s in _SESSION},
    **{(s, _V.HELO): (_S.READY, s) for s in _SESSION},
    **{(s, _V.NOOP): (s, s) for s in _SESSION},
    **{(s, _V.RSET): (_S.READY if s is not _S.GREETED else s, s) for s in _SESSION},
    **{(s, _V.QUIT): (_S.CLOSED, _S.CLOSED) for s in _SESSION},
    **{(s, _V.VRFY): (s, s) for s in _SESSION},
    **{(s, _V.HELP): (s, s) for s in _SESSION},
    (_S.READY, _V.STARTTLS): (_S.TLS_PENDING, _S.READY),
    (_S.READY, _V.MAIL): (_S.MAIL, _S.READY),
    (_S.MAIL, _V.RCPT): (_S.RCPT, _S.MAIL),
    (_S.RCPT, _V.RCPT): (_S.RCPT, _S.RCPT),
    (_S.RCPT, _V.DATA): (_S.DATA, _S.RCPT),
    (_S.MESSAGE, _V.MESSAGE): (_S.READY, _S.READY),  # RFC 5321 4.1.1.4: either way a new transaction
}

_KNOWN = frozenset(v for _, v in SERVER_TRANSITIONS) - {Verb.MESSAGE}


@dataclass(frozen=True)
class Refusals:
    """The replies the engine makes itself, as ``(code, text)``; a personality supplies its own wording."""

    unknown: tuple[int, str] = (500, "5.5.2 Command unrecognized")
    bad_sequence: tuple[int, str] = (503, "5.5.1 Bad sequence of commands")
    no_parameters: tuple[int, str] = (501, "5.5.4 Syntax error, no parameters allowed")
    bad_address: tuple[int, str] = (501, "5.1.7 Invalid address")
    bad_helo: tuple[int, str] = (501, "5.5.4 Invalid domain name")
    line_too_long: tuple[int, str] = (500, "5.5.6 Line too long")
    tls_active: tuple[int, str] = (503, "5.5.1 TLS already active")
    too_many_errors: tuple[int, str] = (421, "4.7.0 Too many errors")


@dataclass(frozen=True)
class CommandReceived:
    """A command the application must answer with :meth:`SmtpServerEngine.reply`.

    ``path`` is the parsed address of ``MAIL``/``RCPT`` (the engine already refused a malformed one).
    """

    verb: Verb
    argument: str
    line: str
    path: Path | None = None


@dataclass(frozen=True)
class MessageReceived:
    """A complete message (dot-stuffing removed, CRLF line endings), or ``oversized`` when it passed a limit
    (then ``content`` is empty). ``bare_newline``: a bare CR or LF was inside a line."""

    content: bytes
    oversized: bool = False
    bare_newline: bool = False


@dataclass(frozen=True)
class ClientClosed:
    """The client closed the stream (``mid_command`` when a partial line or message was pending)."""

    mid_command: bool = False


class _Sentinel:
    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


#: No complete event yet, and every reply made so far is in :meth:`SmtpServerEngine.data_to_send`: feed more.
NEED_DATA = _Sentinel("NEED_DATA")
#: Replies are waiting to be sent: take :meth:`SmtpServerEngine.data_to_send` before asking again.
PAUSED = _Sentinel("PAUSED")

ServerEvent = CommandReceived | MessageReceived | ClientClosed | _Sentinel


class SmtpServerEngine:
    """The server side of one SMTP session, without I/O.

    >>> e = SmtpServerEngine()
    >>> e.greet("mx.fabrikam.com ESMTP")
    >>> e.data_to_send()
    b'220 mx.fabrikam.com ESMTP\\r\\n'
    >>> e.receive_data(b"EHLO mail.contoso.com\\r\\n")
    >>> e.next_event().line
    'EHLO mail.contoso.com'
    """

    def __init__(self, *, max_message: int = 10 * 1024 * 1024, refusals: Refusals | None = None,
                 max_errors: int = 20) -> None:
        self.state = ServerState.GREETING
        self.max_message = max_message
        self.refusals = refusals or Refusals()
        self.max_errors = max_errors
        #: True once the transport reported a completed handshake.
        self.tls = False
        #: Plaintext received after STARTTLS and before the handshake: discarded (CVE-2011-0411), bounded.
        self.discarded = b""
        #: How many octets were discarded in all (``discarded`` keeps the first 4 KiB).
        self.discarded_size = 0
        #: The most recent commands the engine refused itself (at most :data:`MAX_REFUSED_KEPT`), for the log.
        self.refused: list[str] = []
        #: How many commands the engine refused itself.
        self.errors = 0
        self._lines = LineBuffer(MAX_COMMAND_LINE)
        self._body: BodyReader | None = None
        self._out = bytearray()
        self._pending: Verb | None = None       # the verb awaiting the application's reply
        self._eof = False

    # -- output ------------------------------------------------------------------------------------

    def greet(self, text: str, code: int = 220) -> None:
        """Send the banner (``220`` normally; ``421``/``554`` to turn the client away)."""
        if self.state is not ServerState.GREETING:
            raise LocalProtocolError("The banner was already sent.", "Call greet() once, first.")
        self._out += format_reply(code, text)
        self.state = ServerState.CLOSED if code == 421 else ServerState.GREETED

    def reply(self, code: int, *lines: str) -> None:
        """Answer the pending command (or message) and take the transition of the table."""
        if self._pending is None:
            raise LocalProtocolError("No command is waiting for a reply.", "Answer each event once.")
        verb, self._pending = self._pending, None
        self._out += format_reply(code, *(lines or ("",)))
        if code == 421 or self.state is ServerState.CLOSED:
            self.state = ServerState.CLOSED
            return
        on_ok, on_fail = SERVER_TRANSITIONS[(self.state, verb)]
        positive = code == 354 if verb is Verb.DATA else 200 <= code < 400
        self.state = on_ok if positive else on_fail
        if self.state is ServerState.TLS_PENDING:
            # CVE-2011-0411: whatever came with or after STARTTLS in plaintext is never executed.
            self._discard(self._lines.take_all())
        elif self.state is ServerState.DATA:
            self._body = BodyReader(self.max_message)
            early = self._lines.take_all()
            if early:
                self._feed_body(early)

    def close(self, text: str) -> None:
        """Send an unsolicited ``421`` (a timeout, shutdown) and close."""
        self._pending = None
        self._out += format_reply(421, text)
        self.state = ServerState.CLOSED

    def data_to_send(self) -> bytes:
        """Bytes for the client (replies), emptied by the call."""
        out = bytes(self._out)
        self._out.clear()
        return out

    # -- input -------------------------------------------------------------------------------------

    @property
    def pending(self) -> Verb | None:
        """The verb (``MESSAGE`` for a message) whose reply the application owes."""
        return self._pending

    def receive_data(self, data: bytes) -> None:
        """Bytes from the client (plaintext; after STARTTLS, the decrypted stream). ``b""`` = end of stream."""
        if not data:
            self._eof = True
            return
        if self.state is ServerState.TLS_PENDING:
            self._discard(data)
        elif self.state is ServerState.DATA:
            self._feed_body(data)
        elif self.state is not ServerState.CLOSED:
            self._lines.feed(data)

    def _discard(self, data: bytes) -> None:
        if data:
            self.discarded_size += len(data)
            self.discarded = (self.discarded + data)[:4096]

    def _feed_body(self, data: bytes) -> None:
        assert self._body is not None
        rest = self._body.feed(data)
        if rest is not None:
            self.state = ServerState.MESSAGE
            self._lines.feed(rest)

    def tls_established(self) -> None:
        """The transport completed the handshake after the ``220`` to STARTTLS: back to EHLO."""
        if self.state is not ServerState.TLS_PENDING:
            raise LocalProtocolError("No STARTTLS is waiting for a handshake.",
                                     "Call tls_established() only after the 220 reply to STARTTLS.")
        self.state = ServerState.GREETED
        self.tls = True
        self._lines.take_all()

    def next_event(self) -> ServerEvent:
        """The next event; :data:`NEED_DATA` (feed more bytes) or :data:`PAUSED` (send the replies first)."""
        while True:
            if self.state is ServerState.CLOSED:
                return ClientClosed()
            if self._pending is not None or self.state in (ServerState.TLS_PENDING, ServerState.GREETING):
                return PAUSED if self._out else NEED_DATA
            if len(self._out) >= MAX_UNSENT:
                return PAUSED
            if self.state is ServerState.MESSAGE:
                return self._message()
            if self.state is ServerState.DATA:
                if self._eof:
                    return self._closed_event(mid=True)
                return NEED_DATA
            event = self._command_line()
            if event is not None:
                return event

    def _message(self) -> MessageReceived:
        body = self._body
        assert body is not None
        self._body = None
        self._pending = Verb.MESSAGE
        content = b"" if body.oversized else bytes(body.content)
        return MessageReceived(content, body.oversized, body.bare_newline)

    def _closed_event(self, *, mid: bool) -> ClientClosed:
        self.state = ServerState.CLOSED
        return ClientClosed(mid)

    def _command_line(self) -> ServerEvent | None:
        line = self._lines.next_line()
        if line is None:
            if self._eof:
                return self._closed_event(mid=bool(len(self._lines)))
            return NEED_DATA
        if line is TOO_LONG:
            # RFC 5321 4.5.3.1.4: one 500 per overlong line; the rest of it is skipped by the line buffer.
            self._refuse(self.refusals.line_too_long, "<overlong line>")
            return None
        assert isinstance(line, bytes)
        text = line.decode("utf-8", "replace")
        word, _, argument = text.partition(" ")
        # ASCII only: str.upper() maps "ſTARTTLS" (U+017F) to STARTTLS, which a filter in front would not see.
        verb = Verb(word.upper()) if word.isascii() and word.upper() in Verb.__members__ else None
        if verb is None or verb not in _KNOWN:
            self._refuse(self.refusals.unknown, text)
            return None
        argument = argument.strip()
        if verb in NO_ARGUMENT and argument:
            self._refuse(self.refusals.no_parameters, text)
            return None
        if verb is Verb.STARTTLS and self.tls:
            self._refuse(self.refusals.tls_active, text)
            return None
        if (self.state, verb) not in SERVER_TRANSITIONS:
            self._refuse(self.refusals.bad_sequence, text)
            return None
        path: Path | None = None
        if verb in (Verb.MAIL, Verb.RCPT):
            parsed = parse_path(argument, "FROM" if verb is Verb.MAIL else "TO")
            if isinstance(parsed, str):
                self._refuse(self.refusals.bad_address, text, why=parsed)
                return None
            path = parsed
        elif verb in (Verb.EHLO, Verb.HELO) and argument:
            why = check_domain(argument)
            if why is not None:
                self._refuse(self.refusals.bad_helo, text, why=why)
                return None
        self._pending = verb
        return CommandReceived(verb, argument, text, path)

    def _refuse(self, reply: tuple[int, str], line: str, *, why: str | None = None) -> None:
        self.errors += 1
        shown = f"{reply[0]} {reply[1]}" + (f" ({why})" if why else "") + f" <- {printable(line, 80)}"
        self.refused.append(shown)
        del self.refused[:-MAX_REFUSED_KEPT]
        if self.errors >= self.max_errors:
            self.close(self.refusals.too_many_errors[1])
            return
        self._out += format_reply(*reply)
