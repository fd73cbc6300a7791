"""The lab endpoint: an asyncio SMTP server that behaves like an Exchange Edge Receive connector with
Domain Security, or like Postfix with required client certificates.

:class:`LabServer` drives one :class:`~certkit.lab.engine.SmtpServerEngine` per connection over a plain
asyncio stream; TLS runs in :class:`certkit.adapters.transport.ServerTls` over memory BIOs (pyOpenSSL
stays in the transport module). During the handshake the server asks for a client certificate and
accepts whatever is presented (as Exchange does); the certificate is then judged by
:func:`certkit.core.verify.verify_chain` for the client purpose, and refused with the SMTP reply of the
chosen personality:

``exchange``
    The check runs at ``MAIL FROM``, when the sender's domain becomes known: if that domain is in the
    domain-secure list (``TLSReceiveDomainSecureList``), the client certificate must chain to the store,
    carry clientAuth (when it has an EKU), match the sender's domain by the Domain Security name rule, and
    have a reachable, current CRL. Otherwise the reply is ``454 4.7.5 Certificate validation failure``.
    Before MAIL FROM the server cannot know which partner is calling, and a session from a domain that
    is not in the list is plain opportunistic TLS, so MAIL FROM is the first and only point where the
    rule can be applied. A domain-secure sender without TLS gets ``530 5.7.0``.
``postfix``
    As ``smtpd_tls_req_ccert = yes`` (which implies mandatory TLS): the first command after the
    handshake gets ``421 4.7.1 <host> Error: Client certificate not trusted`` (or ``No client certificate
    presented``) and the connection closes. Postfix checks the chain and the EKU, neither the name nor
    revocation.

Accepted mail goes into a Maildir with a ``Received:`` header that records the TLS session, the client
certificate and whether the sender was domain-secured. Each session ends with one log line (logger
``certkit.lab``) and a :class:`SessionRecord` that says why a client certificate failed (the findings).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from email.utils import format_datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes

from certkit.adapters.crlfetch import CrlFetch, fetch_crl
from certkit.adapters.transport import ServerTls, ServerTlsError, TlsInfo, server_context
from certkit.clock import Clock, SystemClock
from certkit.core.findings import Finding, Severity
from certkit.core.issuance import fqdn_of
from certkit.core.personality import Behaviour, Personality, behaviour
from certkit.core.smtp.server import (
    NEED_DATA,
    PAUSED,
    ClientClosed,
    CommandReceived,
    MessageReceived,
    ServerState,
    SmtpServerEngine,
)
from certkit.core.smtp.wire import Verb
from certkit.core.trust import AnchorSet, is_ca
from certkit.core.verify import VerificationResult, verify_chain
from certkit.errors import InputError
from certkit.validation import validate_peer

__all__ = [
    "LabConfig",
    "LabServer",
    "Personality",
    "SessionRecord",
    "client_verdict",
    "run_in_thread",
]

log = logging.getLogger("certkit.lab")

#: The reply Exchange gives a domain-secure partner whose certificate does not validate.
EXCHANGE_REJECT = "{} {}".format(*behaviour(Personality.EXCHANGE).reply("cert-untrusted"))
#: The reply to MAIL FROM without TLS where TLS is required.
TLS_FIRST = "{} {}".format(*behaviour(Personality.EXCHANGE).reply("tls-first"))


@dataclass(frozen=True)
class LabConfig:
    """Everything an endpoint needs. Immutable: :meth:`LabServer.reconfigure` swaps it for new sessions."""

    cert: x509.Certificate
    key: CertificateIssuerPrivateKeyTypes
    chain: tuple[x509.Certificate, ...] = ()
    anchors: AnchorSet = field(default_factory=AnchorSet)
    domain_secure: tuple[str, ...] = ()
    personality: Personality = Personality.EXCHANGE
    validator: Personality | None = None         # revocation rules; default: the personality's
    require_tls: bool = False
    maildir: Path | None = None
    hostname: str | None = None                  # default: the certificate's first DNS name
    max_message: int = 10 * 1024 * 1024
    max_recipients: int = 100
    max_sessions: int = 20
    command_timeout: float = 300.0               # RFC 5321 4.5.3.2.7: a server waits 5 minutes for a command
    data_timeout: float = 180.0                  # per data block (RFC 5321 4.5.3.2.5)
    handshake_timeout: float = 30.0
    crl_timeout: float = 5.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "personality", Personality(self.personality))
        if self.validator is not None:
            object.__setattr__(self, "validator", Personality(self.validator))
        object.__setattr__(self, "domain_secure", tuple(d.strip().lower().rstrip(".") for d in self.domain_secure))
        for d in self.domain_secure:
            if not d or "*" in d:
                raise InputError(f"{d!r} cannot be in the domain-secure list.",
                                 "Give plain domains; Exchange allows no wildcards there.")

    @property
    def behaviour(self) -> Behaviour:
        """The personality's replies and rules (:mod:`certkit.core.personality`)."""
        return behaviour(self.personality)

    @property
    def rules(self) -> Personality:
        """Whose revocation rules apply."""
        return self.validator or self.personality

    @property
    def tls_required(self) -> bool:
        """Postfix's ``req_ccert`` only works with mandatory TLS, so the postfix personality always requires it."""
        return self.require_tls or self.personality is Personality.POSTFIX

    @property
    def host(self) -> str:
        """The name in the banner and in replies."""
        if self.hostname:
            return self.hostname
        fqdn = fqdn_of(self.cert)
        if fqdn is not None:
            return fqdn
        cns = self.cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        return str(cns[0].value) if cns else "localhost"


