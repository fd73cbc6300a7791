"""Small STARTTLS servers on 127.0.0.1 for transport and probe tests.

:class:`SmtpTestServer` listens on a free loopback port and runs one handler per connection in a
daemon thread. :class:`Scripted` is the product's lab endpoint (a :class:`certkit.lab.receiver.Receiver`
configured through :class:`certkit.lab.server.LabConfig`, as Exchange or Postfix) over the test socket,
with knobs for deliberate misbehaviour applied on the wire around it; the ``raw_*`` handlers break SMTP
itself (trickle, garbage, close mid-reply). TLS uses certkit's own server helpers (pyOpenSSL).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from cryptography import x509
from OpenSSL import SSL

from certkit.adapters.transport import Channel, TlsInfo, server_context
from certkit.clock import SystemClock
from certkit.core.personality import Personality
from certkit.core.smtp.server import ServerState
from certkit.core.smtp.wire import MAX_COMMAND_LINE, printable
from certkit.core.trust import AnchorSet
from certkit.lab.receiver import CLOSED, NEED_DATA, REPLIED, START_TLS, Deliver, NeedVerdict, Receiver, SessionRecord
from certkit.lab.server import LabConfig, client_verdict
from tests.pki import Issued

Handler = Callable[[socket.socket], None]
STEP = 5.0  # seconds any server step may take before the server gives up on the client


class SmtpTestServer:
    """A threaded TCP server on ``127.0.0.1:port`` calling ``handler(sock)`` per connection."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(128)
        self.listener.settimeout(0.1)  # before the thread starts: close() may come at once
        self.port: int = self.listener.getsockname()[1]
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                sock, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._run, args=(sock,), daemon=True).start()

    def _run(self, sock: socket.socket) -> None:
        try:
            self.handler(sock)
        except (OSError, TimeoutError):
            pass
        except BaseException as e:  # recorded for the test to inspect
            self.errors.append(e)
        finally:
            sock.close()

    def begin_close(self) -> None:
        """Stop accepting (without waiting for the accept thread: :meth:`close` does)."""
        self._stop.set()
        self.listener.close()

    def close(self) -> None:
        """Stop accepting and wait for the accept thread (at most 2 s)."""
        self.begin_close()
        self._thread.join(2)

    def __enter__(self) -> SmtpTestServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class Scripted:
    """A lab SMTP server on the test socket. Call it with a socket (it is a :data:`Handler`).

    The decisions are the product's: a :class:`certkit.lab.receiver.Receiver` configured through
    :class:`certkit.lab.server.LabConfig` (replies, the personality's texts, where a client certificate is
    judged). This class only moves bytes, runs the TLS handshake (:class:`Channel` and :func:`server_context`,
    so the test controls ``request_client_cert``, ``client_cas`` and ``tls_version``) and judges certificates
    with :func:`certkit.lab.server.client_verdict`, as ``lab serve``'s ``_Session`` does.

    ``identity`` is the server certificate (with ``chain`` sent after it). The personality:

    * ``trusted=None``: Exchange without a domain-secure list (opportunistic TLS, nobody refused).
    * ``trusted=[CAs]``: Postfix with ``smtpd_tls_req_ccert = yes``: ``421 4.7.1`` to the first command after
      the handshake unless the client certificate chains to ``trusted``; TLS required for MAIL.
    * ``trusted=[CAs], exchange=True``: Exchange with ``domain_secure`` (the senders' domains, required):
      ``454 4.7.5 Certificate validation failure`` at ``MAIL FROM`` from such a domain unless the client
      certificate chains to ``trusted`` and matches the sender's domain.

    Revocation is judged by ``validator``'s rules (Postfix by default: the test certificates have no CRL
    distribution points). ``require_tls_for_mail`` is ``LabConfig.require_tls`` (``530 5.7.0``).

    The other knobs are deliberate misbehaviour that ``lab serve`` never shows: the wrapper applies them on
    the wire around the receiver, as another MTA or a middlebox would (see ``tests/test_smtp_memory.py``).
    A command answered by a distortion never reaches the receiver. A ``hostname`` with control characters
    goes out raw (a hostile server: the receiver itself would escape them).
    """

    identity: Issued
    chain: Sequence[x509.Certificate] = ()
    hostname: str = "mx.test"
    trusted: Sequence[x509.Certificate] | None = None
    exchange: bool = False
    domain_secure: Sequence[str] = ()
    validator: Personality | None = Personality.POSTFIX
    require_tls_for_mail: bool = False
    client_cas: Sequence[x509.Certificate] = ()
    request_client_cert: bool = True
    tls_version: int | None = None  # e.g. SSL.TLS1_VERSION: only that version, at OpenSSL security level 0
    # -- distortions on the wire (deliberate misbehaviour, see _Wire) --
    offer_starttls: bool = True     # False: STARTTLS is cut from the EHLO reply and STARTTLS is an unknown command
    starttls_reply: str | None = None  # replaces the reply to STARTTLS (e.g. "454 4.7.0 TLS not available ...")
    inject: bytes = b""             # plaintext sent right after the 220 to STARTTLS (CVE-2011-0411 style)
    ehlo_reply: str | None = None   # a refusal of EHLO and HELO (e.g. "550 5.7.1 Access denied")
    rcpt_reply: str | None = None   # the reply to every RCPT TO
    after_tls_reply: str | None = None  # RFC 3207's "554 ..." to every command but QUIT after the handshake
    mail_reply_after_tls: str | None = None  # e.g. "454 4.7.5 ..." at MAIL FROM whatever the certificate
    #: The handshakes (``peer_chain``: the client's certificates), in order.
    sessions: list[TlsInfo] = field(default_factory=list)
    #: The receiver's record of each finished session.
    records: list[SessionRecord] = field(default_factory=list)

    def lab_config(self) -> LabConfig:
        """The lab endpoint this server is (see the class docstring)."""
        if self.exchange and not (self.trusted is not None and self.domain_secure):
            raise ValueError("exchange=True needs trusted= and the senders' domains in domain_secure=")
        postfix = self.trusted is not None and not self.exchange
        return LabConfig(self.identity.cert, self.identity.key, tuple(self.chain),
                         anchors=AnchorSet.of(self.trusted or ()), domain_secure=tuple(self.domain_secure),
                         personality=Personality.POSTFIX if postfix else Personality.EXCHANGE,
                         validator=self.validator, require_tls=self.require_tls_for_mail, hostname=self.hostname)

    def tls_context(self) -> SSL.Context:
        ctx = server_context(self.identity.cert, self.identity.key, self.chain,
                             request_client_cert=self.request_client_cert,
                             client_cas=self.client_cas or list(self.trusted or ()))
        if self.tls_version is not None:
            ctx.set_min_proto_version(self.tls_version)
            ctx.set_max_proto_version(self.tls_version)
            ctx.set_cipher_list(b"DEFAULT:@SECLEVEL=0")
        return ctx

    def __call__(self, sock: socket.socket) -> None:
        peer = sock.getpeername()
        receiver = Receiver(self.lab_config(), clock=SystemClock(), peer_ip=str(peer[0]), peer_port=int(peer[1]))
        try:
            _Wire(self, Channel(sock), receiver).run()
        finally:
            self.records.append(receiver.finish())


