"""The probe's diagnosis matrix: one in-test STARTTLS server per failure, exact finding codes and exit codes.

Their certificates come from a test PKI whose CRL distribution points point at a loopback HTTP
server (:class:`tests.fixtures_net.HttpFiles`), so the ``exchange`` validator (revocation required)
sees a fully checkable chain, a revoked leaf, and an unreachable CRL. Every server runs on 127.0.0.1;
every probe has a short timeout.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from OpenSSL import SSL

from certkit.adapters.transport import ClientIdentity
from certkit.checks.probe import ProbeOptions, ProbeResult, exit_code, probe_sync
from certkit.core.findings import Severity
from certkit.core.jsonfacts import serial_hex
from certkit.lab.httpfiles import HttpFiles
from tests.pki import CLIENT, NOW, Issued, make_crl, make_intermediate, make_leaf, make_root, make_self_signed
from tests.smtp_servers import (
    LATE_INJECTION,
    Handler,
    Scripted,
    SmtpTestServer,
    raw_close_mid_reply,
    raw_garbage,
    raw_huge_line,
    raw_silent,
    raw_starttls_close,
    raw_starttls_garbage,
    raw_starttls_late_injection,
    raw_starttls_silent,
    raw_trickle,
)

Start = Callable[[Handler], SmtpTestServer]
DAY = dt.timedelta(days=1)
NAMES = ["mx1.fabrikam.test", "fabrikam.test"]
DEAD_CRL = "http://127.0.0.1:1/dead.crl"  # nothing listens on port 1


@dataclass(frozen=True)
class Pki:
    root: Issued
    inter: Issued
    crls: HttpFiles

    def leaf(self, names: list[str] = NAMES, *, cdp: str | None = "", **kwargs: object) -> Issued:
        """A leaf of ``inter`` whose CDP is the served CRL (``cdp=None``: none; a URL: that one)."""
        return make_leaf(self.inter, names, cdp=self.crls.url("inter.crl") if cdp == "" else cdp,
                         **kwargs)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def pki() -> Iterator[Pki]:
    with HttpFiles() as crls:
        root = make_root("Fabrikam Matrix Root")
        inter = make_intermediate(root, "Fabrikam Matrix Issuing CA", cdp=crls.url("root.crl"))
        crls.files["/root.crl"] = make_crl(root).public_bytes(serialization.Encoding.DER)
        crls.files["/inter.crl"] = b""  # filled by _serve_inter_crl
        p = Pki(root, inter, crls)
        yield p


REVOKED: dict[str, Issued] = {}


def _revoked_leaf(pki: Pki) -> Issued:
    if "leaf" not in REVOKED:
        REVOKED["leaf"] = pki.leaf()
    return REVOKED["leaf"]


@pytest.fixture(autouse=True)
def _serve_inter_crl(pki: Pki) -> None:
    revoked = _revoked_leaf(pki)
    pki.crls.files["/inter.crl"] = make_crl(pki.inter, revoked=[revoked.cert.serial_number]).public_bytes(
        serialization.Encoding.PEM)


#: The verdict of a clean session that presented no client certificate: Domain Security was not tested.
NO_CLIENT_CERT = ("TLS and their certificate OK; Domain Security not tested: no client certificate was presented "
                  "(use --as NAME or --client-cert/--client-key)")


def codes(results: list[ProbeResult]) -> list[str]:
    return [f.code for r in results for f in r.all_findings]


def errors(results: list[ProbeResult]) -> list[str]:
    return [f.code for r in results for f in r.all_findings if f.severity is Severity.ERROR]


def _probe(srv: SmtpTestServer, pki: Pki, *, validator: str = "exchange", timeout: float = 3,
           identity: ClientIdentity | None = None, **name_rule: str) -> list[ProbeResult]:
    options = ProbeOptions(validator=validator, timeout=timeout,  # type: ignore[arg-type]
                           **(name_rule or {"domain": "fabrikam.test"}))  # type: ignore[arg-type]
    return probe_sync([f"127.0.0.1:{srv.port}"], anchors=[pki.root.cert], identity=identity, options=options)


# --- their certificate -------------------------------------------------------------------------------


@pytest.mark.parametrize("validator", ["exchange", "postfix"])
def test_good_chain_with_checkable_revocation(smtp_server: Start, pki: Pki, validator: str) -> None:
    srv = smtp_server(Scripted(identity=pki.leaf(), chain=[pki.inter.cert]))
    results = _probe(srv, pki, validator=validator)
    assert codes(results) == []
    [addr] = results[0].addresses
    assert addr.verdict == NO_CLIENT_CERT
    assert addr.verification is not None and addr.verification.ok
    assert exit_code(results) == 0


def test_good_chain_fetches_each_crl_once_per_run(smtp_server: Start, pki: Pki) -> None:
    leaf = pki.leaf()
    servers = [smtp_server(Scripted(identity=leaf, chain=[pki.inter.cert])) for _ in range(3)]
    before = dict(pki.crls.hits)
    results = probe_sync([f"127.0.0.1:{s.port}" for s in servers], anchors=[pki.root.cert],
                         options=ProbeOptions(domain="fabrikam.test", timeout=3))
    assert codes(results) == []
    assert pki.crls.hits["/inter.crl"] - before.get("/inter.crl", 0) == 1
    assert pki.crls.hits["/root.crl"] - before.get("/root.crl", 0) == 1


@pytest.mark.parametrize(("case", "expected"), [
    ("self-signed", ["chain.self-signed"]),
    ("unknown-ca", ["chain.unknown-issuer"]),
    ("expired", ["cert.expired"]),
    ("not-yet-valid", ["cert.not-yet-valid"]),
    ("missing-intermediate", ["chain.missing-intermediate"]),
    ("no-server-auth", ["eku.no-server-auth"]),
])
@pytest.mark.parametrize("validator", ["exchange", "postfix"])
def test_their_certificate(smtp_server: Start, pki: Pki, case: str, expected: list[str], validator: str) -> None:
    chain = [pki.inter.cert]
    if case == "self-signed":
        identity = make_self_signed(NAMES)
        chain = []
    elif case == "unknown-ca":
        other = make_intermediate(make_root("Northwind Root", org="Northwind"), "Northwind CA", org="Northwind")
        identity, chain = make_leaf(other, NAMES), [other.cert]
    elif case == "expired":
        identity = pki.leaf(not_before=NOW - 40 * DAY, not_after=NOW - DAY)
    elif case == "not-yet-valid":
        identity = pki.leaf(not_before=NOW + DAY, not_after=NOW + 40 * DAY)
    elif case == "missing-intermediate":
        identity, chain = pki.leaf(), []
    else:
        identity = pki.leaf(eku=[CLIENT])
    srv = smtp_server(Scripted(identity=identity, chain=chain))
    results = _probe(srv, pki, validator=validator)
    assert errors(results) == expected
    assert codes(results) == expected  # nothing else: no noise around the cause
    [addr] = results[0].addresses
    assert addr.verdict.startswith("would fail: ")
    assert not addr.ok
    assert exit_code(results) == 1


def test_wrong_name_domain_rule(smtp_server: Start, pki: Pki) -> None:
    srv = smtp_server(Scripted(identity=pki.leaf(["mx1.northwind.test"]), chain=[pki.inter.cert]))
    results = _probe(srv, pki, domain="fabrikam.test")
    assert codes(results) == ["name.domain-mismatch"]
    assert exit_code(results) == 1


def test_host_in_partner_domain_satisfies_domain_rule(smtp_server: Start, pki: Pki) -> None:
    srv = smtp_server(Scripted(identity=pki.leaf(["mx7.fabrikam.test"]), chain=[pki.inter.cert]))
    assert codes(_probe(srv, pki, domain="fabrikam.test")) == []


def test_wrong_name_host_rule(smtp_server: Start, pki: Pki) -> None:
    srv = smtp_server(Scripted(identity=pki.leaf(), chain=[pki.inter.cert]))
    assert codes(_probe(srv, pki, name="mx1.fabrikam.test")) == []
    results = _probe(srv, pki, name="mx2.fabrikam.test")
    assert codes(results) == ["name.host-mismatch"]
    assert exit_code(results) == 1


# --- revocation -----------------------------------------------------------------------------------------


def test_revoked_exchange_fails(smtp_server: Start, pki: Pki) -> None:
    srv = smtp_server(Scripted(identity=_revoked_leaf(pki), chain=[pki.inter.cert]))
    results = _probe(srv, pki, validator="exchange")
    assert codes(results) == ["revocation.revoked"]
    [f] = results[0].all_findings
    assert f.severity is Severity.ERROR
    assert f.evidence["serial"] == serial_hex(_revoked_leaf(pki).cert.serial_number)
    assert f.entry.exchange_text == "The certificate has been revoked."
    assert exit_code(results) == 1


def test_revoked_postfix_is_information(smtp_server: Start, pki: Pki) -> None:
    srv = smtp_server(Scripted(identity=_revoked_leaf(pki), chain=[pki.inter.cert]))
    results = _probe(srv, pki, validator="postfix")
    assert codes(results) == ["revocation.revoked"]
    assert [f.severity for f in results[0].all_findings] == [Severity.INFO]
    assert results[0].addresses[0].ok
    assert exit_code(results) == 0


def test_crl_unreachable_exchange_is_an_error(smtp_server: Start, pki: Pki) -> None:
    srv = smtp_server(Scripted(identity=pki.leaf(cdp=DEAD_CRL), chain=[pki.inter.cert]))
    results = _probe(srv, pki, validator="exchange")
    assert codes(results) == ["revocation.unreachable"]
    [f] = results[0].all_findings
    assert f.severity is Severity.ERROR
    assert f.side == "network"
    assert f.entry.exchange_text == "RevocationCheckFailure"
    assert f.evidence["crl_fetch"][0]["url"] == DEAD_CRL
    assert "refused" in f.evidence["crl_fetch"][0]["error"]
    assert DEAD_CRL in f.detail
    assert results[0].addresses[0].verdict == "would fail: revocation could not be checked"
    assert exit_code(results) == 1


def test_crl_unreachable_postfix_is_information(smtp_server: Start, pki: Pki) -> None:
    srv = smtp_server(Scripted(identity=pki.leaf(cdp=DEAD_CRL), chain=[pki.inter.cert]))
    results = _probe(srv, pki, validator="postfix")
    assert codes(results) == ["revocation.unreachable"]
    assert results[0].all_findings[0].severity is Severity.INFO
    assert results[0].addresses[0].verdict == NO_CLIENT_CERT
    assert exit_code(results) == 0


def test_crl_not_found_is_unreachable_not_revoked(smtp_server: Start, pki: Pki) -> None:
    srv = smtp_server(Scripted(identity=pki.leaf(cdp=pki.crls.url("missing.crl")), chain=[pki.inter.cert]))
    results = _probe(srv, pki)
    assert codes(results) == ["revocation.unreachable"]
    assert "HTTP 404" in results[0].all_findings[0].evidence["crl_fetch"][0]["error"]


def test_no_cdp_exchange_fails_postfix_does_not_care(smtp_server: Start, pki: Pki) -> None:
    srv = smtp_server(Scripted(identity=pki.leaf(cdp=None), chain=[pki.inter.cert]))
    assert codes(_probe(srv, pki, validator="exchange")) == ["revocation.no-cdp"]
    assert codes(_probe(srv, pki, validator="postfix")) == []


# --- SMTP ------------------------------------------------------------------------------------------------


def test_no_starttls(smtp_server: Start, pki: Pki) -> None:
    srv = smtp_server(Scripted(identity=pki.leaf(), offer_starttls=False))
    results = _probe(srv, pki)
    assert codes(results) == ["smtp.no-starttls"]
    [addr] = results[0].addresses
    assert addr.session is not None and addr.session.tls is None and addr.session.starttls is None
    assert exit_code(results) == 1


def test_starttls_injection_is_discarded_and_reported(smtp_server: Start, pki: Pki) -> None:
    srv = smtp_server(Scripted(identity=pki.leaf(), chain=[pki.inter.cert],
                               inject=b"250-injected\r\n250 PIPELINING\r\n"))
    results = _probe(srv, pki)
    assert codes(results) == ["smtp.starttls-injection"]
    [addr] = results[0].addresses
    assert addr.session is not None
    assert addr.session.injected == b"250-injected\r\n250 PIPELINING\r\n"
    # The injected lines were not taken as the reply to the EHLO after the handshake.
    assert addr.session.tls_ehlo is not None and addr.session.tls_ehlo.lines[0] == "mx.test Hello [127.0.0.1]"
    assert addr.session.rcpt is not None and addr.session.rcpt.code == 250
    assert exit_code(results) == 1


def test_starttls_injection_during_the_handshake_is_reported(smtp_server: Start, pki: Pki) -> None:
    """Plaintext that arrives after our ClientHello breaks the handshake: still an injection, with the bytes."""
    srv = smtp_server(raw_starttls_late_injection)
    results = _probe(srv, pki, timeout=2)
    assert codes(results) == ["smtp.starttls-injection", "tls.handshake-failed"]
    injection, failed = results[0].all_findings
    assert injection.evidence["data"] == "250-injected.test\\r\\n250 PIPELINING\\r\\n"
    assert "during the TLS handshake" in injection.detail and "discarded" not in injection.detail
    assert failed.evidence["stage"] == "handshake"
    [addr] = results[0].addresses
    assert addr.session is not None and addr.session.injected == LATE_INJECTION
    assert addr.verdict == "would fail: STARTTLS response injection"
    assert exit_code(results) == 1


def test_starttls_refused(smtp_server: Start, pki: Pki) -> None:
    srv = smtp_server(Scripted(identity=pki.leaf(), starttls_reply="454 4.7.0 TLS not available due to local problem"))
    results = _probe(srv, pki)
    assert codes(results) == ["smtp.starttls-refused"]
    assert exit_code(results) == 1


def test_tls_required_without_starttls(smtp_server: Start, pki: Pki) -> None:
    srv = smtp_server(Scripted(identity=pki.leaf(), offer_starttls=False, require_tls_for_mail=True))
    assert codes(_probe(srv, pki)) == ["smtp.no-starttls", "smtp.tls-required"]


@pytest.mark.parametrize(("handler", "expected", "stage"), [
    (raw_trickle, "net.timeout", "banner"),
    (raw_silent, "net.timeout", "banner"),
    (raw_garbage, "smtp.protocol-error", "banner"),
    (raw_huge_line, "smtp.protocol-error", "banner"),
    (raw_close_mid_reply, "net.closed", "banner"),
    (raw_starttls_silent, "net.timeout", "starttls"),
    (raw_starttls_garbage, "tls.handshake-failed", "handshake"),
    (raw_starttls_close, "tls.handshake-failed", "handshake"),
], ids=["trickle", "silent", "garbage", "huge-line", "close-mid-reply", "starttls-silent", "not-tls",
        "close-before-handshake"])
def test_slow_and_broken_servers(smtp_server: Start, pki: Pki, handler: Handler, expected: str, stage: str) -> None:
    srv = smtp_server(handler)
    results = _probe(srv, pki, timeout=1)
    assert codes(results) == [expected]
    [f] = results[0].all_findings
    assert f.evidence["stage"] == stage
    [addr] = results[0].addresses
    assert addr.session is not None and addr.session.seconds < 3  # bounded by the step timeout
    assert exit_code(results) == 1  # connected, so "reached": an error, not "unreachable"


# --- our certificate refused at MAIL FROM (Exchange accepts EHLO after the handshake, then refuses) --------


@pytest.mark.parametrize(("reply", "expected"), [
    ("454 4.7.5 Certificate validation failure", ["peer.rejected-issuer-not-accepted"]),
    ("530 5.7.1 Client was not authenticated", ["peer.rejected-issuer-not-accepted"]),
])
def test_rejection_at_mail_from(smtp_server: Start, pki: Pki, reply: str, expected: list[str]) -> None:
    foreign = make_leaf(make_root("Contoso Other Root", org="Contoso Other"), ["edge.contoso.test"])
    srv = smtp_server(Scripted(identity=pki.leaf(), chain=[pki.inter.cert], client_cas=[pki.inter.cert],
                               mail_reply_after_tls=reply))
    results = _probe(srv, pki, validator="postfix", identity=ClientIdentity(foreign.cert, foreign.key))
    assert codes(results) == expected
    [f] = results[0].all_findings
    assert f.evidence["step"] == "at MAIL FROM" and f.evidence["reply"] == reply
    assert "at MAIL FROM" in f.detail
    assert exit_code(results) == 1


@pytest.mark.parametrize(("reply", "status", "side", "exchange"), [
    ("421 4.3.2 System not accepting network messages", "4.3.2", "theirs",
     '451 4.4.0 Primary target IP address responded with: "421 4.3.2 System not accepting network messages."'),
    ("451 4.3.0 Temporary lookup failure", "4.3.0", "theirs",
     '451 4.4.0 Primary target IP address responded with: "451 4.3.0 Temporary lookup failure."'),
    ("550 5.7.1 Sender rejected by policy", "5.7.1", "configuration", None),
    ("503 5.5.1 Error: nested MAIL command", "5.5.1", "theirs", None),
    ("550 Sender refused", "5.0.0", "theirs", None),
])
def test_refusal_at_mail_from_is_never_success(smtp_server: Start, pki: Pki, reply: str, status: str, side: str,
                                                exchange: str | None) -> None:
    """Not a refusal of our certificate, but no mail would go: an error with the reply's status."""
    foreign = make_leaf(make_root("Contoso Other Root", org="Contoso Other"), ["edge.contoso.test"])
    srv = smtp_server(Scripted(identity=pki.leaf(), chain=[pki.inter.cert], client_cas=[pki.inter.cert],
                               mail_reply_after_tls=reply))
    results = _probe(srv, pki, validator="postfix", identity=ClientIdentity(foreign.cert, foreign.key))
    assert codes(results) == ["smtp.mail-refused"]
    [addr] = results[0].addresses
    assert addr.verdict == "would fail: MAIL FROM refused"
    [f] = addr.findings
    data = f.to_dict()
    assert data["enhanced_status"] == status and data["side"] == side and data["tlsrpt_result_type"] is None
    assert data["exchange_text"] == (exchange or "451 4.4.0 Primary target IP address responded with: "
                                     '"<their reply to MAIL FROM>."')
    assert f.evidence["reply"] == reply and reply in f.detail
    assert exit_code(results) == 1


