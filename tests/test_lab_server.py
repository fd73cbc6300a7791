"""The lab endpoint on loopback, driven by certkit's own transport: personalities, limits, Maildir, sender, demo."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization

from certkit.adapters.transport import ClientIdentity, client_context, deliver_message, run_session
from certkit.cli.lab import lab
from certkit.core.trust import AnchorSet
from certkit.lab.demo import run_demo
from certkit.lab.httpfiles import HttpFiles
from certkit.lab.sender import queue_lines, send_message
from certkit.lab.server import LabServer, Personality
from tests.lab_fixtures import LabPki
from tests.pki import make_crl, make_leaf
from tests.smtp_servers import Scripted, SmtpTestServer

pytestmark = pytest.mark.usefixtures("time_limit")

MSG = b"Subject: lab\r\n\r\nhello\r\n"
Start = Callable[..., LabServer]


def deliver(server: LabServer, identity: ClientIdentity | None, sender: str = "alice@contoso.test"):  # type: ignore[no-untyped-def]
    return deliver_message("127.0.0.1", server.port, mail_from=sender, rcpt_to="bob@lab.test", message=MSG,
                           identity=identity, timeout=5)


@pytest.mark.parametrize(("which", "delivered", "reply", "finding"), [
    ("trusted", True, None, None),
    ("foreign", False, "454 4.7.5 Certificate validation failure", "chain.self-signed"),
    ("other", False, "454 4.7.5 Certificate validation failure", "chain.missing-intermediate"),
    ("none", False, "454 4.7.5 Certificate validation failure", None),
])
def test_exchange_personality_answers_454_at_mail_from(lab_server: Start, lab_pki: LabPki, which: str,
                                                       delivered: bool, reply: str | None,
                                                       finding: str | None) -> None:
    server = lab_server()
    d = deliver(server, lab_pki.identity(which))
    assert d.delivered is delivered
    assert d.session.after_tls is not None and d.session.after_tls.code == 250   # EHLO after TLS is fine
    if reply:
        assert d.session.mail is not None and d.session.mail.text == reply
        record = server.wait_for_session(lambda r: r.rejection is not None)
        assert record is not None and record.rejection == reply
        assert "because:" in record.log_line()
        if finding:
            assert finding in [f.code for f in record.findings]
    else:
        record = server.wait_for_session(lambda r: bool(r.delivered))
        assert record is not None and record.domain_secured == "contoso.test"


def test_exchange_name_rule_applies_to_the_sender_domain(lab_server: Start, lab_pki: LabPki) -> None:
    server = lab_server(domain_secure=("contoso.test", "fabrikam.test"))
    d = deliver(server, lab_pki.identity("trusted"), sender="alice@fabrikam.test")
    assert d.session.mail is not None and d.session.mail.code == 454
    record = server.wait_for_session(lambda r: r.rejection is not None)
    assert record is not None and "name.domain-mismatch" in [f.code for f in record.findings]


def test_a_sender_outside_the_domain_secure_list_is_opportunistic(lab_server: Start, lab_pki: LabPki) -> None:
    server = lab_server()
    d = deliver(server, lab_pki.identity("foreign"), sender="someone@elsewhere.test")
    assert d.delivered
    record = server.wait_for_session(lambda r: bool(r.delivered))
    assert record is not None and record.domain_secured is None
    text = record.delivered[0].read_bytes().decode()
    assert "domain-secured=no" in text and "(not verified)" in text


def test_exchange_rules_need_a_reachable_crl(lab_server: Start, lab_pki: LabPki, tmp_path: Path) -> None:
    # The client certificate names a CRL on a closed port: Exchange fails the revocation check.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    client = make_leaf(lab_pki.root, ["mx.contoso.test", "contoso.test"], cdp=f"http://127.0.0.1:{dead}/x.crl")
    server = lab_server(validator=Personality.EXCHANGE)
    d = deliver(server, ClientIdentity(client.cert, client.key))
    assert d.session.mail is not None and d.session.mail.code == 454
    record = server.wait_for_session(lambda r: r.rejection is not None)
    assert record is not None and "revocation.unreachable" in [f.code for f in record.findings]


def test_exchange_rules_accept_a_fresh_crl_served_over_http(lab_server: Start, lab_pki: LabPki,
                                                            tmp_path: Path) -> None:
    crl = make_crl(lab_pki.root).public_bytes(serialization.Encoding.DER)
    with HttpFiles({"/lab.crl": crl}) as crls:
        client = make_leaf(lab_pki.root, ["mx.contoso.test", "contoso.test"], cdp=crls.url("lab.crl"))
        server = lab_server(validator=Personality.EXCHANGE)
        assert deliver(server, ClientIdentity(client.cert, client.key)).delivered


@pytest.mark.parametrize(("which", "text"), [
    ("foreign", "421 4.7.1 mx.lab.test Error: Client certificate not trusted"),
    ("none", "421 4.7.1 mx.lab.test Error: No client certificate presented"),
])
def test_postfix_personality_answers_421_to_the_first_command_after_the_handshake(
        lab_server: Start, lab_pki: LabPki, which: str, text: str) -> None:
    server = lab_server(personality=Personality.POSTFIX)
    s = run_session("127.0.0.1", server.port, identity=lab_pki.identity(which), mail_from="a@contoso.test",
                    timeout=5)
    assert s.tls is not None
    assert s.after_tls is not None and s.after_tls.text == text
    assert s.mail is None and s.failure is None  # closed after the 421


def test_postfix_personality_delivers_a_trusted_client(lab_server: Start, lab_pki: LabPki) -> None:
    server = lab_server(personality=Personality.POSTFIX)
    assert deliver(server, lab_pki.identity("trusted")).delivered


@pytest.mark.parametrize("personality", [Personality.EXCHANGE, Personality.POSTFIX])
def test_without_tls_where_required_mail_from_gets_530(lab_server: Start, personality: Personality) -> None:
    server = lab_server(personality=personality, require_tls=True)
    s = run_session("127.0.0.1", server.port, starttls=False, mail_from="a@elsewhere.test", timeout=5)
    assert s.mail is not None and s.mail.text == "530 5.7.0 Must issue a STARTTLS command first"


def _talk(port: int, lines: list[bytes], *, expect: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        data = b""
        for line in lines:
            sock.sendall(line)
            time.sleep(0.05)
        deadline = time.monotonic() + 5
        while data.count(b"\r\n") < expect and time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        return data


def test_plaintext_pipelined_after_starttls_is_not_executed(lab_server: Start, lab_pki: LabPki) -> None:
    # CVE-2011-0411 over a real socket: the injected RSET/MAIL must get no reply, inside TLS or out.
    from OpenSSL import SSL

    server = lab_server(personality=Personality.EXCHANGE)
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    f = sock.makefile("rb")
    assert f.readline().startswith(b"220 ")
    sock.sendall(b"EHLO x\r\n")
    while not f.readline().startswith(b"250 "):
        pass
    sock.sendall(b"STARTTLS\r\nMAIL FROM:<evil@contoso.test>\r\nRSET\r\n")
    assert f.readline().startswith(b"220 ")
    sock.settimeout(None)  # pyOpenSSL wants a blocking socket; the test's time limit bounds it
    conn = SSL.Connection(client_context(lab_pki.identity("trusted")), sock)
    conn.set_connect_state()
    conn.do_handshake()
    conn.sendall(b"NOOP\r\n")
    first = conn.recv(4096)
    assert first.startswith(b"250 2.0.0 OK")  # NOOP's reply comes first: nothing injected ran
    conn.sendall(b"QUIT\r\n")
    conn.recv(4096)
    sock.close()
    record = server.wait_for_session(lambda r: bool(r.discarded))
    assert record is not None and record.discarded == b"MAIL FROM:<evil@contoso.test>\r\nRSET\r\n"
    assert "CVE-2011-0411" in record.log_line()


def test_overlong_command_lines_get_500(lab_server: Start) -> None:
    server = lab_server()
    data = _talk(server.port, [b"EHLO " + b"a" * 600 + b"\r\n", b"QUIT\r\n"], expect=3)
    assert b"500 5.5.6 Line too long" in data and b"221 " in data


def test_messages_over_the_size_limit_get_552(lab_server: Start) -> None:
    server = lab_server(max_message=1024)
    big = b"Subject: big\r\n\r\n" + (b"x" * 100 + b"\r\n") * 20
    d = deliver_message("127.0.0.1", server.port, mail_from="a@elsewhere.test", rcpt_to="b@lab.test", message=big,
                        timeout=5)
    assert d.accepted is not None and d.accepted.text.startswith("552 5.3.4")


def test_idle_clients_are_dropped_with_421(lab_server: Start) -> None:
    server = lab_server(command_timeout=0.3)
    data = _talk(server.port, [b"EHLO x\r\n"], expect=20)
    assert b"421 4.4.1 Connection timed out" in data


def test_the_session_cap_turns_extra_clients_away(lab_server: Start) -> None:
    # The only slot is held by a client that keeps working (a NOOP every 0.1 s): the newcomer waits for a slot
    # (no banner) for stress_timeout + 1 s, then gets the personality's busy reply.
    import threading

    server = lab_server(max_sessions=1, stress_timeout=0.5)
    hold = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    stop = threading.Event()

    def keep_busy() -> None:
        f = hold.makefile("rb")
        f.readline()
        while not stop.is_set():
            hold.sendall(b"NOOP\r\n")
            f.readline()
            time.sleep(0.1)

    worker = threading.Thread(target=keep_busy, daemon=True)
    worker.start()
    try:
        started = time.monotonic()
        data = _talk(server.port, [], expect=1)
        assert data.startswith(b"421 4.3.2 The maximum number of concurrent server connections"), data
        assert 1.2 < time.monotonic() - started < 4
    finally:
        stop.set()
        worker.join(5)
        hold.close()


def test_maildir_message_records_tls_and_domain_security(lab_server: Start, lab_pki: LabPki,
                                                         tmp_path: Path) -> None:
    server = lab_server()
    assert deliver(server, lab_pki.identity("trusted")).delivered
    files = list((tmp_path / "maildir" / "new").iterdir())
    assert len(files) == 1
    text = files[0].read_bytes().decode()
    assert text.startswith("Received: from localhost ([127.0.0.1])")
    assert "with ESMTPS" in text and "version=TLSv1." in text
    assert 'client certificate "CN=mx.contoso.test"' in text and "(verified OK)" in text
    assert "domain-secured=yes contoso.test" in text
    assert text.endswith("hello\r\n")


def test_sender_shows_the_queue_like_get_queue(lab_server: Start, lab_pki: LabPki) -> None:
    server = lab_server()
    foreign = lab_pki.identity("foreign")
    result = send_message("alice@contoso.test", "bob@lab.test", identity=foreign, via=f"127.0.0.1:{server.port}",
                          timeout=5)
    assert not result.delivered
    lines = queue_lines(result)
    assert "NextHopDomain : lab.test" in lines
    assert "Status        : Retry" in lines
    assert ('LastError     : 451 4.4.0 Primary target IP address responded with: "454 4.7.5 Certificate '
            'validation failure." Attempted failover to alternate host, but that did not succeed. Either there '
            'are no alternate hosts, or delivery failed to all alternate hosts.') in lines
    # The lab sends its root as the acceptable issuer, and ours is self-signed: no issuer of ours to send.
    assert "peer.rejected-self-signed" in [f.code for f in result.findings]


def test_domain_secure_sender_checks_the_receiver_before_data(lab_server: Start, lab_pki: LabPki) -> None:
    server = lab_server()
    trusted = lab_pki.identity("trusted")
    # We do not trust the lab's root: the message must not be sent.
    result = send_message("alice@contoso.test", "bob@lab.test", identity=trusted, via=f"127.0.0.1:{server.port}",
                          anchors=AnchorSet(), domain_secure=True, timeout=5)
    assert not result.delivered and result.attempts[0].data is None
    assert result.last_error is not None and "on our side" in result.last_error
    assert "chain.unknown-issuer" in [f.code for f in result.findings]
    ok = send_message("alice@contoso.test", "bob@lab.test", identity=trusted, via=f"127.0.0.1:{server.port}",
                      anchors=AnchorSet.of([lab_pki.root.cert]), timeout=5)
    assert ok.delivered


def _write_identity(tmp_path: Path, name: str, pki: LabPki, which: str) -> tuple[str, str]:
    issued = {"trusted": pki.client, "foreign": pki.foreign}[which]
    cert, key = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
    cert.write_bytes(issued.pem)
    key.write_bytes(issued.key_pem)
    return str(cert), str(key)


def test_cli_send_exit_codes_and_queue(lab_server: Start, lab_pki: LabPki, tmp_path: Path) -> None:
    server = lab_server()
    runner = CliRunner()
    for which, code in (("trusted", 0), ("foreign", 1)):
        cert, key = _write_identity(tmp_path, which, lab_pki, which)
        res = runner.invoke(lab, ["send", "--from", "alice@contoso.test", "--to", "bob@lab.test", "--via",
                                  f"127.0.0.1:{server.port}", "--cert", cert, "--key", key, "--home",
                                  str(tmp_path / "home"), "--timeout", "5"])
        assert res.exit_code == code, res.output
        if code:
            assert "LastError     : 451 4.4.0 Primary target IP address responded with: \"454 4.7.5" in res.output
            assert "peer.rejected-self-signed" in res.output
        else:
            assert res.output.startswith("Delivered to lab.test via 127.0.0.1:")


def test_cli_send_escapes_the_receiver_s_control_characters(lab_pki: LabPki, tmp_path: Path) -> None:
    """The queue's LastError and the diagnosis quote the receiver's reply: its ESC and CR are escaped."""
    evil = "454 4.7.5 \x1b[31mCertificate validation failure\r\x1b[2K"
    srv = SmtpTestServer(Scripted(identity=lab_pki.server, hostname="mx\x1b[1m.lab.test",
                                  mail_reply_after_tls=evil))
    try:
        cert, key = _write_identity(tmp_path, "evil", lab_pki, "trusted")
        res = CliRunner().invoke(lab, ["send", "--from", "alice@contoso.test", "--to", "bob@lab.test", "--via",
                                       f"127.0.0.1:{srv.port}", "--cert", cert, "--key", key, "--home",
                                       str(tmp_path / "home"), "--timeout", "5", "-v"])
    finally:
        srv.close()
    assert res.exit_code == 1, res.output
    assert "\x1b" not in res.stdout and "\r" not in res.stdout
    assert 'responded with: "454 4.7.5 \\x1b[31mCertificate validation failure\\r\\x1b[2K' in res.stdout
    assert "220 mx\\x1b[1m.lab.test Microsoft ESMTP MAIL Service ready at " in res.stdout  # Exchange's banner


def test_cli_serve_refuses_a_key_that_does_not_match(lab_pki: LabPki, tmp_path: Path) -> None:
    cert, _ = _write_identity(tmp_path, "a", lab_pki, "trusted")
    _, key = _write_identity(tmp_path, "b", lab_pki, "foreign")
    res = CliRunner().invoke(lab, ["serve", "--cert", cert, "--key", key, "--listen", "127.0.0.1:0"])
    assert res.exit_code == 2 and "does not belong to the certificate" in res.output


def test_the_demo_tells_the_whole_story(tmp_path: Path) -> None:
    lines: list[str] = []
    started = time.monotonic()
    result = run_demo(lines.append, folder=tmp_path / "demo")
    assert time.monotonic() - started < 30
    assert result.ok
    text = "\n".join(lines)
    assert ('LastError     : 451 4.4.0 Primary target IP address responded with: "454 4.7.5 Certificate '
            'validation failure."') in text
    assert "peer.rejected-self-signed" in text and "certkit ca issue" in text
    for n in range(1, 5):
        assert f"\n{n}. " in text
    assert "Delivered: 250 2.6.0" in text and "domain-secured=contoso.com" in text
    assert "domain-secured=fabrikam.com" in text
    mail = list((tmp_path / "demo" / "fabrikam.com" / "maildir" / "new").iterdir())
    assert len(mail) == 1 and "domain-secured=yes contoso.com" in mail[0].read_bytes().decode()
    # Step 4 shows what `certkit config exchange --target 2010` writes, line for line (one renderer).
    step4 = text.split("\n4. ", 1)[1]
    for needed in ('Set-TransportConfig -TLSSendDomainSecureList @{Add="fabrikam.com"}',
                   # Issue 12: the root is read under the name it was given (fabrikam.com-root.crt), not a made-up .cer.
                   "-Password $pfxPassword", 'certutil -addstore Root "C:\\certkit\\fabrikam.com-root.crt"',
                   "Set-TransportConfig -TLSSendDomainSecureList", "# on a Hub Transport server (EdgeSync)",
                   'Set-ReceiveConnector -Identity "Default internal receive connector $env:COMPUTERNAME" '
                   "-DomainSecureEnabled $true -AuthMechanism Tls, ExchangeServer"):
        assert needed in step4, needed
    assert "Get-Credential" not in text and "certutil -addstore -f" not in text
    from certkit.cli.common import CertkitGroup
    from certkit.cli.config import COMMANDS as CONFIG_COMMANDS
    from certkit.core.formats import load_certificates, pfx_bytes
    from certkit.core.keys import load_private_key

    group = CertkitGroup("certkit")
    for config_command in CONFIG_COMMANDS:
        group.add_command(config_command)
    home = tmp_path / "demo" / "contoso.com"
    cert = load_certificates((home / "certs" / "mail.contoso.com.crt").read_bytes())[0]
    key = load_private_key((home / "certs" / "mail.contoso.com.key").read_bytes(), None)
    (tmp_path / "mail.contoso.com.pfx").write_bytes(pfx_bytes(key, cert, [], b"pw"))
    res = CliRunner(env={"CERTKIT_PFX_PASSWORD": "pw"}).invoke(group, [
        "config", "exchange", "--partner", "fabrikam.com", "--cert-pfx", str(tmp_path / "mail.contoso.com.pfx"),
        "--target", "2010", "--partner-root", str(tmp_path / "demo" / "fabrikam.com" / "fabrikam.com-root.crt")])
    assert res.exit_code == 0, res.output
    shown = (home / "enable-domain-security-fabrikam.com.ps1").read_text()
    assert res.stdout == shown
    commands = [line for line in shown.splitlines() if line.strip() and not line.startswith("#")]
    for line in commands:
        assert line in step4, line


def test_cli_demo_cleans_up(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    res = CliRunner().invoke(lab, ["demo"])
    assert res.exit_code == 0, res.output
    assert "the scenario went as expected" in res.output
    assert list(tmp_path.iterdir()) == []


def _trickle(port: int, before: bytes, trickle: bytes) -> tuple[bytes, int]:
    """Send ``before``, then ``trickle`` one byte every 0.1 s (well within any per-read timeout); return what
    the server said and how many trickled bytes it took before it closed the session."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        data = sock.recv(4096)
        sock.sendall(before)
        sent = 0
        sock.settimeout(0.1)
        for byte in trickle:
            try:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
                if b"421 " in data:
                    break
            except TimeoutError:
                pass
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                break
            sent += 1
        sock.settimeout(5)
        try:
            while b"421 " not in data:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
        except OSError:
            pass
        return data, sent


def test_a_trickling_client_gets_421_per_command_deadline(lab_server: Start, time_limit: Callable[[float], None]
                                                          ) -> None:
    server = lab_server(command_timeout=1.0, data_timeout=1.0)
    # One command line sent a byte at a time: each read is quick, the whole line is not.
    line = b"NOOP " + b"x" * 200 + b"\r\n"
    data, sent = _trickle(server.port, b"", line)
    assert b"421 4.4.1 Connection timed out" in data, data
    assert sent < len(line)  # the line was never finished: the session ended during it
    record = server.wait_for_session(lambda r: r.error == "timeout")
    assert record is not None
    # The same inside DATA: the message body trickles in.
    body = b"Subject: slow\r\n\r\n" + b"y" * 200 + b"\r\n.\r\n"
    data, sent = _trickle(server.port, b"EHLO x\r\nMAIL FROM:<a@elsewhere.test>\r\nRCPT TO:<b@lab.test>\r\nDATA\r\n",
                          body)
    assert b"354 " in data and b"421 4.4.1 Connection timed out" in data, data
    assert sent < len(body)
