"""The sending MTA's dialogue against the lab's receiver, in memory, for both personalities.

No socket, no thread, no TLS: :class:`MemoryLink` joins a :class:`ClientDialogue` (the probe's and the lab
sender's dialogue) to a :class:`certkit.lab.receiver.Receiver` (the very decisions ``lab serve`` makes as
Exchange or Postfix, on a :class:`SmtpServerEngine`). The handshake is simulated: the receiver learns the
client's certificate, the dialogue a :class:`TlsInfo` with an empty server chain. The client certificate
is judged for real (:func:`certkit.lab.server.client_verdict` against the lab root).

What the lab server never does itself (refuse EHLO or STARTTLS, a negative banner, STARTTLS stripped, a
421 in the middle, plaintext injected after the ``220`` to STARTTLS) the link does on the wire, as another
MTA or a middlebox would.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.utils import format_datetime

import pytest

from certkit.clock import FixedClock
from certkit.core.personality import Personality, behaviour, rejection_of_us
from certkit.core.smtp.client import NEED_DATA as CLIENT_NEED_DATA
from certkit.core.smtp.client import ConnectionClosed, InjectedData, ProtocolError
from certkit.core.smtp.dialogue import (
    ClientDialogue,
    Exchange,
    Failure,
    Outcome,
    Plan,
    SmtpSession,
    TlsInfo,
    TranscriptLine,
)
from certkit.core.smtp.wire import Reply, format_reply
from certkit.core.trust import AnchorSet
from certkit.lab.receiver import CLOSED, NEED_DATA, START_TLS, Deliver, NeedVerdict, Receiver, SessionRecord
from certkit.lab.server import LabConfig, client_verdict
from tests.pki import NOW, Issued, make_leaf, make_root, make_self_signed
from tests.smtp_servers import without_starttls

HOST = "mx.lab.test"
PEER_IP = "192.0.2.25"
HELO_NAME = "mx.contoso.test"
SENDER = "probe@contoso.test"          # contoso.test is domain-secure at the lab endpoint
RECIPIENT = "postmaster@lab.test"

ROOT = make_root("Memory Lab Root")
SERVER = make_leaf(ROOT, [HOST])
TRUSTED = make_leaf(ROOT, ["mx.contoso.test", "contoso.test"])
FOREIGN = make_self_signed(["mx.contoso.test", "contoso.test"])
ANCHORS = AnchorSet.of([ROOT.cert])

#: A message whose lines would end DATA or lose a dot without dot-stuffing.
MESSAGE = (b"From: <probe@contoso.test>\r\nTo: <postmaster@lab.test>\r\nSubject: dots\r\n\r\n"
           b".\r\n..\r\n.leading dot\r\n...\r\nlast line\r\n")
INJECTED = b"250-mx.evil.example\r\n250 AUTH PLAIN\r\n"
STARTTLS_REFUSED = (454, "4.7.0 TLS not available due to local problem")
NO_SERVICE = (554, f"5.3.2 {HOST} No SMTP service here")

Split = Callable[[bytes], list[bytes]]


def whole(data: bytes) -> list[bytes]:
    return [data] if data else []


def lab_config(personality: Personality) -> LabConfig:
    return LabConfig(SERVER.cert, SERVER.key, anchors=ANCHORS, domain_secure=("contoso.test",),
                     personality=personality, validator=Personality.POSTFIX, hostname=HOST)


@dataclass(frozen=True)
class Scenario:
    """The client's certificate, and what happens on the wire besides the lab's own decisions."""

    client_cert: Issued | None = TRUSTED
    #: Stages ("banner", "ehlo", "starttls", ...) answered on the wire instead of by the receiver.
    answer: Mapping[str, tuple[int, str]] = field(default_factory=dict)
    strip_starttls: bool = False       # the EHLO reply loses its STARTTLS line on the way
    shutdown_at: str | None = None     # the receiver shuts down (its 421) when this stage's command arrives
    inject: bytes = b""                # plaintext sent right after the 220 to STARTTLS


class MemoryLink:
    """Runs one dialogue against one receiver; every transfer is cut by ``split``."""

    def __init__(self, personality: Personality, scenario: Scenario, plan: Plan, *, split: Split = whole) -> None:
        self.personality = personality
        self.scenario = scenario
        self.split = split
        self.receiver = Receiver(lab_config(personality), clock=FixedClock(NOW), peer_ip=PEER_IP, peer_port=40025)
        self.session = SmtpSession("192.0.2.1", 25, server_name=HOST)
        self.dialogue = ClientDialogue(plan, self.session)
        self.to_client: deque[bytes] = deque()
        self.stage = "banner"
        self.server_closed = False
        self.verdicts: list[NeedVerdict] = []
        self.delivered: list[bytes] = []
        self._injected = False
        self._seen = 0
        self._banner = self.receiver.data_to_send()  # the receiver's banner, sent when the client reads it

    # -- the server side -------------------------------------------------------------------------------

    def _to_client(self, data: bytes) -> None:
        if self.scenario.strip_starttls and self.stage == "ehlo":
            data = without_starttls(data)
        self.to_client.extend(self.split(data))

    def _shutdown(self) -> None:
        self.receiver.shutdown()
        self._to_client(self.receiver.data_to_send())
        self.server_closed = True

    def _serve(self) -> None:
        """The receiver's driver loop (its docstring's), until it waits for the client."""
        r = self.receiver
        while True:
            action = r.next_action()
            self._to_client(r.data_to_send())
            if action is NEED_DATA:
                return
            if action is START_TLS:
                if self.scenario.inject and not self._injected:
                    self._injected = True
                    self._to_client(self.scenario.inject)
                return
            if action is CLOSED:
                self.server_closed = True
                return
            if isinstance(action, NeedVerdict):
                self.verdicts.append(action)
                r.verdict(client_verdict(action.chain, ANCHORS, domain=action.domain, rules=action.rules,
                                         at=action.at))
            elif isinstance(action, Deliver):
                self.delivered.append(action.data)
                r.delivered(None)

    def _to_server(self, data: bytes) -> None:
        for chunk in self.split(data):
            self.receiver.receive_data(chunk)
            self._serve()

    # -- the client side -------------------------------------------------------------------------------

    def exchange(self, request: Exchange) -> Outcome:
        self.stage = request.stage
        if request.stage in self.scenario.answer:
            self._to_client(format_reply(*self.scenario.answer[request.stage]))
        elif request.stage == self.scenario.shutdown_at:
            self._shutdown()
        elif request.stage == "banner":
            self._to_client(self._banner)
        elif request.data:
            self._to_server(request.data)
        client = self.dialogue.engine
        while True:
            event = client.next_event()
            if event is CLIENT_NEED_DATA:
                if self.to_client:
                    client.receive_data(self.to_client.popleft())
                elif self.server_closed:
                    client.receive_data(b"")
                else:
                    raise AssertionError(f"deadlock at {request.stage}: both sides wait")
                continue
            if isinstance(event, InjectedData):
                continue
            assert isinstance(event, Reply | ProtocolError | ConnectionClosed), event
            return event

    def handshake(self) -> TlsInfo:
        client = self.dialogue.engine
        while self.to_client:  # what already arrived before our ClientHello (as the transport's recv_ready)
            client.receive_data(self.to_client.popleft())
        cert = self.scenario.client_cert
        chain = (cert.cert,) if cert is not None else ()
        self.receiver.tls_established(TlsInfo("TLSv1.3", "TLS_AES_256_GCM_SHA384", chain, (), True, False, None))
        return TlsInfo("TLSv1.3", "TLS_AES_256_GCM_SHA384", (), (), True, cert is not None, HOST)

    def _sync(self) -> None:
        entries = self.dialogue.engine.transcript
        self.session.transcript += [TranscriptLine(e.direction, e.text, 0.0) for e in entries[self._seen:]]
        self._seen = len(entries)

    def run(self) -> MemoryLink:
        request = self.dialogue.request
        while request is not None:
            outcome = self.exchange(request) if isinstance(request, Exchange) else self.handshake()
            self._sync()
            request = self.dialogue.advance(outcome)
        self._sync()
        if not self.server_closed:
            self.receiver.receive_data(b"")
            self._serve()
        assert self.server_closed
        return self

    # -- what happened -----------------------------------------------------------------------------------

    @property
    def commands(self) -> list[str]:
        """What the client sent, from the session transcript."""
        return [line.text for line in self.session.transcript if line.direction == "C"]

    @property
    def record(self) -> SessionRecord:
        return self.receiver.finish()


def run(personality: Personality, scenario: Scenario = Scenario(), plan: Plan | None = None,
        split: Split = whole) -> MemoryLink:
    return MemoryLink(personality, scenario, plan or PROBE, split=split).run()


def content_of(delivered: bytes) -> tuple[bytes, bytes]:
    """The lab's ``Received:`` header (four lines) and the message the client sent."""
    m = re.match(rb"Received: [^\r\n]*\r\n(?:\t[^\r\n]*\r\n){3}", delivered)
    assert m is not None, delivered[:200]
    return m.group(0), delivered[m.end():]


