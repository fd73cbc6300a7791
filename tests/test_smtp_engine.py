"""The sans-I/O SMTP engine: bytes in, events out."""

from __future__ import annotations

import pytest

from certkit.core.smtp import (
    MAX_LINE,
    MAX_LINES,
    NEED_DATA,
    TRANSITIONS,
    Command,
    ConnectionClosed,
    InjectedData,
    LocalProtocolError,
    ProtocolError,
    Reply,
    SmtpClient,
    State,
    Verb,
)
from certkit.errors import UsageError

EHLO_REPLY = b"250-mx.fabrikam.com\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-STARTTLS\r\n250 8BITMIME\r\n"


def feed(client: SmtpClient, data: bytes) -> object:
    client.receive_data(data)
    return client.next_event()


def greeted(banner: bytes = b"220 mx.fabrikam.com ESMTP\r\n") -> SmtpClient:
    c = SmtpClient()
    ev = feed(c, banner)
    assert isinstance(ev, Reply) and ev.command is Verb.GREETING
    return c


def ready() -> SmtpClient:
    c = greeted()
    c.send(Command.ehlo("probe.contoso.com"))
    ev = feed(c, EHLO_REPLY)
    assert isinstance(ev, Reply) and ev.positive
    return c


def test_banner_is_a_greeting_reply() -> None:
    c = SmtpClient()
    assert c.next_event() is NEED_DATA
    ev = feed(c, b"220 mx.fabrikam.com ESMTP Postfix\r\n")
    assert ev == Reply(220, None, ("mx.fabrikam.com ESMTP Postfix",), Verb.GREETING)
    assert c.state is State.GREETED


def test_reply_split_across_packets_one_byte_at_a_time() -> None:
    c = SmtpClient()
    data = b"220-mx.fabrikam.com ESMTP\r\n220-second line\r\n220 last\r\n"
    events = []
    for i in range(len(data)):
        c.receive_data(data[i:i + 1])
        ev = c.next_event()
        if ev is not NEED_DATA:
            events.append(ev)
    assert events == [Reply(220, None, ("mx.fabrikam.com ESMTP", "second line", "last"), Verb.GREETING)]


def test_bare_lf_line_endings_are_tolerated() -> None:
    ev = feed(SmtpClient(), b"220 hi\n")
    assert isinstance(ev, Reply) and ev.lines == ("hi",)


def test_code_alone_is_a_valid_last_line() -> None:
    ev = feed(SmtpClient(), b"220-hello\r\n220\r\n")
    assert isinstance(ev, Reply) and ev.lines == ("hello", "")


def test_ehlo_capabilities_are_parsed() -> None:
    c = ready()
    assert c.starttls_offered
    assert c.capabilities["SIZE"] == "10240000"
    assert c.state is State.READY


def test_enhanced_status_code_is_extracted() -> None:
    c = ready()
    c.send(Command.mail("a@contoso.com"))
    ev = feed(c, b"454 4.7.5 Certificate validation failure\r\n")
    assert isinstance(ev, Reply)
    assert ev.enhanced == "4.7.5"
    assert ev.text == "454 4.7.5 Certificate validation failure"
    assert ev.transient and not ev.positive


def test_enhanced_status_of_another_class_is_ignored() -> None:
    c = ready()
    c.send(Command.noop())
    ev = feed(c, b"250 5.0.0 odd\r\n")
    assert isinstance(ev, Reply) and ev.enhanced is None


def test_starttls_then_handshake_forgets_capabilities_and_requires_ehlo() -> None:
    c = ready()
    assert c.send(Command.starttls()) == b"STARTTLS\r\n"
    ev = feed(c, b"220 2.0.0 Ready to start TLS\r\n")
    assert isinstance(ev, Reply) and ev.code == 220
    assert c.state is State.TLS_PENDING
    assert c.capabilities == {}
    with pytest.raises(LocalProtocolError, match="Cannot send MAIL in state tls-pending"):
        c.send(Command.mail("a@b"))
    c.tls_established()
    assert c.tls and c.state is State.GREETED
    with pytest.raises(LocalProtocolError, match="Cannot send MAIL in state greeted"):
        c.send(Command.mail("a@b"))
    c.send(Command.ehlo("probe"))
    feed(c, b"250-mx\r\n250 8BITMIME\r\n")
    assert not c.starttls_offered
    with pytest.raises(LocalProtocolError, match="TLS is already active"):
        c.send(Command.starttls())


