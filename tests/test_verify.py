"""verify_chain: verdicts from cryptography, explanations from certkit."""

from __future__ import annotations

import datetime as dt
import pickle

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certkit.core.jsonfacts import rfc3339
from certkit.core.trust import AnchorSet
from certkit.core.verify import (
    VerificationResult,
    VerifyOptions,
    crl_urls,
    domain_matches,
    host_matches,
    verify_chain,
)
from certkit.errors import InputError, UsageError
from tests import pki

NOW = pki.NOW
SEC = dt.timedelta(seconds=1)
HOUR = dt.timedelta(hours=1)


@pytest.fixture(scope="module")
def root() -> pki.Issued:
    return pki.make_root()


@pytest.fixture(scope="module")
def inter(root: pki.Issued) -> pki.Issued:
    return pki.make_intermediate(root, cdp="http://crl.fabrikam.com/root.crl")


@pytest.fixture(scope="module")
def leaf(inter: pki.Issued) -> pki.Issued:
    return pki.make_leaf(inter, ["mx.fabrikam.com", "fabrikam.com"], cdp="http://crl.fabrikam.com/issuing.crl")


def codes(result: VerificationResult) -> list[str]:
    return list(result.codes)


# --- success -------------------------------------------------------------------------------------


def test_good_chain_is_accepted_and_path_is_leaf_first(root: pki.Issued, inter: pki.Issued, leaf: pki.Issued) -> None:
    r = verify_chain(leaf.cert, [inter.cert], [root.cert], name="mx.fabrikam.com", at=NOW)
    assert r.ok and r.findings == ()
    assert r.chain == (leaf.cert, inter.cert, root.cert)
    assert r.anchor is not None and r.anchor.cert == root.cert
    assert not r.pinned


def test_intermediates_in_any_order_with_extras(root: pki.Issued, inter: pki.Issued, leaf: pki.Issued) -> None:
    stranger = pki.make_intermediate(pki.make_root("Other Root", org="Other"), "Stranger CA", org="Other")
    r = verify_chain(leaf.cert, [stranger.cert, inter.cert, root.cert], [root.cert], at=NOW)
    assert r.ok


def test_anchor_set_is_accepted_as_anchors(root: pki.Issued, inter: pki.Issued, leaf: pki.Issued) -> None:
    r = verify_chain(leaf.cert, [inter.cert], AnchorSet.of([root.cert]), at=NOW)
    assert r.ok


def test_leaf_without_eku_is_accepted_for_both_purposes(root: pki.Issued, inter: pki.Issued) -> None:
    noeku = pki.make_leaf(inter, ["mx.fabrikam.com"], eku=None)
    assert verify_chain(noeku.cert, [inter.cert], [root.cert], name="mx.fabrikam.com", at=NOW).ok
    assert verify_chain(noeku.cert, [inter.cert], [root.cert], at=NOW, options=VerifyOptions(purpose="client")).ok


def test_pinned_self_signed_leaf_validates_as_itself(root: pki.Issued) -> None:
    edge = pki.make_self_signed(["edge.fabrikam.com"])
    r = verify_chain(edge.cert, [], [root.cert, edge.cert], name="edge.fabrikam.com", at=NOW)
    assert r.ok and r.pinned and r.chain == (edge.cert,)
    assert codes(r) == ["chain.pinned-leaf"]


def test_ip_reference_matches_ip_san(root: pki.Issued, inter: pki.Issued) -> None:
    ipleaf = pki.make_leaf(inter, ["192.0.2.25", "mx.fabrikam.com"])
    assert verify_chain(ipleaf.cert, [inter.cert], [root.cert], name="192.0.2.25", at=NOW).ok
    r = verify_chain(ipleaf.cert, [inter.cert], [root.cert], name="192.0.2.26", at=NOW)
    assert not r.ok and "name.host-mismatch" in codes(r)


