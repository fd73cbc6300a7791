"""``lab serve`` against hostile clients, over real sockets on loopback: it must hold as Postfix does.

Each test plays a client a real MTA meets on the internet: one that never waits for replies, sends
garbage, overlong lines, SMTP smuggling payloads split at every awkward point, floods without reading,
puts control characters in addresses, or connects and idles. Timings only appear as generous bounds
(a reply within 2 s while the server would wait 30 s).
"""

from __future__ import annotations

import contextlib
import itertools
import random
import re
import select
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from certkit.adapters.transport import deliver_message
from certkit.lab.server import LabServer, Personality
from tests.lab_fixtures import LabPki

pytestmark = pytest.mark.usefixtures("time_limit")

Start = Callable[..., LabServer]
BOTH = pytest.mark.parametrize("personality", [Personality.EXCHANGE, Personality.POSTFIX])


# --- a raw client --------------------------------------------------------------------------------------


@dataclass
class Wire:
    """A raw SMTP client over a real socket: sends exactly the bytes given, reads replies as they come."""

    port: int
    sock: socket.socket = field(init=False)
    buf: bytes = b""

    def __post_init__(self) -> None:
        self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_pieces(self, pieces: list[bytes]) -> None:
        """Each piece in its own segment (or TLS record): a short pause lets the server read them apart."""
        for piece in pieces:
            self.sock.sendall(piece)
            time.sleep(0.002)

    def _fill(self, deadline: float) -> bool:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no complete reply in time")
        pending = isinstance(self.sock, ssl.SSLSocket) and self.sock.pending()
        if not pending and not select.select([self.sock], [], [], remaining)[0]:
            raise TimeoutError("no complete reply in time")
        try:
            chunk = self.sock.recv(65536)
        except ssl.SSLWantReadError:
            return True
        except (ConnectionResetError, ssl.SSLEOFError):
            chunk = b""
        self.buf += chunk
        return bool(chunk)

    def reply(self, timeout: float = 5.0) -> tuple[int, list[str]]:
        """The next complete reply: its code and its lines."""
        deadline = time.monotonic() + timeout
        lines: list[str] = []
        while True:
            while b"\r\n" not in self.buf:
                if not self._fill(deadline):
                    raise EOFError(f"closed after {lines!r}")
            raw, self.buf = self.buf.split(b"\r\n", 1)
            line = raw.decode("utf-8", "replace")
            lines.append(line)
            if len(line) < 4 or line[3] == " ":
                return int(line[:3]), lines

    def codes_until_closed(self, timeout: float = 5.0) -> list[int]:
        """The codes of every reply until the server closes the connection."""
        codes: list[int] = []
        with contextlib.suppress(EOFError):
            while True:
                codes.append(self.reply(timeout)[0])
        return codes

    def command(self, line: bytes) -> int:
        self.send(line)
        return self.reply()[0]

    def starttls(self, cert: Path, key: Path) -> None:
        assert self.command(b"STARTTLS\r\n") == 220 and not self.buf
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.load_cert_chain(cert, key)
        self.sock = ctx.wrap_socket(self.sock, server_hostname="mx.lab.test")

    def closed_within(self, timeout: float) -> bool:
        """True when the server closes the connection within ``timeout`` (whatever it says first)."""
        deadline = time.monotonic() + timeout
        with contextlib.suppress(TimeoutError):
            while self._fill(deadline):
                pass
            return True
        return False

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


@pytest.fixture
def client_files(lab_pki: LabPki, tmp_path: Path) -> tuple[Path, Path]:
    """The trusted client certificate and key as files (for the ssl module)."""
    cert, key = tmp_path / "client.crt", tmp_path / "client.key"
    cert.write_bytes(lab_pki.client.pem)
    key.write_bytes(lab_pki.client.key_pem)
    return cert, key


def ready(server: LabServer, personality: Personality, files: tuple[Path, Path]) -> Wire:
    """A session at the point where MAIL FROM is accepted: Postfix needs TLS and a trusted certificate."""
    w = Wire(server.port)
    assert w.reply()[0] == 220
    assert w.command(b"EHLO mx.contoso.test\r\n") == 250
    if personality is Personality.POSTFIX:
        w.starttls(*files)
        assert w.command(b"EHLO mx.contoso.test\r\n") == 250
    return w


