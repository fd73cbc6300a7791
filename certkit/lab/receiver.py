"""The lab endpoint's decisions without I/O: what ``lab serve`` answers to each command, and why.

:class:`Receiver` wraps one :class:`~certkit.core.smtp.server.SmtpServerEngine` (the protocol: lines, the
transition table, the engine's own refusals) and adds what the lab decides as Exchange or Postfix would
(:mod:`certkit.core.personality`): the replies, where a client certificate is judged (Postfix: the first
command after the handshake; Exchange: ``MAIL FROM`` from a domain in the domain-secure list), ``530`` where
TLS is required, the recipient limit, the ``Received:`` header of an accepted message, and the
:class:`SessionRecord` that the log line is made from.

It never touches a socket, a file, a thread or the wall clock. What needs those is asked for as data
(the h11 style): :meth:`Receiver.next_action` returns what the driver must do next, and the driver
reports the outcome back. ``LabServer`` (:mod:`certkit.lab.server`) is the asyncio driver; tests can run
the very same decisions in memory, against the client engine or the sender's dialogue.
"""

from __future__ import annotations

import collections
import datetime as _dt
import enum
import os
import secrets
from collections.abc import Generator
from dataclasses import dataclass, field
from email.utils import format_datetime
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509

from certkit.clock import Clock
from certkit.core.findings import Finding, Severity
from certkit.core.personality import Personality
from certkit.core.smtp.client import LocalProtocolError
from certkit.core.smtp.dialogue import TlsInfo
from certkit.core.smtp.server import (
    NEED_DATA as _ENGINE_NEED_DATA,
)
from certkit.core.smtp.server import (
    PAUSED as _ENGINE_PAUSED,
)
from certkit.core.smtp.server import (
    ClientClosed,
    CommandReceived,
    MessageReceived,
    ServerState,
    SmtpServerEngine,
)
from certkit.core.smtp.wire import Verb, printable
from certkit.core.verify import VerificationResult

if TYPE_CHECKING:
    from certkit.lab.server import LabConfig

__all__ = [
    "CLOSED",
    "NEED_DATA",
    "PAUSED",
    "REPLIED",
    "START_TLS",
    "Action",
    "Deliver",
    "NeedVerdict",
    "Receiver",
    "SessionRecord",
    "Signal",
]

#: Reply lines a :class:`SessionRecord` keeps from the start of a session, and again from its end.
REPLIES_KEPT = 50


