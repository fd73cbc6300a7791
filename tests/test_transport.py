"""The SMTP transport against real sockets on 127.0.0.1: in-test servers that behave and misbehave."""

from __future__ import annotations

import asyncio
import socket
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from cryptography import x509

from certkit.adapters.transport import ClientIdentity, SmtpSession, run_session, run_session_async
from certkit.core.personality import rejection_of_us
from tests.fixtures_net import require_postfix
from tests.pki import Issued, make_intermediate, make_leaf, make_root, make_self_signed
from tests.postfix import PostfixInstance
from tests.smtp_servers import (
    LATE_INJECTION,
    Handler,
    Scripted,
    SmtpTestServer,
    plain_ehlo_then,
    raw_close_mid_reply,
    raw_garbage,
    raw_huge_line,
    raw_silent,
    raw_split_banner,
    raw_starttls_late_injection,
    raw_trickle,
)

Start = Callable[[Handler], SmtpTestServer]

ROOT = make_root()
INTER = make_intermediate(ROOT)
SERVER = make_leaf(INTER, ["mx.fabrikam.test"])
CLIENT = make_leaf(INTER, ["edge.contoso.test"])
FOREIGN_ROOT = make_root("Foreign Root")
FOREIGN = make_leaf(FOREIGN_ROOT, ["edge.contoso.test"])


def _run_session_on_asyncio(*args: Any, **kwargs: Any) -> SmtpSession:
    return asyncio.run(run_session_async(*args, **kwargs))