# --- time edges -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("offset", "ok"), [(-SEC, True), (dt.timedelta(0), True), (SEC, False)])
def test_expiry_boundary_to_the_second(root: pki.Issued, inter: pki.Issued, offset: dt.timedelta, ok: bool) -> None:
    end = NOW + dt.timedelta(days=30)
    short = pki.make_leaf(inter, ["mx.fabrikam.com"], not_after=end)
    r = verify_chain(short.cert, [inter.cert], [root.cert], at=end + offset)
    assert r.ok is ok
    if not ok:
        assert codes(r) == ["cert.expired"]
        assert "1 second ago" in r.findings[0].detail
        assert r.findings[0].evidence["role"] == "leaf"


@pytest.mark.parametrize(("offset", "ok"), [(-SEC, False), (dt.timedelta(0), True), (SEC, True)])
def test_not_before_boundary_to_the_second(root: pki.Issued, inter: pki.Issued, offset: dt.timedelta,
                                           ok: bool) -> None:
    start = NOW + dt.timedelta(hours=2)
    future = pki.make_leaf(inter, ["mx.fabrikam.com"], not_before=start)
    r = verify_chain(future.cert, [inter.cert], [root.cert], at=start + offset)
    assert r.ok is ok
    if not ok:
        assert codes(r) == ["cert.not-yet-valid"]
        assert "1 second" in r.findings[0].detail


def test_expiry_is_the_same_instant_in_any_time_zone(root: pki.Issued, inter: pki.Issued) -> None:
    end = NOW + dt.timedelta(days=3)
    short = pki.make_leaf(inter, ["mx.fabrikam.com"], not_after=end)
    tz = dt.timezone(dt.timedelta(hours=-5))
    assert verify_chain(short.cert, [inter.cert], [root.cert], at=end.astimezone(tz)).ok
    assert not verify_chain(short.cert, [inter.cert], [root.cert], at=(end + SEC).astimezone(tz)).ok


def test_expired_intermediate_is_named(root: pki.Issued) -> None:
    old = pki.make_intermediate(root, not_after=NOW - dt.timedelta(days=2))
    lf = pki.make_leaf(old, ["mx.fabrikam.com"], not_after=NOW + dt.timedelta(days=10))
    r = verify_chain(lf.cert, [old.cert], [root.cert], at=NOW)
    assert not r.ok
    assert codes(r) == ["cert.expired"]
    assert r.findings[0].evidence["role"] == "intermediate"
    assert "2 days ago" in r.findings[0].detail


# --- trust failures -------------------------------------------------------------------------------


def test_self_signed_not_trusted(root: pki.Issued) -> None:
    edge = pki.make_self_signed(["edge.fabrikam.com"])
    r = verify_chain(edge.cert, [], [root.cert], at=NOW)
    assert not r.ok and codes(r) == ["chain.self-signed"]


def test_unknown_issuer_when_root_not_trusted(inter: pki.Issued, leaf: pki.Issued) -> None:
    other = pki.make_root("Contoso Root", org="Contoso")
    r = verify_chain(leaf.cert, [inter.cert], [other.cert], at=NOW)
    assert not r.ok and codes(r) == ["chain.unknown-issuer"]


def test_unknown_issuer_with_no_anchors_at_all(inter: pki.Issued, leaf: pki.Issued) -> None:
    r = verify_chain(leaf.cert, [inter.cert], [], at=NOW)
    assert not r.ok and codes(r) == ["chain.unknown-issuer"]


def test_missing_intermediate(root: pki.Issued, leaf: pki.Issued) -> None:
    r = verify_chain(leaf.cert, [], [root.cert], at=NOW)
    assert not r.ok and codes(r) == ["chain.missing-intermediate"]