def pieces_at(data: bytes, cuts: set[int]) -> list[bytes]:
    points = sorted({c for c in cuts if 0 < c < len(data)} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


# --- every reply goes out as soon as it exists --------------------------------------------------------


@BOTH
@pytest.mark.parametrize(("line", "code"), [
    (b"XYZZY\r\n", None),            # unknown: Exchange 500, Postfix 502
    (b"DATA\r\n", 503),              # before MAIL and RCPT
    (b"STARTTLS now\r\n", 501),      # RFC 3207: no parameters
    (b"MAIL FROM:<a@contoso.test>\r\n", None),  # an ordinary reply, for comparison
])
def test_replies_are_sent_without_waiting_for_the_next_command(lab_server: Start, personality: Personality,
                                                                line: bytes, code: int | None) -> None:
    server = lab_server(personality=personality, command_timeout=30.0)
    w = Wire(server.port)
    try:
        assert w.reply()[0] == 220
        assert w.command(b"EHLO mx.contoso.test\r\n") == 250
        started = time.monotonic()
        w.send(line)
        got, lines = w.reply(timeout=2.0)   # nothing else is sent: the reply must come by itself
        assert time.monotonic() - started < 2.0
        if code is not None:
            assert got == code, lines
        elif line.startswith(b"XYZZY"):
            assert got == (500 if personality is Personality.EXCHANGE else 502), lines
        assert w.command(b"NOOP\r\n") == 250   # and the session goes on in step
    finally:
        w.close()


@BOTH
def test_an_overlong_command_line_gets_exactly_one_500(lab_server: Start, personality: Personality) -> None:
    server = lab_server(personality=personality, command_timeout=30.0)
    w = Wire(server.port)
    try:
        assert w.reply()[0] == 220
        line = b"NOOP " + b"x" * 4993 + b"\r\n"
        assert len(line) == 5000
        # The 500 comes once 512 octets are in, before the line ends: the client is not left waiting.
        w.send(line[:600])
        assert w.reply(timeout=2.0)[0] == 500
        w.send_pieces(pieces_at(line, set(range(600, 5000, 700)) | {4998, 4999})[1:])
        w.send(b"NOOP\r\nQUIT\r\n")
        assert w.codes_until_closed() == [250, 221]   # no second 500, the NOOP is not swallowed
    finally:
        w.close()
    record = server.wait_for_session(lambda r: r.errors == 1)
    assert record is not None and record.refused[0].startswith("500 ")


# --- SMTP smuggling: a DATA body ends only at CRLF . CRLF --------------------------------------------------

EVIL = b"MAIL FROM:<x@evil.test>\r\nRCPT TO:<y@lab.test>\r\nDATA\r\nSubject: smuggled\r\n\r\nevil"
HEAD = b"Subject: t\r\n\r\n"


def _lf(text: bytes) -> bytes:
    return text.replace(b"\r\n", b"\n")


#: Message bodies (the client then sends CRLF . CRLF) that a broken reader would end early, executing EVIL.
SMUGGLING = {
    # CVE-2023-51764 style: an end of data that is not CRLF . CRLF, then the smuggled transaction.
    "lf-dot-lf": HEAD + b"hello\n.\n" + _lf(EVIL) + b"\n.\n",
    "lf-dot-crlf": HEAD + b"hello\n.\r\n" + EVIL + b"\n.\r\n",
    "cr-dot-crlf": HEAD + b"hello\r.\r\n" + EVIL + b"\r.\r\n",
    # The tail of an overlong line read as a new line: the dot lands around the 1000-octet limit (a line of
    # n + 3 octets with its CRLF; 997 is the longest allowed).
    **{f"overlong-{n}": HEAD + b"A" * n + b".\r\n" + EVIL for n in (997, 998, 999, 1000, 1998)},
}
TRAPS = (b"\n.", b"\r.", b"A.")


def _cuts(body: bytes, how: str) -> set[int]:
    if how == "whole":
        return set()
    if how == "random":
        rng = random.Random(len(body))
        return set(rng.sample(range(1, len(body)), 12))
    # Every octet apart around each place where a broken reader would see the end.
    cuts: set[int] = set()
    for trap in TRAPS:
        i = body.find(trap)
        while i >= 0:
            cuts.update(range(max(1, i - 3), i + 6))
            i = body.find(trap, i + 1)
    cuts.update(range(995, 1006))
    return cuts


@BOTH
@pytest.mark.parametrize("how", ["whole", "around-the-trap", "random"])
@pytest.mark.parametrize("name", list(SMUGGLING))
def test_smuggled_commands_stay_inside_the_message(lab_server: Start, client_files: tuple[Path, Path],
                                                   tmp_path: Path, personality: Personality, how: str,
                                                   name: str) -> None:
    server = lab_server(personality=personality, command_timeout=30.0)
    body = SMUGGLING[name]
    w = ready(server, personality, client_files)
    try:
        for line in (b"MAIL FROM:<alice@elsewhere.test>\r\n", b"RCPT TO:<bob@lab.test>\r\n", b"DATA\r\n"):
            w.send(line)
            assert w.reply()[0] in (250, 354)
        w.send_pieces(pieces_at(body + b"\r\n.\r\n", _cuts(body, how)))
        w.send(b"QUIT\r\n")
        codes = w.codes_until_closed()
    finally:
        w.close()
    overlong = name.startswith("overlong") and name != "overlong-997"
    # One reply to the one message, then 221: nothing smuggled was executed.
    assert codes == [552 if overlong else 250, 221], codes
    record = server.wait_for_session(lambda r: r.reply_count > 0 and r.mail_from is not None)
    assert record is not None and record.mail_from == "alice@elsewhere.test"
    assert record.recipients == ["bob@lab.test"] and record.errors == 0
    stored = list((tmp_path / "maildir" / "new").iterdir()) if (tmp_path / "maildir" / "new").exists() else []
    if overlong:
        assert stored == [] and record.delivered == []   # a line over 1000 octets: the message is refused
    else:
        assert len(stored) == 1
        content = stored[0].read_bytes()
        # The smuggled transaction is message text, stored as sent (our Received: header first).
        assert content.endswith(body + b"\r\n"), content[-200:]


# --- control characters --------------------------------------------------------------------------------


@BOTH
@pytest.mark.parametrize("line", [
    b"EHLO mx\x00.contoso.test\r\n",
    b"EHLO mx\x1b[31m.contoso.test\r\n",
    b"MAIL FROM:<al\x00ice@contoso.test>\r\n",
    b"MAIL FROM:<alice@con\rtoso.test>\r\n",
    b"RCPT TO:<bob\x7f@lab.test>\r\n",
    b"RCPT TO:<bob@lab.test\x1b[2K>\r\n",
])
def test_control_characters_in_names_and_addresses_get_501(lab_server: Start, client_files: tuple[Path, Path],
                                                           personality: Personality, line: bytes) -> None:
    server = lab_server(personality=personality)
    w = ready(server, personality, client_files)
    try:
        if line.startswith(b"RCPT"):
            assert w.command(b"MAIL FROM:<alice@elsewhere.test>\r\n") == 250
        w.send(line)
        code, lines = w.reply(timeout=2.0)
        assert code == 501, lines
        w.send(b"QUIT\r\n")
        assert w.codes_until_closed() == [221]
    finally:
        w.close()
    record = server.wait_for_session(lambda r: r.errors == 1)
    assert record is not None
    log_line = record.log_line()
    assert not re.search("[\x00-\x1f\x7f]", log_line), log_line   # one line, no terminal sequences
    assert "\\x00" in log_line or "\\x1b" in log_line or "\\r" in log_line or "\\x7f" in log_line, log_line
    assert record.helo in (None, "mx.contoso.test")


# --- idle clients cannot lock others out ------------------------------------------------------------------


def test_idle_connections_give_way_under_stress(lab_server: Start) -> None:
    """Both slots held by clients that say nothing: a third, well-behaved client is served within about
    stress_timeout (1 s), not after command_timeout (300 s); the idle ones get the timeout reply."""
    server = lab_server(max_sessions=2, stress_timeout=1.0, command_timeout=300.0)
    idle = [Wire(server.port) for _ in range(2)]
    try:
        for w in idle:
            assert w.reply()[0] == 220
        started = time.monotonic()
        d = deliver_message("127.0.0.1", server.port, mail_from="a@elsewhere.test", rcpt_to="b@lab.test",
                            message=b"Subject: hi\r\n\r\nhello\r\n", timeout=10)
        assert d.delivered, d.session.failure
        assert time.monotonic() - started < 5.0
        for w in idle:
            code, lines = w.reply(timeout=2.0)
            assert (code, lines) == (421, ["421 4.4.1 Connection timed out"])
    finally:
        for w in idle:
            w.close()


def test_without_stress_an_idle_client_keeps_its_slot(lab_server: Start) -> None:
    server = lab_server(max_sessions=3, stress_timeout=0.5, command_timeout=300.0)
    w = Wire(server.port)
    try:
        assert w.reply()[0] == 220
        assert not w.closed_within(1.5)   # three times stress_timeout: it is not applied without stress
        assert w.command(b"NOOP\r\n") == 250
    finally:
        w.close()


# --- `certkit lab serve` as a process: memory and the handshake timeout -------------------------------------


@dataclass
class Served:
    proc: subprocess.Popen[str]
    port: int
    stderr: list[str]

    def rss(self) -> int:
        """The server's resident memory, in octets (/proc/PID/status VmRSS)."""
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        m = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
        assert m is not None
        return int(m.group(1)) * 1024


@contextlib.contextmanager
def lab_serve(pki: LabPki, folder: Path, *args: str) -> Iterator[Served]:
    """``certkit lab serve`` in a child process on a free loopback port."""
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = folder / "server.crt", folder / "server.key"
    cert.write_bytes(pki.server.pem)
    key.write_bytes(pki.server.key_pem)
    proc = subprocess.Popen([sys.executable, "-m", "certkit", "lab", "serve", "--cert", str(cert), "--key", str(key),
                             "--listen", "127.0.0.1:0", "--home", str(folder / "home"), "--hostname", "mx.lab.test",
                             "--maildir", str(folder / "maildir"), *args],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    stderr: list[str] = []
    try:
        first = proc.stderr.readline()
        m = re.search(r"listening on 127\.0\.0\.1:(\d+)", first)
        assert m is not None, first + proc.stderr.read()
        stderr.append(first)
        # Keep reading the log, so a full pipe never stops the server.
        threading.Thread(target=lambda: stderr.extend(iter(proc.stderr.readline, "")),  # type: ignore[union-attr]
                         daemon=True).start()
        yield Served(proc, int(m.group(1)), stderr)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _flood(port: int, line: bytes, count: int) -> tuple[int, bool]:
    """Pipeline ``count`` copies of ``line`` and never read a reply; returns (octets sent, whether the server
    stopped reading: a send made no progress for 2 s)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=2)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    chunk = line * 5000
    sent = 0
    try:
        for _ in range(count // 5000):
            try:
                sock.sendall(chunk)
                sent += len(chunk)
            except TimeoutError:
                return sent, True
            except OSError:
                return sent, False   # the server closed the connection
        return sent, False
    finally:
        _FLOODERS.append(sock)   # kept open (and unread) until the test ends


_FLOODERS: list[socket.socket] = []


@pytest.mark.parametrize("line", [b"NOOP\r\n", b"XYZZY\r\n"])
def test_a_client_that_floods_and_never_reads_costs_bounded_memory(lab_pki: LabPki, tmp_path: Path,
                                                                   time_limit: Callable[[float], None],
                                                                   line: bytes) -> None:
    time_limit(120)
    with lab_serve(lab_pki, tmp_path / "serve", "--timeout", "60") as served:
        # Warm up (imports, TLS context, first session) before the baseline.
        d = deliver_message("127.0.0.1", served.port, mail_from="a@elsewhere.test", rcpt_to="b@lab.test",
                            message=b"Subject: warm\r\n\r\nhello\r\n", timeout=10)
        assert d.delivered
        before = served.rss()
        results: list[tuple[int, bool]] = []
        count = 2_000_000 if line == b"NOOP\r\n" else 200_000
        flooders = [threading.Thread(target=lambda: results.append(_flood(served.port, line, count)))
                    for _ in range(1 if line == b"NOOP\r\n" else 3)]
        for t in flooders:
            t.start()
        # A well-behaved client is served meanwhile.
        time.sleep(0.5)
        d = deliver_message("127.0.0.1", served.port, mail_from="a@elsewhere.test", rcpt_to="b@lab.test",
                            message=b"Subject: during\r\n\r\nhello\r\n", timeout=10)
        assert d.delivered, d.session.failure
        for t in flooders:
            t.join(60)
        after = served.rss()
        try:
            assert after - before < 50 * 1024 * 1024, (before >> 20, after >> 20, results)
            if line == b"NOOP\r\n":
                # Valid commands: the server answers until its replies are unread, then stops reading.
                assert all(stalled for _, stalled in results), results
            d = deliver_message("127.0.0.1", served.port, mail_from="a@elsewhere.test", rcpt_to="b@lab.test",
                                message=b"Subject: after\r\n\r\nhello\r\n", timeout=10)
            assert d.delivered, d.session.failure
        finally:
            while _FLOODERS:
                _FLOODERS.pop().close()
    if line == b"XYZZY\r\n":
        # Invalid commands: the hard error limit ends each flood with a 421 (Postfix: smtpd_hard_error_limit).
        assert sum("refused=20" in row for row in served.stderr) == 3, served.stderr


def test_the_handshake_timeout_follows_timeout(lab_pki: LabPki, tmp_path: Path) -> None:
    """`lab serve --timeout 1`: a client that sends STARTTLS and then nothing is dropped within about 1 s
    (the handshake's own default is 30 s)."""
    with lab_serve(lab_pki, tmp_path / "serve", "--timeout", "1") as served:
        w = Wire(served.port)
        try:
            assert w.reply()[0] == 220
            assert w.command(b"EHLO mx.contoso.test\r\n") == 250
            assert w.command(b"STARTTLS\r\n") == 220
            started = time.monotonic()
            assert w.closed_within(10)
            assert time.monotonic() - started < 5
        finally:
            w.close()
        deadline = time.monotonic() + 5
        while not any("error=timeout" in row for row in served.stderr) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert any("error=timeout" in row for row in served.stderr), served.stderr
