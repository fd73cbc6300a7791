"""A sans-I/O SMTP *server* engine: bytes in, events out; replies in, bytes out.

The twin of :class:`certkit.core.smtp.SmtpClient` for the lab endpoint. The engine never touches a
socket, a clock or a certificate. A transport feeds what the client sent with
:meth:`SmtpServerEngine.receive_data`, pulls events with :meth:`SmtpServerEngine.next_event`, answers
each :class:`CommandReceived` / :class:`MessageReceived` with :meth:`SmtpServerEngine.reply`, and sends
:meth:`SmtpServerEngine.data_to_send` to the client.

Rules of this module:

* All state transitions sit in one table, :data:`SERVER_TRANSITIONS`: ``(state, verb) -> (state after a
  positive reply, state after a negative reply)``. A known command not in the table for the current
  state is answered ``503 5.5.1`` by the engine itself; an unknown verb ``500 5.5.2``. Such commands
  never reach the application.
* One command is answered at a time: pipelined commands wait in the buffer until the previous one has
  its reply (RFC 2920 keeps the order).
* A ``421`` reply (or ``221`` to QUIT) closes the session: nothing more is parsed.
* After the ``220`` to ``STARTTLS`` every plaintext octet already received is discarded, never
  executed (CVE-2011-0411), and reported in :attr:`SmtpServerEngine.discarded`. After the handshake
  the session starts again at EHLO (RFC 3207 4.2).
* Limits bound memory whatever the client sends: :data:`MAX_COMMAND_LINE` octets per command line
  (RFC 5321 4.5.3.1.4), :data:`MAX_TEXT_LINE` per message line (4.5.3.1.6), and ``max_message`` octets
  per message (answered ``552 5.3.4`` after the final dot; the excess is not kept).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = [
    "MAX_COMMAND_LINE",
    "MAX_TEXT_LINE",
    "SERVER_TRANSITIONS",
    "ClientClosed",
    "CommandReceived",
    "MessageReceived",
    "ServerEvent",
    "ServerState",
    "SmtpServerEngine",
]

#: Longest command line accepted, CRLF included (RFC 5321 4.5.3.1.4).
MAX_COMMAND_LINE = 512
#: Longest text line of a message accepted, CRLF included (RFC 5321 4.5.3.1.6).
MAX_TEXT_LINE = 1000


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

#: ``(state, verb) -> (state after a positive reply, state after a negative reply)``.
SERVER_TRANSITIONS: dict[tuple[ServerState, str], tuple[ServerState, ServerState]] = {
    **{(s, "EHLO"): (_S.READY, s) for s in (_S.GREETED, _S.READY, _S.MAIL, _S.RCPT)},
    **{(s, "HELO"): (_S.READY, s) for s in (_S.GREETED, _S.READY, _S.MAIL, _S.RCPT)},
    **{(s, "NOOP"): (s, s) for s in (_S.GREETED, _S.READY, _S.MAIL, _S.RCPT)},
    **{(s, "RSET"): (_S.READY if s is not _S.GREETED else s, s) for s in (_S.GREETED, _S.READY, _S.MAIL, _S.RCPT)},
    **{(s, "QUIT"): (_S.CLOSED, _S.CLOSED) for s in (_S.GREETED, _S.READY, _S.MAIL, _S.RCPT)},
    **{(s, "VRFY"): (s, s) for s in (_S.GREETED, _S.READY, _S.MAIL, _S.RCPT)},
    **{(s, "HELP"): (s, s) for s in (_S.GREETED, _S.READY, _S.MAIL, _S.RCPT)},
    (_S.READY, "STARTTLS"): (_S.TLS_PENDING, _S.READY),
    (_S.READY, "MAIL"): (_S.MAIL, _S.READY),
    (_S.MAIL, "RCPT"): (_S.RCPT, _S.MAIL),
    (_S.RCPT, "RCPT"): (_S.RCPT, _S.RCPT),
    (_S.RCPT, "DATA"): (_S.DATA, _S.RCPT),
    (_S.MESSAGE, "."): (_S.READY, _S.READY),   # the end of the message (RFC 5321 4.1.1.4: a new transaction)
}

_KNOWN = frozenset(v for _, v in SERVER_TRANSITIONS) - {"."}
#: Verbs whose argument is not allowed (RFC 5321 4.1.1).
_NO_ARGUMENT = frozenset({"DATA", "RSET", "QUIT", "STARTTLS"})


@dataclass(frozen=True)
class CommandReceived:
    """A command the application must answer with :meth:`SmtpServerEngine.reply`."""

    verb: str
    argument: str
    line: str


@dataclass(frozen=True)
class MessageReceived:
    """A complete message (dot-stuffing removed, CRLF line endings), or ``oversized`` when it passed the limit."""

    content: bytes
    oversized: bool = False


@dataclass(frozen=True)
class ClientClosed:
    """The client closed the stream (``mid_command`` when a partial line was pending)."""

    mid_command: bool = False


class _NeedData:
    def __repr__(self) -> str:
        return "NEED_DATA"


#: No complete event yet: feed more bytes.
NEED_DATA = _NeedData()

ServerEvent = CommandReceived | MessageReceived | ClientClosed | _NeedData


class SmtpServerEngine:
    """The server side of one SMTP session, without I/O.

    >>> e = SmtpServerEngine()
    >>> e.greet("mx.fabrikam.com ESMTP")
    >>> e.data_to_send()
    b'220 mx.fabrikam.com ESMTP\\r\\n'
    >>> e.receive_data(b"EHLO mail.contoso.com\\r\\n")
    >>> e.next_event()
    CommandReceived(verb='EHLO', argument='mail.contoso.com', line='EHLO mail.contoso.com')
    """

    def __init__(self, *, max_message: int = 10 * 1024 * 1024) -> None:
        self.state = ServerState.GREETING
        self.max_message = max_message
        #: True once the transport reported a completed handshake.
        self.tls = False
        #: Plaintext received after STARTTLS and before the handshake: discarded (CVE-2011-0411).
        self.discarded = b""
        #: Commands the engine answered itself (bad sequence, syntax), for the session log.
        self.refused: list[str] = []
        self._in = bytearray()
        self._out = bytearray()
        self._pending: str | None = None       # the verb awaiting the application's reply
        self._eof = False
        self._message = bytearray()
        self._oversized = False
        self._skip = False                      # inside the rest of an overlong command line

    # -- output ------------------------------------------------------------------------------------

    def greet(self, text: str, code: int = 220) -> None:
        """Send the banner (``220`` normally; ``421``/``554`` to turn the client away)."""
        if self.state is not ServerState.GREETING:
            raise RuntimeError("the banner was already sent")
        self._emit(code, [text])
        self.state = ServerState.CLOSED if code == 421 else ServerState.GREETED

    def reply(self, code: int, *lines: str) -> None:
        """Answer the pending command (or message) and take the transition of the table."""
        if self._pending is None:
            raise RuntimeError("no command is waiting for a reply")
        verb, self._pending = self._pending, None
        self._emit(code, list(lines) or [""])
        if code == 421 or self.state is ServerState.CLOSED:
            self.state = ServerState.CLOSED
            return
        on_ok, on_fail = SERVER_TRANSITIONS[(self.state, verb)]
        positive = 200 <= code < 400
        self.state = on_ok if positive else on_fail
        if self.state is ServerState.TLS_PENDING:
            # CVE-2011-0411: whatever came with or after STARTTLS in plaintext is never executed.
            self.discarded += bytes(self._in)
            self._in.clear()
        elif self.state is ServerState.DATA:
            self._message.clear()
            self._oversized = False

    def close(self, text: str) -> None:
        """Send an unsolicited ``421`` (a timeout, shutdown) and close."""
        self._pending = None
        self._emit(421, [text])
        self.state = ServerState.CLOSED

    def data_to_send(self) -> bytes:
        """Bytes for the client (replies), emptied by the call."""
        out = bytes(self._out)
        self._out.clear()
        return out

    def _emit(self, code: int, lines: list[str]) -> None:
        last = len(lines) - 1
        for i, line in enumerate(lines):
            sep = " " if i == last else "-"
            self._out += f"{code}{sep}{line}".rstrip().encode("utf-8", "replace") + b"\r\n"

    # -- input -------------------------------------------------------------------------------------

    @property
    def pending(self) -> str | None:
        """The verb (or ``"."`` for a message) whose reply the application owes."""
        return self._pending

    def receive_data(self, data: bytes) -> None:
        """Bytes from the client (plaintext; after STARTTLS, the decrypted stream). ``b""`` = end of stream."""
        if not data:
            self._eof = True
            return
        if self.state is ServerState.TLS_PENDING:
            self.discarded += data
            return
        if self.state is not ServerState.CLOSED:
            self._in += data

    def tls_established(self) -> None:
        """The transport completed the handshake after the ``220`` to STARTTLS: back to EHLO."""
        if self.state is not ServerState.TLS_PENDING:
            raise RuntimeError("no STARTTLS is waiting for a handshake")
        self.state = ServerState.GREETED
        self.tls = True
        self._in.clear()

    def next_event(self) -> ServerEvent:
        """The next event, or :data:`NEED_DATA`."""
        while True:
            if self.state is ServerState.CLOSED:
                return ClientClosed()
            if self._pending is not None or self.state in (ServerState.TLS_PENDING, ServerState.GREETING):
                return NEED_DATA
            event = self._data_line() if self.state is ServerState.DATA else self._command_line()
            if event is not None:
                return event

    def _take_line(self, limit: int) -> bytes | bool | None:
        """A line without CRLF; ``None`` when incomplete; ``False`` when longer than ``limit`` (the part
        received so far is dropped, and the rest of the line will be skipped when it is still coming)."""
        nl = self._in.find(b"\n")
        if nl < 0:
            if len(self._in) > limit:
                self._in.clear()
                self._skip = True
                return False
            return None
        raw = bytes(self._in[:nl])
        del self._in[: nl + 1]
        if len(raw) + 1 > limit:
            return False
        return raw[:-1] if raw.endswith(b"\r") else raw

    def _closed_event(self) -> ClientClosed:
        mid = bool(self._in) or self.state is ServerState.DATA
        self.state = ServerState.CLOSED
        return ClientClosed(mid)

    def _command_line(self) -> ServerEvent | None:
        line = self._take_line(MAX_COMMAND_LINE)
        if line is None:
            return self._closed_event() if self._eof else NEED_DATA
        if line is False:
            # RFC 5321 4.5.3.1.4: answer 500 once per overlong line.
            self._auto(500, "5.5.6 Line too long")
            return None
        assert isinstance(line, bytes)
        if self._skip:
            self._skip = False
            return None
        text = line.decode("utf-8", "replace")
        verb, _, argument = text.partition(" ")
        verb = verb.upper()
        if verb not in _KNOWN:
            self._auto(500, "5.5.2 Command unrecognized")
            return None
        if verb in _NO_ARGUMENT and argument.strip():
            self._auto(501, "5.5.4 Syntax error, no parameters allowed")
            return None
        if verb == "STARTTLS" and self.tls:
            self._auto(503, "5.5.1 TLS already active")
            return None
        if (self.state, verb) not in SERVER_TRANSITIONS:
            self._auto(503, "5.5.1 Bad sequence of commands")
            return None
        self._pending = verb
        return CommandReceived(verb, argument.strip(), text)

    def _auto(self, code: int, text: str) -> None:
        self.refused.append(f"{code} {text}")
        self._emit(code, [text])

    def _data_line(self) -> ServerEvent | None:
        while True:
            nl = self._in.find(b"\n")
            if nl < 0:
                if self._eof:
                    return self._closed_event()
                if len(self._in) > MAX_TEXT_LINE:
                    # An overlong text line: keep reading, but the message will be refused.
                    self._oversized = True
                    self._in.clear()
                return NEED_DATA
            raw = bytes(self._in[: nl + 1])
            del self._in[: nl + 1]
            body = raw.rstrip(b"\r\n")
            if body == b".":
                self.state = ServerState.MESSAGE
                self._pending = "."
                content = b"" if self._oversized else bytes(self._message)
                self._message.clear()
                return MessageReceived(content, self._oversized)
            if len(raw) > MAX_TEXT_LINE:
                self._oversized = True
            if body.startswith(b"."):
                body = body[1:]
            if not self._oversized:
                self._message += body + b"\r\n"
                if len(self._message) > self.max_message:
                    self._oversized = True
                    self._message.clear()
