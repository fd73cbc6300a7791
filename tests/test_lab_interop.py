"""Real clients against ``lab serve``: swaks, openssl s_client, posttls-finger, and real Postfix as the sending MTA.

Each sees the reply of the chosen personality. Tools that are missing skip locally and fail under CI=true.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from certkit.checks.probe import ProbeOptions, probe_sync, rejection_of_us
from certkit.lab.server import LabServer, Personality
from tests.fixtures_net import require_postfix
from tests.lab_fixtures import LabPki, PostfixSender
from tests.tools import require_tool

pytestmark = pytest.mark.usefixtures("time_limit")

Start = Callable[..., LabServer]
EXCHANGE_454 = "454 4.7.5 Certificate validation failure"
POSTFIX_421 = "421 4.7.1 mx.lab.test Error: Client certificate not trusted"
POSTFIX_NONE = "421 4.7.1 mx.lab.test Error: No client certificate presented"


@pytest.fixture(scope="module")
def pem_files(lab_pki: LabPki, tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("lab-pem")
    for name, issued in (("root", lab_pki.root), ("trusted", lab_pki.client), ("foreign", lab_pki.foreign)):
        (d / f"{name}.crt").write_bytes(issued.pem)
        (d / f"{name}.key").write_bytes(issued.key_pem)
    (d / "main.cf").write_text("compatibility_level = 3.6\n")
    return d


def _run(args: list[str], *, stdin: str | None = None, env: dict[str, str] | None = None
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, input=stdin, capture_output=True, text=True, timeout=30, check=False, env=env)


def _cert_args(pem: Path, which: str, cert: str, key: str) -> list[str]:
    return [] if which == "none" else [cert, str(pem / f"{which}.crt"), key, str(pem / f"{which}.key")]


@pytest.mark.parametrize(("personality", "which", "expected"), [
    (Personality.EXCHANGE, "trusted", "250 2.6.0"),
    (Personality.EXCHANGE, "foreign", EXCHANGE_454),
    (Personality.EXCHANGE, "none", EXCHANGE_454),
    (Personality.POSTFIX, "trusted", "250 2.0.0 Ok: queued as"),
    (Personality.POSTFIX, "foreign", POSTFIX_421),
    (Personality.POSTFIX, "none", POSTFIX_NONE),
])
def test_swaks_sees_the_personality_reply(lab_server: Start, pem_files: Path, personality: Personality,
                                          which: str, expected: str) -> None:
    swaks = require_tool("swaks")
    server = lab_server(personality=personality)
    r = _run([swaks, "--server", "127.0.0.1", "--port", str(server.port), "--tls", "--from", "alice@contoso.test",
              "--to", "bob@lab.test", "--timeout", "10", *_cert_args(pem_files, which, "--tls-cert", "--tls-key")])
    assert expected in r.stdout, r.stdout
    assert (r.returncode == 0) is (which == "trusted")


@pytest.mark.parametrize(("personality", "which", "expected"), [
    (Personality.EXCHANGE, "trusted", "250 2.1.0 Sender OK"),
    (Personality.EXCHANGE, "foreign", EXCHANGE_454),
    (Personality.EXCHANGE, "none", EXCHANGE_454),
    (Personality.POSTFIX, "trusted", "250 2.1.0 Ok"),
    (Personality.POSTFIX, "foreign", POSTFIX_421),
    (Personality.POSTFIX, "none", POSTFIX_NONE),
])
def test_openssl_s_client_sees_the_personality_reply(lab_server: Start, pem_files: Path, personality: Personality,
                                                     which: str, expected: str) -> None:
    openssl = require_tool("openssl")
    server = lab_server(personality=personality)
    r = _run([openssl, "s_client", "-starttls", "smtp", "-connect", f"127.0.0.1:{server.port}", "-quiet", "-crlf",
              *_cert_args(pem_files, which, "-cert", "-key")],
             stdin="EHLO client.contoso.test\nMAIL FROM:<alice@contoso.test>\nQUIT\n")
    assert expected in r.stdout, r.stdout + r.stderr


@pytest.mark.parametrize(("personality", "which", "expected"), [
    # Exchange accepts EHLO after the handshake whatever the certificate and refuses later, at MAIL FROM,
    # which posttls-finger never sends.
    (Personality.EXCHANGE, "trusted", "< 250 8BITMIME"),
    (Personality.EXCHANGE, "foreign", "< 250 8BITMIME"),
    (Personality.EXCHANGE, "none", "< 250 8BITMIME"),
    (Personality.POSTFIX, "trusted", "< 250 8BITMIME"),
    (Personality.POSTFIX, "foreign", f"EHLO rejected: {POSTFIX_421}"),
    (Personality.POSTFIX, "none", f"EHLO rejected: {POSTFIX_NONE}"),
])
def test_posttls_finger_sees_the_personality_reply(lab_server: Start, pem_files: Path, personality: Personality,
                                                   which: str, expected: str) -> None:
    finger = require_tool("posttls-finger")
    server = lab_server(personality=personality)
    env = dict(os.environ, MAIL_CONFIG=str(pem_files))
    r = _run([finger, "-l", "secure", "-h", "native", "-F", str(pem_files / "root.crt"),
              *_cert_args(pem_files, which, "-k", "-K"), f"[127.0.0.1]:{server.port}", "lab.test"], env=env)
    out = r.stdout + r.stderr
    assert "Verified TLS connection established" in out, out
    assert expected in out, out


# --- real Postfix as the sending MTA --------------------------------------------------------------------


@pytest.fixture
def postfix_sender(lab_pki: LabPki) -> Iterator[Callable[[str, int], PostfixSender]]:
    require_postfix()
    started: list[PostfixSender] = []

    def start(which: str, lab_port: int) -> PostfixSender:
        client = {"trusted": lab_pki.client, "foreign": lab_pki.foreign}[which]
        pf = PostfixSender(client, lab_pki.root.cert, lab_port)
        started.append(pf)
        pf.start()
        return pf

    yield start
    for pf in started:
        pf.stop()


def _wait_status(pf: PostfixSender, timeout: float = 20.0) -> str:
    log = pf.wait_for_log("status=", timeout)
    m = re.search(r"status=(\w+) \((.*)\)", log)
    assert m, log
    return m.group(0)


#: Postfix's "(in reply to X command)" -> where the probe says the refusal came (rejection_of_us).
_POSTFIX_STEP = {"EHLO": "after the handshake", "MAIL FROM": "at MAIL FROM", "RCPT TO": "at RCPT TO"}


def _postfix_refusal(status: str) -> tuple[str, str]:
    """The remote reply Postfix logged and where it came: ``... said: R (in reply to X command))``, or
    ``... refused to talk to me: R)`` for a refusal of its EHLO (here after the handshake: the certificate
    was judged)."""
    m = re.search(r"said: (.+) \(in reply to (EHLO|MAIL FROM|RCPT TO) command\)", status)
    if m:
        return m.group(1), _POSTFIX_STEP[m.group(2)]
    m = re.search(r"refused to talk to me: (.+)\)$", status)
    assert m, status
    return m.group(1), "after the handshake"


@dataclass(frozen=True)
class ProbeView:
    """What certkit's probe saw against the same endpoint with the same client certificate."""

    errors: frozenset[str]
    refusal: tuple[str, str] | None   # (reply text, where), as rejection_of_us says


