"""The lab endpoint: an asyncio SMTP server that behaves like an Exchange Edge Receive connector with
Domain Security, or like Postfix with required client certificates.

What the server answers is decided by :class:`certkit.lab.receiver.Receiver` (sans-I/O, over the
:class:`~certkit.core.smtp.server.SmtpServerEngine`, with the replies of :mod:`certkit.core.personality`);
this module only moves bytes, runs TLS, keeps time, judges certificates in a thread and writes the Maildir.
TLS runs in :class:`certkit.adapters.transport.ServerTls` over memory BIOs (pyOpenSSL stays in the
transport module). During the handshake the server asks for a client certificate and accepts whatever is
presented (as Exchange does); the certificate is then judged by :func:`client_verdict` and refused with
the SMTP reply of the chosen personality:

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

Against hostile clients the server holds as Postfix does: every reply is sent as soon as it exists;
nothing more is read from a client while its replies are unsent (the engine pauses at 16 KiB, and each
write waits for asyncio's transport buffer to drain), so memory per connection is bounded whatever the
client does. When every session slot is taken (``max_sessions``) the server is under stress and every
wait for a client (command, DATA, handshake, reading our replies) is cut to ``stress_timeout`` (Postfix's
``smtpd_timeout = ${stress?{10}:{300}}s``), and a new connection waits, without a banner, up to
``stress_timeout`` + 1 s for a slot before it gets the personality's ``421`` (like a listen queue), so
idle connections cannot lock well-behaved clients out.

Accepted mail goes into a Maildir with a ``Received:`` header that records the TLS session, the client
certificate and whether the sender was domain-secured. Each session ends with one log line (logger
``certkit.lab``; peer text escaped) and a :class:`SessionRecord` that says why a client certificate
failed (the findings).
"""

from __future__ import annotations

import asyncio
import collections
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
from pathlib import Path
from typing import Any, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes

from certkit.adapters.aioserver import TaskServer
from certkit.adapters.crlfetch import CrlFetch, fetch_crl
from certkit.adapters.transport import ServerTls, ServerTlsError, server_context
from certkit.clock import Clock, SystemClock
from certkit.core.findings import Severity
from certkit.core.issuance import fqdn_of
from certkit.core.personality import Behaviour, Personality, behaviour
from certkit.core.smtp.server import ServerState
from certkit.core.smtp.wire import format_reply
from certkit.core.trust import AnchorSet, is_ca
from certkit.core.verify import VerificationResult, VerifyOptions, verify_chain
from certkit.errors import InputError
from certkit.lab.receiver import (
    CLOSED,
    NEED_DATA,
    REPLIED,
    START_TLS,
    Deliver,
    NeedVerdict,
    Receiver,
    SessionRecord,
)
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
#: Connections that may wait for a session slot at once; more are turned away at once (Postfix's
#: ``inet_listen_backlog`` is 100 too).
MAX_WAITING = 100

_T = TypeVar("_T")
@dataclass(frozen=True)
class LabConfig:
    """Everything an endpoint needs. Immutable: :meth:`LabServer.reconfigure` swaps it for new sessions.

    The timeouts are in seconds, each for a whole command line, a whole message after ``DATA`` or a whole
    handshake (not per read: a client trickling one octet at a time gains nothing).
    """

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
    data_timeout: float = 180.0                  # the message after 354 (RFC 5321 4.5.3.2.5: 3 minutes)
    handshake_timeout: float = 30.0              # the TLS handshake after STARTTLS
    #: Replaces the timeouts above while every session slot is taken (Postfix: ``${stress?{10}:{300}}s``).
    stress_timeout: float = 10.0
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
        first = verify_chain(leaf, inters, anchors, domain=domain, at=at, options=VerifyOptions(purpose="client"))
        return replace(first, findings=tuple(
            replace(f, severity=Severity.INFO) if f.code.startswith("revocation.") else f for f in first.findings))
    return validate_peer(leaf, inters, anchors, crl_source=crl_source or (lambda url: fetch_crl(url)),
                         purpose="client", validator="exchange", domain=domain, at=at).result



# --- the server ----------------------------------------------------------------------------------------