@dataclass
class SessionRecord:
    """What one session did, for the log and for tests."""

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
    replies: list[str] = field(default_factory=list)
    discarded: bytes = b""
    delivered: list[Path] = field(default_factory=list)
    error: str | None = None

    @property
    def findings(self) -> tuple[Finding, ...]:
        """Why the client certificate failed (errors first), as the probe would say it."""
        if self.verification is None:
            return ()
        return tuple(sorted(self.verification.findings, key=lambda f: f.severity is not Severity.ERROR))

    @property
    def client_subject(self) -> str | None:
        if self.tls is None or not self.tls.peer_chain:
            return None
        return self.tls.peer_chain[0].subject.rfc4514_string()

    def log_line(self) -> str:
        """One line: who, TLS, the client certificate, the outcome and, for a refusal, the findings."""
        parts = [f"session {self.peer}", f"helo={self.helo or '-'}"]
        if self.tls is not None:
            parts.append(f"tls={self.tls.version}")
            parts.append(f'client-cert="{self.client_subject}"' if self.client_subject else "client-cert=none")
        else:
            parts.append("tls=none")
        if self.mail_from is not None:
            parts.append(f"from=<{self.mail_from}>")
        if self.recipients:
            parts.append("to=" + ",".join(f"<{r}>" for r in self.recipients))
        if self.discarded:
            parts.append(f"discarded={len(self.discarded)} plaintext octets after STARTTLS (CVE-2011-0411)")
        if self.rejection:
            parts.append(f'rejected="{self.rejection}"')
        elif self.delivered:
            parts.append(f"delivered={len(self.delivered)}")
        if self.domain_secured:
            parts.append(f"domain-secured={self.domain_secured}")
        if self.error:
            parts.append(f"error={self.error}")
        errors = [f for f in self.findings if f.severity is Severity.ERROR]
        if self.rejection and errors:
            parts.append("because: " + "; ".join(f"{f.code}: {f.detail}" for f in errors))
        elif self.rejection and self.verdict == "none":
            parts.append("because: no client certificate was presented")
        return " ".join(parts)


# --- judging the client certificate ------------------------------------------------------------------


class _CrlSource:
    """CRL downloads for a long-running server: each URL is fetched at most once per ``ttl`` seconds."""

    def __init__(self, timeout: float, ttl: float = 60.0) -> None:
        self.timeout = timeout
        self.ttl = ttl
        self._cache: dict[str, tuple[float, CrlFetch]] = {}
        self._lock = threading.Lock()

    def get(self, url: str) -> CrlFetch:
        with self._lock:
            hit = self._cache.get(url)
            if hit is not None and time.monotonic() - hit[0] < self.ttl and hit[1].ok:
                return hit[1]
        result = fetch_crl(url, timeout=self.timeout)
        with self._lock:
            self._cache[url] = (time.monotonic(), result)
        return result