@dataclass
class SessionRecord:
    """What one session did, for the log and for tests.

    Bounded whatever the client does: :attr:`replies` keeps the first and the last :data:`REPLIES_KEPT`
    reply lines (:attr:`reply_count` counts them all), :attr:`refused` the engine's last 20 refusals
    (:attr:`errors` counts them all), :attr:`recipients` at most the configured recipient limit.
    """

    peer: str
    started: _dt.datetime
    helo: str | None = None
    tls: TlsInfo | None = None
    mail_from: str | None = None
    recipients: list[str] = field(default_factory=list)
    verification: VerificationResult | None = None
    verdict: str | None = None             # "trusted", "untrusted", "none" (no certificate), None: not judged
    domain_secured: str | None = None      # the partner domain when the session was domain-secured
    rejection: str | None = None           # the reply that refused the client's certificate or session
    discarded: bytes = b""
    delivered: list[Path] = field(default_factory=list)
    error: str | None = None
    #: Commands the engine refused itself (``501 ... <- MAIL FROM:<a\\x00b@c>``, escaped), the most recent 20.
    refused: list[str] = field(default_factory=list)
    #: How many commands the engine refused.
    errors: int = 0
    #: How many reply lines the session sent.
    reply_count: int = 0
    _head: list[str] = field(default_factory=list, repr=False)
    _tail: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=REPLIES_KEPT),
                                          repr=False)

    def add_reply(self, line: str) -> None:
        """Note one reply line (without its line ending)."""
        self.reply_count += 1
        if len(self._head) < REPLIES_KEPT:
            self._head.append(line)
        else:
            self._tail.append(line)

    @property
    def replies(self) -> list[str]:
        """The reply lines sent, in order; when there were more than twice :data:`REPLIES_KEPT`, the middle
        ones are replaced by one ``... N reply lines not kept ...`` line."""
        omitted = self.reply_count - len(self._head) - len(self._tail)
        return [*self._head, *([f"... {omitted} reply lines not kept ..."] if omitted else []), *self._tail]

    @property
    def findings(self) -> tuple[Finding, ...]:
        """Why the client certificate failed (errors first), as the probe would say it."""
        if self.verification is None:
            return ()
        return tuple(sorted(self.verification.findings, key=lambda f: f.severity is not Severity.ERROR))

    @property
    def client_subject(self) -> str | None:
        """The client certificate's subject (RFC 4514), as presented: peer text, not escaped."""
        if self.tls is None or not self.tls.peer_chain:
            return None
        return self.tls.peer_chain[0].subject.rfc4514_string()

    def log_line(self) -> str:
        """One line: who, TLS, the client certificate, the outcome and, for a refusal, the findings.

        Whatever came from the peer (EHLO name, addresses, certificate subject, refused lines) is escaped
        with :func:`~certkit.core.smtp.wire.printable`: a client cannot forge or colour log lines.
        """
        parts = [f"session {self.peer}", f"helo={printable(self.helo or '-', 255)}"]
        if self.tls is not None:
            parts.append(f"tls={self.tls.version}")
            subject = self.client_subject
            parts.append(f'client-cert="{printable(subject, 512)}"' if subject else "client-cert=none")
        else:
            parts.append("tls=none")
        if self.mail_from is not None:
            parts.append(f"from=<{printable(self.mail_from, 254)}>")
        if self.recipients:
            parts.append("to=" + ",".join(f"<{printable(r, 254)}>" for r in self.recipients))
        if self.discarded:
            parts.append(f"discarded={len(self.discarded)} plaintext octets after STARTTLS (CVE-2011-0411)")
        if self.errors:
            # The engine escaped the refused line already; printable() again is harmless and keeps it one line.
            parts.append(f'refused={self.errors} last="{printable(self.refused[-1]) if self.refused else ""}"')
        if self.rejection:
            parts.append(f'rejected="{self.rejection}"')
        elif self.delivered:
            parts.append(f"delivered={len(self.delivered)}")
        if self.domain_secured:
            parts.append(f"domain-secured={printable(self.domain_secured)}")
        if self.error:
            parts.append(f"error={printable(self.error)}")
        errors = [f for f in self.findings if f.severity is Severity.ERROR]
        if self.rejection and errors:
            parts.append("because: " + "; ".join(f"{f.code}: {printable(f.detail)}" for f in errors))
        elif self.rejection and self.verdict == "none":
            parts.append("because: no client certificate was presented")
        return " ".join(parts)


# --- what the driver is asked to do ---------------------------------------------------------------------


class Signal(enum.Enum):
    """The actions of :meth:`Receiver.next_action` that carry no data."""

    NEED_DATA = "need-data"   # send data_to_send(), then read from the client and call receive_data()
    PAUSED = "paused"         # replies are waiting: send data_to_send() (and let the client read) first
    REPLIED = "replied"       # a command or message was answered: send it; the next command's wait starts
    START_TLS = "start-tls"   # the 220 to STARTTLS is out: run the handshake, then tls_established()
    CLOSED = "closed"         # the session is over (221/421 sent, or the client went away): send, close

    def __repr__(self) -> str:
        return self.name


NEED_DATA = Signal.NEED_DATA
PAUSED = Signal.PAUSED
REPLIED = Signal.REPLIED
START_TLS = Signal.START_TLS
CLOSED = Signal.CLOSED


@dataclass(frozen=True)
class NeedVerdict:
    """Judge the client certificate, then call :meth:`Receiver.verdict` with the result.

    ``domain``: the sender's domain for the Domain Security name rule (``None``: no name check).
    ``rules``: whose revocation rules. ``at``: the time of the check. The lab server runs
    :func:`certkit.lab.server.client_verdict` in a thread (it may download CRLs).
    """

    chain: tuple[x509.Certificate, ...]
    domain: str | None
    rules: Personality
    at: _dt.datetime


