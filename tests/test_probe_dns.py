"""Host names in targets go through dnspython and --nameserver (the loopback DNS server), never the system resolver."""

from __future__ import annotations

from collections.abc import Callable

from certkit.checks.probe import ProbeOptions, exit_code, probe_sync
from certkit.lab.sender import send_message
from tests.dnsserver import DnsServer
from tests.pki import make_intermediate, make_leaf, make_root
from tests.smtp_servers import Handler, Scripted, SmtpTestServer

Start = Callable[[Handler], SmtpTestServer]
ROOT = make_root("DNS Probe Root")
INTER = make_intermediate(ROOT, "DNS Probe Issuing CA")
SERVER = make_leaf(INTER, ["mx1.fabrikam.test", "fabrikam.test"])


def test_host_and_port_is_resolved_with_the_nameserver(dns_server: DnsServer, smtp_server: Start) -> None:
    srv = smtp_server(Scripted(identity=SERVER, chain=[INTER.cert]))
    [result] = probe_sync([f"mx1.fabrikam.test:{srv.port}"], anchors=[ROOT.cert],
                          options=ProbeOptions(validator="postfix", nameserver=dns_server.address,
                                               name="mx1.fabrikam.test", timeout=2))
    assert ("mx1.fabrikam.test.", "A") in dns_server.queries and ("mx1.fabrikam.test.", "AAAA") in dns_server.queries
    # Every address (A then AAAA) is probed, each reported separately, with the name as SNI and subject.
    assert [(a.host, a.address, a.port) for a in result.addresses] == [
        ("mx1.fabrikam.test", "127.0.0.1", srv.port), ("mx1.fabrikam.test", "::1", srv.port)]
    first = result.addresses[0]
    assert first.reached and first.findings == [] and first.session is not None
    assert first.session.server_name == "mx1.fabrikam.test"


def test_host_that_does_not_resolve_is_a_dns_failure(dns_server: DnsServer) -> None:
    results = probe_sync(["gone.fabrikam.test:25", "slow.test:25"],
                         options=ProbeOptions(nameserver=dns_server.address, timeout=0.5))
    for r, host in zip(results, ["gone.fabrikam.test", "slow.test"], strict=True):
        assert r.addresses == []
        [f] = r.findings
        assert f.code == "dns.failure" and f.subject == host
    assert "NXDOMAIN" in results[0].findings[0].detail and "in time" in results[1].findings[0].detail
    assert exit_code(results) == 3


def test_sender_via_host_name_uses_the_nameserver(dns_server: DnsServer) -> None:
    sent = send_message("alice@contoso.test", "bob@fabrikam.test", identity=None, via="gone.fabrikam.test:25",
                        nameserver=dns_server.address, timeout=1)
    assert not sent.delivered and sent.attempts == []
    assert [f.code for f in sent.findings] == ["dns.failure"]
    assert sent.last_error is not None and sent.last_error.startswith("451 4.4.0 DNS query failed.")
    assert ("gone.fabrikam.test.", "A") in dns_server.queries


def test_localhost_is_loopback_without_dns(dns_server: DnsServer) -> None:
    [result] = probe_sync(["localhost:1"], options=ProbeOptions(nameserver=dns_server.address, timeout=1))
    assert [a.address for a in result.addresses] == ["127.0.0.1"]
    assert [f.code for f in result.all_findings] == ["net.refused"]
    assert not any(name.startswith("localhost") for name, _ in dns_server.queries)


def test_every_mx_host_without_an_address_is_reported(dns_server: DnsServer) -> None:
    [result] = probe_sync(["halfmx.test"], options=ProbeOptions(port=1, nameserver=dns_server.address, timeout=1))
    dns = [(f.code, f.subject, f.severity) for f in result.findings]
    # Mail can still go to v4.halfmx.test: the dangling MX hosts are warnings, each named.
    assert dns == [("dns.failure", "gone.halfmx.test", "warning"), ("dns.failure", "noaddr.halfmx.test", "warning")]
    assert "NXDOMAIN" in result.findings[0].detail and "preference 10" in result.findings[0].detail
    assert result.findings[0].to_dict()["enhanced_status"] == "5.1.2"
    assert [a.host for a in result.addresses] == ["v4.halfmx.test"]


def test_mx_hosts_all_without_address_are_errors(dns_server: DnsServer) -> None:
    [result] = probe_sync(["dangling.test"], options=ProbeOptions(nameserver=dns_server.address, timeout=1))
    assert [(f.code, f.subject, f.severity) for f in result.findings] == [
        ("dns.failure", "gone.dangling.test", "error")]
    assert result.addresses == [] and exit_code([result]) == 3