class _Wire:
    """One session: the receiver's driver loop (``lab serve``'s ``_Session``, blocking), and the distortions.

    Command lines are handed to the receiver one at a time, so each output of the receiver is the reply to
    one known command (what the EHLO distortion needs) and a distortion can answer a command instead of it.
    The message after ``DATA`` goes to the receiver as it comes.
    """

    def __init__(self, server: Scripted, ch: Channel, receiver: Receiver) -> None:
        self.s = server
        self.ch = ch
        self.r = receiver
        self.buf = bytearray()
        self.skipping = False  # inside an overlong line, which the receiver refuses itself
        b = receiver.behaviour
        unknown = b.refusals(receiver.host).unknown
        self.unknown = f"{unknown[0]} {unknown[1]}"

    def send(self, data: bytes) -> None:
        if not data:
            return
        raw, shown = self.s.hostname, printable(self.s.hostname)
        if raw != shown:
            # Distortion: a hostile server's name with raw control characters. The receiver escapes them
            # (format_reply); this server sends them as they are, for tests of what the client prints.
            data = data.replace(shown.encode(), raw.encode())
        self.ch.sendall(data, time.monotonic() + STEP)

    def run(self) -> None:
        r = self.r
        try:
            if not self.drive(None):
                return
            while True:
                data = self.ch.recv(time.monotonic() + STEP)
                if not data:
                    r.receive_data(b"")
                    self.drive(None)
                    return
                self.buf += data
                if not self.take():
                    return
        except TimeoutError:
            r.timeout()  # the personality's 421, as lab serve says it
            with contextlib.suppress(OSError, TimeoutError, SSL.Error):
                self.send(r.data_to_send())

    def take(self) -> bool:
        """Hand what was received to the receiver (or a distortion); false once the session is over."""
        r = self.r
        while self.buf:
            if r.engine.state is ServerState.DATA or self.skipping:
                # The message (or the rest of an overlong line): the receiver's alone, whatever it holds.
                end = len(self.buf) if not self.skipping else self.buf.find(b"\n") + 1 or len(self.buf)
                chunk = bytes(self.buf[:end])
                del self.buf[:end]
                self.skipping = self.skipping and not chunk.endswith(b"\n")
                r.receive_data(chunk)
                if not self.drive(None):
                    return False
                continue
            end = self.buf.find(b"\n") + 1
            if not end:
                if len(self.buf) >= MAX_COMMAND_LINE:
                    self.skipping = True  # the receiver answers the overlong line (500) and skips its rest
                    continue
                return True
            line = bytes(self.buf[:end])
            del self.buf[:end]
            word = line.split(b" ", 1)[0].strip().decode("ascii", "replace").upper()
            reply = self.distortion(word)
            if reply is not None:
                self.send(reply.encode() + b"\r\n")
                continue
            r.receive_data(line)
            if not self.drive(word):
                return False
        return True

    def distortion(self, verb: str) -> str | None:
        """The reply a distortion gives to a command of ``verb`` instead of the receiver, if any."""
        s, tls = self.s, self.r.engine.tls
        if tls and s.after_tls_reply is not None and verb != "QUIT":
            return s.after_tls_reply
        if verb in ("EHLO", "HELO") and s.ehlo_reply is not None:
            return s.ehlo_reply
        if verb == "STARTTLS" and not tls:
            if not s.offer_starttls:
                return self.unknown  # a server without TLS does not know the command
            if s.starttls_reply is not None and not s.starttls_reply.startswith("220"):
                return s.starttls_reply
        if verb == "MAIL" and tls and s.mail_reply_after_tls is not None:
            return s.mail_reply_after_tls
        if verb == "RCPT" and s.rcpt_reply is not None:
            return s.rcpt_reply
        return None

    def drive(self, verb: str | None) -> bool:
        """The receiver's loop until it needs the client again; false once the session is over."""
        r, s = self.r, self.s
        while True:
            action = r.next_action()
            if action is REPLIED:
                continue  # as _Session: replies go out before the next wait (pipelined ones together)
            out = r.data_to_send()
            if verb == "EHLO" and not s.offer_starttls:
                out = without_starttls(out)  # distortion: STARTTLS stripped (no TLS, or a middlebox)
            if out and r.engine.state is ServerState.TLS_PENDING:  # the 220 to STARTTLS
                if s.starttls_reply is not None:
                    out = s.starttls_reply.encode() + b"\r\n"  # distortion: another 220 text
                out += s.inject  # distortion: plaintext after the 220, before the handshake
            self.send(out)
            if action is NEED_DATA:
                return True
            if action is START_TLS:
                if not self.handshake():
                    return False
            elif isinstance(action, NeedVerdict):
                r.verdict(client_verdict(action.chain, r.config.anchors, domain=action.domain, rules=action.rules,
                                         at=action.at))
            elif isinstance(action, Deliver):
                r.delivered(None)  # accepted, not kept
            elif action is CLOSED:
                return False
            # PAUSED: the replies went out above.

    def handshake(self) -> bool:
        # Plaintext that came with or after STARTTLS: the receiver discards it (CVE-2011-0411) and records it.
        if self.buf:  # (b"" would be the end of the stream)
            self.r.receive_data(bytes(self.buf))
            self.buf.clear()
        try:
            info = self.ch.start_tls_server(self.s.tls_context(), time.monotonic() + STEP)
        except SSL.Error as e:
            self.r.record.error = f"TLS: {e}"
            return False
        self.s.sessions.append(info)
        self.r.tls_established(info)
        return True