def test_plaintext_after_starttls_220_is_discarded_and_reported() -> None:
    c = ready()
    c.send(Command.starttls())
    c.receive_data(b"220 2.0.0 Ready\r\n250-injected\r\n250 more\r\n")
    ev = c.next_event()
    assert isinstance(ev, Reply) and ev.code == 220
    assert c.next_event() is NEED_DATA  # nothing is parsed while the handshake is due
    assert c.injected == b"250-injected\r\n250 more\r\n"
    c.receive_data(b"later plaintext")  # still before the handshake: also discarded
    assert c.injected.endswith(b"later plaintext")
    c.tls_established()
    # One report of everything discarded, once the plaintext phase is over, whatever the packets were.
    assert c.next_event() == InjectedData(b"250-injected\r\n250 more\r\nlater plaintext")
    assert [t.text for t in c.transcript if t.text.startswith("discarded")] == [
        "discarded 39 plaintext octets sent after the 220 to STARTTLS: "
        "b'250-injected\\r\\n250 more\\r\\nlater plaintext'"]
    c.send(Command.ehlo("probe"))
    ev = feed(c, b"250 mx\r\n")
    assert isinstance(ev, Reply) and ev.command is Verb.EHLO  # the injected 250s were not taken as the reply


def test_refused_starttls_stays_in_plaintext() -> None:
    c = ready()
    c.send(Command.starttls())
    ev = feed(c, b"454 4.7.0 TLS not available due to local problem\r\n")
    assert isinstance(ev, Reply) and ev.code == 454
    assert c.state is State.READY and not c.tls


def test_garbage_is_a_protocol_error_and_stays_one() -> None:
    c = SmtpClient()
    ev = feed(c, b"HTTP/1.1 400 Bad Request\r\n")
    assert isinstance(ev, ProtocolError)
    assert "not 'NNN text'" in ev.reason
    assert c.state is State.ERROR
    assert c.next_event() == ev
    with pytest.raises(LocalProtocolError):
        c.send(Command.quit())


@pytest.mark.parametrize("line", [b"2200 x\r\n", b"220x\r\n", b"120 hi\r\n", b"\r\n", b"22 hi\r\n"])
def test_malformed_reply_lines(line: bytes) -> None:
    assert isinstance(feed(SmtpClient(), line), ProtocolError)


def test_multiline_reply_that_changes_code_is_an_error() -> None:
    ev = feed(SmtpClient(), b"220-a\r\n250 b\r\n")
    assert isinstance(ev, ProtocolError) and "changed its code" in ev.reason


def test_overlong_line_is_reported_without_waiting_for_its_end() -> None:
    c = SmtpClient()
    ev = feed(c, b"220 " + b"A" * (MAX_LINE + 10))
    assert isinstance(ev, ProtocolError) and "longer than" in ev.reason


def test_line_at_the_limit_is_accepted() -> None:
    ev = feed(SmtpClient(), b"220 " + b"A" * (MAX_LINE - 4) + b"\r\n")
    assert isinstance(ev, Reply)


def test_too_many_lines_is_an_error() -> None:
    ev = feed(SmtpClient(), b"220-x\r\n" * (MAX_LINES + 1))
    assert isinstance(ev, ProtocolError) and "larger than" in ev.reason


def test_close_mid_reply_is_reported_with_the_partial_reply() -> None:
    c = SmtpClient()
    c.receive_data(b"220-first\r\n220-sec")
    assert c.next_event() is NEED_DATA
    c.receive_data(b"")
    ev = c.next_event()
    assert isinstance(ev, ConnectionClosed) and ev.mid_reply
    assert ev.partial == b"220-first\r\n220-sec"
    assert c.state is State.CLOSED


def test_close_between_replies_is_not_mid_reply() -> None:
    c = greeted()
    c.receive_data(b"")
    ev = c.next_event()
    assert isinstance(ev, ConnectionClosed) and not ev.mid_reply


def test_421_anywhere_closes_the_session() -> None:
    c = ready()
    c.send(Command.starttls())
    feed(c, b"220 go\r\n")
    c.tls_established()
    c.send(Command.ehlo("probe"))
    ev = feed(c, b"421 4.7.1 mx.fabrikam.com Error: Client certificate not trusted\r\n")
    assert isinstance(ev, Reply) and ev.code == 421 and ev.enhanced == "4.7.1"
    assert c.state is State.CLOSED
    with pytest.raises(LocalProtocolError):
        c.send(Command.quit())


def test_unsolicited_421_is_accepted_other_unsolicited_replies_are_errors() -> None:
    c = ready()
    ev = feed(c, b"421 4.4.2 idle timeout\r\n")
    assert isinstance(ev, Reply) and ev.command is None and c.state is State.CLOSED
    c = ready()
    assert isinstance(feed(c, b"250 surprise\r\n"), ProtocolError)


