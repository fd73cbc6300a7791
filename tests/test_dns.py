"""Mail routing against a real DNS server on 127.0.0.1."""

from __future__ import annotations

import time

import pytest

from certkit.adapters.dns import parse_nameserver, resolve_host, resolve_mail_domain
from certkit.errors import InputError
from tests.dnsserver import DnsServer


def test_mx_by_preference_with_every_address(dns_server: DnsServer) -> None:
    route = resolve_mail_domain("fabrikam.test", nameserver=dns_server.address, timeout=2)
    assert route.failure is None and not route.implicit
    assert [(h.name, h.preference) for h in route.hosts] == [("mx1.fabrikam.test", 10), ("mx2.fabrikam.test", 20)]
    assert route.targets == [("mx1.fabrikam.test", "127.0.0.1"), ("mx1.fabrikam.test", "::1"),
                             ("mx2.fabrikam.test", "127.0.0.2"), ("mx2.fabrikam.test", "127.0.0.3")]


def test_no_mx_means_the_domain_itself(dns_server: DnsServer) -> None:
    route = resolve_mail_domain("nomx.test", nameserver=dns_server.address, timeout=2)
    assert route.implicit and route.failure is None
    assert route.targets == [("nomx.test", "127.0.0.4")]


def test_no_mx_and_no_address_is_no_mx(dns_server: DnsServer) -> None:
    route = resolve_mail_domain("nothing.test", nameserver=dns_server.address, timeout=2)
    assert route.failure is not None and route.failure.code == "dns.no-mx"
    assert route.targets == []


def test_null_mx_accepts_no_mail(dns_server: DnsServer) -> None:
    route = resolve_mail_domain("nullmx.test", nameserver=dns_server.address, timeout=2)
    assert route.null_mx
    assert route.failure is not None and route.failure.code == "dns.no-mx" and "RFC 7505" in route.failure.detail


def test_nxdomain_is_a_dns_failure(dns_server: DnsServer) -> None:
    route = resolve_mail_domain("nowhere.test", nameserver=dns_server.address, timeout=2)
    assert route.failure is not None and route.failure.code == "dns.failure" and "NXDOMAIN" in route.failure.detail


def test_mx_without_address_is_a_dns_failure(dns_server: DnsServer) -> None:
    route = resolve_mail_domain("dangling.test", nameserver=dns_server.address, timeout=2)
    assert route.failure is not None and route.failure.code == "dns.failure"
    assert route.hosts[0].failure is not None


def test_servfail_is_a_dns_failure(dns_server: DnsServer) -> None:
    route = resolve_mail_domain("broken.test", nameserver=dns_server.address, timeout=2)
    assert route.failure is not None and route.failure.code == "dns.failure"


def test_silent_server_times_out_quickly(dns_server: DnsServer) -> None:
    t0 = time.monotonic()
    host = resolve_host("slow.test", nameserver=dns_server.address, timeout=0.5)
    assert time.monotonic() - t0 < 3
    assert host.failure is not None and "in time" in host.failure.detail


def test_tcp_is_served_too(dns_server: DnsServer) -> None:
    import dns.message
    import dns.query

    q = dns.message.make_query("mx1.fabrikam.test", "A")
    r = dns.query.tcp(q, "127.0.0.1", port=dns_server.port, timeout=2)
    assert [str(rr) for rr in r.answer[0]] == ["127.0.0.1"]


@pytest.mark.parametrize(("text", "expected"), [
    ("127.0.0.1", ("127.0.0.1", 53)),
    ("127.0.0.1:5353", ("127.0.0.1", 5353)),
    ("[::1]:5353", ("::1", 5353)),
    ("::1", ("::1", 53)),
])
def test_parse_nameserver(text: str, expected: tuple[str, int]) -> None:
    assert parse_nameserver(text) == expected


@pytest.mark.parametrize("text", ["ns.example", "127.0.0.1:0", "127.0.0.1:x", "[::1"])
def test_parse_nameserver_refuses_bad_input(text: str) -> None:
    with pytest.raises(InputError):
        parse_nameserver(text)