def client_verdict(chain: Sequence[x509.Certificate], anchors: AnchorSet, *, domain: str | None,
                   rules: Personality | str, at: _dt.datetime,
                   crl_source: Callable[[str], CrlFetch] | None = None) -> VerificationResult:
    """Judge a client's chain as the receiving MTA does (blocking: may download CRLs).

    ``domain``: the Domain Security name rule against the sender's domain (``None``: no name check, as
    Postfix). ``rules``: ``exchange`` requires checkable revocation (CRLs fetched with ``crl_source``);
    ``postfix`` checks none and reports revocation facts as information only.
    """
    leaf, *inters = chain
    rules = Personality(rules)
    if rules is Personality.POSTFIX:
        # Postfix fetches no CRL: judge the path alone, and keep what it says about revocation as facts.
        first = verify_chain(leaf, inters, anchors, domain=domain, purpose="client", at=at)
        return replace(first, findings=tuple(
            replace(f, severity=Severity.INFO) if f.code.startswith("revocation.") else f for f in first.findings))
    return validate_peer(leaf, inters, anchors, crl_source=crl_source or (lambda url: fetch_crl(url)),
                         purpose="client", validator="exchange", domain=domain, at=at).result


# --- the server ----------------------------------------------------------------------------------------




class LabServer:
    """The endpoint as an asyncio server object.

    >>> server = LabServer(config, port=0)          # doctest: +SKIP
    >>> await server.start(); server.port            # doctest: +SKIP
    >>> await server.stop()                          # doctest: +SKIP

    ``host`` is loopback by default: a lab endpoint is not meant to face the internet.
    ``on_session`` is called with every finished :class:`SessionRecord` (they are also kept in
    :attr:`sessions`, the most recent 1000).
    """

    def __init__(self, config: LabConfig, *, host: str = "127.0.0.1", port: int = 2525, clock: Clock | None = None,
                 on_session: Callable[[SessionRecord], None] | None = None) -> None:
        self.config = config
        self.host = host
        self.port = port
        self.clock: Clock = clock or SystemClock()
        self.on_session = on_session
        self.sessions: list[SessionRecord] = []
        self.active = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._crls = _CrlSource(config.crl_timeout)
        self._ctx_for: LabConfig | None = None
        self._ctx: Any = None

    # -- life cycle ----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen (port 0 picks a free port, then :attr:`port` holds it)."""
        self._context()  # fail now on a key that does not match the certificate
        self._server = await asyncio.start_server(self._accept, self.host, self.port, limit=64 * 1024)
        sock = self._server.sockets[0]
        self.port = int(sock.getsockname()[1])

    async def stop(self) -> None:
        """Stop listening and end the sessions in progress."""
        if self._server is not None:
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            with contextlib.suppress(Exception):
                await asyncio.gather(*self._tasks, return_exceptions=True)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None

    async def serve_forever(self) -> None:
        """Start (if needed) and serve until cancelled."""
        if self._server is None:
            await self.start()
        assert self._server is not None
        try:
            await self._server.serve_forever()
        finally:
            await self.stop()

    async def __aenter__(self) -> LabServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def reconfigure(self, config: LabConfig) -> None:
        """Use ``config`` (new certificate, store, lists) for the sessions that start from now on."""
        self.config = config
        self._crls = _CrlSource(config.crl_timeout)

    def _context(self) -> Any:
        if self._ctx_for is not self.config:
            cfg = self.config
            cas = [a.cert for a in cfg.anchors if a.origin == "managed" and is_ca(a.cert)]
            self._ctx = server_context(cfg.cert, cfg.key, cfg.chain, client_cas=cas)
            self._ctx_for = cfg
        return self._ctx

    # -- sessions ------------------------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            if self.active >= self.config.max_sessions:
                writer.write(f"421 4.3.2 {self.config.host} Too many concurrent connections; try again later\r\n"
                             .encode())
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(writer.drain(), 5)
                return
            self.active += 1
            try:
                await _Session(self, reader, writer).run()
            finally:
                self.active -= 1
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 2)
            if task is not None:
                self._tasks.discard(task)

    def wait_for_session(self, match: Callable[[SessionRecord], bool], timeout: float = 5.0) -> SessionRecord | None:
        """The most recent finished session that ``match`` accepts, waiting up to ``timeout`` seconds for it.

        For callers in *another* thread (tests, the demo): a client sees the server's last reply
        slightly before the server has recorded the session.
        """
        deadline = time.monotonic() + timeout
        while True:
            found = next((r for r in reversed(list(self.sessions)) if match(r)), None)
            if found is not None or time.monotonic() >= deadline:
                return found
            time.sleep(0.01)

    def _record(self, record: SessionRecord) -> None:
        self.sessions.append(record)
        del self.sessions[:-1000]
        log.info(record.log_line())
        if self.on_session is not None:
            self.on_session(record)


