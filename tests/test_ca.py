"""The internal CA through the library: profiles, serials, validity, names, CSRs, renewal, revocation, CRLs."""

from __future__ import annotations

import datetime as dt
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certkit import (
    AlreadyExistsError,
    CertificateAuthority,
    InputError,
    MalformedInputError,
    NotFoundError,
    PassphraseError,
    PolicyError,
    UsageError,
)
from certkit.clock import FixedClock
from certkit.core.formats import load_csr, load_pfx
from certkit.core.keys import generate_key
from tests.conftest import PASS, T0
from tests.pki import make_csr

MakeCA = Callable[..., CertificateAuthority]


def ext(cert: x509.Certificate, cls: type) -> object:
    return cert.extensions.get_extension_for_class(cls).value


# --- init ---------------------------------------------------------------------------------------

def test_init_writes_encrypted_root_key_0600_and_refuses_a_second_init(ca: CertificateAuthority) -> None:
    key_file = ca.home / "root.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert b"ENCRYPTED" in key_file.read_bytes()
    with pytest.raises(TypeError):
        serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    with pytest.raises(AlreadyExistsError, match="already holds a CA"):
        CertificateAuthority.init(ca.home, name="Other", passphrase=PASS)


def test_root_is_a_ca_with_key_cert_sign_and_name_constraints(make_ca: MakeCA) -> None:
    authority = make_ca(permit_domains=["contoso.com", "contoso.net"])
    bc = ext(authority.root, x509.BasicConstraints)
    assert isinstance(bc, x509.BasicConstraints) and bc.ca
    nc = authority.root.extensions.get_extension_for_class(x509.NameConstraints)
    assert nc.critical
    assert [g.value for g in nc.value.permitted_subtrees or []] == ["contoso.com", "contoso.net"]


def test_open_without_a_ca_says_how_to_create_one(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="certkit ca init"):
        CertificateAuthority.open(tmp_path)


def test_wrong_passphrase_is_a_passphrase_error(ca: CertificateAuthority) -> None:
    reopened = CertificateAuthority.open(ca.home)
    with pytest.raises(PassphraseError, match="wrong"):
        reopened.unlock(b"not it")


def test_locked_ca_refuses_to_sign_but_reads(ca: CertificateAuthority) -> None:
    reopened = CertificateAuthority.open(ca.home)
    assert reopened.root == ca.root
    with pytest.raises(PassphraseError, match="locked"):
        reopened.issue("mail.contoso.com")


# --- the transport profile ------------------------------------------------------------------------

def test_transport_profile_is_what_domain_security_needs(ca: CertificateAuthority) -> None:
    issued = ca.issue("Mail.Contoso.com.", accepted_domains=["contoso.com", "contoso.net"],
                      sans=["IP:192.0.2.25"], key_type="rsa2048")
    cert = issued.certificate
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "mail.contoso.com"
    san = ext(cert, x509.SubjectAlternativeName)
    assert isinstance(san, x509.SubjectAlternativeName)
    assert san.get_values_for_type(x509.DNSName) == ["mail.contoso.com", "contoso.com", "contoso.net"]
    assert [str(i) for i in san.get_values_for_type(x509.IPAddress)] == ["192.0.2.25"]
    eku = ext(cert, x509.ExtendedKeyUsage)
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]  # type: ignore[call-overload]
    ku = ext(cert, x509.KeyUsage)
    assert isinstance(ku, x509.KeyUsage) and ku.digital_signature and ku.key_encipherment and not ku.key_cert_sign
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)
    cdp = ext(cert, x509.CRLDistributionPoints)
    assert isinstance(cdp, x509.CRLDistributionPoints)
    assert cdp[0].full_name[0].value == "http://127.0.0.1:1/contoso.crl"  # type: ignore[index]
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and not bc.value.ca
    assert isinstance(cert.public_key(), rsa.RSAPublicKey) and cert.public_key().key_size == 2048  # type: ignore[union-attr]
    cert.verify_directly_issued_by(ca.root)