@pytest.mark.parametrize("offer_starttls", [False, True])
def test_refused_greeting_is_never_success(smtp_server: Start, pki: Pki, offer_starttls: bool) -> None:
    srv = smtp_server(Scripted(identity=pki.leaf(), chain=[pki.inter.cert], offer_starttls=offer_starttls,
                               ehlo_reply="550 5.7.1 Access denied"))
    results = _probe(srv, pki)
    assert codes(results) == ["smtp.ehlo-refused"]
    [addr] = results[0].addresses
    assert not addr.ok and addr.verdict == "would fail: EHLO refused"
    assert addr.findings[0].to_dict()["enhanced_status"] == "5.7.1"


def test_refused_recipient_is_not_would_deliver(smtp_server: Start, pki: Pki) -> None:
    srv = smtp_server(Scripted(identity=pki.leaf(), chain=[pki.inter.cert],
                               rcpt_reply="550 5.1.1 <postmaster@fabrikam.test>: Recipient address rejected"))
    results = _probe(srv, pki)
    assert codes(results) == ["smtp.recipient-refused"]
    [addr] = results[0].addresses
    assert "would deliver" not in addr.verdict and "recipient was refused" in addr.verdict
    assert addr.findings[0].to_dict()["enhanced_status"] == "5.1.1"
    assert addr.findings[0].severity is Severity.WARNING
    assert exit_code(results) == 0  # a configuration warning about the test address, not a TLS error