def test_every_problem_is_named_not_only_the_first(root: pki.Issued, inter: pki.Issued) -> None:
    bad = pki.make_leaf(inter, ["mx.contoso.com"], eku=[pki.CLIENT], key_type="rsa", bits=1024,
                        not_after=NOW - dt.timedelta(hours=3))
    r = verify_chain(bad.cert, [inter.cert], [root.cert], name="mx.fabrikam.com", at=NOW)
    assert not r.ok
    assert set(codes(r)) == {"cert.expired", "key.weak", "name.host-mismatch", "eku.no-server-auth"}
    mismatch = next(f for f in r.findings if f.code == "name.host-mismatch")
    assert mismatch.evidence["names"] == ["DNS:mx.contoso.com"]
    assert "DNS:mx.contoso.com" in mismatch.detail


def test_weak_rsa_leaf_is_rejected_although_cryptography_accepts_it(root: pki.Issued, inter: pki.Issued) -> None:
    weak = pki.make_leaf(inter, ["mx.fabrikam.com"], key_type="rsa", bits=1024)
    r = verify_chain(weak.cert, [inter.cert], [root.cert], at=NOW)
    assert not r.ok and codes(r) == ["key.weak"]
    assert r.findings[0].evidence["bits"] == 1024


def test_sha1_signed_leaf_is_rejected(root: pki.Issued, inter: pki.Issued) -> None:
    old = pki.make_leaf(inter, ["mx.fabrikam.com"], sha1=True)
    r = verify_chain(old.cert, [inter.cert], [root.cert], at=NOW)
    assert not r.ok and codes(r) == ["sig.sha1"]


def test_cryptography_rejection_without_own_words_is_chain_invalid() -> None:
    # The root's name constraints permit only contoso.com; certkit has no finding of its own for that.
    constrained = pki.make_root("Constrained Root", permitted_dns=["contoso.com"])
    lf = pki.make_leaf(constrained, ["mx.fabrikam.com"])
    r = verify_chain(lf.cert, [], [constrained.cert], at=NOW)
    assert not r.ok and codes(r) == ["chain.invalid"]
    assert r.reason


def test_max_depth(root: pki.Issued, inter: pki.Issued, leaf: pki.Issued) -> None:
    assert verify_chain(leaf.cert, [inter.cert], [root.cert], at=NOW, options=VerifyOptions(max_depth=2)).ok
    assert not verify_chain(leaf.cert, [inter.cert], [root.cert], at=NOW, options=VerifyOptions(max_depth=0)).ok


# --- names ----------------------------------------------------------------------------------------


def test_domain_rule_accepts_the_domain_itself_or_a_host_within(root: pki.Issued, inter: pki.Issued) -> None:
    only_host = pki.make_leaf(inter, ["mx1.mail.fabrikam.com"])
    assert verify_chain(only_host.cert, [inter.cert], [root.cert], domain="fabrikam.com", at=NOW).ok
    only_domain = pki.make_leaf(inter, ["fabrikam.com"])
    assert verify_chain(only_domain.cert, [inter.cert], [root.cert], domain="FABRIKAM.com.", at=NOW).ok


def test_domain_rule_rejects_lookalikes_and_lists_names(root: pki.Issued, inter: pki.Issued) -> None:
    evil = pki.make_leaf(inter, ["evilfabrikam.com", "fabrikam.com.evil.net"])
    r = verify_chain(evil.cert, [inter.cert], [root.cert], domain="fabrikam.com", at=NOW)
    assert not r.ok and codes(r) == ["name.domain-mismatch"]
    assert r.findings[0].evidence["names"] == ["DNS:evilfabrikam.com", "DNS:fabrikam.com.evil.net"]


def test_domain_rule_wildcard_counts_with_a_warning(root: pki.Issued, inter: pki.Issued) -> None:
    wild = pki.make_leaf(inter, ["*.fabrikam.com"])
    r = verify_chain(wild.cert, [inter.cert], [root.cert], domain="fabrikam.com", at=NOW)
    assert r.ok and codes(r) == ["name.wildcard"]