def shown(link: MemoryLink) -> list[tuple[str, str]]:
    """The session transcript without notes, the receiver's random queue id replaced."""
    return [(t.direction, re.sub(r"\b[0-9A-F]{12}\b", "<queue-id>", t.text))
            for t in link.session.transcript if t.direction != "*"]


def say(personality: Personality, situation: str) -> str:
    """The personality's reply for ``situation`` as one line (``454 4.7.5 ...``)."""
    code, text = behaviour(personality).reply(situation, host=HOST, ip=PEER_IP)
    return f"{code} {text}"


PROBE = Plan(helo_name=HELO_NAME, mail_from=SENDER, rcpt_to=RECIPIENT)
DELIVERY = Plan(helo_name=HELO_NAME, mail_from=SENDER, rcpt_to=RECIPIENT, message=MESSAGE)

EHLO = f"EHLO {HELO_NAME}"
MAIL = f"MAIL FROM:<{SENDER}>"
RCPT = f"RCPT TO:<{RECIPIENT}>"
PROBE_COMMANDS = [EHLO, "STARTTLS", EHLO, MAIL, RCPT, "RSET", "QUIT"]
DELIVERY_COMMANDS = [EHLO, "STARTTLS", EHLO, MAIL, RCPT, "DATA", f"<message of {len(MESSAGE)} octets>", "QUIT"]