@pytest.mark.parametrize("version", [SSL.TLS1_VERSION, SSL.TLS1_1_VERSION], ids=["TLSv1", "TLSv1.1"])
def test_old_protocol_is_observed_and_reported(smtp_server: Start, pki: Pki, version: int) -> None:
    """The client offers TLS 1.0 and up at security level 0, so an old server is reported, not refused."""
    srv = smtp_server(Scripted(identity=pki.leaf(key_type="rsa"), chain=[pki.inter.cert], tls_version=version))
    results = _probe(srv, pki)
    if results[0].addresses[0].session is not None and results[0].addresses[0].session.tls is None:
        pytest.skip(f"this OpenSSL cannot do {version:#x} even at security level 0: {codes(results)}")
    assert codes(results) == ["tls.old-protocol"]
    [addr] = results[0].addresses
    assert addr.session is not None and addr.session.tls is not None
    assert addr.session.tls.version == {SSL.TLS1_VERSION: "TLSv1", SSL.TLS1_1_VERSION: "TLSv1.1"}[version]
    assert addr.findings[0].severity is Severity.WARNING
    assert addr.verdict == NO_CLIENT_CERT
    assert exit_code(results) == 0


def test_554_to_every_command_after_tls_is_a_weak_session(smtp_server: Start, pki: Pki) -> None:
    """RFC 3207 4.1: a server that finds the TLS session too weak answers 554 to every command but QUIT."""
    ours = make_leaf(pki.inter, ["edge.contoso.test"], eku=[CLIENT])
    srv = smtp_server(Scripted(identity=pki.leaf(), chain=[pki.inter.cert],
                               after_tls_reply="554 5.7.0 Command refused due to lack of security"))
    results = _probe(srv, pki, identity=ClientIdentity(ours.cert, ours.key))
    assert codes(results) == ["peer.rejected-weak-session"]
    [addr] = results[0].addresses
    [f] = addr.findings
    assert f.evidence["step"] == "after the handshake"
    assert f.evidence["reply"] == "554 5.7.0 Command refused due to lack of security"
    assert addr.session is not None and addr.session.mail is None  # nothing was sent after the refused EHLO
    assert addr.verdict == "would fail: the receiver finds the session too weak"
    assert exit_code(results) == 1


