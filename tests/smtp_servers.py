"""Small STARTTLS servers on 127.0.0.1 for transport and probe tests, each misbehaving on purpose.

:class:`SmtpTestServer` listens on a free loopback port and runs one handler per connection in a
daemon thread. :class:`Scripted` is an SMTP server good enough for a probe (EHLO, STARTTLS, MAIL, RCPT,
RSET, QUIT), with knobs for the failures the probe must survive; the ``raw_*`` handlers break SMTP
itself (trickle, garbage, close mid-reply). TLS uses certkit's own server helpers (pyOpenSSL).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from certkit.adapters.transport import Channel, TlsInfo, server_context
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
    """A scripted SMTP server. Call it with a socket (it is a :data:`Handler`).

    ``identity`` is the server certificate (with ``chain`` sent after it). ``trusted`` lists issuers
    whose client certificates are accepted; when set, the server behaves like Postfix with
    ``smtpd_tls_req_ccert = yes`` (``421`` to the first command after the handshake), or like Exchange
    with ``exchange=True`` (``454 4.7.5 Certificate validation failure``).
    """

    identity: Issued | None = None
    chain: Sequence[x509.Certificate] = ()
    hostname: str = "mx.test"
    offer_starttls: bool = True
    starttls_reply: str = "220 2.0.0 Ready to start TLS"
    inject: bytes = b""
    trusted: Sequence[x509.Certificate] | None = None
    exchange: bool = False
    client_cas: Sequence[x509.Certificate] = ()
    require_tls_for_mail: bool = False
    request_client_cert: bool = True
    mail_reply_after_tls: str | None = None  # e.g. Exchange's "454 4.7.5 Certificate validation failure" at MAIL
    ehlo_reply: str | None = None  # a refusal of EHLO and HELO (e.g. "550 5.7.1 Access denied")
    rcpt_reply: str = "250 2.1.5 Ok"
    after_tls_reply: str | None = None  # RFC 3207's "554 ..." to every command but QUIT after the handshake
    tls_version: int | None = None  # e.g. SSL.TLS1_VERSION: only that version, at OpenSSL security level 0
    sessions: list[TlsInfo] = field(default_factory=list)

    def __call__(self, sock: socket.socket) -> None:
        ch = Channel(sock)
        buf = bytearray()

        def send(text: str) -> None:
            ch.sendall(text.encode() + b"\r\n", time.monotonic() + STEP)

        def read_line() -> str | None:
            while b"\r\n" not in buf:
                data = ch.recv(time.monotonic() + STEP)
                if not data:
                    return None
                buf.extend(data)
            i = buf.index(b"\r\n")
            line = bytes(buf[:i]).decode()
            del buf[: i + 2]
            return line

        send(f"220 {self.hostname} ESMTP test")
        tls: TlsInfo | None = None
        first_after_tls = False
        while True:
            line = read_line()
            if line is None:
                return
            verb = line.split(" ", 1)[0].upper()
            if first_after_tls and self.trusted is not None and verb != "QUIT":
                first_after_tls = False
                assert tls is not None
                verdict = self._judge(tls)
                if verdict:
                    send(verdict)
                    if not self.exchange:
                        return
                    continue
            first_after_tls = False
            if tls is not None and self.after_tls_reply is not None and verb != "QUIT":
                send(self.after_tls_reply)
            elif verb in ("EHLO", "HELO") and self.ehlo_reply is not None:
                send(self.ehlo_reply)
            elif verb == "EHLO":
                caps = ["PIPELINING", "SIZE 10240000"]
                if self.offer_starttls and tls is None and self.identity is not None:
                    caps.append("STARTTLS")
                lines = [self.hostname, *caps, "8BITMIME"]
                send("\r\n".join(f"250{'-' if i < len(lines) - 1 else ' '}{text}" for i, text in enumerate(lines)))
            elif verb == "HELO":
                send(f"250 {self.hostname}")
            elif verb == "STARTTLS" and tls is None and self.identity is not None and self.offer_starttls:
                ch.sendall(self.starttls_reply.encode() + b"\r\n" + self.inject, time.monotonic() + STEP)
                if not self.starttls_reply.startswith("220"):
                    continue
                ctx = server_context(self.identity.cert, self.identity.key, self.chain,
                                     request_client_cert=self.request_client_cert,
                                     client_cas=self.client_cas or list(self.trusted or ()))
                if self.tls_version is not None:
                    ctx.set_min_proto_version(self.tls_version)
                    ctx.set_max_proto_version(self.tls_version)
                    ctx.set_cipher_list(b"DEFAULT:@SECLEVEL=0")
                tls = ch.start_tls_server(ctx, time.monotonic() + STEP)
                self.sessions.append(tls)
                buf.clear()
                first_after_tls = True
            elif verb == "MAIL":
                if tls is not None and self.mail_reply_after_tls:
                    send(self.mail_reply_after_tls)
                elif self.require_tls_for_mail and tls is None:
                    send("530 5.7.0 Must issue a STARTTLS command first")
                else:
                    send("250 2.1.0 Ok")
            elif verb == "RCPT":
                send(self.rcpt_reply)
            elif verb in ("RSET", "NOOP"):
                send("250 2.0.0 Ok")
            elif verb == "QUIT":
                send("221 2.0.0 Bye")
                return
            else:
                send("502 5.5.2 Error: command not recognized")

    def _judge(self, tls: TlsInfo) -> str | None:
        """The rejection reply for the client certificate, or ``None`` when it is trusted."""
        rejection = "454 4.7.5 Certificate validation failure" if self.exchange else None
        if not tls.peer_chain:
            return rejection or f"421 4.7.1 {self.hostname} Error: No client certificate presented"
        leaf = tls.peer_chain[0]
        for ca in self.trusted or ():
            if leaf.issuer == ca.subject:
                try:
                    leaf.verify_directly_issued_by(ca)
                except (ValueError, TypeError, InvalidSignature):
                    continue
                return None
        return rejection or f"421 4.7.1 {self.hostname} Error: Client certificate not trusted"


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


def _plain_ehlo_then(after_starttls: Callable[[socket.socket], None]) -> Handler:
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
raw_starttls_silent: Handler = _plain_ehlo_then(lambda sock: time.sleep(10))



def _not_tls(sock: socket.socket) -> None:
    sock.sendall(b"220 2.0.0 Ready\r\n")
    sock.recv(4096)  # the ClientHello
    sock.sendall(b"\x00\xff\x01\xfe" * 40)  # binary, neither TLS records nor SMTP text
    time.sleep(0.5)


#: Answers 220 to STARTTLS and then speaks no TLS at all (binary garbage instead of a ServerHello).
raw_starttls_garbage: Handler = _plain_ehlo_then(_not_tls)

#: What :data:`raw_starttls_late_injection` injects.
LATE_INJECTION = b"250-injected.test\r\n250 PIPELINING\r\n"


def _inject_late(sock: socket.socket) -> None:
    sock.sendall(b"220 2.0.0 Ready to start TLS\r\n")
    time.sleep(0.3)  # after the client's ClientHello has gone out
    sock.sendall(LATE_INJECTION)
    time.sleep(1)


#: Answers 220 to STARTTLS, then injects plaintext SMTP 300 ms later, when the handshake is under way.
raw_starttls_late_injection: Handler = _plain_ehlo_then(_inject_late)

#: Answers 220 to STARTTLS and closes before the handshake.
raw_starttls_close: Handler = _plain_ehlo_then(lambda sock: sock.sendall(b"220 2.0.0 Ready\r\n"))
