"""Our self-signed client certificate refused by a real lab endpoint (Exchange and Postfix personalities).

A self-signed certificate has no issuer and no root to send: the probe names it (``peer.rejected-self-signed``)
with its own remedy -- a certificate from our CA, or the partner trusting that exact certificate -- rather
than "our issuer is not among the issuers they accept ... send the partner our root".
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from certkit.checks.probe import ProbeOptions, probe_sync
from certkit.core.findings import CATALOGUE, Severity, Side
from certkit.lab.server import LabServer, Personality
from tests.lab_fixtures import LabPki

pytestmark = pytest.mark.usefixtures("time_limit")

Start = Callable[..., LabServer]
REPLY = {Personality.EXCHANGE: ("454 4.7.5 Certificate validation failure", "at MAIL FROM"),
         Personality.POSTFIX: ("421 4.7.1 mx.lab.test Error: Client certificate not trusted", "after the handshake")}


def _findings(server: LabServer, pki: LabPki, which: str) -> list:  # type: ignore[type-arg]
    options = ProbeOptions(validator="postfix", domain="lab.test", mail_from="alice@contoso.test",
                           rcpt_to="bob@lab.test", timeout=5)
    results = probe_sync([f"127.0.0.1:{server.port}"], anchors=[pki.root.cert], identity=pki.identity(which),
                         options=options)
    [addr] = results[0].addresses
    assert addr.session is not None and addr.session.tls is not None and addr.session.tls.client_cert_sent
    return [f for f in results[0].all_findings if f.severity is Severity.ERROR]


@pytest.mark.parametrize("personality", [Personality.EXCHANGE, Personality.POSTFIX])
def test_a_self_signed_client_certificate_gets_the_self_signed_finding(lab_server: Start, lab_pki: LabPki,
                                                                       personality: Personality) -> None:
    server = lab_server(personality=personality)
    [f] = _findings(server, lab_pki, "foreign")  # self-signed, as New-ExchangeCertificate makes it
    reply, step = REPLY[personality]
    assert f.code == "peer.rejected-self-signed" and f.side is Side.OURS
    assert f.evidence["reply"] == reply and f.evidence["step"] == step
    assert "self-signed" in f.detail and step in f.detail
    assert f.evidence["acceptable_issuers"] == [lab_pki.root.cert.subject.rfc4514_string()]
    assert f.exchange_text == f'451 4.4.0 Primary target IP address responded with: "{reply}."'
    # The remedy: a certificate from our CA, or the partner trusting this exact certificate; never "send our root"
    # as the only way out (there is no root of a self-signed certificate).
    remedy = f.entry.remedy
    assert "certkit ca issue" in remedy and "exact certificate" in remedy and "Cert:\\LocalMachine\\Root" in remedy
    assert remedy != CATALOGUE["peer.rejected-issuer-not-accepted"].remedy
    assert "issued by none of the 1 issuer(s) they accept" in f.detail


@pytest.mark.parametrize("personality", [Personality.EXCHANGE, Personality.POSTFIX])
def test_a_certificate_from_another_ca_still_gets_the_issuer_finding(lab_server: Start, lab_pki: LabPki,
                                                                    personality: Personality) -> None:
    server = lab_server(personality=personality)
    [f] = _findings(server, lab_pki, "other")  # CA-issued, from a root they do not list
    assert f.code == "peer.rejected-issuer-not-accepted"
    assert "Send the partner our root" in f.entry.remedy