@dataclass(frozen=True)
class Deliver:
    """Store ``data`` (the message, our ``Received:`` header first), then call :meth:`Receiver.delivered`
    (or :meth:`Receiver.delivery_failed`)."""

    data: bytes
    queue_id: str


Action = Signal | NeedVerdict | Deliver


# --- the receiver -----------------------------------------------------------------------------------------

_Judging = Generator[NeedVerdict, VerificationResult, None]


class Receiver:
    """One session of ``lab serve``, decisions only: bytes in, replies and requests out.

    The banner is ready in :meth:`data_to_send` from the start. The driver loops::

        r = Receiver(config, clock=FixedClock(at), peer_ip="192.0.2.7", peer_port=40000)
        while True:
            action = r.next_action()
            send(r.data_to_send())                 # every reply goes out as soon as it exists
            if action is NEED_DATA:
                r.receive_data(recv())             # b"" when the client closed
            elif action is START_TLS:
                r.tls_established(handshake())     # a TlsInfo (peer_chain: the client's certificates)
            elif isinstance(action, NeedVerdict):
                r.verdict(client_verdict(action.chain, config.anchors, domain=action.domain,
                                         rules=action.rules, at=action.at))
            elif isinstance(action, Deliver):
                r.delivered(store(action.data))    # a Path, or None when the message is not kept
            elif action is CLOSED:
                break
            # PAUSED: the client must read first; REPLIED: a command was answered (restart its timer)
        record = r.finish()                        # the SessionRecord, for the log

    The driver owns time limits: on one, it calls :meth:`timeout` (the personality's ``421``) and sends it.
    Every request is repeated by :meth:`next_action` until it is answered. Memory is bounded: the engine
    stops at 16 KiB of unsent replies (``PAUSED``) and the record keeps bounded lists.
    """

    def __init__(self, config: LabConfig, *, clock: Clock, peer_ip: str = "127.0.0.1", peer_port: int = 0) -> None:
        self.config = config
        self.behaviour = config.behaviour
        self.host = config.host
        self.clock = clock
        self.peer_ip = peer_ip
        self.engine = SmtpServerEngine(max_message=config.max_message, refusals=self.behaviour.refusals(self.host))
        self.record = SessionRecord(f"{peer_ip}:{peer_port}", clock.now())
        self._exchange = config.personality is Personality.EXCHANGE
        self._judged_after_tls = False
        self._verdicts: dict[str | None, VerificationResult] = {}
        self._task: _Judging | None = None
        self._request: NeedVerdict | Deliver | None = None
        self._replied = False
        code, banner = self.behaviour.reply("banner", host=self.host, stamp=format_datetime(self.record.started))
        self.engine.greet(banner, code)

    # -- bytes -------------------------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """What the client sent (decrypted under TLS); ``b""`` when it closed the stream."""
        self.engine.receive_data(data)

    def data_to_send(self) -> bytes:
        """Replies for the client (plaintext; the driver encrypts under TLS), emptied by the call."""
        out = self.engine.data_to_send()
        for line in out.split(b"\r\n")[:-1]:
            self.record.add_reply(line.decode("utf-8", "replace"))
        return out

    # -- the loop ----------------------------------------------------------------------------------------

    def next_action(self) -> Action:
        """What the driver must do next (see the class docstring). Answers the commands it can by itself."""
        if self._request is not None:
            return self._request
        if self._replied:
            self._replied = False
            return REPLIED
        e = self.engine
        event = e.next_event()
        if event is _ENGINE_PAUSED:
            return PAUSED
        if event is _ENGINE_NEED_DATA:
            return START_TLS if e.state is ServerState.TLS_PENDING else NEED_DATA
        if isinstance(event, ClientClosed):
            if event.mid_command and self.record.error is None:
                self.record.error = "the client closed mid-command"
            return CLOSED
        if isinstance(event, CommandReceived):
            self._task = self._command(event)
            return self._resume(None)
        assert isinstance(event, MessageReceived)
        return self._message(event)

    def _resume(self, result: VerificationResult | None) -> Action:
        assert self._task is not None
        try:
            self._request = next(self._task) if result is None else self._task.send(result)
        except StopIteration:
            self._task = None
            self._request = None
            return REPLIED
        return self._request

    def verdict(self, result: VerificationResult) -> None:
        """The verdict on the client certificate that :class:`NeedVerdict` asked for."""
        if not isinstance(self._request, NeedVerdict):
            raise LocalProtocolError("No verdict was asked for.", "Call verdict() only after a NeedVerdict.")
        self._replied = self._resume(result) is REPLIED

    def delivered(self, path: Path | None) -> None:
        """The message of :class:`Deliver` is stored at ``path`` (``None``: accepted but not kept)."""
        request = self._take_delivery()
        self.record.delivered.append(path or Path(os.devnull))
        self._say("queued", queue_id=request.queue_id)

    def delivery_failed(self, error: str) -> None:
        """The message of :class:`Deliver` could not be stored: ``451`` (the client will retry)."""
        self._take_delivery()
        self.record.error = f"Maildir: {error}"
        self._say("local-error")

    def _take_delivery(self) -> Deliver:
        request = self._request
        if not isinstance(request, Deliver):
            raise LocalProtocolError("No message is waiting to be stored.", "Call it only after a Deliver.")
        self._request = None
        self._replied = True
        return request

    def tls_established(self, info: TlsInfo) -> None:
        """The handshake after ``START_TLS`` completed; ``info.peer_chain`` holds the client's certificates."""
        self.engine.tls_established()
        self.record.tls = info

    def timeout(self) -> None:
        """The client took too long: the personality's ``421`` (not while TLS is being set up) and the end."""
        self.record.error = "timeout"
        self._close("timeout")

    def shutdown(self) -> None:
        """The server is stopping: the personality's ``421``."""
        self.record.error = self.record.error or "server shutdown"
        self._close("shutdown")

    def _close(self, situation: str) -> None:
        if self.engine.state not in (ServerState.CLOSED, ServerState.TLS_PENDING):
            self.engine.close(self.behaviour.reply(situation, host=self.host)[1])
        self._request = self._task = None

    def finish(self) -> SessionRecord:
        """The session's record, completed with what the engine kept (discarded plaintext, refusals)."""
        r, e = self.record, self.engine
        r.discarded = e.discarded
        r.refused = list(e.refused)
        r.errors = e.errors
        return r

    # -- the decisions -----------------------------------------------------------------------------------

    def _say(self, situation: str, **values: object) -> None:
        """Answer the pending command with the personality's reply for ``situation``."""
        code, text = self.behaviour.reply(situation, host=self.host, ip=self.peer_ip, **values)
        self.engine.reply(code, text)

    def _refuse(self, code: int, text: str) -> None:
        self.record.rejection = f"{code} {text}"
        self.engine.reply(code, text)

    def _judge(self, domain: str | None) -> Generator[NeedVerdict, VerificationResult, bool]:
        """The verdict on the client certificate (asked once per domain and session); true when trusted."""
        info = self.record.tls
        if info is None or not info.peer_chain:
            self.record.verdict = "none"
            return False
        result = self._verdicts.get(domain)
        if result is None:
            # A client looping MAIL FROM/RSET must not make us validate (and fetch CRLs) again and again.
            result = yield NeedVerdict(tuple(info.peer_chain), domain, self.config.rules, self.clock.now())
            self._verdicts[domain] = result
        self.record.verification = result
        self.record.verdict = "trusted" if result.ok else "untrusted"
        return result.ok

    def _command(self, cmd: CommandReceived) -> _Judging:
        e, b = self.engine, self.behaviour
        if b.refuses_at == "after-handshake" and e.tls and not self._judged_after_tls:
            # Postfix (smtpd_tls_req_ccert): the first command after the handshake learns the verdict.
            self._judged_after_tls = True
            if not (yield from self._judge(None)):
                self._refuse(*b.certificate_refusal(self.host, presented=self.record.verdict != "none"))
                return
        verb = cmd.verb
        if verb in (Verb.EHLO, Verb.HELO):
            self._hello(cmd)
        elif verb is Verb.STARTTLS:
            self._say("starttls")
        elif verb is Verb.MAIL:
            yield from self._mail(cmd)
        elif verb is Verb.RCPT:
            assert cmd.path is not None
            if len(self.record.recipients) >= self.config.max_recipients:
                self._say("rcpt-limit")
            else:
                self.record.recipients.append(cmd.path.address)
                self._say("rcpt-ok")
        else:
            self._say({Verb.DATA: "data", Verb.RSET: "rset", Verb.NOOP: "noop", Verb.QUIT: "quit",
                       Verb.VRFY: "vrfy"}.get(verb, "help"))

    def _hello(self, cmd: CommandReceived) -> None:
        # The engine refused a malformed name (control characters, bad syntax) with 501 already.
        if not cmd.argument:
            self._say("helo-syntax")
            return
        self.record.helo = cmd.argument
        code, first = self.behaviour.reply(cmd.verb.lower(), host=self.host, ip=self.peer_ip)
        if cmd.verb is Verb.HELO:
            self.engine.reply(code, first)
            return
        caps = [first, f"SIZE {self.config.max_message}", "PIPELINING", "ENHANCEDSTATUSCODES", "8BITMIME"]
        if not self.engine.tls:
            caps.append("STARTTLS")
        self.engine.reply(code, *caps)

    def _mail(self, cmd: CommandReceived) -> _Judging:
        cfg, path = self.config, cmd.path
        assert path is not None
        size = path.parameter("SIZE")
        # ASCII digits only: "²".isdigit() is true and int("²") raises (RFC 1870: SIZE=1*20DIGIT).
        if size is not None and size.isascii() and size.isdigit() and int(size) > cfg.max_message:
            self._say("too-big")
            return
        domain = path.domain
        # Exchange: only a sender in TLSReceiveDomainSecureList makes the session domain-secure.
        secure = self._exchange and domain in cfg.domain_secure
        if not self.engine.tls and (cfg.tls_required or secure):
            self._refuse(*self.behaviour.reply("tls-first"))
            return
        self.record.mail_from = path.address
        self.record.recipients.clear()
        if secure:
            if not (yield from self._judge(domain)):
                self._refuse(*self.behaviour.certificate_refusal(self.host,
                                                                  presented=self.record.verdict != "none"))
                return
            self.record.domain_secured = domain
        elif self._exchange and self.engine.tls and self.record.verdict is None and self.record.tls is not None \
                and self.record.tls.peer_chain:
            yield from self._judge(None)  # for the Received header only: opportunistic TLS refuses no one
        self.record.rejection = None
        self._say("mail-ok")

    def _message(self, msg: MessageReceived) -> Action:
        if msg.oversized:
            self._say("too-big")
            return REPLIED
        queue_id = secrets.token_hex(6).upper()
        self._request = Deliver(self._received(queue_id) + msg.content, queue_id)
        return self._request

    def _received(self, queue_id: str) -> bytes:
        """Our ``Received:`` header: the TLS session, the client certificate, whether domain-secured."""
        r, cfg = self.record, self.config
        tls = r.tls
        if tls is None:
            how, detail = "ESMTP", "no TLS"
        else:
            how = "ESMTPS"
            if not tls.peer_chain:
                cert = "no client certificate"
            else:
                leaf = tls.peer_chain[0]
                state = {"trusted": "verified OK", "untrusted": "not verified"}.get(r.verdict or "", "not checked")
                # A certificate's names are the client's text: a CR LF in a CN must not add a header line.
                cert = (f'client certificate "{printable(leaf.subject.rfc4514_string(), 512)}" issued by '
                        f'"{printable(leaf.issuer.rfc4514_string(), 512)}" ({state})')
            detail = f"version={tls.version} cipher={tls.cipher}; {cert}"
        secured = f"domain-secured={'yes ' + r.domain_secured if r.domain_secured else 'no'}"
        stamp = format_datetime(self.clock.now())
        rcpt = printable(r.recipients[0]) if r.recipients else "unknown"
        header = (f"Received: from {printable(r.helo or 'unknown')} ([{self.peer_ip}])\r\n"
                  f"\tby {cfg.host} (certkit lab, {cfg.personality.value} personality) with {how} id {queue_id}\r\n"
                  f"\t({detail}; {secured})\r\n"
                  f"\tfor <{rcpt}>; {stamp}\r\n")
        return header.encode("utf-8", "replace")

