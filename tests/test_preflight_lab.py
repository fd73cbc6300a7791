"""The pre-flight against certkit's own lab endpoint (exchange personality), found through a loopback DNS
server: a ready pair, and the partner's Edge refusing our certificate with 454 4.7.5 at MAIL FROM."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager

from cryptography import x509

from certkit.checks.preflight import PreflightReport, render_text
from certkit.core.trust import AnchorSet
from certkit.lab.server import EXCHANGE_REJECT, LabConfig, LabServer, Personality, run_in_thread
from tests.pki import Issued, make_leaf
from tests.test_preflight_world import World


def fabrikam_edge(w: World, trusted: Sequence[x509.Certificate]) -> AbstractContextManager[LabServer]:
    """Fabrikam's Edge: the lab endpoint with the exchange personality (and Exchange's revocation rules),
    contoso.test in its TLSReceiveDomainSecureList, trusting ``trusted``."""
    config = LabConfig(w.their_leaf.cert, w.their_leaf.key, (w.their_inter.cert,),
                       anchors=AnchorSet.of(list(trusted), origin="managed"), domain_secure=("contoso.test",),
                       personality=Personality.EXCHANGE, hostname="mx1.fabrikam.test", command_timeout=10.0,
                       handshake_timeout=5.0, crl_timeout=3.0)
    return run_in_thread(config)


def run(w: World, server: LabServer, leaf: Issued | None = None) -> PreflightReport:
    return w.preflight(leaf=leaf, port=server.port)


def test_ready_against_an_exchange_lab_edge(base: World, time_limit: Callable[[float], None]) -> None:
    with fabrikam_edge(base, [base.our_root.cert]) as server:
        report = run(base, server)
        assert report.ready and report.exit_code == 0, [(i.step, i.finding.code, i.finding.detail)
                                                         for i in report.items]
        record = server.wait_for_session(lambda r: r.mail_from is not None)
    assert record is not None
    # The lab judged our certificate as Exchange does: at MAIL FROM, for our domain, CRLs fetched.
    assert record.mail_from == "probe@contoso.test" and record.helo == "edge.contoso.test"
    assert record.verdict == "trusted" and record.domain_secured == "contoso.test" and record.rejection is None
    assert record.client_subject == base.our_leaf.cert.subject.rfc4514_string()
    assert "Verdict:   READY" in render_text(report)


def test_partner_edge_rejects_us_with_454(base: World, time_limit: Callable[[float], None]) -> None:
    with fabrikam_edge(base, [base.their_root.cert]) as server:  # Fabrikam trusts only its own root
        report = run(base, server)
        record = server.wait_for_session(lambda r: r.rejection is not None)
    assert not report.ready and report.exit_code == 1
    rejected = [i for i in report.blocking if i.finding.code.startswith("peer.rejected")]
    assert rejected, [(i.step, i.finding.code) for i in report.items]
    assert rejected[0].step == "endpoints" and rejected[0].directions == ("outbound",)
    assert EXCHANGE_REJECT in rejected[0].finding.detail
    assert rejected[0].where is not None and rejected[0].where.startswith("mx1.fabrikam.test [127.0.0.1]:")
    # The lab's own log says why, with the same finding the probe would give.
    assert record is not None and record.rejection == EXCHANGE_REJECT and record.mail_from == "probe@contoso.test"
    assert "chain.unknown-issuer" in {f.code for f in record.findings}
    text = render_text(report)
    assert "NOT READY" in text and "454 4.7.5" in text


def test_the_partner_edge_sees_mail_from_our_domain(base: World, time_limit: Callable[[float], None]) -> None:
    """Our Edge's name need not be <host>.<our domain>: MAIL FROM carries --our-domain, so the partner's Edge
    applies Domain Security (a sender domain outside its list would be plain opportunistic TLS)."""
    leaf = make_leaf(base.our_inter, ["mx.eu.contoso.test", "contoso.test"], key_type="rsa",
                     cdp=base.http.url("contoso-issuing.crl"))
    with fabrikam_edge(base, [base.our_root.cert]) as server:
        report = run(base, server, leaf)
        record = server.wait_for_session(lambda r: r.mail_from is not None)
    assert report.ready, [(i.step, i.finding.code, i.finding.detail) for i in report.items]
    assert record is not None and record.mail_from == "probe@contoso.test" and record.helo == "mx.eu.contoso.test"
    assert record.domain_secured == "contoso.test" and record.verdict == "trusted"