def test_ec_transport_certificate_has_no_key_encipherment(ca: CertificateAuthority) -> None:
    ku = ext(ca.issue("mail.contoso.com", key_type="ec-p256").certificate, x509.KeyUsage)
    assert isinstance(ku, x509.KeyUsage) and ku.digital_signature and not ku.key_encipherment


@pytest.mark.parametrize(("profile", "ekus"), [
    ("server", [ExtendedKeyUsageOID.SERVER_AUTH]),
    ("client", [ExtendedKeyUsageOID.CLIENT_AUTH]),
])
def test_server_and_client_profiles_carry_one_eku(ca: CertificateAuthority, profile: str, ekus: list[object]) -> None:
    cert = ca.issue("mail.contoso.com", profile=profile, key_type="ec-p256").certificate
    assert list(ext(cert, x509.ExtendedKeyUsage)) == ekus  # type: ignore[call-overload]


def test_no_crl_url_means_no_cdp(make_ca: MakeCA) -> None:
    authority = make_ca(crl_url=None)
    cert = authority.issue("mail.contoso.com", key_type="ec-p256").certificate
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_class(x509.CRLDistributionPoints)


def test_intermediate_issues_and_chain_is_leaf_then_intermediate(make_ca: MakeCA) -> None:
    authority = make_ca(intermediate=True, aia_url="http://127.0.0.1:1/issuing.crt")
    issued = authority.issue("mail.contoso.com", key_type="ec-p256")
    assert issued.certificate.issuer == authority.issuer.subject != authority.root.subject
    issued.certificate.verify_directly_issued_by(authority.issuer)
    authority.issuer.verify_directly_issued_by(authority.root)
    chain = x509.load_pem_x509_certificates(issued.chain_pem())
    assert chain == [issued.certificate, authority.issuer]
    bc = ext(authority.issuer, x509.BasicConstraints)
    assert isinstance(bc, x509.BasicConstraints) and bc.path_length == 0
    cdp = ext(authority.issuer, x509.CRLDistributionPoints)
    assert cdp[0].full_name[0].value == "http://127.0.0.1:1/contoso-root.crl"  # type: ignore[index]


# --- serials --------------------------------------------------------------------------------------

def test_serials_are_positive_random_at_most_20_octets_and_unique(ca: CertificateAuthority) -> None:
    from certkit.ca import IssueRequest

    issued = ca.issue_many([IssueRequest(f"h{i}.contoso.com", key_type="ec-p256") for i in range(200)])
    serials = [i.serial for i in issued]
    assert len(set(serials)) == 200
    assert all((1 << 64) <= s < (1 << 159) for s in serials)
    assert all(len(i.certificate.public_bytes(serialization.Encoding.DER)) > 0 for i in issued)
    assert ca.index.count() == 200


# --- validity -------------------------------------------------------------------------------------

def test_validity_may_end_with_the_ca_and_is_clamped_to_it_after(tmp_path: Path) -> None:
    clock = FixedClock(T0)
    authority = CertificateAuthority.init(tmp_path / "h", name="Short CA", passphrase=PASS, key_type="ec-p256",
                                          days=30, clock=clock)
    ca_end = authority.root.not_valid_after_utc
    # The leaf's notAfter is now + days; move the clock so that it lands exactly on the CA's end: no warning ...
    clock._at = ca_end - dt.timedelta(days=10)
    exact = authority.issue("ok.contoso.com", days=10, key_type="ec-p256")
    assert exact.certificate.not_valid_after_utc == ca_end and exact.warnings == ()
    # ... one second later it would outlive the CA: notAfter is cut back to the CA's, with a warning.
    clock._at = ca_end - dt.timedelta(days=10) + dt.timedelta(seconds=1)
    late = authority.issue("late.contoso.com", days=10, key_type="ec-p256")
    assert late.certificate.not_valid_after_utc == ca_end
    assert len(late.warnings) == 1 and "when the CA certificate 'Short CA' expires" in late.warnings[0]
    assert authority.get("late.contoso.com").not_after == ca_end


