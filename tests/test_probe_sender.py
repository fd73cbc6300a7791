"""The lab sender and the probe share one rule for "they refused our certificate" (and its wording)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from certkit.adapters.transport import ClientIdentity
from certkit.checks.probe import ProbeOptions, probe_sync
from certkit.lab.sender import send_message
from tests.pki import make_intermediate, make_leaf, make_root
from tests.smtp_servers import Handler, Scripted, SmtpTestServer

Start = Callable[[Handler], SmtpTestServer]
ROOT = make_root("Sender Rule Root")
INTER = make_intermediate(ROOT, "Sender Rule Issuing CA")
SERVER = make_leaf(INTER, ["mx1.fabrikam.test", "fabrikam.test"])
FOREIGN = make_leaf(make_root("Contoso Foreign Root", org="Contoso Foreign"), ["edge.contoso.test"])
OURS = ClientIdentity(FOREIGN.cert, FOREIGN.key)


@pytest.mark.parametrize(("reply", "code", "where"), [
    ("454 4.7.5 Certificate validation failure", "peer.rejected-issuer-not-accepted", "at MAIL FROM"),
    ("421 4.3.2 System not accepting network messages", "smtp.mail-refused", "at MAIL FROM"),
    ("554 5.7.1 Sender rejected by policy", "peer.rejected-weak-session", "at MAIL FROM"),
    ("550 5.7.1 Sender rejected by policy", "smtp.mail-refused", "at MAIL FROM"),
])
def test_sender_and_probe_judge_a_refusal_at_mail_alike(smtp_server: Start, reply: str, code: str,
                                                         where: str) -> None:
    srv = smtp_server(Scripted(identity=SERVER, chain=[INTER.cert], client_cas=[INTER.cert],
                               mail_reply_after_tls=reply))
    sent = send_message("alice@contoso.test", "bob@fabrikam.test", identity=OURS, via=f"127.0.0.1:{srv.port}",
                        timeout=3)
    assert not sent.delivered
    probed = probe_sync([f"127.0.0.1:{srv.port}"], anchors=[ROOT.cert], identity=OURS,
                        options=ProbeOptions(validator="postfix", domain="fabrikam.test",
                                             mail_from="alice@contoso.test", rcpt_to="bob@fabrikam.test", timeout=3))
    smtp_codes = [f.code for f in sent.findings if f.code.startswith(("peer.", "smtp."))]
    assert smtp_codes == [code]
    assert [f.code for f in probed[0].addresses[0].findings] == [code]
    [f] = [f for f in sent.findings if f.code == code]
    assert f.evidence["step"] == where and where in f.detail
    assert "after the handshake" not in f.detail


def test_sender_names_a_refusal_right_after_the_handshake(smtp_server: Start) -> None:
    srv = smtp_server(Scripted(identity=SERVER, chain=[INTER.cert], trusted=[INTER.cert]))
    sent = send_message("alice@contoso.test", "bob@fabrikam.test", identity=OURS, via=f"127.0.0.1:{srv.port}",
                        timeout=3)
    [f] = [f for f in sent.findings if f.code.startswith("peer.")]
    assert f.code == "peer.rejected-issuer-not-accepted"
    assert f.evidence["step"] == "after the handshake" and "after the handshake" in f.detail
    assert "Client certificate not trusted" in f.detail