def test_ehlo_refused_allows_helo_fallback() -> None:
    c = greeted()
    c.send(Command.ehlo("probe"))
    ev = feed(c, b"502 5.5.2 Error: command not recognized\r\n")
    assert isinstance(ev, Reply) and c.state is State.GREETED
    c.send(Command.helo("probe"))
    feed(c, b"250 mx\r\n")
    assert c.state is State.READY and c.capabilities == {}


def test_negative_banner_allows_only_quit() -> None:
    c = greeted(b"554 5.3.2 No SMTP service here\r\n")
    assert c.state is State.REJECTED
    with pytest.raises(LocalProtocolError):
        c.send(Command.ehlo("probe"))
    assert c.send(Command.quit()) == b"QUIT\r\n"


def test_full_transaction_and_transcript() -> None:
    c = ready()
    c.send(Command.mail("probe@contoso.com"))
    feed(c, b"250 2.1.0 Ok\r\n")
    assert c.state is State.MAIL
    c.send(Command.rcpt("postmaster@fabrikam.com"))
    feed(c, b"250 2.1.5 Ok\r\n")
    assert c.state is State.RCPT
    c.send(Command.rset())
    feed(c, b"250 2.0.0 Ok\r\n")
    assert c.state is State.READY
    c.send("QUIT")
    feed(c, b"221 2.0.0 Bye\r\n")
    assert c.state is State.CLOSED
    texts = [(e.direction, e.text) for e in c.transcript]
    assert ("C", "MAIL FROM:<probe@contoso.com>") in texts
    assert texts[-1] == ("S", "221 2.0.0 Bye")


def test_data_only_after_an_accepted_recipient_and_the_message_only_after_354() -> None:
    c = ready()
    with pytest.raises(LocalProtocolError, match="Cannot send DATA in state ready"):
        c.send("DATA")
    with pytest.raises(LocalProtocolError, match="Cannot send MESSAGE in state ready"):
        c.send_message(b"x")
    c.send(Command.mail("a@contoso.com"))
    c.receive_data(b"250 2.1.0 Ok\r\n")
    c.next_event()
    c.send(Command.rcpt("b@fabrikam.com"))
    c.receive_data(b"250 2.1.5 Ok\r\n")
    c.next_event()
    assert c.send(Command.data()) == b"DATA\r\n"
    c.receive_data(b"354 go ahead\r\n")
    assert c.next_event().code == 354 and c.state is State.DATA
    assert c.send_message(b".hidden\nline\r\n") == b"..hidden\r\nline\r\n.\r\n"
    c.receive_data(b"250 2.0.0 Ok: queued\r\n")
    assert c.next_event().code == 250 and c.state is State.READY


def test_a_refused_data_keeps_the_transaction_and_sends_no_message() -> None:
    c = ready()
    for cmd, reply in ((Command.mail("a@contoso.com"), b"250 ok\r\n"), (Command.rcpt("b@fabrikam.com"), b"250 ok\r\n"),
                       (Command.data(), b"554 5.5.1 no valid recipients\r\n")):
        c.send(cmd)
        c.receive_data(reply)
        c.next_event()
    assert c.state is State.RCPT
    with pytest.raises(LocalProtocolError):
        c.send_message(b"x")


def test_one_command_in_flight() -> None:
    c = ready()
    c.send(Command.noop())
    with pytest.raises(LocalProtocolError, match="while waiting for the reply to NOOP"):
        c.send(Command.noop())


def test_line_breaks_in_arguments_are_refused() -> None:
    c = ready()
    with pytest.raises(LocalProtocolError, match="line break"):
        c.send(Command.mail("a@b>\r\nRCPT TO:<c@d"))
    assert c.pending is None


def test_overlong_command_is_refused() -> None:
    c = ready()
    with pytest.raises(LocalProtocolError, match="longer than"):
        c.send(Command.mail("a" * 600 + "@b"))


def test_local_protocol_error_is_a_usage_error() -> None:
    assert issubclass(LocalProtocolError, UsageError)


def test_handshake_only_after_starttls() -> None:
    with pytest.raises(LocalProtocolError, match="No STARTTLS"):
        ready().tls_established()


def test_table_states_are_consistent() -> None:
    for (state, verb), (ok, fail) in TRANSITIONS.items():
        assert isinstance(state, State) and isinstance(verb, Verb)
        assert ok in State and fail in State
    assert {v for (_, v) in TRANSITIONS} >= {Verb.DATA, Verb.MESSAGE}