def test_not_before_is_backdated_five_minutes_from_the_injected_clock(ca: CertificateAuthority) -> None:
    cert = ca.issue("mail.contoso.com", days=1, key_type="ec-p256").certificate
    assert cert.not_valid_before_utc == T0 - dt.timedelta(minutes=5)
    assert cert.not_valid_after_utc == T0 + dt.timedelta(days=1)


# --- names ----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "message"), [
    ("mail contoso.com", "space"),
    ("mail_1.contoso.com", "underscore"),
    ("a" * 64 + ".contoso.com", "over the limit of 63"),
    (".".join(["abcdefghi"] * 26), "over the limit of 253"),
    ("mail..contoso.com", "empty label"),
    ("-mail.contoso.com", "hyphen"),
    ("*.contoso.com", "wildcard"),
    ("mail", "fully qualified"),
])
def test_bad_host_names_are_refused_with_the_reason(ca: CertificateAuthority, name: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        ca.issue(name, key_type="ec-p256")
    assert ca.index.count() == 0


def test_internationalised_names_become_a_labels(ca: CertificateAuthority) -> None:
    cert = ca.issue("mail.bücher.example", accepted_domains=["bücher.example"], key_type="ec-p256").certificate
    san = ext(cert, x509.SubjectAlternativeName)
    assert san.get_values_for_type(x509.DNSName) == ["mail.xn--bcher-kva.example", "xn--bcher-kva.example"]  # type: ignore[attr-defined]


def test_names_outside_the_name_constraints_are_refused(make_ca: MakeCA) -> None:
    authority = make_ca(permit_domains=["contoso.com"])
    authority.issue("mail.contoso.com", key_type="ec-p256")
    with pytest.raises(PolicyError, match="outside the CA's name constraints"):
        authority.issue("mail.contoso.com", accepted_domains=["fabrikam.com"], key_type="ec-p256")
    with pytest.raises(PolicyError):
        authority.issue("mail.notcontoso.com", key_type="ec-p256")


# --- keys -----------------------------------------------------------------------------------------

def test_rsa_below_2048_is_refused(ca: CertificateAuthority) -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(PolicyError, match="RSA 1024"):
        ca.issue("mail.contoso.com", key=weak)
    with pytest.raises(PolicyError, match="at least 2048"):
        ca.issue("mail.contoso.com", key_type="rsa1024")


# --- CSRs -----------------------------------------------------------------------------------------

def test_csr_names_are_kept_and_the_profile_decides_the_extensions(ca: CertificateAuthority) -> None:
    key = generate_key("ec-p256")
    csr = make_csr("edge.contoso.com", ["edge.contoso.com", "contoso.com"], key=key, ca_ext=True)
    issued = ca.sign_csr(csr, profile="transport")
    cert = issued.certificate
    assert issued.key is None
    assert ext(cert, x509.SubjectAlternativeName).get_values_for_type(x509.DNSName) == [  # type: ignore[attr-defined]
        "edge.contoso.com", "contoso.com"]
    assert not ext(cert, x509.BasicConstraints).ca  # type: ignore[attr-defined]
    assert ExtendedKeyUsageOID.CLIENT_AUTH in ext(cert, x509.ExtendedKeyUsage)  # type: ignore[operator]
    assert cert.public_key() == key.public_key()


@pytest.mark.parametrize("form", ["pem", "new-pem", "der", "base64"])
def test_csr_is_read_in_every_form_exchange_writes(form: str) -> None:
    import base64

    csr = make_csr("edge.contoso.com")
    pem = csr.public_bytes(serialization.Encoding.PEM)
    der = csr.public_bytes(serialization.Encoding.DER)
    data = {"pem": pem, "new-pem": pem.replace(b"CERTIFICATE REQUEST", b"NEW CERTIFICATE REQUEST"), "der": der,
            "base64": base64.encodebytes(der)}[form]
    assert load_csr(data).subject == csr.subject


def test_csr_with_a_bad_signature_is_refused() -> None:
    csr = make_csr("edge.contoso.com")
    der = bytearray(csr.public_bytes(serialization.Encoding.DER))
    der[-5] ^= 0x01  # flip a bit in the signature
    with pytest.raises(MalformedInputError, match="signature"):
        load_csr(bytes(der))


@pytest.mark.parametrize("data", [b"", b"garbage", b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n"
                                  b"-----END CERTIFICATE REQUEST-----\n", b"\x30\x82\x01"])
def test_malformed_csr_is_one_clear_error(data: bytes) -> None:
    with pytest.raises(MalformedInputError):
        load_csr(data, source="req.csr")


# --- renewal --------------------------------------------------------------------------------------

def test_renew_keeps_the_key_and_names_and_links_to_the_old_one(ca: CertificateAuthority, clock: FixedClock) -> None:
    first = ca.issue("mail.contoso.com", accepted_domains=["contoso.com"], key_type="ec-p256", days=90)
    clock.advance(dt.timedelta(days=60))
    renewed = ca.renew("mail.contoso.com")
    assert renewed.certificate.public_key() == first.certificate.public_key()
    assert renewed.key is None
    assert ext(renewed.certificate, x509.SubjectAlternativeName) == ext(first.certificate,
                                                                        x509.SubjectAlternativeName)
    assert renewed.certificate.not_valid_after_utc == clock.now() + dt.timedelta(days=90)
    assert ca.get(renewed.serial).renewed_from == first.serial
    assert ca.get(first.serial).renewed_by == renewed.serial
    # the name now finds the newest certificate
    assert ca.get("mail.contoso.com").serial == renewed.serial


def test_renew_with_rekey_makes_a_new_key_of_the_same_type(ca: CertificateAuthority) -> None:
    first = ca.issue("mail.contoso.com", key_type="ec-p256")
    renewed = ca.renew(first.serial, rekey=True)
    assert renewed.key is not None
    assert renewed.certificate.public_key() != first.certificate.public_key()
    assert isinstance(renewed.key, ec.EllipticCurvePrivateKey)


def test_renewing_a_compromised_key_requires_rekey(ca: CertificateAuthority) -> None:
    first = ca.issue("mail.contoso.com", key_type="ec-p256")
    ca.revoke(first.serial, reason="keyCompromise")
    with pytest.raises(PolicyError, match="--rekey"):
        ca.renew(first.serial)
    assert ca.renew(first.serial, rekey=True).key is not None


# --- revocation and CRLs --------------------------------------------------------------------------

def test_revoked_certificate_is_on_the_next_crl_with_its_reason(ca: CertificateAuthority, clock: FixedClock) -> None:
    a = ca.issue("a.contoso.com", key_type="ec-p256")
    b = ca.issue("b.contoso.com", key_type="ec-p256")
    first = ca.publish_crl(days=7)[0]
    ca.revoke(a.serial, reason="key-compromise")
    clock.advance(dt.timedelta(hours=1))
    second = ca.publish_crl(days=7)[0]
    assert second.number > first.number
    crl = x509.load_der_x509_crl(second.der_path.read_bytes())
    assert crl.is_signature_valid(ca.root.public_key())  # type: ignore[arg-type]
    entry = crl.get_revoked_certificate_by_serial_number(a.serial)
    assert entry is not None
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason is x509.ReasonFlags.key_compromise
    assert crl.get_revoked_certificate_by_serial_number(b.serial) is None
    assert crl.next_update_utc == clock.now() + dt.timedelta(days=7)
    assert ext_number(crl) == second.number
    assert x509.load_pem_x509_crl(second.pem_path.read_bytes()) == crl


def ext_number(crl: x509.CertificateRevocationList) -> int:
    return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number


def test_revoking_twice_or_an_unknown_serial_is_a_clear_error(ca: CertificateAuthority) -> None:
    a = ca.issue("a.contoso.com", key_type="ec-p256")
    ca.revoke(a.serial)
    with pytest.raises(UsageError, match="already revoked"):
        ca.revoke(a.serial)
    with pytest.raises(NotFoundError):
        ca.revoke("deadbeefdeadbeef")
    with pytest.raises(InputError, match="Unknown revocation reason"):
        ca.revoke(ca.issue("b.contoso.com", key_type="ec-p256").serial, reason="because")


def test_status_warns_before_the_crl_lapses_and_fails_after(ca: CertificateAuthority, clock: FixedClock) -> None:
    assert {f.code for f in ca.status().findings} == {"revocation.unreachable"}  # no CRL published yet
    ca.publish_crl(days=8)
    assert ca.status().ok and not ca.status().findings
    clock.advance(dt.timedelta(days=4, minutes=6))  # less than half of the 8 days left
    assert [f.code for f in ca.status().findings] == ["revocation.crl-expiring"]
    assert ca.status().ok
    clock.advance(dt.timedelta(days=4))
    st = ca.status()
    assert [f.code for f in st.findings] == ["revocation.crl-stale"]
    assert not st.ok


def test_status_lists_certificates_expiring_soon(ca: CertificateAuthority) -> None:
    ca.publish_crl()
    ca.issue("soon.contoso.com", days=10, key_type="ec-p256")
    ca.issue("later.contoso.com", days=100, key_type="ec-p256")
    st = ca.status()
    assert [r.common_name for r in st.expiring] == ["soon.contoso.com"]
    assert [r.common_name for r in ca.records(expiring_within=dt.timedelta(days=30))] == ["soon.contoso.com"]


# --- files ----------------------------------------------------------------------------------------

def test_write_to_names_files_for_scripts_keys_0600_and_never_overwrites(ca: CertificateAuthority,
                                                                          tmp_path: Path) -> None:
    issued = ca.issue("mail.contoso.com", key_type="ec-p256")
    out = tmp_path / "out"
    paths = issued.write_to(out, pfx_password=b"pfx", key_passphrase=b"keypass")
    assert sorted(p.name for p in paths.values()) == [
        "mail.contoso.com.chain.pem", "mail.contoso.com.crt", "mail.contoso.com.key", "mail.contoso.com.pfx"]
    assert stat.S_IMODE((out / "mail.contoso.com.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((out / "mail.contoso.com.pfx").stat().st_mode) == 0o600
    assert b"ENCRYPTED" in (out / "mail.contoso.com.key").read_bytes()
    before = (out / "mail.contoso.com.crt").read_bytes()
    other = ca.issue("mail.contoso.com", key_type="ec-p256")
    with pytest.raises(AlreadyExistsError, match="does not overwrite"):
        other.write_to(out)
    assert (out / "mail.contoso.com.crt").read_bytes() == before
    assert not [p for p in os.listdir(out) if p.endswith(".tmp")]


@pytest.mark.parametrize("target", ["legacy", "modern"])
def test_pfx_round_trips_with_key_certificate_and_chain(make_ca: MakeCA, target: str) -> None:
    authority = make_ca(intermediate=True)
    issued = authority.issue("mail.contoso.com", key_type="rsa2048")
    key, cert, extra = load_pfx(issued.pfx(b"s3cret", target), b"s3cret")
    assert cert == issued.certificate
    assert key is not None and key.public_key() == issued.certificate.public_key()
    assert extra == [authority.issuer, authority.root]
    with pytest.raises(PassphraseError, match="wrong"):
        load_pfx(issued.pfx(b"s3cret", target), b"nope")


@pytest.mark.parametrize(("damage", "message"), [
    (lambda home: (home / "root.crt").write_text("garbage"), "is not a certificate"),
    (lambda home: (home / "root.crt").write_bytes(
        CertificateAuthority.init(home.parent / "other", name="Other CA", passphrase=PASS, key_type="ec-p256")
        .root_pem()), "does not belong to its key"),
    (lambda home: (home / "root.key").unlink(), "cannot be read"),
])
def test_a_damaged_home_is_a_store_error(ca: CertificateAuthority, damage: object, message: str) -> None:
    from certkit import StoreError

    damage(ca.home)  # type: ignore[operator]
    with pytest.raises(StoreError, match=message):
        CertificateAuthority.open(ca.home, passphrase=PASS)


@pytest.mark.parametrize(("fqdn", "message"), [
    ("192.0.2.25", "is an IP address"),
    ("a" * 60 + ".contoso.com", "at most 64"),
])
def test_an_ip_or_a_name_too_long_for_a_cn_is_refused(ca: CertificateAuthority, fqdn: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        ca.issue(fqdn, key_type="ec-p256")


def test_a_ca_name_too_long_for_a_cn_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="--name"):
        CertificateAuthority.init(tmp_path / "h", name="N" * 62, passphrase=PASS, key_type="ec-p256",
                                  intermediate=True)
    assert not (tmp_path / "h" / "ca.db").exists()


def test_revoke_by_name_needs_exactly_one_certificate_with_that_cn(ca: CertificateAuthority) -> None:
    edge1 = ca.issue("edge1.contoso.com", accepted_domains=["contoso.com"], key_type="ec-p256")
    ca.issue("edge2.contoso.com", accepted_domains=["contoso.com"], key_type="ec-p256")
    # An accepted domain shared by both is not a name to revoke by.
    with pytest.raises(NotFoundError):
        ca.revoke("contoso.com")
    ca.renew("edge1.contoso.com")
    with pytest.raises(UsageError, match=r"2 valid certificates are named edge1\.contoso\.com"):
        ca.revoke("EDGE1.contoso.com.")
    assert ca.revoke(edge1.serial).status == "revoked"
    assert ca.revoke("edge1.contoso.com").status == "revoked"  # now only the renewal is valid
    assert all(r.status == "revoked" for r in ca.records() if r.common_name == "edge1.contoso.com")
    # show and renew find by normalised name and by SAN
    assert ca.get("EDGE2.Contoso.COM.").common_name == "edge2.contoso.com"
    assert ca.get("contoso.com").common_name in {"edge1.contoso.com", "edge2.contoso.com"}


def test_init_over_an_interrupted_init_says_what_to_delete(tmp_path: Path) -> None:
    home = tmp_path / "h"
    home.mkdir()
    (home / "root.key").write_text("left over")
    with pytest.raises(AlreadyExistsError, match=r"interrupted 'ca init'.*Delete root\.key"):
        CertificateAuthority.init(home, name="Again", passphrase=PASS, key_type="ec-p256")


def test_a_file_with_two_requests_is_refused() -> None:
    one = make_csr("a.contoso.com").public_bytes(serialization.Encoding.PEM)
    two = make_csr("b.contoso.com").public_bytes(serialization.Encoding.PEM)
    with pytest.raises(MalformedInputError, match="2 certificate requests"):
        load_csr(one + two)


def test_a_wrong_passphrase_is_always_a_passphrase_error_even_when_the_padding_happens_to_look_right() -> None:
    """About one wrong passphrase in 256 decrypts to valid-looking CBC padding and then fails as an ASN.1 error;
    that is still the passphrase, not a damaged file. 1024 tries meet that case with probability 98 %."""
    from cryptography.hazmat.primitives import serialization as ser
    from cryptography.hazmat.primitives.asymmetric import ec as _ec

    from certkit.core.keys import load_private_key
    from certkit.errors import PassphraseError

    key = _ec.generate_private_key(_ec.SECP256R1())
    for i in range(1024):
        pem = key.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.BestAvailableEncryption(b"right %d" % i))
        with pytest.raises(PassphraseError, match="passphrase for the key is wrong"):
            load_private_key(pem, b"wrong")
