"""Issued validity stays within the issuer's: a wrong clock is refused, an end beyond the CA's is cut back (with a
warning), and the builders refuse anything outside the issuer's window whoever calls them."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509

from certkit.core.issuance import BACKDATE, LeafRequest, build_ca, build_leaf, leaf_validity
from certkit.core.keys import generate_key
from certkit.errors import InputError, PolicyError
from tests import pki

T0 = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)


@pytest.fixture(scope="module")
def ca() -> pki.Issued:
    # A CA made at T0 (notBefore back-dated like certkit's), valid for 100 days.
    return pki.make_root("Clamp CA", not_before=T0 - BACKDATE, not_after=T0 + 100 * DAY)


def _leaf(ca: pki.Issued, nb: dt.datetime, na: dt.datetime) -> x509.Certificate:
    req = LeafRequest.for_host("mx.contoso.com", not_before=nb, not_after=na)
    return build_leaf(req, public_key=pki.make_key().public_key(), serial=1 << 70, issuer_cert=ca.cert,
                      issuer_key=ca.key)


def test_a_validity_within_the_issuers_is_what_was_asked(ca: pki.Issued) -> None:
    v = leaf_validity([ca.cert], now=T0 + DAY, days=30)
    assert (v.not_before, v.not_after) == (T0 + DAY - BACKDATE, T0 + 31 * DAY)
    assert not v.clamped and v.warnings == ()
    cert = _leaf(ca, v.not_before, v.not_after)
    assert cert.not_valid_before_utc >= ca.cert.not_valid_before_utc


def test_a_clock_before_the_ca_is_valid_is_refused_as_a_wrong_clock(ca: pki.Issued) -> None:
    with pytest.raises(PolicyError, match="clock") as err:
        leaf_validity([ca.cert], now=T0 - 3 * DAY, days=30)
    assert "before the CA certificate 'Clamp CA' is valid" in err.value.message
    assert "wrong" in (err.value.hint or "")


def test_backdating_never_reaches_before_the_issuer(ca: pki.Issued) -> None:
    # Issued a minute after the CA was made: now - 5 minutes would precede the CA's own notBefore.
    v = leaf_validity([ca.cert], now=T0 - BACKDATE + dt.timedelta(minutes=1), days=30)
    assert v.not_before == ca.cert.not_valid_before_utc
    assert v.warnings == ()
    assert _leaf(ca, v.not_before, v.not_after).not_valid_before_utc == ca.cert.not_valid_before_utc


def test_an_end_after_the_ca_is_clamped_with_a_warning(ca: pki.Issued) -> None:
    v = leaf_validity([ca.cert], now=T0 + 90 * DAY, days=397)
    assert v.clamped and v.not_after == ca.cert.not_valid_after_utc
    assert len(v.warnings) == 1
    assert "10 days instead of the 397 days asked for" in v.warnings[0]
    assert "'Clamp CA'" in v.warnings[0]
    assert _leaf(ca, v.not_before, v.not_after).not_valid_after_utc == ca.cert.not_valid_after_utc


def test_the_shortest_lived_issuer_of_the_chain_bounds_the_leaf() -> None:
    root = pki.make_root("Root", not_before=T0 - DAY, not_after=T0 + 50 * DAY)
    inter = pki.make_intermediate(root, "Issuing", not_before=T0 - DAY, not_after=T0 + 80 * DAY)
    v = leaf_validity([inter.cert, root.cert], now=T0, days=397)
    assert v.not_after == T0 + 50 * DAY and "'Root'" in v.warnings[0]


def test_an_expired_ca_cannot_issue(ca: pki.Issued) -> None:
    with pytest.raises(PolicyError, match="expired"):
        leaf_validity([ca.cert], now=T0 + 100 * DAY, days=1)


@pytest.mark.parametrize("days", [0, -1])
def test_days_must_be_positive(ca: pki.Issued, days: int) -> None:
    with pytest.raises(InputError):
        leaf_validity([ca.cert], now=T0 + DAY, days=days)


def test_build_leaf_refuses_a_validity_starting_before_the_issuer(ca: pki.Issued) -> None:
    with pytest.raises(PolicyError, match="before its issuer 'Clamp CA' is"):
        _leaf(ca, T0 - 2 * DAY, T0 + 10 * DAY)


def test_build_leaf_refuses_a_validity_ending_after_the_issuer(ca: pki.Issued) -> None:
    with pytest.raises(PolicyError, match="after the CA itself expires"):
        _leaf(ca, T0, T0 + 101 * DAY)


def test_build_ca_keeps_an_intermediate_within_its_root(ca: pki.Issued) -> None:
    key = generate_key("ec-p256")
    ok = build_ca(common_name="Issuing", key=key, serial=1 << 70, not_before=T0, not_after=T0 + 99 * DAY,
                  issuer_cert=ca.cert, issuer_key=ca.key)
    assert ok.not_valid_after_utc <= ca.cert.not_valid_after_utc
    with pytest.raises(PolicyError, match="The intermediate CA would be valid from"):
        build_ca(common_name="Issuing", key=key, serial=1 << 70, not_before=T0 - DAY, not_after=T0 + DAY,
                 issuer_cert=ca.cert, issuer_key=ca.key)
    with pytest.raises(PolicyError, match="after the CA itself expires"):
        build_ca(common_name="Issuing", key=key, serial=1 << 70, not_before=T0, not_after=T0 + 200 * DAY,
                 issuer_cert=ca.cert, issuer_key=ca.key)