def without_starttls(reply: bytes) -> bytes:
    """An EHLO reply with its STARTTLS line removed (as ``tests/test_smtp_memory.py`` strips it)."""
    lines = [line for line in reply.split(b"\r\n")[:-1] if line[4:].upper() != b"STARTTLS"]
    last = len(lines) - 1
    return b"".join(line[:3] + (b" " if i == last else b"-") + line[4:] + b"\r\n" for i, line in enumerate(lines))


def raw_trickle(sock: socket.socket) -> None:
    """Sends a banner one byte at a time, forever: a probe must time out, not hang."""
    for byte in b"220 slow.test ESMTP " + b"x" * 10_000:
        sock.sendall(bytes([byte]))
        time.sleep(0.2)


def raw_silent(sock: socket.socket) -> None:
    """Accepts and never says anything."""
    time.sleep(10)


def raw_garbage(sock: socket.socket) -> None:
    """Answers like an HTTP server."""
    sock.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
    time.sleep(1)


def raw_close_mid_reply(sock: socket.socket) -> None:
    """Starts a multi-line banner and closes in the middle of it."""
    sock.sendall(b"220-mx.test ESMTP\r\n220-more to come")
    time.sleep(0.05)


def raw_huge_line(sock: socket.socket) -> None:
    """Sends a banner line far longer than any limit, without ending it."""
    sock.sendall(b"220 " + b"A" * 100_000)
    time.sleep(1)


