"""Network and DNS findings carry RFC 3463 statuses and Exchange's texts, from the catalogue (one source)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from certkit.checks.probe import ProbeOptions, probe_sync
from certkit.core.findings import CATALOGUE
from certkit.lab.sender import FAILOVER, send_message
from tests.dnsserver import DnsServer
from tests.smtp_servers import Handler, SmtpTestServer, raw_close_mid_reply, raw_silent

Start = Callable[[Handler], SmtpTestServer]


@pytest.mark.parametrize(("code", "status", "text"), [
    ("net.refused", "4.4.1", "Winsock error code: 10061"),
    ("net.timeout", "4.4.1", "Winsock error code: 10060"),
    ("net.closed", "4.4.2", "421 4.4.2 Connection dropped due to SocketError"),
    ("dns.failure", "4.4.3", "451 4.4.0 DNS query failed."),
    ("dns.no-mx", "5.4.4", "451 4.4.0 DNS query failed."),
])
def test_network_codes_have_status_and_exchange_text(code: str, status: str, text: str) -> None:
    entry = CATALOGUE[code]
    assert entry.enhanced_status == status
    assert entry.exchange_text is not None and text in entry.exchange_text


def test_sender_reads_the_connect_error_from_the_catalogue() -> None:
    sent = send_message("alice@contoso.test", "bob@fabrikam.test", identity=None, via="127.0.0.1:1", timeout=2)
    assert sent.last_error == f"{CATALOGUE['net.refused'].exchange_text} {FAILOVER}"
    assert sent.last_error.startswith('441 4.4.1 Error encountered while communicating with primary target IP '
                                      'address: "Failed to connect. Winsock error code: 10061, Win32 error code: '
                                      '10061." Attempted failover')


def test_sender_shows_a_dropped_connection(smtp_server: Start) -> None:
    srv = smtp_server(raw_close_mid_reply)
    sent = send_message("alice@contoso.test", "bob@fabrikam.test", identity=None, via=f"127.0.0.1:{srv.port}",
                        timeout=2)
    assert sent.last_error == f"{CATALOGUE['net.closed'].exchange_text} {FAILOVER}"


def test_probe_statuses_per_occurrence(smtp_server: Start) -> None:
    silent = smtp_server(raw_silent)
    results = probe_sync(["127.0.0.1:1", f"127.0.0.1:{silent.port}"], options=ProbeOptions(timeout=0.5))
    refused = results[0].addresses[0].findings[0].to_dict()
    assert (refused["code"], refused["enhanced_status"]) == ("net.refused", "4.4.1")
    assert "10061" in refused["exchange_text"]
    timeout = results[1].addresses[0].findings[0].to_dict()
    # Connected, then no answer: a bad connection (4.4.2), not "no answer from host".
    assert (timeout["code"], timeout["enhanced_status"]) == ("net.timeout", "4.4.2")
    assert "Connection dropped due to TimedOut" in timeout["exchange_text"]


@pytest.mark.parametrize(("domain", "code", "status"), [
    ("nowhere.test", "dns.failure", "5.1.2"),
    ("nullmx.test", "dns.no-mx", "5.1.10"),
    ("nothing.test", "dns.no-mx", "5.4.4"),
    ("broken.test", "dns.failure", "4.4.3"),
])
def test_dns_statuses(dns_server: DnsServer, domain: str, code: str, status: str) -> None:
    [result] = probe_sync([domain], options=ProbeOptions(nameserver=dns_server.address, timeout=1))
    [f] = result.findings
    data = f.to_dict()
    assert (data["code"], data["enhanced_status"]) == (code, status)
    assert data["exchange_text"] == f"451 4.4.0 DNS query failed. The error was: {f.detail}"