def test_host_rule_wildcard_is_one_label(root: pki.Issued, inter: pki.Issued) -> None:
    wild = pki.make_leaf(inter, ["*.fabrikam.com"])
    assert verify_chain(wild.cert, [inter.cert], [root.cert], name="mx.fabrikam.com", at=NOW).ok
    assert not verify_chain(wild.cert, [inter.cert], [root.cert], name="a.mx.fabrikam.com", at=NOW).ok
    assert not verify_chain(wild.cert, [inter.cert], [root.cert], name="fabrikam.com", at=NOW).ok


def test_name_helpers(leaf: pki.Issued) -> None:
    assert host_matches(leaf.cert, "MX.fabrikam.com")
    assert not host_matches(leaf.cert, "mx2.fabrikam.com")
    assert domain_matches(leaf.cert, "fabrikam.com") == "fabrikam.com"
    assert domain_matches(leaf.cert, "contoso.com") is None


def test_cn_only_server_certificate_is_explained(root: pki.Issued, inter: pki.Issued) -> None:
    cn_only = pki.make_leaf(inter, ["mx.fabrikam.com"], san=False)
    r = verify_chain(cn_only.cert, [inter.cert], [root.cert], name="mx.fabrikam.com", at=NOW)
    assert not r.ok and codes(r) == ["name.host-mismatch"]
    assert "no subjectAltName" in r.findings[0].detail


# --- client certificates (limbo has few) --------------------------------------------------------------


def test_client_with_client_auth_is_accepted(root: pki.Issued, inter: pki.Issued) -> None:
    c = pki.make_leaf(inter, ["edge.contoso.com"], eku=[pki.CLIENT])
    assert verify_chain(c.cert, [inter.cert], [root.cert], at=NOW, options=VerifyOptions(purpose="client")).ok


def test_client_with_server_auth_only_is_rejected(root: pki.Issued, inter: pki.Issued) -> None:
    c = pki.make_leaf(inter, ["edge.contoso.com"], eku=[pki.SERVER])
    r = verify_chain(c.cert, [inter.cert], [root.cert], at=NOW, options=VerifyOptions(purpose="client"))
    assert not r.ok and codes(r) == ["eku.no-client-auth"]
    assert r.findings[0].evidence["eku"] == [pki.SERVER.dotted_string]


def test_client_without_eku_is_accepted(root: pki.Issued, inter: pki.Issued) -> None:
    c = pki.make_leaf(inter, ["edge.contoso.com"], eku=None)
    assert verify_chain(c.cert, [inter.cert], [root.cert], at=NOW, options=VerifyOptions(purpose="client")).ok


def test_dns_named_client_checked_against_domain(root: pki.Issued, inter: pki.Issued) -> None:
    c = pki.make_leaf(inter, ["edge.contoso.com"], eku=[pki.CLIENT])
    assert verify_chain(c.cert, [inter.cert], [root.cert], domain="contoso.com", at=NOW,
                        options=VerifyOptions(purpose="client")).ok
    r = verify_chain(c.cert, [inter.cert], [root.cert], domain="fabrikam.com", at=NOW,
                     options=VerifyOptions(purpose="client"))
    assert not r.ok and codes(r) == ["name.domain-mismatch"]


def test_client_with_cn_only_is_accepted_without_a_name(root: pki.Issued, inter: pki.Issued) -> None:
    c = pki.make_leaf(inter, ["EDGE01"], san=False, eku=[pki.CLIENT])
    assert verify_chain(c.cert, [inter.cert], [root.cert], at=NOW, options=VerifyOptions(purpose="client")).ok


def test_expired_client_is_rejected(root: pki.Issued, inter: pki.Issued) -> None:
    end = NOW - dt.timedelta(days=1)
    c = pki.make_leaf(inter, ["edge.contoso.com"], eku=[pki.CLIENT], not_after=end)
    r = verify_chain(c.cert, [inter.cert], [root.cert], at=NOW, options=VerifyOptions(purpose="client"))
    assert not r.ok and codes(r) == ["cert.expired"]
    assert verify_chain(c.cert, [inter.cert], [root.cert], at=end, options=VerifyOptions(purpose="client")).ok


