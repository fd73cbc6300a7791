"""Names: IDNA 2008 with UTS 46, valid A-labels only, mixed-script and look-alike labels refused unless allowed,
and a CSR's SANs that the profile does not carry listed, never dropped silently."""

from __future__ import annotations

import ipaddress

import pytest
from cryptography import x509
from cryptography.x509.oid import ObjectIdentifier

from certkit.core.issuance import LeafRequest, build_exchange_selfsigned, csr_names
from certkit.core.names import dns_name, general_name, parse_san, unicode_name
from certkit.core.profiles import PROFILES, ProfileName
from certkit.core.verify import verify_chain
from certkit.errors import InputError
from tests import pki

NOW = pki.NOW


# --- IDNA 2008 ----------------------------------------------------------------------------------------------


def test_sharp_s_is_converted_by_idna_2008_not_2003() -> None:
    # IDNA 2003 (Python's "idna" codec) maps ß to ss: fass.example, a different registered name.
    assert "faß".encode("idna") == b"fass"
    assert dns_name("faß.example") == "xn--fa-hia.example"
    assert dns_name("FAß.Example.") == "xn--fa-hia.example"
    assert dns_name("xn--fa-hia.example") == "xn--fa-hia.example"


def test_uts46_mapping_of_case_full_width_forms_and_ideographic_dots() -> None:
    assert dns_name("Bücher.Example") == "xn--bcher-kva.example"
    assert dns_name("ｍａｉｌ。contoso。com") == "mail.contoso.com"
    assert dns_name("XN--BCHER-KVA.example") == "xn--bcher-kva.example"
    assert unicode_name("xn--bcher-kva.example") == "bücher.example"


@pytest.mark.parametrize("name", ["xn--zz.example.com", "mx.xn--zz.example.com", "xn--abc-.example.com",
                                  "xn--a.example.com", "xn--ls8h.example.com"])
def test_invalid_punycode_a_label_is_refused(name: str) -> None:
    with pytest.raises(InputError, match="xn--") as err:
        dns_name(name)
    assert "A-label" in err.value.message


def test_a_label_of_a_non_canonical_u_label_is_refused() -> None:
    # Valid Punycode of "bu" + COMBINING DIAERESIS + "cher": not NFC, so no U-label, so no A-label.
    with pytest.raises(InputError, match="Normalization Form C"):
        dns_name("xn--bucher-xyd.example")


@pytest.mark.parametrize("name", ["😀.example.com", "a\u200db.example.com", "♥.example.com"])
def test_names_idna_2008_disallows_are_refused_with_the_reason(name: str) -> None:
    with pytest.raises(InputError, match=r"IDNA 2008|not a valid"):
        dns_name(name)


def test_ascii_names_are_unchanged() -> None:
    assert dns_name("Mail.Contoso.COM.") == "mail.contoso.com"
    assert dns_name("*.contoso.com", allow_wildcard=True) == "*.contoso.com"
    with pytest.raises(InputError, match="underscore"):
        dns_name("_dmarc.contoso.com")


# --- mixed scripts and look-alikes --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["pаypal.com",            # Cyrillic а among Latin letters
                                  "xn--pypal-4ve.com",     # the same, given as its A-label
                                  "mаil.contoso.com",      # in a host label, not only the registered one
                                  "αpple.com",             # Greek alpha among Latin letters
                                  "аррӏе.com"])            # all Cyrillic, reads as the Latin "apple"
def test_mixed_script_and_lookalike_names_are_refused_with_the_reason(name: str) -> None:
    with pytest.raises(InputError, match="can pass for a different name") as err:
        dns_name(name)
    assert "--allow-mixed-script" in (err.value.hint or "")
    assert dns_name(name, allow_mixed_script=True).startswith(("xn--", "mail.", "xn--m"))


def test_the_refusal_names_the_scripts() -> None:
    with pytest.raises(InputError, match="Cyrillic and Latin"):
        dns_name("pаypal.com")


@pytest.mark.parametrize("name", ["例え.jp", "日本語テキストー.jp", "東京abc.jp", "한국어.kr", "пример.рф", "аррӏе.ru",
                                  "москва.com", "bücher.de", "ελλάδα.gr"])
def test_single_script_and_cjk_combinations_are_accepted(name: str) -> None:
    assert dns_name(name).isascii()