@pytest.fixture(params=["sockets", "asyncio"], autouse=True)
def driver(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test runs the one dialogue over both transports: blocking sockets and asyncio with memory BIOs."""
    if request.param == "asyncio":
        monkeypatch.setattr(sys.modules[__name__], "run_session", _run_session_on_asyncio)
    return str(request.param)


def probe(srv: SmtpTestServer, *, identity: Issued | None = None, chain: tuple[x509.Certificate, ...] = (),
          timeout: float = 2.0, **kwargs: object) -> SmtpSession:
    ident = ClientIdentity(identity.cert, identity.key, chain) if identity else None
    return run_session("127.0.0.1", srv.port, server_name="mx.fabrikam.test", mail_from="probe@contoso.test",
                       rcpt_to="postmaster@fabrikam.test", identity=ident, timeout=timeout, **kwargs)  # type: ignore[arg-type]


def test_good_chain_full_dialogue(smtp_server: Start) -> None:
    srv = smtp_server(Scripted(identity=SERVER, chain=[INTER.cert]))
    s = probe(srv)
    assert s.failure is None
    assert s.banner is not None and s.banner.code == 220
    assert s.starttls_offered and s.starttls is not None and s.starttls.code == 220
    assert s.tls is not None
    assert s.tls.version in ("TLSv1.2", "TLSv1.3")
    assert s.tls.peer_chain == (SERVER.cert, INTER.cert)
    assert s.after_tls is not None and s.after_tls.code == 250
    assert "STARTTLS" not in s.tls_capabilities
    assert s.mail is not None and s.mail.code == 250
    assert s.rcpt is not None and s.rcpt.code == 250
    assert s.quit is not None and s.quit.code == 221
    assert not s.rejected_after_tls
    texts = [(t.direction, t.text) for t in s.transcript]
    assert ("C", "STARTTLS") in texts
    assert any(d == "*" and t.startswith("TLS handshake: TLSv1") for d, t in texts)
    assert all(t.text != "DATA" for t in s.transcript)
    assert {"connect", "banner", "ehlo", "starttls", "handshake", "ehlo-tls", "mail", "rcpt", "quit"} <= set(s.timings)


def test_sni_is_sent(smtp_server: Start) -> None:
    server = Scripted(identity=SERVER)
    probe(smtp_server(server))
    assert server.sessions[0].server_name == "mx.fabrikam.test"


def test_no_starttls_offered(smtp_server: Start) -> None:
    s = probe(smtp_server(Scripted(identity=SERVER, offer_starttls=False, require_tls_for_mail=True)))
    assert s.failure is None
    assert not s.starttls_offered and s.tls is None and s.starttls is None
    assert s.mail is not None and s.mail.code == 530


def test_starttls_refused(smtp_server: Start) -> None:
    s = probe(smtp_server(Scripted(identity=SERVER, starttls_reply="454 4.7.0 TLS not available due to local problem")))
    assert s.starttls is not None and s.starttls.code == 454 and s.starttls.enhanced == "4.7.0"
    assert s.tls is None and s.failure is None


def test_starttls_injection_is_discarded_and_reported(smtp_server: Start) -> None:
    s = probe(smtp_server(Scripted(identity=SERVER, inject=b"250-evil\r\n250 injected\r\n")))
    assert s.injected == b"250-evil\r\n250 injected\r\n"
    assert s.tls is not None and s.failure is None
    assert s.after_tls is not None and "mx.test" in s.after_tls.text
    assert any("discarded" in t.text for t in s.transcript)


def test_plaintext_injected_during_the_handshake_is_kept_as_injected(smtp_server: Start) -> None:
    s = probe(smtp_server(raw_starttls_late_injection))
    assert s.failure is not None and s.failure.code == "tls.handshake-failed" and s.failure.stage == "handshake"
    assert s.injected == LATE_INJECTION
    assert any("during the TLS handshake" in t.text for t in s.transcript)


def test_trickling_server_times_out_instead_of_hanging(smtp_server: Start) -> None:
    t0 = time.monotonic()
    s = probe(smtp_server(raw_trickle), timeout=1.0)
    assert time.monotonic() - t0 < 3
    assert s.failure is not None and s.failure.code == "net.timeout" and s.failure.stage == "banner"


def test_silent_server_times_out(smtp_server: Start) -> None:
    s = probe(smtp_server(raw_silent), timeout=0.5)
    assert s.failure is not None and s.failure.code == "net.timeout"


def test_overall_deadline_bounds_the_session(smtp_server: Start) -> None:
    t0 = time.monotonic()
    s = probe(smtp_server(raw_trickle), timeout=5.0, deadline=0.8)
    assert time.monotonic() - t0 < 2
    assert s.failure is not None and s.failure.code == "net.timeout"


def test_garbage_server_is_a_protocol_error(smtp_server: Start) -> None:
    s = probe(smtp_server(raw_garbage))
    assert s.failure is not None and s.failure.code == "smtp.protocol-error"
    assert "HTTP/1.1" in s.failure.detail


def test_huge_line_is_a_protocol_error(smtp_server: Start) -> None:
    s = probe(smtp_server(raw_huge_line))
    assert s.failure is not None and s.failure.code == "smtp.protocol-error"


def test_close_mid_reply(smtp_server: Start) -> None:
    s = probe(smtp_server(raw_close_mid_reply))
    assert s.failure is not None and s.failure.code == "net.closed"
    assert "middle of a reply" in s.failure.detail


def test_split_multiline_banner(smtp_server: Start) -> None:
    s = probe(smtp_server(raw_split_banner))
    assert s.failure is None
    assert s.banner is not None and s.banner.lines == ("mx.test hello", "ready")


def test_connection_refused() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    s = run_session("127.0.0.1", port, timeout=1)
    assert not s.connected
    assert s.failure is not None and s.failure.code == "net.refused"


def test_postfix_like_server_without_client_cert_says_421(smtp_server: Start) -> None:
    s = probe(smtp_server(Scripted(identity=SERVER, trusted=[INTER.cert])))
    assert s.tls is not None and s.tls.certificate_requested and not s.tls.client_cert_sent
    assert s.tls.client_ca_names == (INTER.cert.subject,)
    assert s.after_tls is not None
    assert s.after_tls.text == "421 4.7.1 mx.test Error: No client certificate presented"
    assert s.rejected_after_tls
    assert s.mail is None and s.failure is None


def test_postfix_like_server_with_foreign_client_cert_says_not_trusted(smtp_server: Start) -> None:
    s = probe(smtp_server(Scripted(identity=SERVER, trusted=[INTER.cert])), identity=FOREIGN)
    assert s.tls is not None and s.tls.client_cert_sent
    assert s.after_tls is not None and s.after_tls.text.endswith("Error: Client certificate not trusted")
    assert s.rejected_after_tls


def test_postfix_like_server_accepts_trusted_client_cert(smtp_server: Start) -> None:
    server = Scripted(identity=SERVER, trusted=[INTER.cert])
    s = probe(smtp_server(server), identity=CLIENT, chain=(INTER.cert,))
    assert s.after_tls is not None and s.after_tls.code == 250
    assert s.rcpt is not None and s.rcpt.code == 250
    assert server.sessions[0].peer_chain[0] == CLIENT.cert


def test_exchange_like_server_says_454_at_mail_from(smtp_server: Start) -> None:
    """Exchange with Domain Security accepts EHLO and refuses MAIL FROM from a domain-secure sender."""
    s = probe(smtp_server(Scripted(identity=SERVER, trusted=[INTER.cert], exchange=True,
                                   domain_secure=["contoso.test"])),
              identity=make_self_signed(["edge.contoso.test"]))
    assert s.after_tls is not None and s.after_tls.code == 250 and not s.rejected_after_tls
    assert s.mail is not None and s.mail.text == "454 4.7.5 Certificate validation failure"
    assert rejection_of_us(s) == ("at MAIL FROM", s.mail)
    assert s.rcpt is None
    assert s.quit is not None and s.quit.code == 221


def test_tls_handshake_failure_is_data(smtp_server: Start) -> None:
    def not_tls(sock: socket.socket) -> None:
        sock.sendall(b"220 mx ESMTP\r\n")
        f = sock.makefile("rb")
        f.readline()
        sock.sendall(b"250-mx\r\n250 STARTTLS\r\n")
        f.readline()
        sock.sendall(b"220 go ahead\r\n")
        f.read(5)
        sock.sendall(b"this is not TLS at all\r\n" * 10)
        time.sleep(0.5)

    s = probe(smtp_server(not_tls))
    assert s.failure is not None and s.failure.code == "tls.handshake-failed"
    assert s.failure.stage == "handshake" and s.failure.detail


def test_implicit_tls(smtp_server: Start) -> None:
    def wrapper_mode(sock: socket.socket) -> None:
        from certkit.adapters.transport import Channel, server_context
        ch = Channel(sock)
        ch.start_tls_server(server_context(SERVER.cert, SERVER.key), time.monotonic() + 3)
        ch.sendall(b"220 mx ESMTP\r\n", time.monotonic() + 3)
        buf = b""
        while True:
            data = ch.recv(time.monotonic() + 3)
            if not data:
                return
            buf += data
            while b"\r\n" in buf:
                line, buf = buf.split(b"\r\n", 1)
                if line.startswith(b"QUIT"):
                    ch.sendall(b"221 bye\r\n", time.monotonic() + 3)
                    return
                ch.sendall(b"250 ok\r\n", time.monotonic() + 3)

    s = probe(smtp_server(wrapper_mode), implicit_tls=True)
    assert s.failure is None, s.failure
    assert s.tls is not None and s.tls.peer_chain[0] == SERVER.cert
    assert s.banner is not None and s.banner.code == 220
    assert s.after_tls is not None and s.after_tls.code == 250
    assert s.quit is not None and s.quit.code == 221


@pytest.mark.parametrize("bad", ["a@b>\r\nDATA", "x\ny"])
def test_addresses_with_line_breaks_are_refused_before_sending(smtp_server: Start, bad: str) -> None:
    from certkit.core.smtp import LocalProtocolError
    srv = smtp_server(Scripted(identity=SERVER))
    with pytest.raises(LocalProtocolError):
        run_session("127.0.0.1", srv.port, mail_from=bad, timeout=2)


# --- real Postfix -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def postfix_may() -> Iterator[PostfixInstance]:
    """Postfix with a CA-signed certificate and opportunistic TLS."""
    require_postfix()
    with PostfixInstance(PF_SERVER.cert, PF_SERVER.key, [PF_INTER.cert]) as pf:
        yield pf


@pytest.fixture(scope="module")
def postfix_req() -> Iterator[PostfixInstance]:
    """Postfix requiring TLS and a client certificate from PF_ROOT's hierarchy."""
    require_postfix()
    with PostfixInstance(PF_SERVER.cert, PF_SERVER.key, [PF_INTER.cert], client_ca=[PF_ROOT.cert, PF_INTER.cert]) as pf:
        yield pf


PF_ROOT = make_root("Fabrikam Root")
PF_INTER = make_intermediate(PF_ROOT, "Fabrikam Issuing CA")
PF_SERVER = make_leaf(PF_INTER, ["mx.fabrikam.test", "fabrikam.test"])
PF_CLIENT = make_leaf(PF_INTER, ["edge.contoso.test"])


def probe_postfix(pf: PostfixInstance, identity: Issued | None = None,
                  chain: tuple[x509.Certificate, ...] = ()) -> SmtpSession:
    ident = ClientIdentity(identity.cert, identity.key, chain) if identity else None
    return run_session("127.0.0.1", pf.port, server_name="mx.fabrikam.test", helo_name="edge.contoso.test",
                       mail_from="probe@contoso.test", rcpt_to="postmaster@fabrikam.test", identity=ident, timeout=5)


def test_postfix_may_full_dialogue(postfix_may: PostfixInstance) -> None:
    s = probe_postfix(postfix_may)
    assert s.failure is None, s.failure
    assert s.banner is not None and s.banner.text.startswith("220 mx.fabrikam.test ESMTP")
    assert s.starttls_offered
    assert s.tls is not None and s.tls.peer_chain == (PF_SERVER.cert, PF_INTER.cert)
    assert not s.tls.certificate_requested
    assert s.after_tls is not None and s.after_tls.code == 250
    assert s.rcpt is not None and s.rcpt.text == "250 2.1.5 Ok"
    assert s.rset is not None and s.quit is not None and s.quit.code == 221


def test_postfix_may_refuses_relay(postfix_may: PostfixInstance) -> None:
    s = run_session("127.0.0.1", postfix_may.port, server_name="mx.fabrikam.test", mail_from="probe@contoso.test",
                    rcpt_to="someone@elsewhere.test", timeout=5)
    assert s.rcpt is not None and s.rcpt.code == 554 and "Relay access denied" in s.rcpt.text


def test_postfix_no_client_certificate_presented(postfix_req: PostfixInstance) -> None:
    s = probe_postfix(postfix_req)
    assert s.tls is not None and s.tls.certificate_requested and not s.tls.client_cert_sent
    assert set(s.tls.client_ca_names) == {PF_ROOT.cert.subject, PF_INTER.cert.subject}
    assert s.after_tls is not None
    assert s.after_tls.text == "421 4.7.1 mx.fabrikam.test Error: No client certificate presented"
    assert s.rejected_after_tls and s.mail is None


def test_postfix_client_certificate_not_trusted(postfix_req: PostfixInstance) -> None:
    s = probe_postfix(postfix_req, FOREIGN)
    assert s.tls is not None and s.tls.client_cert_sent
    assert s.after_tls is not None
    assert s.after_tls.text == "421 4.7.1 mx.fabrikam.test Error: Client certificate not trusted"
    assert "untrusted issuer" in postfix_req.wait_for_log("untrusted issuer")


def test_postfix_accepts_a_trusted_client_certificate(postfix_req: PostfixInstance) -> None:
    s = probe_postfix(postfix_req, PF_CLIENT, (PF_INTER.cert,))
    assert s.failure is None
    assert s.after_tls is not None and s.after_tls.code == 250
    assert s.rcpt is not None and s.rcpt.code == 250
    assert not s.rejected_after_tls


def test_postfix_requires_starttls_before_mail(postfix_req: PostfixInstance) -> None:
    s = run_session("127.0.0.1", postfix_req.port, mail_from="probe@contoso.test", starttls=False, timeout=5)
    assert s.mail is not None and s.mail.text == "530 5.7.0 Must issue a STARTTLS command first"


def test_shared_client_context_keeps_sessions_apart(smtp_server: Start) -> None:
    """One TLS context per identity serves concurrent sessions; each notes its own CertificateRequest."""
    import concurrent.futures

    asks = smtp_server(Scripted(identity=SERVER, chain=[INTER.cert], client_cas=[INTER.cert]))
    silent = smtp_server(Scripted(identity=SERVER, chain=[INTER.cert], request_client_cert=False))
    identity = ClientIdentity(CLIENT.cert, CLIENT.key, (INTER.cert,))
    ports = [asks.port, silent.port] * 10
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        sessions = list(pool.map(lambda p: run_session("127.0.0.1", p, identity=identity, timeout=3), ports))
    for port, s in zip(ports, sessions, strict=True):
        assert s.tls is not None and s.failure is None
        assert s.tls.certificate_requested is (port == asks.port)
        assert s.tls.client_cert_sent is (port == asks.port)
        assert len(s.tls.client_ca_names) == (1 if port == asks.port else 0)


def test_unusable_identity_is_a_failure_not_an_exception(smtp_server: Start) -> None:
    srv = smtp_server(Scripted(identity=SERVER, chain=[INTER.cert]))
    wrong = ClientIdentity(CLIENT.cert, SERVER.key)  # the key of another certificate
    s = run_session("127.0.0.1", srv.port, identity=wrong, timeout=3)
    assert s.failure is not None and s.failure.code == "tls.handshake-failed"
    assert "cannot be used" in s.failure.detail


def test_server_tls_error_is_a_certkit_error() -> None:
    from certkit.adapters.transport import ServerTlsError
    from certkit.errors import CertkitError

    err = ServerTlsError("tlsv1 alert unknown ca")
    assert isinstance(err, CertkitError) and str(err) == "tlsv1 alert unknown ca"


def _tls13_demanding_a_client_certificate(sock: socket.socket) -> None:
    """After the 220 to STARTTLS: TLS 1.3 that demands a client certificate. With none, the client's handshake
    completes and its first read after it gets the alert "certificate required"."""
    from OpenSSL import SSL

    from certkit.adapters.transport import Channel, server_context

    sock.sendall(b"220 2.0.0 Ready to start TLS\r\n")
    ctx = server_context(SERVER.cert, SERVER.key, [INTER.cert])
    ctx.set_min_proto_version(SSL.TLS1_3_VERSION)
    ctx.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, lambda *args: True)
    channel = Channel(sock)
    try:
        channel.start_tls_server(ctx, time.monotonic() + 5)
        channel.recv(time.monotonic() + 5)
    except (SSL.Error, OSError, TimeoutError):
        pass
    time.sleep(0.2)


def test_a_tls_alert_after_the_handshake_is_a_failure_not_a_traceback(smtp_server: Start) -> None:
    s = probe(smtp_server(plain_ehlo_then(_tls13_demanding_a_client_certificate)))
    assert s.tls is not None and s.tls.version == "TLSv1.3"
    assert s.failure is not None and s.failure.code == "net.closed" and s.failure.stage == "ehlo-tls", s.failure
    assert any("certificate required" in t.text for t in s.transcript), [t.text for t in s.transcript]