def test_client_from_untrusted_ca_is_rejected(root: pki.Issued) -> None:
    rogue_root = pki.make_root("Rogue Root", org="Rogue")
    rogue = pki.make_intermediate(rogue_root, "Rogue CA", org="Rogue")
    c = pki.make_leaf(rogue, ["edge.contoso.com"], eku=[pki.CLIENT])
    r = verify_chain(c.cert, [rogue.cert], [root.cert], at=NOW, options=VerifyOptions(purpose="client"))
    assert not r.ok and codes(r) == ["chain.unknown-issuer"]


def test_server_with_client_auth_only_is_rejected(root: pki.Issued, inter: pki.Issued) -> None:
    c = pki.make_leaf(inter, ["mx.fabrikam.com"], eku=[pki.CLIENT])
    r = verify_chain(c.cert, [inter.cert], [root.cert], name="mx.fabrikam.com", at=NOW)
    assert not r.ok and codes(r) == ["eku.no-server-auth"]


# --- revocation -----------------------------------------------------------------------------------


def test_revoked_leaf_with_date_and_reason(root: pki.Issued, inter: pki.Issued, leaf: pki.Issued) -> None:
    when = NOW - dt.timedelta(days=2)
    crl = pki.make_crl(inter, [(leaf.cert.serial_number, when, x509.ReasonFlags.key_compromise)])
    r = verify_chain(leaf.cert, [inter.cert], [root.cert], at=NOW, options=VerifyOptions(crls=[crl]))
    assert not r.ok and codes(r) == ["revocation.revoked"]
    assert r.findings[0].evidence["reason"] == "keyCompromise"
    assert r.findings[0].evidence["revoked_at"] == rfc3339(when)


def test_not_revoked_with_fresh_crl(root: pki.Issued, inter: pki.Issued, leaf: pki.Issued) -> None:
    crl = pki.make_crl(inter, [12345])
    assert verify_chain(leaf.cert, [inter.cert], [root.cert], at=NOW, options=VerifyOptions(crls=[crl])).ok


def test_revoked_intermediate(root: pki.Issued, inter: pki.Issued, leaf: pki.Issued) -> None:
    crl = pki.make_crl(root, [inter.cert.serial_number])
    r = verify_chain(leaf.cert, [inter.cert], [root.cert], at=NOW, options=VerifyOptions(crls=[crl]))
    assert not r.ok and codes(r) == ["revocation.revoked"]
    assert r.findings[0].subject == inter.cert.subject.rfc4514_string()


def test_crl_with_bad_signature_is_distinct_from_revoked(root: pki.Issued, inter: pki.Issued,
                                                          leaf: pki.Issued) -> None:
    forged = pki.make_crl(inter, [leaf.cert.serial_number], wrong_key=True)
    r = verify_chain(leaf.cert, [inter.cert], [root.cert], at=NOW, options=VerifyOptions(crls=[forged]))
    assert not r.ok and codes(r) == ["revocation.crl-bad-signature"]


def test_stale_crl_is_distinct_from_revoked(root: pki.Issued, inter: pki.Issued, leaf: pki.Issued) -> None:
    nu = NOW - dt.timedelta(hours=1)
    stale = pki.make_crl(inter, this_update=NOW - dt.timedelta(days=8), next_update=nu)
    r = verify_chain(leaf.cert, [inter.cert], [root.cert], at=NOW, options=VerifyOptions(crls=[stale]))
    assert not r.ok and codes(r) == ["revocation.crl-stale"]
    assert verify_chain(leaf.cert, [inter.cert], [root.cert], at=nu, options=VerifyOptions(crls=[stale])).ok


