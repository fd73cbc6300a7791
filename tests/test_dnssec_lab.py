"""The DNSSEC lab itself: NSD serves signed zones, Unbound validates them, dnspython asks Unbound.

Skips locally when NSD, Unbound or ldnsutils are missing; fails under CI=true (.ci/run installs them).
"""

from __future__ import annotations

import os

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import pytest

from tests.dnssec_lab import DnssecLab
from tests.pki import make_leaf, make_root
from tests.smtp_servers import Scripted, SmtpTestServer
from tests.tools import require_tool


def _rrset(answer: dns.message.Message, name: str, rtype: str) -> list[str]:
    rrset = answer.get_rrset(answer.answer, dns.name.from_text(name), 1, dns.rdatatype.from_text(rtype))
    return sorted(r.to_text() for r in rrset) if rrset else []


def _ad(answer: dns.message.Message) -> bool:
    return bool(answer.flags & dns.flags.AD)


def test_signed_answer_has_ad(dnssec_lab: DnssecLab) -> None:
    answer = dnssec_lab.query("dane.test.", "SOA")
    assert answer.rcode() == dns.rcode.NOERROR
    assert _ad(answer), dnssec_lab.log()
    assert _rrset(answer, "dane.test.", "SOA")
    # The same data from NSD directly carries signatures but, unvalidated, no AD.
    direct = dnssec_lab.query("dane.test.", "SOA", server=dnssec_lab.authoritative)
    assert any(r.rdtype == dns.rdatatype.RRSIG for r in direct.answer) and not _ad(direct)
    assert dnssec_lab.resolver == f"127.0.0.1:{dnssec_lab.resolver_port}"


def test_bogus_zone_servfails(dnssec_lab: DnssecLab) -> None:
    answer = dnssec_lab.query("bogus.test.", "SOA")
    assert answer.rcode() == dns.rcode.SERVFAIL
    # With checking disabled the data is there: the failure is validation, not a dead server.
    msg = dns.message.make_query("bogus.test.", "SOA", want_dnssec=True)
    msg.flags |= dns.flags.CD
    host, _, port = dnssec_lab.resolver.rpartition(":")
    unchecked = dns.query.udp(msg, host, port=int(port), timeout=2)
    assert unchecked.rcode() == dns.rcode.NOERROR and _rrset(unchecked, "bogus.test.", "SOA")
    assert "validation failure <bogus.test. SOA IN>" in dnssec_lab.log()


def test_insecure_zone_answers_without_ad(dnssec_lab: DnssecLab) -> None:
    answer = dnssec_lab.query("insecure.test.", "SOA")
    assert answer.rcode() == dns.rcode.NOERROR
    assert _rrset(answer, "insecure.test.", "SOA")
    assert not _ad(answer)
    # Its parent proves the missing DS with a signed NSEC: that denial itself is secure.
    ds = dnssec_lab.query("insecure.test.", "DS")
    assert ds.rcode() == dns.rcode.NOERROR and not ds.answer and _ad(ds)


def test_tlsa_added_by_reload_is_visible(dnssec_lab: DnssecLab) -> None:
    leaf = make_leaf(make_root(), ["reload.dane.test"])
    owner = dnssec_lab.tlsa_owner("reload.dane.test")
    assert owner == "_25._tcp.reload.dane.test."
    before = dnssec_lab.query(owner, "TLSA")
    assert before.rcode() == dns.rcode.NXDOMAIN and _ad(before)
    dnssec_lab.add("reload.dane.test.", "A", "127.0.0.1")
    record = dnssec_lab.add_tlsa("reload.dane.test", leaf.cert)
    dnssec_lab.reload()
    after = dnssec_lab.query(owner, "TLSA")
    assert after.rcode() == dns.rcode.NOERROR and _ad(after), dnssec_lab.log()
    assert _rrset(after, owner, "TLSA") == [record.text()]
    assert _rrset(dnssec_lab.query("reload.dane.test.", "A"), "reload.dane.test.", "A") == ["127.0.0.1"]
    # The same record in the insecure zone answers, but without AD (DANE must then not apply).
    dnssec_lab.add_tlsa("mx.insecure.test", leaf.cert)
    dnssec_lab.reload()
    plain = dnssec_lab.query("_25._tcp.mx.insecure.test.", "TLSA")
    assert _rrset(plain, "_25._tcp.mx.insecure.test.", "TLSA") == [record.text()] and not _ad(plain)


def test_variant_change_flips_a_secure_zone_to_bogus() -> None:
    with DnssecLab("swap.test.", "secure") as lab:
        lab.add("@", "MX", "10 mx.swap.test.")
        lab.add("mx", "A", "127.0.0.1")  # relative to the first zone: mx.swap.test.
        lab.reload()
        answer = lab.query("swap.test.", "MX")
        assert _ad(answer) and _rrset(answer, "swap.test.", "MX") == ["10 mx.swap.test."]
        assert _rrset(lab.query("mx.swap.test.", "A"), "mx.swap.test.", "A") == ["127.0.0.1"]
        lab.set_variant("swap.test.", "wrong-key")  # the parent's DS names a key that signs nothing
        lab.reload()                                 # the cached secure answer is flushed too
        assert lab.query("swap.test.", "MX").rcode() == dns.rcode.SERVFAIL
        assert "swap.test" in lab.log()


def test_unknown_variant_and_foreign_names_are_refused() -> None:
    with pytest.raises(ValueError, match="variant"):
        DnssecLab("x.test.", "half-signed")
    lab = DnssecLab("x.test.")
    with pytest.raises(ValueError, match="not in the lab"):
        lab.add("mx.example.org.", "A", "127.0.0.1")
    lab.close()


def test_posttls_finger_verifies_dane_through_the_system_resolver() -> None:
    finger = require_tool("posttls-finger")
    leaf = make_leaf(make_root(), ["mx.dane.test"])
    with SmtpTestServer(Scripted(identity=leaf)) as srv, \
            DnssecLab(zones={"dane.test.": "secure", "insecure.test.": "insecure"}, system_resolver=True) as lab:
        assert lab.resolver.endswith(":53") and lab.resolv_conf.read_text().endswith("options trust-ad\n")
        for host in ("mx.dane.test", "mx.insecure.test"):
            lab.add(host + ".", "A", "127.0.0.1")
            lab.add_tlsa(host, leaf.cert, port=srv.port)   # posttls-finger asks _PORT._tcp.host
        lab.reload()
        config = lab.dir / "postfix"
        config.mkdir()
        # No root zone in the lab: skip Postfix's DNSSEC probe of "." (it would only warn, slowly).
        (config / "main.cf").write_text("dnssec_probe =\n")
        env = dict(os.environ, MAIL_CONFIG=str(config))
        secure = lab.run_with_system_resolver([finger, "-t", "5", "-l", "dane", "-c", f"[mx.dane.test]:{srv.port}"],
                                              env=env)
        out = secure.stdout + secure.stderr
        assert "Matched DANE EE certificate at depth 0: 3 1 1" in out, out + lab.log()
        assert "Verified TLS connection established to mx.dane.test" in out, out
        # The same TLSA record without DNSSEC (no AD) must not count: Postfix falls back to unauthenticated TLS.
        plain = lab.run_with_system_resolver([finger, "-t", "5", "-l", "dane", "-c",
                                              f"[mx.insecure.test]:{srv.port}"], env=env)
        out = plain.stdout + plain.stderr
        assert "Untrusted TLS connection established to mx.insecure.test" in out, out
        assert "Matched DANE" not in out
