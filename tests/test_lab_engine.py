"""The lab's sans-I/O SMTP server engine: bytes in, events out, one transition table."""

from __future__ import annotations

import pytest

from certkit.core.smtp.server import (
    MAX_COMMAND_LINE,
    NEED_DATA,
    PAUSED,
    SERVER_TRANSITIONS,
    ClientClosed,
    CommandReceived,
    MessageReceived,
    ServerState,
    SmtpServerEngine,
)

pytestmark = pytest.mark.usefixtures("time_limit")


def greeted() -> SmtpServerEngine:
    e = SmtpServerEngine(max_message=200)
    e.greet("mx.fabrikam.com ESMTP")
    assert e.data_to_send() == b"220 mx.fabrikam.com ESMTP\r\n"
    return e


def command(e: SmtpServerEngine, line: bytes) -> CommandReceived:
    e.receive_data(line)
    event = e.next_event()
    assert isinstance(event, CommandReceived), event
    return event


def to_ready(e: SmtpServerEngine) -> None:
    command(e, b"EHLO mail.contoso.com\r\n")
    e.reply(250, "mx.fabrikam.com", "STARTTLS")
    e.data_to_send()


def test_ehlo_is_an_event_and_the_reply_is_multiline() -> None:
    e = greeted()
    ev = command(e, b"ehlo mail.contoso.com\r\n")
    assert (ev.verb, ev.argument) == ("EHLO", "mail.contoso.com")
    e.reply(250, "mx.fabrikam.com", "STARTTLS")
    assert e.data_to_send() == b"250-mx.fabrikam.com\r\n250 STARTTLS\r\n"
    assert e.state is ServerState.READY


def test_commands_out_of_sequence_are_answered_503_by_the_engine() -> None:
    e = greeted()
    e.receive_data(b"MAIL FROM:<a@contoso.com>\r\nDATA\r\n")
    assert e.next_event() is NEED_DATA
    assert e.data_to_send() == b"503 5.5.1 Bad sequence of commands\r\n503 5.5.1 Bad sequence of commands\r\n"
    assert e.state is ServerState.GREETED


def test_unknown_verbs_get_500_and_arguments_where_none_belong_501() -> None:
    e = greeted()
    to_ready(e)
    e.receive_data(b"XYZZY\r\nRSET now\r\n")
    assert e.next_event() is NEED_DATA
    assert e.data_to_send() == b"500 5.5.2 Command unrecognized\r\n501 5.5.4 Syntax error, no parameters allowed\r\n"


def test_an_overlong_command_line_is_refused_and_skipped() -> None:
    e = greeted()
    e.receive_data(b"EHLO " + b"a" * MAX_COMMAND_LINE)
    assert e.next_event() is NEED_DATA
    e.receive_data(b"aaaa\r\nNOOP\r\n")
    ev = e.next_event()
    assert isinstance(ev, CommandReceived) and ev.verb == "NOOP"
    assert e.data_to_send() == b"500 5.5.6 Line too long\r\n"


def test_pipelined_commands_wait_for_the_previous_reply() -> None:
    e = greeted()
    to_ready(e)
    e.receive_data(b"MAIL FROM:<a@contoso.com>\r\nRCPT TO:<b@fabrikam.com>\r\n")
    ev = e.next_event()
    assert isinstance(ev, CommandReceived) and ev.verb == "MAIL"
    assert e.next_event() is NEED_DATA  # RCPT waits until MAIL has its reply
    e.reply(250, "2.1.0 Sender OK")
    ev = e.next_event()
    assert isinstance(ev, CommandReceived) and ev.verb == "RCPT"


def test_plaintext_pipelined_after_starttls_is_discarded_never_executed() -> None:
    # CVE-2011-0411: "STARTTLS\r\nMAIL FROM..." in one packet must not run MAIL inside TLS.
    e = greeted()
    to_ready(e)
    e.receive_data(b"STARTTLS\r\nMAIL FROM:<evil@example.com>\r\n")
    ev = e.next_event()
    assert isinstance(ev, CommandReceived) and ev.verb == "STARTTLS"
    e.reply(220, "2.0.0 Ready to start TLS")
    assert e.state is ServerState.TLS_PENDING
    assert e.discarded == b"MAIL FROM:<evil@example.com>\r\n"
    e.receive_data(b"RCPT TO:<x@y>\r\n")
    assert e.next_event() is PAUSED  # the 220 must go out first
    assert e.data_to_send() == b"220 2.0.0 Ready to start TLS\r\n"
    assert e.next_event() is NEED_DATA
    e.tls_established()
    assert e.state is ServerState.GREETED and e.tls
    assert e.discarded == b"MAIL FROM:<evil@example.com>\r\nRCPT TO:<x@y>\r\n"
    e.receive_data(b"MAIL FROM:<a@contoso.com>\r\n")
    assert e.next_event() is NEED_DATA
    assert e.data_to_send().startswith(b"503 5.5.1")  # EHLO is required again


def test_starttls_inside_tls_is_refused() -> None:
    e = greeted()
    to_ready(e)
    command(e, b"STARTTLS\r\n")
    e.reply(220, "2.0.0 Ready")
    e.tls_established()
    to_ready(e)
    e.data_to_send()
    e.receive_data(b"STARTTLS\r\n")
    assert e.next_event() is NEED_DATA
    assert e.data_to_send() == b"503 5.5.1 TLS already active\r\n"


def _to_data(e: SmtpServerEngine) -> None:
    to_ready(e)
    command(e, b"MAIL FROM:<a@contoso.com>\r\n")
    e.reply(250, "ok")
    command(e, b"RCPT TO:<b@fabrikam.com>\r\n")
    e.reply(250, "ok")
    command(e, b"DATA\r\n")
    e.reply(354, "go ahead")
    assert e.state is ServerState.DATA
    e.data_to_send()


def test_data_is_unstuffed_and_ends_at_the_lone_dot() -> None:
    e = greeted()
    _to_data(e)
    e.receive_data(b"Subject: x\r\n\r\n..leading dot\r\n.\r\nQUIT\r\n")
    ev = e.next_event()
    assert ev == MessageReceived(b"Subject: x\r\n\r\n.leading dot\r\n")
    e.reply(250, "2.6.0 queued")
    assert e.state is ServerState.READY
    quit_ = e.next_event()
    assert isinstance(quit_, CommandReceived) and quit_.verb == "QUIT"
    e.reply(221, "bye")
    assert e.state is ServerState.CLOSED


def test_a_message_over_the_limit_is_marked_oversized_and_not_kept() -> None:
    e = greeted()
    _to_data(e)
    e.receive_data(b"x" * 150 + b"\r\n" + b"y" * 150 + b"\r\n.\r\n")
    ev = e.next_event()
    assert isinstance(ev, MessageReceived) and ev.oversized and ev.content == b""


def test_a_421_reply_closes_the_session() -> None:
    e = greeted()
    command(e, b"EHLO x\r\n")
    e.reply(421, "4.7.1 mx Error: Client certificate not trusted")
    assert e.state is ServerState.CLOSED
    assert isinstance(e.next_event(), ClientClosed)


def test_end_of_stream_mid_command_is_reported() -> None:
    e = greeted()
    e.receive_data(b"EHLO half")
    e.receive_data(b"")
    assert e.next_event() == ClientClosed(mid_command=True)


def test_the_table_has_starttls_only_from_ready_and_data_only_after_rcpt() -> None:
    assert [s for (s, v) in SERVER_TRANSITIONS if v == "STARTTLS"] == [ServerState.READY]
    assert [s for (s, v) in SERVER_TRANSITIONS if v == "DATA"] == [ServerState.RCPT]