def test_require_revocation_needs_cdp_and_crl_per_ca_issued_cert(root: pki.Issued, inter: pki.Issued,
                                                                  leaf: pki.Issued) -> None:
    crls = [pki.make_crl(inter), pki.make_crl(root)]
    assert verify_chain(leaf.cert, [inter.cert], [root.cert], at=NOW,
                        options=VerifyOptions(crls=crls, require_revocation=True)).ok
    r = verify_chain(leaf.cert, [inter.cert], [root.cert], at=NOW,
                     options=VerifyOptions(crls=crls[:1], require_revocation=True))
    assert not r.ok and codes(r) == ["revocation.unreachable"]
    no_cdp = pki.make_leaf(inter, ["mx.fabrikam.com"])
    r = verify_chain(no_cdp.cert, [inter.cert], [root.cert], at=NOW,
                     options=VerifyOptions(crls=crls, require_revocation=True))
    assert not r.ok and codes(r) == ["revocation.no-cdp"]


def test_crl_checks_are_remembered_per_crl_and_ca_certificate(root: pki.Issued) -> None:
    # The same CA name with two keys, and the same CRL and chains again and again: the verdicts must be those
    # of a first look every time (certkit.core.verify memoises signature checks per CRL and CA certificate).
    ca_a = pki.make_intermediate(root, "Memo CA", fresh_key=True)
    ca_b = pki.make_intermediate(root, "Memo CA", fresh_key=True)
    leaf_a, leaf_b = pki.make_leaf(ca_a, ["mx.fabrikam.com"]), pki.make_leaf(ca_b, ["mx.fabrikam.com"])
    crl_a = pki.make_crl(ca_a, [leaf_b.cert.serial_number])
    forged = pki.make_crl(ca_a, [leaf_a.cert.serial_number], wrong_key=True)
    future = pki.make_crl(ca_a, this_update=NOW + dt.timedelta(hours=1))
    for _ in range(2):
        assert verify_chain(leaf_a.cert, [ca_a.cert], [root.cert], at=NOW, options=VerifyOptions(crls=[crl_a])).ok
        r = verify_chain(leaf_b.cert, [ca_b.cert], [root.cert], at=NOW, options=VerifyOptions(crls=[crl_a]))
        assert codes(r) == ["revocation.crl-bad-signature"]
        r = verify_chain(leaf_a.cert, [ca_a.cert], [root.cert], at=NOW, options=VerifyOptions(crls=[forged, crl_a]))
        assert codes(r) == ["revocation.crl-bad-signature"]
        # The time is never remembered: the same CRL is in the future at NOW and fine two hours later.
        r = verify_chain(leaf_a.cert, [ca_a.cert], [root.cert], at=NOW, options=VerifyOptions(crls=[future]))
        assert codes(r) == ["revocation.crl-invalid"] and "in the future" in r.findings[0].detail
        assert verify_chain(leaf_a.cert, [ca_a.cert], [root.cert], at=NOW + 2 * HOUR,
                            options=VerifyOptions(crls=[future])).ok
        # An equal certificate parsed again (as every probe of an endpoint does) gets the same answers.
        again = x509.load_der_x509_certificate(ca_b.cert.public_bytes(serialization.Encoding.DER))
        r = verify_chain(leaf_b.cert, [again], [root.cert], at=NOW, options=VerifyOptions(crls=[crl_a]))
        assert codes(r) == ["revocation.crl-bad-signature"]


def test_crl_urls_in_order_each_once_http_only(root: pki.Issued) -> None:
    ca = pki.make_intermediate(root, "URL CA", cdp="http://crl.fabrikam.com/root.crl")
    one = pki.make_leaf(ca, ["mx.fabrikam.com"], cdp="HTTP://crl.fabrikam.com/ca.crl")
    two = pki.make_leaf(ca, ["mx2.fabrikam.com"], cdp="ldap://dc.fabrikam.com/ca")
    for _ in range(2):
        assert crl_urls([one.cert, ca.cert, two.cert, root.cert, ca.cert]) == [
            "HTTP://crl.fabrikam.com/ca.crl", "http://crl.fabrikam.com/root.crl"]
        assert crl_urls(c for c in (two.cert, root.cert)) == []