PERSONALITIES = pytest.mark.parametrize("personality", list(Personality), ids=[p.value for p in Personality])


# --- a trusted certificate -------------------------------------------------------------------------------


@PERSONALITIES
def test_trusted_certificate_probe_ends_with_rcpt_250_rset_and_quit(personality: Personality) -> None:
    link = run(personality)
    s = link.session
    assert link.commands == PROBE_COMMANDS
    assert s.banner is not None and s.banner.text == (
        "220 " + behaviour(personality).reply("banner", host=HOST, stamp=format_datetime(NOW))[1])
    assert s.starttls_offered and s.tls is not None and s.tls.client_cert_sent
    assert "STARTTLS" not in s.tls_capabilities and "PIPELINING" in s.tls_capabilities
    assert s.mail is not None and s.mail.text == say(personality, "mail-ok")
    assert s.rcpt is not None and s.rcpt.text == say(personality, "rcpt-ok")
    assert s.rset is not None and s.rset.text == say(personality, "rset")
    assert s.quit is not None and s.quit.text == say(personality, "quit")
    assert s.failure is None and s.injected == b""
    assert rejection_of_us(s) is None
    r = link.record
    assert (r.verdict, r.mail_from, r.recipients, r.rejection) == ("trusted", SENDER, [RECIPIENT], None)
    assert r.domain_secured == ("contoso.test" if personality is Personality.EXCHANGE else None)
    # Postfix judges once after the handshake (no name rule); Exchange at MAIL FROM, against the sender's domain.
    assert [v.domain for v in link.verdicts] == (["contoso.test"] if personality is Personality.EXCHANGE else [None])


@PERSONALITIES
def test_trusted_certificate_delivery_hands_the_exact_message_to_the_receiver(personality: Personality) -> None:
    link = run(personality, plan=DELIVERY)
    assert link.commands == DELIVERY_COMMANDS
    delivery = link.dialogue.delivery
    assert delivery is not None and delivery.delivered
    assert delivery.data is not None and delivery.data.text == say(personality, "data")
    assert delivery.accepted is not None and delivery.accepted.code == 250
    assert link.session.quit is not None and link.session.quit.code == 221
    [stored] = link.delivered
    header, content = content_of(stored)
    assert content == MESSAGE
    secured = b"domain-secured=yes contoso.test" if personality is Personality.EXCHANGE else b"domain-secured=no"
    assert b"(verified OK); " + secured + b")\r\n" in header
    assert f"\tfor <{RECIPIENT}>; {format_datetime(NOW)}\r\n".encode() in header


@PERSONALITIES
def test_a_message_with_bare_line_feeds_arrives_with_crlf(personality: Personality) -> None:
    plan = Plan(helo_name=HELO_NAME, mail_from=SENDER, rcpt_to=RECIPIENT, message=b"Subject: lf\n\n.\nend")
    link = run(personality, plan=plan)
    [stored] = link.delivered
    assert content_of(stored)[1] == b"Subject: lf\r\n\r\n.\r\nend\r\n"


# --- an untrusted certificate, or none -------------------------------------------------------------------


