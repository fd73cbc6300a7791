"""The probe end to end: DNS on loopback, in-test STARTTLS servers, real Postfix."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from certkit.adapters.transport import ClientIdentity
from certkit.checks.probe import ProbeOptions, exit_code, parse_target, probe_sync
from certkit.errors import InputError
from tests.dnsserver import DnsServer
from tests.fixtures_net import require_postfix
from tests.pki import make_intermediate, make_leaf, make_root, make_self_signed
from tests.postfix import PostfixInstance
from tests.smtp_servers import Handler, Scripted, SmtpTestServer

Start = Callable[[Handler], SmtpTestServer]
ROOT = make_root("Fabrikam Root")
INTER = make_intermediate(ROOT, "Fabrikam Issuing CA")
SERVER = make_leaf(INTER, ["mx1.fabrikam.test", "fabrikam.test"])
CLIENT = make_leaf(INTER, ["edge.contoso.test"])
FOREIGN = make_leaf(make_root("Contoso Root"), ["edge.contoso.test"])


@pytest.fixture
def dns() -> Iterator[DnsServer]:
    zones = {"fabrikam.test": {"MX": ["10 mx1.fabrikam.test."]}, "mx1.fabrikam.test": {"A": ["127.0.0.1"]}}
    with DnsServer(zones) as srv:
        yield srv


def codes(results: list) -> list[str]:  # type: ignore[type-arg]
    return [f.code for r in results for f in r.all_findings]


@pytest.mark.parametrize(("text", "host", "port", "is_domain"), [
    ("fabrikam.com", "fabrikam.com", 25, True),
    ("mx.fabrikam.com:2525", "mx.fabrikam.com", 2525, False),
    ("192.0.2.1", "192.0.2.1", 25, False),
    ("[2001:db8::1]:587", "2001:db8::1", 587, False),
])
def test_parse_target(text: str, host: str, port: int, is_domain: bool) -> None:
    t = parse_target(text)
    assert (t.host, t.port, t.is_domain) == (host, port, is_domain)


def test_parse_target_refuses_bad_ports() -> None:
    with pytest.raises(InputError):
        parse_target("mx:99999")


def test_domain_through_mx_with_a_good_chain(smtp_server: Start, dns: DnsServer) -> None:
    srv = smtp_server(Scripted(identity=SERVER, chain=[INTER.cert]))
    results = probe_sync(["fabrikam.test"], anchors=[ROOT.cert],
                         options=ProbeOptions(port=srv.port, nameserver=dns.address, validator="postfix", timeout=3))
    [addr] = results[0].addresses
    assert (addr.host, addr.address) == ("mx1.fabrikam.test", "127.0.0.1")
    assert addr.ok, addr.findings
    # No client certificate was presented: TLS and their certificate are fine, Domain Security untested.
    assert addr.verdict.startswith("TLS and their certificate OK; Domain Security not tested: no client certificate")
    assert addr.domain_security_untested == [
        "no client certificate was presented (use --as NAME or --client-cert/--client-key)"]
    assert addr.session is not None and addr.session.rcpt is not None
    assert addr.session.rcpt.lines == ("2.1.5 Recipient OK",)  # the Exchange personality's text
    assert exit_code(results) == 0


def test_exchange_validator_requires_revocation(smtp_server: Start) -> None:
    srv = smtp_server(Scripted(identity=SERVER, chain=[INTER.cert]))
    results = probe_sync([f"127.0.0.1:{srv.port}"], anchors=[ROOT.cert],
                         options=ProbeOptions(domain="fabrikam.test", timeout=3))
    assert "revocation.no-cdp" in codes(results)
    assert exit_code(results) == 1


def test_self_signed_server(smtp_server: Start) -> None:
    srv = smtp_server(Scripted(identity=make_self_signed(["mx1.fabrikam.test"])))
    results = probe_sync([f"127.0.0.1:{srv.port}"], anchors=[ROOT.cert],
                         options=ProbeOptions(validator="postfix", timeout=3))
    assert "chain.self-signed" in codes(results)
    assert results[0].addresses[0].verdict == "would fail: self-signed certificate"


def test_no_starttls_and_injection(smtp_server: Start) -> None:
    a = smtp_server(Scripted(identity=SERVER, offer_starttls=False))
    b = smtp_server(Scripted(identity=SERVER, chain=[INTER.cert], inject=b"250 injected\r\n"))
    results = probe_sync([f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"], anchors=[ROOT.cert],
                         options=ProbeOptions(validator="postfix", timeout=3))
    assert [f.code for f in results[0].all_findings] == ["smtp.no-starttls"]
    assert "smtp.starttls-injection" in [f.code for f in results[1].all_findings]


def test_unreachable_is_exit_3() -> None:
    results = probe_sync(["127.0.0.1:1"], options=ProbeOptions(timeout=1))
    assert codes(results) == ["net.refused"]
    assert exit_code(results) == 3


def test_dns_failure(dns: DnsServer) -> None:
    results = probe_sync(["nowhere.test"], options=ProbeOptions(nameserver=dns.address, timeout=2))
    assert codes(results) == ["dns.failure"]


def test_our_certificate_rejected_by_an_exchange_like_server(smtp_server: Start) -> None:
    # The probe sends MAIL FROM:<probe@contoso.test> (our certificate's domain): domain-secure there.
    srv = smtp_server(Scripted(identity=SERVER, chain=[INTER.cert], trusted=[INTER.cert], exchange=True,
                               domain_secure=["contoso.test"]))
    results = probe_sync([f"127.0.0.1:{srv.port}"], anchors=[ROOT.cert],
                         identity=ClientIdentity(FOREIGN.cert, FOREIGN.key),
                         options=ProbeOptions(validator="postfix", timeout=3))
    assert "peer.rejected-issuer-not-accepted" in codes(results)
    [f] = [f for f in results[0].all_findings if f.code == "peer.rejected-issuer-not-accepted"]
    assert f.evidence["reply"] == "454 4.7.5 Certificate validation failure"
    assert f.entry.exchange_text == '451 4.4.0 Primary target IP address responded with: ' \
                                    '"454 4.7.5 Certificate validation failure."'


@pytest.fixture(scope="module")
def postfix_req() -> Iterator[PostfixInstance]:
    require_postfix()
    with PostfixInstance(SERVER.cert, SERVER.key, [INTER.cert], client_ca=[ROOT.cert, INTER.cert],
                         hostname="mx1.fabrikam.test") as pf:
        yield pf


def _probe_pf(pf: PostfixInstance, identity: ClientIdentity | None) -> list:  # type: ignore[type-arg]
    return probe_sync([f"127.0.0.1:{pf.port}"], anchors=[ROOT.cert], identity=identity,
                      options=ProbeOptions(domain="fabrikam.test", validator="postfix", timeout=5))


def test_postfix_their_certificate_fine_ours_missing(postfix_req: PostfixInstance) -> None:
    results = _probe_pf(postfix_req, None)
    assert codes(results) == ["peer.rejected-no-client-cert"]
    assert results[0].addresses[0].verification is not None and results[0].addresses[0].verification.ok


def test_postfix_foreign_client_certificate(postfix_req: PostfixInstance) -> None:
    results = _probe_pf(postfix_req, ClientIdentity(FOREIGN.cert, FOREIGN.key))
    assert codes(results) == ["peer.rejected-issuer-not-accepted"]
    assert "Client certificate not trusted" in results[0].addresses[0].findings[0].detail


def test_postfix_trusted_client_certificate_would_deliver(postfix_req: PostfixInstance) -> None:
    results = _probe_pf(postfix_req, ClientIdentity(CLIENT.cert, CLIENT.key, (INTER.cert,)))
    assert codes(results) == []
    assert exit_code(results) == 0