def test_pinned_leaf_needs_no_crl(root: pki.Issued) -> None:
    edge = pki.make_self_signed(["edge.fabrikam.com"])
    assert verify_chain(edge.cert, [], [edge.cert], at=NOW, options=VerifyOptions(require_revocation=True)).ok


# --- misuse ---------------------------------------------------------------------------------------


def test_name_and_domain_are_mutually_exclusive(root: pki.Issued, leaf: pki.Issued) -> None:
    with pytest.raises(UsageError, match="either a host name or a partner domain"):
        verify_chain(leaf.cert, [], [root.cert], name="mx.fabrikam.com", domain="fabrikam.com", at=NOW)


def test_naive_time_is_refused(root: pki.Issued, leaf: pki.Issued) -> None:
    with pytest.raises(UsageError, match="has no time zone"):
        verify_chain(leaf.cert, [], [root.cert], at=dt.datetime(2027, 1, 1))


def test_bad_purpose_and_bad_leaf_and_bad_name_are_misuse(root: pki.Issued, leaf: pki.Issued) -> None:
    with pytest.raises(UsageError, match="Unknown purpose"):
        VerifyOptions(purpose="smtp")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match=r"x509\.Certificate as the leaf"):
        verify_chain(leaf.pem, [], [root.cert], at=NOW)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="not a valid host name"):
        verify_chain(leaf.cert, [], [root.cert], name="bad name.com", at=NOW)


def test_at_none_means_now(root: pki.Issued, inter: pki.Issued, leaf: pki.Issued) -> None:
    r = verify_chain(leaf.cert, [inter.cert], [root.cert])
    assert r.ok and r.at is not None and r.at.tzinfo is not None


def test_result_serialises(root: pki.Issued, inter: pki.Issued, leaf: pki.Issued) -> None:
    r = verify_chain(leaf.cert, [inter.cert], [root.cert], name="mx.other.com", at=NOW)
    d = r.to_dict()
    assert d["ok"] is False and d["findings"][0]["code"] == "name.host-mismatch"
    assert len(d["chain"]) == 3
    pickle.dumps(r.findings)


@pytest.mark.parametrize("kwargs", [{"anchors": ["x"]}, {"options": {"crls": ["x"]}}, {"name": 5},
                                    {"intermediates": ["x"]}])
def test_misuse_of_verify_chain_is_a_usage_error_not_a_python_error(kwargs: dict[str, object]) -> None:
    from certkit import UsageError, verify_chain

    leaf = pki.make_self_signed(["edge.fabrikam.com"])
    args: dict[str, object] = {"anchors": [leaf.cert], **kwargs}
    anchors = args.pop("anchors")
    intermediates = args.pop("intermediates", ())
    with pytest.raises(UsageError):
        verify_chain(leaf.cert, intermediates, anchors, **args)  # type: ignore[arg-type]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"purpose": "smtp"}, "Unknown purpose 'smtp'"), ({"max_depth": -1}, "max_depth -1 is not a chain depth"),
    ({"max_depth": 256}, "max_depth 256"), ({"crls": ["x"]}, "crls must be cryptography")])
def test_verify_options_are_checked_once_when_made(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        VerifyOptions(**kwargs)  # type: ignore[arg-type]


def test_verify_options_keep_the_crls_as_given_in_a_tuple(root: pki.Issued, inter: pki.Issued) -> None:
    crls = [pki.make_crl(inter, [], this_update=NOW - HOUR, next_update=NOW + HOUR)]
    options = VerifyOptions(crls=iter(crls))  # type: ignore[arg-type]
    assert options.crls == tuple(crls) and options.purpose == "server" and options.max_depth is None