@pytest.mark.parametrize(("cert", "postfix_text"), [
    (FOREIGN, f"421 4.7.1 {HOST} Error: Client certificate not trusted"),
    (None, f"421 4.7.1 {HOST} Error: No client certificate presented"),
], ids=["untrusted", "none"])
@PERSONALITIES
def test_the_refusal_of_our_certificate_is_where_the_personality_puts_it(
        personality: Personality, cert: Issued | None, postfix_text: str) -> None:
    link = run(personality, Scenario(client_cert=cert))
    s = link.session
    rejection = rejection_of_us(s)
    assert rejection is not None
    where, reply = rejection
    if personality is Personality.POSTFIX:
        # The first command after the handshake gets the refusal, and the session closes: not even QUIT.
        assert (where, reply.text) == ("after the handshake", postfix_text)
        assert link.commands == [EHLO, "STARTTLS", EHLO]
        assert s.after_tls is reply and s.mail is None and s.quit is None
    else:
        # Exchange accepts EHLO and refuses MAIL FROM for a domain-secure sender.
        assert (where, reply.text) == ("at MAIL FROM", "454 4.7.5 Certificate validation failure")
        assert link.commands == [EHLO, "STARTTLS", EHLO, MAIL, "QUIT"]
        assert s.after_tls is not None and s.after_tls.code == 250
        assert s.quit is not None and s.quit.code == 221
    assert s.failure is None
    assert link.record.verdict == ("none" if cert is None else "untrusted")
    assert link.record.rejection == reply.text


# --- TLS required --------------------------------------------------------------------------------------


@PERSONALITIES
def test_no_starttls_offered_with_tls_required_quits_before_mail(personality: Personality) -> None:
    plan = Plan(helo_name=HELO_NAME, mail_from=SENDER, rcpt_to=RECIPIENT, require_tls=True)
    link = run(personality, Scenario(strip_starttls=True), plan)
    s = link.session
    assert link.commands == [EHLO, "QUIT"]
    assert s.failure == Failure("smtp.no-starttls", "ehlo", "TLS is required, but the server did not offer STARTTLS")
    assert not s.starttls_offered and s.quit is not None and s.quit.code == 221
    assert s.mail is None and s.tls is None


@PERSONALITIES
def test_starttls_refused_with_tls_required_quits(personality: Personality) -> None:
    plan = Plan(helo_name=HELO_NAME, mail_from=SENDER, rcpt_to=RECIPIENT, require_tls=True)
    link = run(personality, Scenario(answer={"starttls": STARTTLS_REFUSED}), plan)
    s = link.session
    assert link.commands == [EHLO, "STARTTLS", "QUIT"]
    assert s.failure == Failure("smtp.starttls-refused", "starttls",
                                "STARTTLS was refused: 454 4.7.0 TLS not available due to local problem")
    assert s.quit is not None and s.quit.text == say(personality, "quit")
    assert s.tls is None and s.mail is None


@PERSONALITIES
def test_mail_from_without_tls_where_tls_is_required_gets_530(personality: Personality) -> None:
    # Postfix requires TLS always (req_ccert); Exchange for a domain-secure sender.
    link = run(personality, plan=Plan(helo_name=HELO_NAME, mail_from=SENDER, rcpt_to=RECIPIENT, starttls=False))
    s = link.session
    assert link.commands == [EHLO, MAIL, "QUIT"]
    assert s.mail is not None and s.mail.text == "530 5.7.0 Must issue a STARTTLS command first"
    assert s.rcpt is None and s.quit is not None and s.quit.code == 221
    assert rejection_of_us(s) is None  # no TLS: nothing was said about our certificate
    assert link.record.rejection == "530 5.7.0 Must issue a STARTTLS command first"


def test_exchange_accepts_a_sender_outside_the_domain_secure_list_without_tls() -> None:
    plan = Plan(helo_name=HELO_NAME, mail_from="probe@example.org", rcpt_to=RECIPIENT, starttls=False)
    link = run(Personality.EXCHANGE, plan=plan)
    assert link.commands == [EHLO, "MAIL FROM:<probe@example.org>", RCPT, "RSET", "QUIT"]
    assert link.session.rcpt is not None and link.session.rcpt.code == 250


# --- the server's greeting and EHLO ------------------------------------------------------------------------


@PERSONALITIES
def test_ehlo_refused_falls_back_to_helo(personality: Personality) -> None:
    refusal = behaviour(personality).refusals(HOST).unknown
    link = run(personality, Scenario(answer={"ehlo": refusal}))
    s = link.session
    # HELO has no capabilities, so no STARTTLS: MAIL FROM in plaintext is refused where TLS is required.
    assert link.commands == [EHLO, f"HELO {HELO_NAME}", MAIL, "QUIT"]
    assert s.ehlo is not None and s.ehlo.text == say(personality, "helo")
    assert s.capabilities == {} and not s.starttls_offered
    assert s.mail is not None and s.mail.code == 530
    assert link.record.helo == HELO_NAME
    transcript = [(t.direction, t.text) for t in s.transcript if t.direction != "*"]
    assert transcript[1:4] == [("C", EHLO), ("S", f"{refusal[0]} {refusal[1]}"), ("C", f"HELO {HELO_NAME}")]