def _crl_without_number(issuer: Issued) -> x509.CertificateRevocationList:
    """Correctly signed by ``issuer``, but without the CRL number RFC 5280 5.2.3 requires."""
    return (x509.CertificateRevocationListBuilder().issuer_name(issuer.cert.subject)
            .last_update(NOW - dt.timedelta(hours=1)).next_update(NOW + 7 * DAY)
            .sign(issuer.key, hashes.SHA256()))


@pytest.mark.parametrize("case", ["no-crl-number", "this-update-in-the-future"])
def test_a_correctly_signed_but_unusable_crl_is_invalid_under_exchange(smtp_server: Start, pki: Pki,
                                                                       case: str) -> None:
    path = f"/{case}.crl"
    crl = (_crl_without_number(pki.inter) if case == "no-crl-number"
           else make_crl(pki.inter, this_update=NOW + DAY, next_update=NOW + 8 * DAY))
    pki.crls.files[path] = crl.public_bytes(serialization.Encoding.DER)
    srv = smtp_server(Scripted(identity=pki.leaf(cdp=pki.crls.url(path)), chain=[pki.inter.cert]))
    results = _probe(srv, pki, validator="exchange")
    # The CRL was fetched: it is invalid, not unreachable.
    assert codes(results) == ["revocation.crl-invalid"]
    f = results[0].all_findings[0]
    assert f.severity is Severity.ERROR
    expected = "has no CRL number" if case == "no-crl-number" else "is dated in the future"
    assert f.evidence["problem"].startswith(expected)
    assert f.entry.exchange_text == "RevocationCheckFailure"
    assert exit_code(results) == 1
    # Postfix checks no revocation: the same facts are information only.
    relaxed = _probe(srv, pki, validator="postfix")
    assert [(f.code, f.severity) for f in relaxed[0].all_findings] == [("revocation.crl-invalid", Severity.INFO)]
    assert exit_code(relaxed) == 0
