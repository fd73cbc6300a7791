"""SMTP, once: the only place in certkit that knows SMTP's syntax and the dialogue's rules.

The package is sans-I/O (the design of h11): bytes in, events out, no sockets, no clocks.

* :mod:`~certkit.core.smtp.wire`: limits, verbs, replies (parsing and formatting, RFC 3463 enhanced
  status), command lines, address and EHLO-name syntax, DATA (dot-stuffing, the end-of-data rule).
* :mod:`~certkit.core.smtp.client`: the client engine, one transition table (:data:`TRANSITIONS`).
* :mod:`~certkit.core.smtp.server`: the server engine, one transition table (:data:`SERVER_TRANSITIONS`).
* :mod:`~certkit.core.smtp.dialogue`: the sending MTA's dialogue (EHLO/HELO fallback, STARTTLS, when
  to stop, DATA) as a generator a transport drives, and the :class:`SmtpSession` it fills.

Who says what (Exchange's and Postfix's replies, where each refuses a certificate) is in
:mod:`certkit.core.personality`. Sockets, TLS and time are in :mod:`certkit.adapters.transport`.
"""

from certkit.core.smtp.client import (
    MAX_COMMAND,
    MAX_LINE,
    MAX_LINES,
    NEED_DATA,
    TRANSITIONS,
    Command,
    ConnectionClosed,
    Event,
    InjectedData,
    LocalProtocolError,
    NeedData,
    ProtocolError,
    RemoteProtocolError,
    SmtpClient,
    State,
    TranscriptLine,
)
from certkit.core.smtp.wire import (
    MAX_COMMAND_LINE,
    MAX_REPLY,
    MAX_REPLY_LINE,
    MAX_REPLY_LINES,
    MAX_TEXT_LINE,
    BodyReader,
    LineBuffer,
    Path,
    Reply,
    Verb,
    check_domain,
    dot_stuff,
    enhanced_status,
    format_reply,
    looks_like_smtp_text,
    parse_capabilities,
    parse_path,
    printable,
)

__all__ = [
    "MAX_COMMAND",
    "MAX_COMMAND_LINE",
    "MAX_LINE",
    "MAX_LINES",
    "MAX_REPLY",
    "MAX_REPLY_LINE",
    "MAX_REPLY_LINES",
    "MAX_TEXT_LINE",
    "NEED_DATA",
    "TRANSITIONS",
    "BodyReader",
    "Command",
    "ConnectionClosed",
    "Event",
    "InjectedData",
    "LineBuffer",
    "LocalProtocolError",
    "NeedData",
    "Path",
    "ProtocolError",
    "RemoteProtocolError",
    "Reply",
    "SmtpClient",
    "State",
    "TranscriptLine",
    "Verb",
    "check_domain",
    "dot_stuff",
    "enhanced_status",
    "format_reply",
    "looks_like_smtp_text",
    "parse_capabilities",
    "parse_path",
    "printable",
]