@PERSONALITIES
def test_a_negative_banner_gets_quit_only(personality: Personality) -> None:
    link = run(personality, Scenario(answer={"banner": NO_SERVICE}))
    s = link.session
    assert link.commands == ["QUIT"]
    assert s.banner is not None and s.banner.text == f"554 5.3.2 {HOST} No SMTP service here"
    assert s.quit is not None and s.quit.text == say(personality, "quit")
    assert s.ehlo is None and s.failure is None


_STAGES = ["banner", "ehlo", "starttls", "ehlo-tls", "mail", "rcpt", "data", "message"]


@pytest.mark.parametrize("stage", _STAGES)
@PERSONALITIES
def test_a_421_at_any_point_closes_the_session_without_another_command(personality: Personality, stage: str) -> None:
    link = run(personality, Scenario(shutdown_at=stage), DELIVERY)
    s = link.session
    assert link.commands == DELIVERY_COMMANDS[:_STAGES.index(stage)]
    last = [t for t in s.transcript if t.direction == "S"][-1]
    assert last.text == say(personality, "shutdown")
    assert link.dialogue.engine.state == "closed"
    assert s.failure is None and s.quit is None
    assert link.delivered == []
    delivery = link.dialogue.delivery
    assert delivery is not None and not delivery.delivered
    if stage == "mail":
        assert rejection_of_us(s) is None  # 421 4.3.2 at MAIL FROM is not a refusal of our certificate


# --- STARTTLS response injection --------------------------------------------------------------------------


@PERSONALITIES
def test_plaintext_injected_after_the_starttls_220_is_discarded_never_parsed(personality: Personality) -> None:
    link = run(personality, Scenario(inject=INJECTED))
    s = link.session
    assert s.injected == INJECTED
    assert link.commands == PROBE_COMMANDS
    assert s.tls_ehlo is not None and s.tls_ehlo.lines[0] == behaviour(personality).reply(
        "ehlo", host=HOST, ip=PEER_IP)[1]
    assert "AUTH" not in s.tls_capabilities
    assert not [t for t in s.transcript if t.direction == "S" and "evil" in t.text]
    assert [t.text for t in s.transcript if t.text.startswith("discarded")] == [
        f"discarded {len(INJECTED)} plaintext octets sent after the 220 to STARTTLS: {INJECTED[:60]!r}"]
    assert s.rcpt is not None and s.rcpt.code == 250 and rejection_of_us(s) is None


@PERSONALITIES
def test_every_scenario_survives_a_byte_by_byte_link(personality: Personality) -> None:
    def bytewise(data: bytes) -> list[bytes]:
        return [data[i:i + 1] for i in range(len(data))]

    for scenario, plan in SCENARIOS.values():
        one = run(personality, scenario, plan)
        split = run(personality, scenario, plan, split=bytewise)
        assert split.commands == one.commands
        assert shown(split) == shown(one)


#: Every scenario above, for the property tests (tests/test_smtp_properties.py).
SCENARIOS: dict[str, tuple[Scenario, Plan]] = {
    "trusted-probe": (Scenario(), PROBE),
    "trusted-delivery": (Scenario(), DELIVERY),
    "untrusted": (Scenario(client_cert=FOREIGN), PROBE),
    "no-certificate": (Scenario(client_cert=None), DELIVERY),
    "no-starttls": (Scenario(strip_starttls=True), Plan(helo_name=HELO_NAME, mail_from=SENDER, rcpt_to=RECIPIENT,
                                                        require_tls=True)),
    "starttls-refused": (Scenario(answer={"starttls": STARTTLS_REFUSED}),
                         Plan(helo_name=HELO_NAME, mail_from=SENDER, rcpt_to=RECIPIENT, require_tls=True)),
    "tls-first": (Scenario(), Plan(helo_name=HELO_NAME, mail_from=SENDER, rcpt_to=RECIPIENT, starttls=False)),
    "ehlo-refused": (Scenario(answer={"ehlo": (502, "5.5.2 Error: command not recognized")}), PROBE),
    "negative-banner": (Scenario(answer={"banner": NO_SERVICE}), PROBE),
    "injection": (Scenario(inject=INJECTED), PROBE),
    **{f"421-{stage}": (Scenario(shutdown_at=stage), DELIVERY) for stage in _STAGES},
}
