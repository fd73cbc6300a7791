"""DANE in the probe (RFC 7672): TLSA looked up beside the session, trusted only with the resolver's AD bit.

The loopback DNS server of tests/dnsserver.py answers as a validating resolver would: :class:`AdDnsServer`
sets the AD bit on the names it is told are secure (and SERVFAILs the bogus ones), and records whether each
query asked for DNSSEC (AD flag, EDNS DO). The MX host is 127.0.0.1, the lab's Scripted STARTTLS server on a
free port; the TLSA owner name carries that port (``_PORT._tcp.mx.dane.test.``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import pytest
from click.testing import CliRunner

from certkit.adapters.dns import lookup_tlsa
from certkit.adapters.truststore import TrustStore
from certkit.checks.probe import AddressResult, ProbeOptions, ProbeResult, exit_code, probe_sync
from certkit.cli import main
from certkit.core.dane import tlsa_for
from certkit.schemas import load
from tests.dnssec_lab import DnssecLab
from tests.dnsserver import DnsServer, Zones
from tests.pki import make_intermediate, make_leaf, make_root
from tests.smtp_servers import Handler, Scripted, SmtpTestServer

Start = Callable[[Handler], SmtpTestServer]
ROOT = make_root("DANE Probe Root")
INTER = make_intermediate(ROOT, "DANE Probe Issuing CA")
SERVER = make_leaf(INTER, ["mx.dane.test", "dane.test"])
# Names only the next-hop domain, not the MX host: DANE-TA accepts it (RFC 7672 3.2.2).
DOMAIN_ONLY = make_leaf(INTER, ["dane.test"])
OTHER_ROOT = make_root("Some Other Root")
EE = tlsa_for(SERVER.cert, 3).text()          # 3 1 1 <SHA-256 of the server's key>
TA = tlsa_for(INTER.cert, 2).text()           # 2 1 1 <SHA-256 of the issuing CA's key>
WRONG = "3 1 1 " + "ab" * 32


class AdDnsServer(DnsServer):
    """:class:`DnsServer` as a validating resolver: AD on ``secure`` names; records the DNSSEC request bits."""

    def __init__(self, zones: Zones, *, secure: Iterable[str] = (), **kwargs: Any) -> None:
        self.secure = {dns.name.from_text(n) for n in secure}
        self.asked: list[tuple[str, str, bool, bool, float]] = []  # name, type, AD flag, DO bit, when
        super().__init__(zones, **kwargs)

    def answer(self, wire: bytes) -> bytes | None:
        reply = super().answer(wire)
        try:
            query = dns.message.from_wire(wire)
        except Exception:
            return reply
        if query.question:
            q = query.question[0]
            self.asked.append((q.name.to_text(), dns.rdatatype.to_text(q.rdtype), bool(query.flags & dns.flags.AD),
                               bool(query.ednsflags & dns.flags.DO), time.monotonic()))
        if reply is None:
            return None
        response = dns.message.from_wire(reply)
        if response.question and response.question[0].name in self.secure and response.rcode() != dns.rcode.SERVFAIL:
            response.flags |= dns.flags.AD
        return response.to_wire()

    def tlsa_queries(self) -> list[str]:
        return [name for name, rdtype in self.queries if rdtype == "TLSA"]


@pytest.fixture
def dns_lab() -> Iterator[Callable[..., AdDnsServer]]:
    servers: list[AdDnsServer] = []

    def start(zones: Zones, **kwargs: Any) -> AdDnsServer:
        srv = AdDnsServer(zones, **kwargs)
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.close()


def _owner(port: int) -> str:
    return f"_{port}._tcp.mx.dane.test"


def _zones(port: int, tlsa: Sequence[str] = ()) -> dict[str, Mapping[str, Sequence[str]]]:
    zones: dict[str, Mapping[str, Sequence[str]]] = {
        "dane.test": {"MX": ["10 mx.dane.test."]},
        "mx.dane.test": {"A": ["127.0.0.1"]},
    }
    if tlsa:
        zones[_owner(port)] = {"TLSA": list(tlsa)}
    return zones


def _all_secure(port: int) -> list[str]:
    return ["dane.test", "mx.dane.test", _owner(port)]


def _probe(ns: DnsServer, port: int, *, anchors: Sequence[Any] = (ROOT.cert,), dane: str = "auto",
           target: str = "dane.test") -> tuple[ProbeResult, AddressResult]:
    [result] = probe_sync([target], anchors=anchors,
                          options=ProbeOptions(validator="postfix", port=port, nameserver=ns.address, timeout=2,
                                               dane=dane))
    [address] = result.addresses
    return result, address


def _codes(a: AddressResult) -> list[tuple[str, str]]:
    return [(f.code, str(f.severity)) for f in a.findings]


def _cli(tmp_path: Path, *args: str, trust: Sequence[Any] = ()) -> tuple[int, str]:
    store = tmp_path / "trust"
    if not store.exists():
        store.mkdir()
        for i, cert in enumerate(trust):
            TrustStore(store).add(cert, label=f"root {i}")
    r = CliRunner().invoke(main, ["probe", *args, "--store", str(store), "--managed-only", "--timeout", "2",
                                  "--validator", "postfix"])
    return r.exit_code, r.output


# --- the adapter ----------------------------------------------------------------------------------------


def test_lookup_tlsa_reports_records_ad_bit_and_asks_for_dnssec(dns_lab: Callable[..., AdDnsServer]) -> None:
    ns = dns_lab(_zones(25, [EE, TA]), secure=_all_secure(25), servfail=["_25._tcp.bogus.dane.test"])
    found = lookup_tlsa("mx.dane.test", 25, nameserver=ns.address, timeout=2)
    assert found.status == "secure" and found.secure and not found.bogus and found.error is None
    assert sorted(r.text() for r in found.records) == sorted([EE, TA])
    assert found.name == "_25._tcp.mx.dane.test."
    [(_, _, ad, do, _)] = [q for q in ns.asked if q[1] == "TLSA"]
    assert ad and do  # the resolver is asked to report validation
    bogus = lookup_tlsa("bogus.dane.test", 25, nameserver=ns.address, timeout=2)
    assert bogus.status == "bogus" and bogus.bogus and "SERVFAIL" in (bogus.error or "")
    none = lookup_tlsa("nothing.dane.test", 25, nameserver=ns.address, timeout=2)
    assert none.status == "none" and none.none and none.records == []


def test_mx_route_says_whether_the_mx_rrset_was_secure(dns_lab: Callable[..., AdDnsServer]) -> None:
    from certkit.adapters.dns import resolve_mail_domain

    ns = dns_lab(_zones(25), secure=["dane.test"])
    assert resolve_mail_domain("dane.test", nameserver=ns.address, timeout=2).secure
    plain = dns_lab(_zones(25))
    assert not resolve_mail_domain("dane.test", nameserver=plain.address, timeout=2).secure


# --- the probe ------------------------------------------------------------------------------------------


def test_secure_dane_ee_match_authenticates_without_their_root(dns_lab: Callable[..., AdDnsServer],
                                                               smtp_server: Start, tmp_path: Path) -> None:
    srv = smtp_server(Scripted(identity=SERVER, chain=[INTER.cert]))
    ns = dns_lab(_zones(srv.port, [EE]), secure=_all_secure(srv.port))
    # Their root is NOT trusted: PKIX fails, DANE-EE authenticates, so the PKIX finding is information only.
    _, a = _probe(ns, srv.port, anchors=[OTHER_ROOT.cert])
    assert a.ok and a.verdict.startswith(("would deliver", "TLS and their certificate OK")), a.findings
    pkix = _codes(a)
    assert pkix and all(code.startswith("chain.") and sev == "info" for code, sev in pkix), pkix
    assert "authenticated the server" in a.findings[0].detail
    assert a.dane is not None and a.dane.applies and a.dane.matched is not None and a.dane.matched.text() == EE
    assert a.dane.summary == "1 secure TLSA record, 3 1 1 matched"
    code, out = _cli(tmp_path, "dane.test", "--port", str(srv.port), "--nameserver", ns.address,
                     trust=[OTHER_ROOT.cert])
    assert code == 0, out
    assert "  DANE: 1 secure TLSA record, 3 1 1 matched" in out.splitlines()


def test_under_the_exchange_validator_a_dane_match_does_not_replace_the_trust_store(
        dns_lab: Callable[..., AdDnsServer], smtp_server: Start) -> None:
    """Exchange Server's Domain Security does no DANE: the partner's root must still be trusted."""
    srv = smtp_server(Scripted(identity=SERVER, chain=[INTER.cert]))
    ns = dns_lab(_zones(srv.port, [EE]), secure=_all_secure(srv.port))
    [result] = probe_sync(["dane.test"], anchors=[OTHER_ROOT.cert],
                          options=ProbeOptions(validator="exchange", port=srv.port, nameserver=ns.address, timeout=2,
                                               dane="auto"))
    [a] = result.addresses
    codes = _codes(a)
    assert codes and all(code.startswith("chain.") and sev == "error" for code, sev in codes), codes
    assert not a.ok
    assert a.dane is not None and a.dane.matched is not None
    assert a.dane.summary.endswith("matched (Domain Security still needs the trust store)")


def test_tlsa_is_looked_up_while_the_session_runs(dns_lab: Callable[..., AdDnsServer], smtp_server: Start) -> None:
    ended: list[float] = []
    scripted = Scripted(identity=SERVER, chain=[INTER.cert])

    def handler(sock: Any) -> None:
        try:
            scripted(sock)
        finally:
            ended.append(time.monotonic())

    srv = smtp_server(handler)
    ns = dns_lab(_zones(srv.port, [EE]), secure=_all_secure(srv.port))
    _, a = _probe(ns, srv.port)
    assert a.dane is not None and a.dane.matched is not None
    [asked] = [q[4] for q in ns.asked if q[1] == "TLSA"]
    assert ended and asked < ended[0]  # not after the session


def test_dane_ta_matches_the_next_hop_domain_name(dns_lab: Callable[..., AdDnsServer], smtp_server: Start) -> None:
    srv = smtp_server(Scripted(identity=DOMAIN_ONLY, chain=[INTER.cert]))
    ns = dns_lab(_zones(srv.port, [TA]), secure=_all_secure(srv.port))
    _, a = _probe(ns, srv.port, anchors=[])
    assert a.ok and a.dane is not None and a.dane.summary == "1 secure TLSA record, 2 1 1 matched"


def test_secure_mismatch_is_dane_no_match(dns_lab: Callable[..., AdDnsServer], smtp_server: Start,
                                          tmp_path: Path) -> None:
    srv = smtp_server(Scripted(identity=SERVER, chain=[INTER.cert]))
    ns = dns_lab(_zones(srv.port, [WRONG]), secure=_all_secure(srv.port))
    result, a = _probe(ns, srv.port)  # their root trusted: PKIX alone would pass
    assert _codes(a) == [("dane.no-match", "error")]
    assert not a.ok and exit_code([result]) == 1
    assert a.dane is not None and a.dane.summary == "1 secure TLSA record, none matched"
    assert [c.matched for c in a.dane.checks] == [False]
    code, out = _cli(tmp_path, "dane.test", "--port", str(srv.port), "--nameserver", ns.address, "--json",
                     trust=[ROOT.cert])
    data = json.loads(out)
    _validate(data)
    dane = data["results"][0]["addresses"][0]["dane"]
    assert (dane["lookup"], dane["applies"], dane["records"], dane["matched"]) == ("secure", True, [WRONG], None)
    assert code == 1


def test_only_pkix_usages_are_unusable_and_starttls_stays_mandatory(dns_lab: Callable[..., AdDnsServer],
                                                                    smtp_server: Start) -> None:
    pkix = [tlsa_for(SERVER.cert, 1).text(), tlsa_for(ROOT.cert, 0).text()]
    srv = smtp_server(Scripted(identity=SERVER, chain=[INTER.cert]))
    ns = dns_lab(_zones(srv.port, pkix), secure=_all_secure(srv.port))
    _, a = _probe(ns, srv.port)
    # RFC 7672 2.2: mandatory but unauthenticated TLS, the mail is delivered: a warning, not a failure.
    assert _codes(a) == [("dane.unusable-records", "warning")]
    assert a.dane is not None and a.dane.summary == "2 secure TLSA records, none usable"
    plain = smtp_server(Scripted(identity=SERVER, chain=[INTER.cert], offer_starttls=False))
    ns2 = dns_lab(_zones(plain.port, pkix), secure=_all_secure(plain.port))
    _, b = _probe(ns2, plain.port)
    codes = [c for c, _ in _codes(b)]
    assert "dane.starttls-missing" in codes and "dane.unusable-records" in codes


def test_secure_tlsa_without_starttls_is_dane_starttls_missing(dns_lab: Callable[..., AdDnsServer],
                                                               smtp_server: Start) -> None:
    srv = smtp_server(Scripted(identity=SERVER, chain=[INTER.cert], offer_starttls=False))
    ns = dns_lab(_zones(srv.port, [EE]), secure=_all_secure(srv.port))
    _, a = _probe(ns, srv.port)
    assert ("dane.starttls-missing", "error") in _codes(a)
    assert a.dane is not None and a.dane.summary == "1 secure TLSA record, STARTTLS missing"


def test_servfail_is_dane_dnssec_bogus(dns_lab: Callable[..., AdDnsServer], smtp_server: Start) -> None:
    srv = smtp_server(Scripted(identity=SERVER, chain=[INTER.cert]))
    ns = dns_lab(_zones(srv.port, [EE]), secure=["dane.test", "mx.dane.test"], servfail=[_owner(srv.port)])
    _, a = _probe(ns, srv.port)
    assert _codes(a) == [("dane.dnssec-bogus", "error")]
    assert a.dane is not None and a.dane.lookup == "bogus" and not a.dane.applies


def test_records_without_ad_are_not_dane(dns_lab: Callable[..., AdDnsServer], smtp_server: Start,
                                         tmp_path: Path) -> None:
    srv = smtp_server(Scripted(identity=SERVER, chain=[INTER.cert]))
    # The TLSA answer lacks AD: the PKIX result stands (their root is not trusted here), the mismatch is ignored.
    ns = dns_lab(_zones(srv.port, [WRONG]), secure=["dane.test", "mx.dane.test"])
    _, a = _probe(ns, srv.port, anchors=[OTHER_ROOT.cert])
    [(pkix, severity)] = _codes(a)
    assert pkix.startswith("chain.") and severity == "error"
    assert a.dane is not None and a.dane.lookup == "insecure" and not a.dane.applies
    # Secure TLSA under an MX answer without AD: not used either (RFC 7672 2.2.1).
    ns2 = dns_lab(_zones(srv.port, [WRONG]), secure=["mx.dane.test", _owner(srv.port)])
    _, b = _probe(ns2, srv.port)
    assert _codes(b) == [] and b.dane is not None and not b.dane.applies and not b.dane.name_secure
    code, out = _cli(tmp_path, "dane.test", "--port", str(srv.port), "--nameserver", ns.address, trust=[ROOT.cert])
    assert code == 0 and "  DANE: 1 TLSA record without DNSSEC validation (no AD bit): not used" in out


def test_dane_off_looks_nothing_up(dns_lab: Callable[..., AdDnsServer], smtp_server: Start, tmp_path: Path) -> None:
    srv = smtp_server(Scripted(identity=SERVER, chain=[INTER.cert]))
    ns = dns_lab(_zones(srv.port, [WRONG]), secure=_all_secure(srv.port))
    _, a = _probe(ns, srv.port, dane="off")
    assert a.ok and a.dane is None
    code, out = _cli(tmp_path, "dane.test", "--port", str(srv.port), "--nameserver", ns.address, "--dane", "off",
                     trust=[ROOT.cert])
    assert code == 0 and "DANE:" not in out
    assert ns.tlsa_queries() == [] and ("dane.test.", "MX") in ns.queries


def test_dane_require_without_tlsa_is_not_published(dns_lab: Callable[..., AdDnsServer], smtp_server: Start,
                                                    tmp_path: Path) -> None:
    srv = smtp_server(Scripted(identity=SERVER, chain=[INTER.cert]))
    ns = dns_lab(_zones(srv.port), secure=_all_secure(srv.port))
    _, auto = _probe(ns, srv.port)
    assert auto.ok and auto.dane is not None and auto.dane.summary == "no TLSA records (securely denied)"
    result, a = _probe(ns, srv.port, dane="require")
    assert _codes(a) == [("dane.not-published", "error")] and exit_code([result]) == 1
    assert a.findings[0].entry.tlsrpt_result_type == "dane-required"
    # An address target has no name to look TLSA records up for: required DANE cannot be met.
    [ip] = probe_sync([f"127.0.0.1:{srv.port}"], anchors=[ROOT.cert],
                      options=ProbeOptions(validator="postfix", timeout=2, dane="require"))
    assert [f.code for f in ip.addresses[0].findings] == ["dane.not-published"]
    code, out = _cli(tmp_path, "dane.test", "--port", str(srv.port), "--nameserver", ns.address, "--dane", "require",
                     "--json", trust=[ROOT.cert])
    _validate(json.loads(out))
    assert code == 1


def test_ip_targets_skip_tlsa_under_auto(smtp_server: Start) -> None:
    srv = smtp_server(Scripted(identity=SERVER, chain=[INTER.cert]))
    [r] = probe_sync([f"127.0.0.1:{srv.port}"], anchors=[ROOT.cert],
                     options=ProbeOptions(validator="postfix", timeout=2, dane="auto"))
    assert r.addresses[0].dane is None and r.addresses[0].to_dict()["dane"] is None


def _validate(data: dict[str, Any]) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = load()
    jsonschema.validators.validator_for(schema)(schema).validate(data)


# --- a real validating resolver: tests/dnssec_lab.py (NSD signs, Unbound validates) -----------------------


def _lab_domain(lab: DnssecLab, zone: str, port: int, tlsa: Sequence[str]) -> str:
    """``probe.<zone>`` with MX ``mx-probe.<zone>`` at 127.0.0.1 and its TLSA records for ``port``; reloaded."""
    domain, mx = f"probe.{zone}", f"mx-probe.{zone}"
    lab.remove(f"{domain}.")
    lab.remove(f"{mx}.")
    lab.remove(lab.tlsa_owner(mx, port))
    lab.add(f"{domain}.", "MX", f"10 {mx}.")
    lab.add(f"{mx}.", "A", "127.0.0.1")
    for record in tlsa:
        lab.add(lab.tlsa_owner(mx, port), "TLSA", record)
    lab.reload()
    return domain


def test_real_unbound_secure_match(dnssec_lab: DnssecLab, smtp_server: Start, tmp_path: Path) -> None:
    server = make_leaf(INTER, ["mx-probe.dane.test"])
    srv = smtp_server(Scripted(identity=server, chain=[INTER.cert]))
    ee = tlsa_for(server.cert, 3).text()
    domain = _lab_domain(dnssec_lab, "dane.test", srv.port, [ee])
    [result] = probe_sync([domain], anchors=[OTHER_ROOT.cert],
                          options=ProbeOptions(validator="postfix", port=srv.port, nameserver=dnssec_lab.resolver,
                                               timeout=5, dane="require"))
    [a] = result.addresses
    assert a.ok and a.dane is not None, (a.findings, dnssec_lab.log())
    assert (a.dane.lookup, a.dane.name_secure) == ("secure", True)
    assert a.dane.summary == "1 secure TLSA record, 3 1 1 matched"
    code, out = _cli(tmp_path, domain, "--port", str(srv.port), "--nameserver", dnssec_lab.resolver, "--timeout",
                     "5", trust=[OTHER_ROOT.cert])
    assert code == 0 and "  DANE: 1 secure TLSA record, 3 1 1 matched" in out.splitlines(), out


def test_real_unbound_unsigned_zone_is_not_dane(dnssec_lab: DnssecLab, smtp_server: Start) -> None:
    server = make_leaf(INTER, ["mx-probe.insecure.test", "probe.insecure.test"])
    srv = smtp_server(Scripted(identity=server, chain=[INTER.cert]))
    domain = _lab_domain(dnssec_lab, "insecure.test", srv.port, [WRONG])
    [result] = probe_sync([domain], anchors=[ROOT.cert],
                          options=ProbeOptions(validator="postfix", port=srv.port, nameserver=dnssec_lab.resolver,
                                               timeout=5, dane="auto"))
    [a] = result.addresses
    # Unsigned: the mismatching record is not trusted, so it changes nothing (PKIX decides, and passes).
    assert a.findings == [] and a.dane is not None and a.dane.lookup == "insecure" and not a.dane.name_secure
    [required] = probe_sync([domain], anchors=[ROOT.cert],
                            options=ProbeOptions(validator="postfix", port=srv.port, nameserver=dnssec_lab.resolver,
                                                 timeout=5, dane="require"))
    assert [f.code for f in required.addresses[0].findings] == ["dane.not-published"]


def test_real_unbound_bogus_zone(dnssec_lab: DnssecLab) -> None:
    dnssec_lab.add(dnssec_lab.tlsa_owner("mx.bogus.test", 25), "TLSA", WRONG)
    dnssec_lab.reload()
    found = lookup_tlsa("mx.bogus.test", 25, nameserver=dnssec_lab.resolver, timeout=5)
    assert found.status == "bogus" and found.records == [], dnssec_lab.log()
    good = lookup_tlsa("mx-nothing.dane.test", 25, nameserver=dnssec_lab.resolver, timeout=5)
    assert good.status == "none" and good.secure  # a validated denial