class LabServer(TaskServer):
    """The endpoint as an asyncio server object.

    >>> server = LabServer(config, port=0)          # doctest: +SKIP
    >>> await server.start(); server.port            # doctest: +SKIP
    >>> await server.stop()                          # doctest: +SKIP

    ``host`` is loopback by default: a lab endpoint is not meant to face the internet.
    ``on_session`` is called with every finished :class:`SessionRecord` (they are also kept in
    :attr:`sessions`, the most recent 1000).

    At most ``config.max_sessions`` sessions run at once. While all slots are taken the server is under
    stress (:attr:`stress_since`): the sessions' waits are cut to ``config.stress_timeout``, and new
    connections wait for a slot (at most :data:`MAX_WAITING` of them, each up to ``stress_timeout`` + 1 s)
    before the personality's ``busy`` reply.
    """

    def __init__(self, config: LabConfig, *, host: str = "127.0.0.1", port: int = 2525, clock: Clock | None = None,
                 on_session: Callable[[SessionRecord], None] | None = None) -> None:
        self.config = config
        self.host = host
        self.port = port
        self.clock: Clock = clock or SystemClock()
        super().__init__()
        self.on_session = on_session
        self.sessions: list[SessionRecord] = []
        #: Sessions holding a slot.
        self.active = 0
        #: ``time.monotonic()`` when every slot became taken; ``None`` when the server is not under stress.
        self.stress_since: float | None = None
        self._crls = _CrlSource(config.crl_timeout)
        self._ctx_for: LabConfig | None = None
        self._ctx: Any = None
        self._waiting: collections.deque[asyncio.Future[None]] = collections.deque()
        self._stress_begins: asyncio.Future[None] | None = None

    # -- life cycle ----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen (port 0 picks a free port, then :attr:`port` holds it)."""
        self._context()  # fail now on a key that does not match the certificate
        self._server = await asyncio.start_server(self._accept, self.host, self.port, limit=64 * 1024)
        sock = self._server.sockets[0]
        self.port = int(sock.getsockname()[1])

    # stop(), serve_forever() and async with: TaskServer (each session in progress gets the personality's 421).

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

    # -- slots and stress ----------------------------------------------------------------------------

    def deadline(self, started: float, timeout: float) -> float:
        """When a wait for the client that began at ``started`` (``time.monotonic()``) ends: ``timeout``
        later, or ``stress_timeout`` after the later of ``started`` and the start of stress, if sooner."""
        end = started + timeout
        if self.stress_since is not None:
            end = min(end, max(started, self.stress_since) + self.config.stress_timeout)
        return end

    def _stress_signal(self) -> asyncio.Future[None]:
        """A future that completes when the server comes under stress (waits then re-check their deadline)."""
        if self._stress_begins is None or self._stress_begins.done():
            self._stress_begins = asyncio.get_running_loop().create_future()
        return self._stress_begins

    def _update_stress(self) -> None:
        if self.active >= self.config.max_sessions:
            if self.stress_since is None:
                self.stress_since = time.monotonic()
                if self._stress_begins is not None and not self._stress_begins.done():
                    self._stress_begins.set_result(None)
        else:
            self.stress_since = None

    def _leave(self) -> None:
        # The slot passes straight to the connection that waited longest, so a newcomer cannot jump the queue.
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.active -= 1
        self._update_stress()

    async def _wait_for_slot(self) -> bool:
        """Wait (no banner yet) for a slot, as a connection in a listen queue does; true once it holds one."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), self.config.stress_timeout + 1.0)
        except TimeoutError:
            pass
        finally:
            if not waiter.done():
                waiter.cancel()
            with contextlib.suppress(ValueError):
                self._waiting.remove(waiter)
        return waiter.done() and not waiter.cancelled()

    # -- sessions ------------------------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with self._track():
            try:
                cfg = self.config
                if self.active < cfg.max_sessions:
                    self.active += 1
                    self._update_stress()
                elif len(self._waiting) >= MAX_WAITING or not await self._wait_for_slot():
                    writer.write(format_reply(*cfg.behaviour.reply("busy", host=cfg.host)))
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(writer.drain(), 5)
                    return
                try:
                    await _Session(self, reader, writer).run()
                finally:
                    self._leave()
            except asyncio.CancelledError:
                # stop(): the session said 421 and was recorded. Ending normally keeps Python 3.11's start_server
                # callback from logging the cancelled handler as an unhandled exception.
                pass
            finally:
                writer.close()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(writer.wait_closed(), 2)

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
    """The I/O of one session: the socket, TLS, time limits, the verdict thread, the Maildir.

    Every decision is the :class:`~certkit.lab.receiver.Receiver`'s.
    """

    def __init__(self, server: LabServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.server = server
        self.cfg = server.config
        self.reader = reader
        self.writer = writer
        peer = writer.get_extra_info("peername") or ("?", 0)
        self.receiver = Receiver(self.cfg, clock=server.clock, peer_ip=str(peer[0]), peer_port=int(peer[1]))
        self.tls: ServerTls | None = None
        self._reading: asyncio.Future[bytes] | None = None

    # -- waiting for the client ------------------------------------------------------------------------

    async def _wait(self, fut: asyncio.Future[_T], started: float, timeout: float) -> _T:
        """``fut``'s result, or TimeoutError at :meth:`LabServer.deadline` (re-read when stress begins)."""
        server = self.server
        while not fut.done():
            remaining = server.deadline(started, timeout) - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            waits: set[asyncio.Future[Any]] = {fut}
            if server.stress_since is None:
                waits.add(server._stress_signal())
            await asyncio.wait(waits, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
        return fut.result()

    async def _recv(self, started: float, timeout: float) -> bytes:
        """Raw bytes from the socket (``b""`` at the end of the stream)."""
        if self._reading is None:
            self._reading = asyncio.ensure_future(self.reader.read(65536))
        data = await self._wait(self._reading, started, timeout)
        self._reading = None
        return data

    async def _read(self, started: float, timeout: float) -> bytes:
        """Bytes of the client (decrypted under TLS); ``b""`` when it closed."""
        while True:
            data = await self._recv(started, timeout)
            if self.tls is None:
                return data
            self.tls.receive(data)
            plain = self.tls.read()
            await self._send_raw(self.tls.outgoing(), started, timeout)
            if plain or not data or self.tls.closed:
                return plain

    async def _send_raw(self, data: bytes, started: float, timeout: float) -> None:
        if not data:
            return
        self.writer.write(data)
        if self.writer.transport.get_write_buffer_size() == 0:
            return  # all in the kernel already: nothing to wait for
        # Above asyncio's high-water mark, drain() waits until the client reads: we read nothing meanwhile.
        drain = asyncio.ensure_future(self.writer.drain())
        try:
            await self._wait(drain, started, timeout)
        finally:
            if not drain.done():
                drain.cancel()

    def _encrypt(self, out: bytes) -> bytes:
        if self.tls is not None and out:
            self.tls.write(out)
            return self.tls.outgoing()
        return out

    async def _flush(self, timeout: float) -> None:
        """Send every reply made so far; the client has ``timeout`` to take them."""
        out = self._encrypt(self.receiver.data_to_send())
        await self._send_raw(out, time.monotonic(), timeout)

    # -- the session -----------------------------------------------------------------------------------

    async def run(self) -> None:
        r = self.receiver
        try:
            await self._dialogue()
        except TimeoutError:
            r.timeout()
            with contextlib.suppress(Exception):
                await self._flush(2.0)
        except ServerTlsError as e:
            r.record.error = f"TLS: {e}"
            if self.tls is not None:
                with contextlib.suppress(Exception):
                    self.writer.write(self.tls.outgoing())  # the alert tells the client why
        except (ConnectionError, _Closed, asyncio.IncompleteReadError):
            r.record.error = r.record.error or "connection lost"
        except asyncio.CancelledError:
            r.shutdown()
            with contextlib.suppress(Exception):
                self.writer.write(self._encrypt(r.data_to_send()))  # no await: we are being cancelled
            raise
        finally:
            if self._reading is not None:
                self._reading.cancel()
            if self.tls is not None and self.tls.done:
                with contextlib.suppress(Exception):
                    self.tls.close()
                    self.writer.write(self.tls.outgoing())
            self.server._record(r.finish())

    async def _dialogue(self) -> None:
        r, cfg = self.receiver, self.cfg
        # One time limit per command line (command_timeout) and per message (data_timeout), counted from the
        # previous reply, not per read: a client trickling one byte at a time cannot hold a slot for longer.
        started = time.monotonic()
        while True:
            action = r.next_action()
            if action is not REPLIED:
                # Every reply goes out before we wait for anything (the client, a thread, the handshake). After
                # a reply, the next command may already be here (RFC 2920 pipelining): its reply joins the same
                # write, as Postfix batches them, and the engine pauses at 16 KiB of unsent replies.
                await self._flush(cfg.command_timeout)
            if action is NEED_DATA:
                timeout = cfg.data_timeout if r.engine.state is ServerState.DATA else cfg.command_timeout
                r.receive_data(await self._read(started, timeout))
            elif action is REPLIED:
                started = time.monotonic()
            elif action is START_TLS:
                await self._handshake()
                started = time.monotonic()
            elif isinstance(action, NeedVerdict):
                r.verdict(await asyncio.to_thread(client_verdict, action.chain, cfg.anchors, domain=action.domain,
                                                  rules=action.rules, at=action.at,
                                                  crl_source=self.server._crls.get))
            elif isinstance(action, Deliver):
                await self._store(action)
            elif action is CLOSED:
                return
            # PAUSED: the flush above waited until the client took its replies.

    async def _handshake(self) -> None:
        tls = ServerTls(self.server._context())
        self.tls = tls
        started, timeout = time.monotonic(), self.cfg.handshake_timeout
        while not tls.handshake():
            await self._send_raw(tls.outgoing(), started, timeout)
            data = await self._recv(started, timeout)
            if not data:
                raise _Closed
            tls.receive(data)
        await self._send_raw(tls.outgoing(), started, timeout)
        self.receiver.tls_established(tls.info())
        # TLS 1.3 may carry the first command in the same flight as the client's Finished.
        early = tls.read()
        await self._send_raw(tls.outgoing(), started, timeout)
        if early:
            self.receiver.receive_data(early)

    async def _store(self, request: Deliver) -> None:
        maildir = self.cfg.maildir
        if maildir is None:
            self.receiver.delivered(None)
            return
        try:
            # fsync can take a while: not on the event loop, where it would stall every session.
            path = await asyncio.to_thread(_deliver, maildir, request.data, self.cfg.host)
        except OSError as err:
            self.receiver.delivery_failed(str(err))
            return
        self.receiver.delivered(path)


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