class _Closed(Exception):
    pass


class _Session:
    def __init__(self, server: LabServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.server = server
        self.cfg = server.config
        self.reader = reader
        self.writer = writer
        self.behaviour = self.cfg.behaviour
        self.engine = SmtpServerEngine(max_message=self.cfg.max_message,
                                       refusals=self.behaviour.refusals(self.cfg.host))
        self.tls: ServerTls | None = None
        peer = writer.get_extra_info("peername") or ("?", 0)
        self.peer_ip = str(peer[0])
        self.record = SessionRecord(f"{peer[0]}:{peer[1]}", server.clock.now())
        self.judged = False
        self.exchange = self.cfg.personality is Personality.EXCHANGE

    # -- I/O -----------------------------------------------------------------------------------------

    async def _read(self, deadline: float) -> bytes:
        """Bytes of the client (decrypted under TLS) before ``deadline`` (``time.monotonic()``), else TimeoutError."""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            data = await asyncio.wait_for(self.reader.read(65536), remaining)
            if self.tls is None:
                return data
            self.tls.receive(data)
            plain = self.tls.read()
            await self._write_raw(self.tls.outgoing())
            if plain or not data or self.tls.closed:
                return plain

    async def _write_raw(self, data: bytes) -> None:
        if data:
            self.writer.write(data)
            await asyncio.wait_for(self.writer.drain(), self.cfg.command_timeout)

    async def _flush(self) -> None:
        out = self.engine.data_to_send()
        if not out:
            return
        for line in out.decode("utf-8", "replace").splitlines():
            self.record.replies.append(line)
        if self.tls is not None:
            self.tls.write(out)
            out = self.tls.outgoing()
        await self._write_raw(out)

    # -- the dialogue -------------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            await self._dialogue()
        except TimeoutError:
            self.record.error = "timeout"
            with contextlib.suppress(Exception):
                self.engine.close(self.behaviour.reply("timeout", host=self.cfg.host)[1])
                await self._flush()
        except ServerTlsError as e:
            self.record.error = f"TLS: {e}"
        except (ConnectionError, _Closed, asyncio.IncompleteReadError):
            self.record.error = self.record.error or "connection lost"
        finally:
            self.record.discarded = self.engine.discarded
            if self.tls is not None:
                with contextlib.suppress(Exception):
                    self.tls.close()
                    self.writer.write(self.tls.outgoing())
            self.server._record(self.record)

    def _say(self, situation: str, **values: object) -> None:
        """Answer the pending command with the personality's reply for ``situation``."""
        code, text = self.behaviour.reply(situation, host=self.cfg.host, ip=self.peer_ip, **values)
        self.engine.reply(code, text)

    async def _dialogue(self) -> None:
        e = self.engine
        code, banner = self.behaviour.reply("banner", host=self.cfg.host,
                                            stamp=format_datetime(self.server.clock.now()))
        e.greet(banner, code)
        await self._flush()
        # One deadline per command line (command_timeout) and per DATA block (data_timeout), not per read: a
        # client trickling one byte at a time must not hold a session (and a --max-sessions slot) for longer.
        deadline: float | None = None
        while True:
            event = e.next_event()
            if event is NEED_DATA or event is PAUSED:
                # Every reply the engine made itself goes out before we wait for the client.
                await self._flush()
                if event is PAUSED:
                    continue
                if deadline is None:
                    timeout = self.cfg.data_timeout if e.state is ServerState.DATA else self.cfg.command_timeout
                    deadline = time.monotonic() + timeout
                e.receive_data(await self._read(deadline))
                continue
            deadline = None
            if isinstance(event, ClientClosed):
                if event.mid_command:
                    self.record.error = "the client closed mid-command"
                return
            if isinstance(event, CommandReceived):
                await self._command(event)
            elif isinstance(event, MessageReceived):
                self._message(event)
            await self._flush()
            if e.state is ServerState.TLS_PENDING:
                await self._handshake()
            if e.state is ServerState.CLOSED:
                return

    async def _handshake(self) -> None:
        tls = ServerTls(self.server._context())
        self.tls = tls
        deadline = time.monotonic() + self.cfg.handshake_timeout
        while not tls.handshake():
            await self._write_raw(tls.outgoing())
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            data = await asyncio.wait_for(self.reader.read(65536), remaining)
            if not data:
                raise _Closed
            tls.receive(data)
        await self._write_raw(tls.outgoing())
        self.engine.tls_established()
        self.record.tls = tls.info()
        # TLS 1.3 may carry the first command in the same flight as the client's Finished.
        early = tls.read()
        await self._write_raw(tls.outgoing())
        if early:
            self.engine.receive_data(early)

    async def _judge(self, domain: str | None) -> bool:
        """Validate the client certificate (once per domain); true when trusted."""
        info = self.record.tls
        if info is None or not info.peer_chain:
            self.record.verdict = "none"
            return False
        cfg = self.cfg
        result = await asyncio.to_thread(client_verdict, info.peer_chain, cfg.anchors, domain=domain,
                                         rules=cfg.rules, at=self.server.clock.now(),
                                         crl_source=self.server._crls.get)
        self.record.verification = result
        self.record.verdict = "trusted" if result.ok else "untrusted"
        return result.ok

    async def _command(self, cmd: CommandReceived) -> None:
        e, cfg, b = self.engine, self.cfg, self.behaviour
        if b.refuses_at == "after-handshake" and e.tls and not self.judged:
            # Postfix (smtpd_tls_req_ccert): the first command after the handshake learns the verdict.
            self.judged = True
            if not await self._judge(None):
                code, text = b.certificate_refusal(cfg.host, presented=self.record.verdict != "none")
                self.record.rejection = f"{code} {text}"
                e.reply(code, text)
                return
        verb = cmd.verb
        if verb in (Verb.EHLO, Verb.HELO):
            if not cmd.argument:
                self._say("helo-syntax")
                return
            self.record.helo = cmd.argument
            code, first = b.reply("ehlo" if verb is Verb.EHLO else "helo", host=cfg.host, ip=self.peer_ip)
            if verb is Verb.HELO:
                e.reply(code, first)
                return
            caps = [first, f"SIZE {cfg.max_message}", "PIPELINING", "ENHANCEDSTATUSCODES", "8BITMIME"]
            if not e.tls:
                caps.append("STARTTLS")
            e.reply(code, *caps)
        elif verb is Verb.STARTTLS:
            self._say("starttls")
        elif verb is Verb.MAIL:
            await self._mail(cmd)
        elif verb is Verb.RCPT:
            assert cmd.path is not None
            if len(self.record.recipients) >= cfg.max_recipients:
                self._say("rcpt-limit")
            else:
                self.record.recipients.append(cmd.path.address)
                self._say("rcpt-ok")
        elif verb is Verb.DATA:
            self._say("data")
        elif verb is Verb.RSET:
            self._say("rset")
        elif verb is Verb.NOOP:
            self._say("noop")
        elif verb is Verb.QUIT:
            self._say("quit")
        elif verb is Verb.VRFY:
            self._say("vrfy")
        else:
            self._say("help")

    async def _mail(self, cmd: CommandReceived) -> None:
        e, cfg = self.engine, self.cfg
        assert cmd.path is not None
        sender = cmd.path.address
        size = cmd.path.parameter("SIZE")
        if size is not None and size.isdigit() and int(size) > cfg.max_message:
            self._say("too-big")
            return
        domain = cmd.path.domain
        secure = self.exchange and domain in cfg.domain_secure
        if not e.tls and (cfg.tls_required or secure):
            code, text = self.behaviour.reply("tls-first")
            self.record.rejection = f"{code} {text}"
            e.reply(code, text)
            return
        self.record.mail_from = sender
        self.record.recipients.clear()
        if secure:
            if not await self._judge(domain):
                code, text = self.behaviour.certificate_refusal(cfg.host, presented=self.record.verdict != "none")
                self.record.rejection = f"{code} {text}"
                e.reply(code, text)
                return
            self.record.domain_secured = domain
        elif self.exchange and e.tls and self.record.verdict is None and self.record.tls is not None \
                and self.record.tls.peer_chain:
            await self._judge(None)  # for the Received header only: opportunistic TLS refuses no one
        self.record.rejection = None
        self._say("mail-ok")

    def _message(self, msg: MessageReceived) -> None:
        cfg = self.cfg
        if msg.oversized:
            self._say("too-big")
            return
        queue_id = secrets.token_hex(6).upper()
        if cfg.maildir is not None:
            try:
                path = _deliver(cfg.maildir, self._received(queue_id) + msg.content, cfg.host)
            except OSError as err:
                self.record.error = f"Maildir: {err}"
                self._say("local-error")
                return
            self.record.delivered.append(path)
        else:
            self.record.delivered.append(Path(os.devnull))
        self._say("queued", queue_id=queue_id)

    def _received(self, queue_id: str) -> bytes:
        r, cfg = self.record, self.cfg
        tls = r.tls
        if tls is None:
            how = "ESMTP"
            detail = "no TLS"
        else:
            how = "ESMTPS"
            if not tls.peer_chain:
                cert = "no client certificate"
            else:
                leaf = tls.peer_chain[0]
                state = {"trusted": "verified OK", "untrusted": "not verified"}.get(r.verdict or "", "not checked")
                cert = (f'client certificate "{leaf.subject.rfc4514_string()}" issued by '
                        f'"{leaf.issuer.rfc4514_string()}" ({state})')
            detail = f"version={tls.version} cipher={tls.cipher}; {cert}"
        secured = f"domain-secured={'yes ' + r.domain_secured if r.domain_secured else 'no'}"
        stamp = format_datetime(self.server.clock.now())
        header = (f"Received: from {r.helo or 'unknown'} ([{self.peer_ip}])\r\n"
                  f"\tby {cfg.host} (certkit lab, {cfg.personality.value} personality) with {how} id {queue_id}\r\n"
                  f"\t({detail}; {secured})\r\n"
                  f"\tfor <{r.recipients[0] if r.recipients else 'unknown'}>; {stamp}\r\n")
        return header.encode("utf-8", "replace")


def _deliver(maildir: Path, data: bytes, host: str) -> Path:
    """Write one message into ``maildir`` (tmp/ then rename into new/, as the Maildir format requires)."""
    for sub in ("tmp", "new", "cur"):
        (maildir / sub).mkdir(parents=True, exist_ok=True)
    name = f"{int(time.time())}.P{os.getpid()}R{secrets.token_hex(8)}.{host.replace('/', '_')}"
    tmp = maildir / "tmp" / name
    with open(tmp, "xb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    final = maildir / "new" / name
    os.rename(tmp, final)
    return final


# --- running a server from synchronous code --------------------------------------------------------------


@contextlib.contextmanager
def run_in_thread(config: LabConfig, *, host: str = "127.0.0.1", port: int = 0, clock: Clock | None = None,
                  on_session: Callable[[SessionRecord], None] | None = None) -> Iterator[LabServer]:
    """Run a :class:`LabServer` on its own event loop in a background thread (for tests and the demo).

    Yields the started server (its :attr:`~LabServer.port` is set); stops it on exit.
    """
    loop = asyncio.new_event_loop()
    server = LabServer(config, host=host, port=port, clock=clock, on_session=on_session)
    ready = threading.Event()
    failure: list[BaseException] = []

    def main() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(server.start())
        except BaseException as err:  # reported to the caller below
            failure.append(err)
            ready.set()
            return
        ready.set()
        loop.run_forever()
        loop.run_until_complete(server.stop())
        loop.close()

    thread = threading.Thread(target=main, name="certkit-lab", daemon=True)
    thread.start()
    ready.wait(30)
    if failure:
        thread.join(5)
        raise failure[0]
    try:
        yield server
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def free_loopback_port() -> int:
    """A currently free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