def _probe_view(server: LabServer, pki: LabPki, which: str) -> ProbeView:
    results = probe_sync([f"127.0.0.1:{server.port}"], anchors=[pki.root.cert], identity=pki.identity(which),
                         options=ProbeOptions(validator="postfix", domain="lab.test", mail_from="alice@contoso.test",
                                              rcpt_to="bob@lab.test", timeout=5))
    [addr] = results[0].addresses
    assert addr.session is not None
    refusal = rejection_of_us(addr.session)
    return ProbeView(frozenset(f.code for f in results[0].all_findings if f.severity == "error"),
                     None if refusal is None else (refusal[1].text, refusal[0]))


@pytest.mark.parametrize("personality", [Personality.EXCHANGE, Personality.POSTFIX])
def test_postfix_sender_with_a_foreign_certificate_is_deferred_with_the_lab_reply(
        lab_server: Start, lab_pki: LabPki, postfix_sender: Callable[[str, int], PostfixSender],
        time_limit: Callable[[float], None], tmp_path: Path, personality: Personality) -> None:
    time_limit(45)
    server = lab_server(personality=personality)
    pf = postfix_sender("foreign", server.port)
    pf.submit("alice@contoso.test", "bob@lab.test")
    status = _wait_status(pf)
    assert status.startswith("status=deferred"), status
    logged = _postfix_refusal(status)
    if personality is Personality.EXCHANGE:
        assert logged == (EXCHANGE_454, "at MAIL FROM")
    else:
        assert logged == (POSTFIX_421, "after the handshake")
    assert not (tmp_path / "maildir" / "new").exists() or not list((tmp_path / "maildir" / "new").iterdir())
    # certkit's probe agrees, finding for finding: the same reply at the same step, and exactly one cause
    # (our certificate is self-signed: not "our issuer is not on their list", there is no issuer to send).
    seen = _probe_view(server, lab_pki, "foreign")
    assert seen.refusal == logged
    assert seen.errors == {"peer.rejected-self-signed"}