def raw_split_banner(sock: socket.socket) -> None:
    """A multi-line banner in tiny packets, then a minimal EHLO/QUIT dialogue without STARTTLS."""
    for piece in (b"2", b"20-mx.te", b"st hello\r", b"\n220 ", b"ready\r\n"):
        sock.sendall(piece)
        time.sleep(0.02)
    f = sock.makefile("rb")
    while True:
        line = f.readline()
        if not line:
            return
        verb = line.split(b" ", 1)[0].strip().upper()
        if verb == b"EHLO":
            sock.sendall(b"250-mx.test\r\n250 8BITMIME\r\n")
        elif verb == b"QUIT":
            sock.sendall(b"221 2.0.0 Bye\r\n")
            return
        else:
            sock.sendall(b"250 2.0.0 Ok\r\n")


def plain_ehlo_then(after_starttls: Callable[[socket.socket], None]) -> Handler:
    """A plaintext server that offers STARTTLS and hands the socket to ``after_starttls`` when asked for it."""

    def handler(sock: socket.socket) -> None:
        sock.settimeout(STEP)
        sock.sendall(b"220 mx.test ESMTP\r\n")
        f = sock.makefile("rb")
        while True:
            line = f.readline(1000)
            if not line:
                return
            verb = line.split(b" ", 1)[0].strip().upper()
            if verb == b"EHLO":
                sock.sendall(b"250-mx.test\r\n250-PIPELINING\r\n250 STARTTLS\r\n")
            elif verb == b"STARTTLS":
                after_starttls(sock)
                return
            elif verb == b"QUIT":
                sock.sendall(b"221 2.0.0 Bye\r\n")
                return
            else:
                sock.sendall(b"250 2.0.0 Ok\r\n")

    return handler


#: Offers STARTTLS and never answers it.
raw_starttls_silent: Handler = plain_ehlo_then(lambda sock: time.sleep(10))



def _not_tls(sock: socket.socket) -> None:
    sock.sendall(b"220 2.0.0 Ready\r\n")
    sock.recv(4096)  # the ClientHello
    sock.sendall(b"\x00\xff\x01\xfe" * 40)  # binary, neither TLS records nor SMTP text
    time.sleep(0.5)


#: Answers 220 to STARTTLS and then speaks no TLS at all (binary garbage instead of a ServerHello).
raw_starttls_garbage: Handler = plain_ehlo_then(_not_tls)

#: What :data:`raw_starttls_late_injection` injects.
LATE_INJECTION = b"250-injected.test\r\n250 PIPELINING\r\n"


def _inject_late(sock: socket.socket) -> None:
    sock.sendall(b"220 2.0.0 Ready to start TLS\r\n")
    time.sleep(0.3)  # after the client's ClientHello has gone out
    sock.sendall(LATE_INJECTION)
    time.sleep(1)


#: Answers 220 to STARTTLS, then injects plaintext SMTP 300 ms later, when the handshake is under way.
raw_starttls_late_injection: Handler = plain_ehlo_then(_inject_late)

#: Answers 220 to STARTTLS and closes before the handshake.
raw_starttls_close: Handler = plain_ehlo_then(lambda sock: sock.sendall(b"220 2.0.0 Ready\r\n"))
