"""The lab's decisions in memory: :class:`certkit.lab.receiver.Receiver`, no socket, no thread, a fixed clock."""

from __future__ import annotations

import datetime as dt
import re
from email.utils import format_datetime

import pytest

from certkit.clock import FixedClock
from certkit.core.smtp.dialogue import TlsInfo
from certkit.core.smtp.server import ServerState
from certkit.lab.receiver import (
    CLOSED,
    NEED_DATA,
    PAUSED,
    REPLIED,
    REPLIES_KEPT,
    START_TLS,
    Action,
    Deliver,
    NeedVerdict,
    Receiver,
)
from certkit.lab.server import LabConfig, Personality, client_verdict
from tests.lab_fixtures import LabPki, lab_config
from tests.pki import Issued, make_leaf

pytestmark = pytest.mark.usefixtures("time_limit")

#: The test PKI is issued around the real time, so the fixed clock stands there too.
AT = dt.datetime.now(dt.UTC).replace(microsecond=0)


def receiver(pki: LabPki, **kwargs: object) -> tuple[Receiver, LabConfig]:
    config = lab_config(pki, **kwargs)
    r = Receiver(config, clock=FixedClock(AT), peer_ip="192.0.2.7", peer_port=40000)
    return r, config


def say(r: Receiver, data: bytes) -> tuple[Action, bytes]:
    """Feed ``data``; run until the receiver needs something other than more replies sent."""
    if data:
        r.receive_data(data)
    out = b""
    while True:
        action = r.next_action()
        out += r.data_to_send()
        if action not in (REPLIED, PAUSED):
            return action, out


def tls(r: Receiver, issued: Issued | None) -> None:
    """STARTTLS and a handshake in which the client presented ``issued`` (or nothing)."""
    action, out = say(r, b"STARTTLS\r\n")
    assert action is START_TLS and out.startswith(b"220 ")
    r.tls_established(TlsInfo("TLSv1.3", "TLS_AES_128_GCM_SHA256", (issued.cert,) if issued else (), (), True,
                              issued is not None, None))


def judge(r: Receiver, config: LabConfig, request: NeedVerdict) -> None:
    r.verdict(client_verdict(request.chain, config.anchors, domain=request.domain, rules=request.rules,
                             at=request.at))


def test_the_banner_is_ready_and_commands_are_answered(lab_pki: LabPki) -> None:
    r, _ = receiver(lab_pki)
    banner = f"220 mx.lab.test Microsoft ESMTP MAIL Service ready at {format_datetime(AT)}\r\n"
    assert r.data_to_send() == banner.encode()
    action, out = say(r, b"EHLO mx.contoso.test\r\nNOOP\r\n")
    assert action is NEED_DATA
    assert out.startswith(b"250-mx.lab.test Hello [192.0.2.7]\r\n") and out.endswith(b"250 2.0.0 OK\r\n")
    assert b"250 STARTTLS\r\n250 2.0.0 OK\r\n" in out
    assert r.record.helo == "mx.contoso.test" and r.record.peer == "192.0.2.7:40000"


def test_exchange_asks_for_the_verdict_at_mail_from_of_a_domain_secure_sender(lab_pki: LabPki) -> None:
    r, config = receiver(lab_pki)
    say(r, b"EHLO mx.contoso.test\r\n")
    # Without TLS a domain-secure sender gets 530 and nothing is judged.
    action, out = say(r, b"MAIL FROM:<alice@contoso.test>\r\n")
    assert (action, out) == (NEED_DATA, b"530 5.7.0 Must issue a STARTTLS command first\r\n")
    tls(r, lab_pki.foreign)
    action, out = say(r, b"EHLO mx.contoso.test\r\nMAIL FROM:<alice@contoso.test>\r\n")
    assert isinstance(action, NeedVerdict) and action.domain == "contoso.test" and action.at == AT
    assert action.rules is Personality.POSTFIX   # the fixture's validator
    assert r.next_action() is action   # asked again until answered
    judge(r, config, action)
    action, out = say(r, b"")
    assert out == b"454 4.7.5 Certificate validation failure\r\n" and action is NEED_DATA
    assert r.record.rejection == "454 4.7.5 Certificate validation failure" and r.record.verdict == "untrusted"
    assert "chain.self-signed" in [f.code for f in r.record.findings]
    # The verdict is kept per domain: a second MAIL FROM asks no second time.
    action, out = say(r, b"RSET\r\nMAIL FROM:<alice@contoso.test>\r\n")
    assert action is NEED_DATA and out.endswith(b"454 4.7.5 Certificate validation failure\r\n")


def test_postfix_judges_the_first_command_after_the_handshake(lab_pki: LabPki) -> None:
    r, config = receiver(lab_pki, personality=Personality.POSTFIX)
    say(r, b"EHLO mx.contoso.test\r\n")
    tls(r, lab_pki.other_client)
    action, _ = say(r, b"EHLO mx.contoso.test\r\n")
    assert isinstance(action, NeedVerdict) and action.domain is None
    judge(r, config, action)
    action, out = say(r, b"")
    assert out == b"421 4.7.1 mx.lab.test Error: Client certificate not trusted\r\n"
    assert action is CLOSED and r.engine.state is ServerState.CLOSED


def test_postfix_without_a_client_certificate_needs_no_verdict(lab_pki: LabPki) -> None:
    r, _ = receiver(lab_pki, personality=Personality.POSTFIX)
    say(r, b"EHLO mx.contoso.test\r\n")
    tls(r, None)
    action, out = say(r, b"EHLO mx.contoso.test\r\n")
    assert action is CLOSED and out == b"421 4.7.1 mx.lab.test Error: No client certificate presented\r\n"
    assert r.finish().verdict == "none"