@pytest.mark.parametrize("personality", [Personality.EXCHANGE, Personality.POSTFIX])
def test_postfix_sender_with_a_trusted_certificate_delivers_into_the_maildir(
        lab_server: Start, lab_pki: LabPki, postfix_sender: Callable[[str, int], PostfixSender],
        time_limit: Callable[[float], None], tmp_path: Path, personality: Personality) -> None:
    time_limit(45)
    server = lab_server(personality=personality)
    pf = postfix_sender("trusted", server.port)
    pf.submit("alice@contoso.test", "bob@lab.test", subject="domain secured")
    status = _wait_status(pf)
    assert status.startswith("status=sent"), status
    assert ("250 2.6.0" if personality is Personality.EXCHANGE else "250 2.0.0 Ok: queued as") in status
    files = list((tmp_path / "maildir" / "new").iterdir())
    assert len(files) == 1
    text = files[0].read_bytes().decode()
    assert "Received: from mx.contoso.test" in text and "Subject: domain secured" in text
    if personality is Personality.EXCHANGE:
        assert "domain-secured=yes contoso.test" in text
    assert "Verified TLS connection established" in pf.log()
    # certkit's probe agrees: no refusal, no error.
    assert _probe_view(server, lab_pki, "trusted") == ProbeView(frozenset(), None)


@pytest.mark.parametrize(("personality", "which", "errors", "reply", "where"), [
    (Personality.EXCHANGE, "foreign", {"peer.rejected-self-signed"}, EXCHANGE_454, "at MAIL FROM"),
    (Personality.EXCHANGE, "other", {"peer.rejected-issuer-not-accepted"}, EXCHANGE_454, "at MAIL FROM"),
    (Personality.EXCHANGE, "none", {"peer.rejected-no-client-cert"}, EXCHANGE_454, "at MAIL FROM"),
    (Personality.POSTFIX, "foreign", {"peer.rejected-self-signed"}, POSTFIX_421, "after the handshake"),
    (Personality.POSTFIX, "other", {"peer.rejected-issuer-not-accepted"}, POSTFIX_421, "after the handshake"),
    (Personality.POSTFIX, "none", {"peer.rejected-no-client-cert"}, POSTFIX_NONE, "after the handshake"),
])
def test_probe_names_the_cause_and_the_reply_of_each_personality(
        lab_server: Start, lab_pki: LabPki, personality: Personality, which: str, errors: set[str], reply: str,
        where: str) -> None:
    seen = _probe_view(lab_server(personality=personality), lab_pki, which)
    assert seen == ProbeView(frozenset(errors), (reply, where))