def test_issuance_entry_points_refuse_unless_allowed() -> None:
    with pytest.raises(InputError, match="can pass for"):
        parse_san("DNS:pаypal.com")
    with pytest.raises(InputError, match="can pass for"):
        general_name("pаypal.com")
    with pytest.raises(InputError, match="can pass for"):
        LeafRequest.for_host("mx.pаypal.com", not_before=NOW, not_after=NOW)
    with pytest.raises(InputError, match="can pass for"):
        LeafRequest.for_host("mx.contoso.com", accepted_domains=["pаypal.com"], not_before=NOW, not_after=NOW)
    req = LeafRequest.for_host("mx.pаypal.com", accepted_domains=["pаypal.com"], not_before=NOW, not_after=NOW,
                               extra_sans=[parse_san("DNS:pаypal.net", allow_mixed_script=True)],
                               allow_mixed_script=True)
    with pytest.raises(InputError, match="can pass for"):
        build_exchange_selfsigned("edge.pаypal.com", pki.make_key(), serial=1 << 70, not_before=NOW)
    cert = build_exchange_selfsigned("edge.pаypal.com", pki.make_key(), serial=1 << 70, not_before=NOW,
                                     allow_mixed_script=True)
    assert cert.subject.rfc4514_string() == "CN=edge"
    assert req.common_name == "mx.xn--pypal-4ve.com"
    assert [n.value for n in req.sans] == ["mx.xn--pypal-4ve.com", "xn--pypal-4ve.com", "xn--pypal-4ve.net"]


def test_verification_compares_a_mixed_script_reference_rather_than_refusing_it() -> None:
    root = pki.make_root()
    leaf = pki.make_leaf(root, ["xn--pypal-4ve.com"])
    assert verify_chain(leaf.cert, [], [root.cert], name="pаypal.com", at=NOW).ok


# --- a CSR's names against the profile ----------------------------------------------------------------------


def test_csr_sans_the_profile_does_not_carry_are_listed_not_dropped_silently() -> None:
    upn = x509.OtherName(ObjectIdentifier("1.3.6.1.4.1.311.20.2.3"), b"\x0c\x10edge@contoso.com")
    csr = pki.make_csr("mx.contoso.com", [x509.DNSName("mx.contoso.com"), x509.DNSName("Contoso.com"),
                                  x509.RFC822Name("postmaster@contoso.com"),
                                  x509.UniformResourceIdentifier("https://contoso.com/"),
                                  x509.IPAddress(ipaddress.ip_address("192.0.2.25")), upn])
    names = csr_names(csr, "transport")
    assert names.common_name == "mx.contoso.com"
    assert names.sans == (x509.DNSName("mx.contoso.com"), x509.DNSName("contoso.com"),
                          x509.IPAddress(ipaddress.ip_address("192.0.2.25")))
    assert names.dropped_text == ("email:postmaster@contoso.com", "URI:https://contoso.com/", "otherName:UPN")
    assert names.warning is not None
    assert "email:postmaster@contoso.com" in names.warning and "URI:https://contoso.com/" in names.warning
    assert "transport profile" in names.warning


def test_csr_with_only_carried_names_has_no_warning() -> None:
    names = csr_names(pki.make_csr("mx.contoso.com", [x509.DNSName("contoso.com")]), ProfileName.SERVER)
    assert names.sans == (x509.DNSName("mx.contoso.com"), x509.DNSName("contoso.com"))
    assert names.dropped == () and names.warning is None


def test_csr_names_apply_idna_2008_and_the_mixed_script_rule() -> None:
    assert csr_names(pki.make_csr("faß.example")).sans == (x509.DNSName("xn--fa-hia.example"),)
    with pytest.raises(InputError, match=r"subjectAltName DNS:xn--zz\.contoso\.com"):
        csr_names(pki.make_csr("mx.contoso.com", [x509.DNSName("xn--zz.contoso.com")]))
    with pytest.raises(InputError, match="can pass for"):
        csr_names(pki.make_csr("mx.pаypal.com"))
    assert csr_names(pki.make_csr("mx.pаypal.com"), allow_mixed_script=True).common_name == "mx.xn--pypal-4ve.com"


def test_csr_naming_no_host_is_refused_and_says_what_it_asked_for() -> None:
    with pytest.raises(InputError, match=r"email:a@contoso\.com"):
        csr_names(pki.make_csr(None, [x509.RFC822Name("a@contoso.com")]))


def test_profiles_carry_dns_and_ip_only() -> None:
    for profile in PROFILES.values():
        assert profile.carries(x509.DNSName("a.example"))
        assert profile.carries(x509.IPAddress(ipaddress.ip_address("192.0.2.1")))
        assert not profile.carries(x509.RFC822Name("a@example.com"))
        assert not profile.carries(x509.UniformResourceIdentifier("https://example.com/"))