def test_a_message_is_handed_over_with_our_received_header(lab_pki: LabPki) -> None:
    r, config = receiver(lab_pki)
    say(r, b"EHLO mx.contoso.test\r\n")
    tls(r, lab_pki.client)
    action, _ = say(r, b"EHLO mx.contoso.test\r\nMAIL FROM:<alice@contoso.test>\r\n")
    assert isinstance(action, NeedVerdict)
    judge(r, config, action)
    action, out = say(r, b"RCPT TO:<bob@lab.test>\r\nDATA\r\nSubject: hi\r\n\r\n..dot\r\n.\r\n")
    assert isinstance(action, Deliver)
    assert out == b"250 2.1.0 Sender OK\r\n250 2.1.5 Recipient OK\r\n354 Start mail input; end with <CRLF>.<CRLF>\r\n"
    assert action.data.startswith(b"Received: from mx.contoso.test ([192.0.2.7])\r\n")
    assert b"domain-secured=yes contoso.test" in action.data and b"(verified OK)" in action.data
    assert action.data.endswith(b"\r\nSubject: hi\r\n\r\n.dot\r\n")
    r.delivered(None)
    action, out = say(r, b"QUIT\r\n")
    assert re.fullmatch(rb"250 2\.6\.0 <[0-9A-F]{12}@mx\.lab\.test> Queued mail for delivery\r\n"
                        rb"221 2\.0\.0 mx\.lab\.test Service closing transmission channel\r\n", out), out
    assert action is CLOSED
    record = r.finish()
    assert record.domain_secured == "contoso.test" and len(record.delivered) == 1 and record.rejection is None


def test_a_store_that_fails_gets_451(lab_pki: LabPki) -> None:
    r, _ = receiver(lab_pki)
    action, _ = say(r, b"EHLO x.test\r\nMAIL FROM:<a@elsewhere.test>\r\nRCPT TO:<b@lab.test>\r\nDATA\r\nhi\r\n.\r\n")
    assert isinstance(action, Deliver)
    r.delivery_failed("No space left on device")
    action, out = say(r, b"")
    assert out == b"451 4.3.0 Local error in processing\r\n" and action is NEED_DATA
    assert r.record.error == "Maildir: No space left on device"


def test_a_certificate_name_cannot_add_a_header_line(lab_pki: LabPki) -> None:
    evil = make_leaf(lab_pki.root, ["mx.contoso.test"], cn="mx.contoso.test\r\nX-Injected: yes")
    r, config = receiver(lab_pki)
    say(r, b"EHLO mx.contoso.test\r\n")
    tls(r, evil)
    action, _ = say(r, b"EHLO mx.contoso.test\r\nMAIL FROM:<a@elsewhere.test>\r\n")
    assert isinstance(action, NeedVerdict)   # opportunistic: judged for the Received header only
    judge(r, config, action)
    action, _ = say(r, b"RCPT TO:<b@lab.test>\r\nDATA\r\nhi\r\n.\r\n")
    assert isinstance(action, Deliver)
    header = action.data.split(b"\r\nhi\r\n")[0]
    assert b"\r\nX-Injected" not in header and b"\\r\\nX-Injected: yes" in header
    assert "\r" not in r.record.log_line() and "\\r\\nX-Injected" in r.record.log_line()


def test_the_record_keeps_the_first_and_last_replies(lab_pki: LabPki) -> None:
    r, _ = receiver(lab_pki)
    action, _ = say(r, b"EHLO x.test\r\n" + b"NOOP\r\n" * 1000)
    assert action is NEED_DATA
    record = r.finish()
    assert record.reply_count == 1 + 6 + 1000   # the banner, EHLO's 6 lines, the NOOPs
    assert len(record.replies) == 2 * REPLIES_KEPT + 1
    assert record.replies[0].startswith("220 ") and record.replies[-1] == "250 2.0.0 OK"
    assert record.replies[REPLIES_KEPT] == f"... {1007 - 2 * REPLIES_KEPT} reply lines not kept ..."


def test_a_timeout_closes_with_the_personality_s_421(lab_pki: LabPki) -> None:
    r, _ = receiver(lab_pki, personality=Personality.POSTFIX)
    r.data_to_send()
    r.timeout()
    assert r.data_to_send() == b"421 4.4.2 mx.lab.test Error: timeout exceeded\r\n"
    assert r.next_action() is CLOSED and r.finish().error == "timeout"


def test_refused_commands_are_kept_escaped(lab_pki: LabPki) -> None:
    r, _ = receiver(lab_pki)
    action, out = say(r, b"EHLO x.test\r\nMAIL FROM:<a\x1b[31m@elsewhere.test>\r\n")
    assert action is NEED_DATA and out.endswith(b"501 5.1.7 Invalid address\r\n")
    record = r.finish()
    assert record.errors == 1 and "\\x1b[31m" in record.refused[0] and "\x1b" not in record.log_line()


def test_a_size_parameter_of_non_ascii_digits_is_not_a_crash(lab_pki: LabPki) -> None:
    """``"²".isdigit()`` is true in Python and ``int("²")`` raises: RFC 1870's SIZE is ASCII digits only."""
    r, _ = receiver(lab_pki, max_message=1000)
    say(r, b"")
    say(r, b"EHLO mail.contoso.com\r\n")
    action, out = say(r, "MAIL FROM:<a@elsewhere.test> SIZE=\u00b2\r\n".encode())
    assert action is NEED_DATA and out.startswith(b"250 "), out
    action, out = say(r, b"RSET\r\nMAIL FROM:<a@elsewhere.test> SIZE=5000\r\n")
    assert out.endswith(b"552 5.3.4 Message size exceeds fixed maximum message size\r\n"), out
