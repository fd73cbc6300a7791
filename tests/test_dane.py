"""DANE: TLSA records for our MX (``certkit dane tlsa``) and RFC 7672 matching (certkit.core.dane)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from certkit.cli import main
from certkit.core.dane import TlsaRecord, dane_match, owner_name, tlsa_for, zone_line
from certkit.core.findings import CATALOGUE
from certkit.errors import InputError, MalformedInputError
from certkit.schemas import load
from tests.pki import make_intermediate, make_leaf, make_root

jsonschema = pytest.importorskip("jsonschema")

ENV = {"CERTKIT_CA_PASSPHRASE": "ca-secret"}
NOW = dt.datetime(2030, 6, 1, tzinfo=dt.UTC)
MX = "mx.contoso.com"
ROOT = make_root("DANE Root", not_before=NOW - dt.timedelta(days=400), not_after=NOW + dt.timedelta(days=3000))
INTER = make_intermediate(ROOT, "DANE Issuing CA", not_before=NOW - dt.timedelta(days=300),
                          not_after=NOW + dt.timedelta(days=2000))
LEAF = make_leaf(INTER, [MX, "contoso.com"], not_before=NOW - dt.timedelta(days=10),
                 not_after=NOW + dt.timedelta(days=90))
EXPIRED = make_leaf(INTER, [MX], not_before=NOW - dt.timedelta(days=400), not_after=NOW - dt.timedelta(days=1))
OTHER_NAME = make_leaf(INTER, ["mail.fabrikam.com"], not_before=NOW - dt.timedelta(days=10),
                       not_after=NOW + dt.timedelta(days=90))
# Claims the intermediate as issuer (same name) but is signed by another key.
IMPOSTOR_CA = make_intermediate(make_root("DANE Root"), "DANE Issuing CA")
FORGED = make_leaf(IMPOSTOR_CA, [MX], not_before=NOW - dt.timedelta(days=10), not_after=NOW + dt.timedelta(days=90))


def openssl_spki_sha256(pem: bytes) -> str:
    """The SPKI digest as the usual shell pipeline computes it (independent of certkit)."""
    pub = subprocess.run(["openssl", "x509", "-noout", "-pubkey"], input=pem, capture_output=True, check=True).stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "DER"], input=pub, capture_output=True,
                         check=True).stdout
    out = subprocess.run(["openssl", "dgst", "-sha256"], input=der, capture_output=True, check=True).stdout
    return out.decode().strip().rsplit(" ", 1)[-1].lower()


def match(records: list[str], chain: list[x509.Certificate], hosts: tuple[str, ...] = (MX, "contoso.com"),
          at: dt.datetime = NOW) -> Any:
    return dane_match([TlsaRecord.parse(r) for r in records], chain, host_names=hosts, at=at)


def rec(cert: x509.Certificate, usage: int, selector: int = 1, matching: int = 1) -> str:
    return tlsa_for(cert, usage, selector, matching).text()


# --- records ------------------------------------------------------------------------------------


@pytest.mark.parametrize("key_type", ["ec", "rsa"])
def test_records_match_openssl(key_type: str) -> None:
    leaf = make_leaf(INTER, [MX], key_type=key_type)
    record = tlsa_for(leaf.cert, 3)
    assert record.text() == f"3 1 1 {openssl_spki_sha256(leaf.pem)}"
    assert tlsa_for(INTER.cert, 2).data.hex() == openssl_spki_sha256(INTER.pem)
    assert tlsa_for(leaf.cert, 3, 0, 1).data == hashlib.sha256(leaf.der).digest()
    assert tlsa_for(leaf.cert, 3, 1, 2).data == hashlib.sha512(
        leaf.cert.public_key().public_bytes(serialization.Encoding.DER,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)).digest()


def test_owner_name_zone_line_and_parse_round_trip() -> None:
    assert owner_name("MX.Contoso.COM.") == "_25._tcp.mx.contoso.com."
    assert owner_name(MX, 587) == "_587._tcp.mx.contoso.com."
    record = tlsa_for(LEAF.cert, 3)
    line = zone_line(record, MX, ttl=3600)
    assert line == f"_25._tcp.mx.contoso.com. 3600 IN TLSA {record.text()}"
    assert zone_line(record, MX) == f"_25._tcp.mx.contoso.com. IN TLSA {record.text()}"
    assert TlsaRecord.parse(line) == record
    hexdata = record.data.hex().upper()
    assert TlsaRecord.parse(f"DANE-EE SPKI SHA2-256 ( {hexdata[:20]} {hexdata[20:]} )") == record
    for bad in ("3 1 1", "3 1 1 xyz", "3 1 1 abc", "300 1 1 ab", "x 1 1 ab"):
        with pytest.raises(MalformedInputError):
            TlsaRecord.parse(bad)
    with pytest.raises(InputError):
        owner_name("bad host")


# --- matching -----------------------------------------------------------------------------------


def test_dane_ee_match_and_mismatch() -> None:
    ok = match([rec(LEAF.cert, 3)], [LEAF.cert, INTER.cert])
    assert ok.ok and ok.usable_records and not ok.findings
    assert ok.checks[0].certificate == LEAF.cert
    bad = match([rec(OTHER_NAME.cert, 3)], [LEAF.cert, INTER.cert])
    assert not bad.ok and bad.usable_records
    assert [f.code for f in bad.findings] == ["dane.no-match"]
    assert "does not match the server's key" in bad.checks[0].reason


@pytest.mark.parametrize(("selector", "matching"), [(0, 1), (1, 2), (1, 0), (0, 0), (0, 2)])
def test_dane_ee_selectors_and_matching_types(selector: int, matching: int) -> None:
    assert match([rec(LEAF.cert, 3, selector, matching)], [LEAF.cert]).ok
    assert not match([rec(OTHER_NAME.cert, 3, selector, matching)], [LEAF.cert]).ok


def test_expired_leaf_passes_dane_ee_and_fails_dane_ta() -> None:
    assert match([rec(EXPIRED.cert, 3)], [EXPIRED.cert, INTER.cert]).ok
    ta = match([rec(INTER.cert, 2)], [EXPIRED.cert, INTER.cert])
    assert not ta.ok and "expired" in ta.checks[0].reason
    assert ta.findings[0].code == "dane.no-match"


def test_dane_ee_ignores_names() -> None:
    assert match([rec(OTHER_NAME.cert, 3)], [OTHER_NAME.cert]).ok


def test_dane_ta_needs_the_anchor_in_the_chain() -> None:
    sent = match([rec(INTER.cert, 2)], [LEAF.cert, INTER.cert])
    assert sent.ok and sent.checks[0].certificate == INTER.cert
    not_sent = match([rec(INTER.cert, 2)], [LEAF.cert])
    assert not not_sent.ok and "sent" in not_sent.checks[0].reason
    # The root as anchor: matches only when sent, through the intermediate.
    assert match([rec(ROOT.cert, 2)], [LEAF.cert, INTER.cert, ROOT.cert]).ok
    assert not match([rec(ROOT.cert, 2)], [LEAF.cert, INTER.cert]).ok
    # A 2 x x record for the leaf itself is not a trust anchor.
    own = match([rec(LEAF.cert, 2)], [LEAF.cert, INTER.cert])
    assert not own.ok and "DANE-EE" in own.checks[0].reason


def test_dane_ta_checks_the_names() -> None:
    wrong = match([rec(INTER.cert, 2)], [OTHER_NAME.cert, INTER.cert])
    assert not wrong.ok and "mail.fabrikam.com" in wrong.checks[0].reason
    # The next-hop domain is a reference identifier too; a wildcard covers one leftmost label.
    assert match([rec(INTER.cert, 2)], [LEAF.cert, INTER.cert], hosts=("mx9.contoso.com", "contoso.com")).ok
    wild = make_leaf(INTER, ["*.contoso.com"], not_before=NOW - dt.timedelta(days=1),
                     not_after=NOW + dt.timedelta(days=9))
    assert match([rec(INTER.cert, 2)], [wild.cert, INTER.cert], hosts=("mx.contoso.com",)).ok
    assert not match([rec(INTER.cert, 2)], [wild.cert, INTER.cert], hosts=("a.mx.contoso.com",)).ok
    # The CN counts only when there is no DNS SAN.
    cn_only = make_leaf(INTER, [MX], san=False, not_before=NOW - dt.timedelta(days=1),
                        not_after=NOW + dt.timedelta(days=9))
    assert match([rec(INTER.cert, 2)], [cn_only.cert, INTER.cert], hosts=(MX,)).ok
    san_other = make_leaf(INTER, ["other.contoso.com"], cn=MX, not_before=NOW - dt.timedelta(days=1),
                          not_after=NOW + dt.timedelta(days=9))
    assert not match([rec(INTER.cert, 2)], [san_other.cert, INTER.cert], hosts=(MX,)).ok


def test_dane_ta_rejects_a_leaf_signed_by_another_key() -> None:
    assert FORGED.cert.issuer == INTER.cert.subject
    forged = match([rec(INTER.cert, 2)], [FORGED.cert, INTER.cert])
    assert not forged.ok and "does not chain" in forged.checks[0].reason


def test_pkix_usages_only_are_unusable() -> None:
    result = match([rec(LEAF.cert, 1), rec(INTER.cert, 0)], [LEAF.cert, INTER.cert])
    assert not result.ok and not result.usable_records
    assert [f.code for f in result.findings] == ["dane.unusable-records"]
    assert all(not c.usable for c in result.checks)


def test_unknown_selector_and_bad_lengths_are_unusable() -> None:
    digest = tlsa_for(LEAF.cert, 3).data.hex()
    result = match([f"3 7 1 {digest}", f"3 1 9 {digest}", f"3 1 1 {digest[:-2]}"], [LEAF.cert])
    assert not result.usable_records and result.findings[0].code == "dane.unusable-records"
    assert [c.reason.split()[0] for c in result.checks] == ["selector", "matching", "matching"]
    # One usable record among unusable ones is enough for DANE to apply.
    mixed = match([f"3 7 1 {digest}", f"3 1 1 {digest}"], [LEAF.cert])
    assert mixed.ok and mixed.usable_records and mixed.matched == TlsaRecord.parse(f"3 1 1 {digest}")


def test_every_check_says_why() -> None:
    result = match([rec(OTHER_NAME.cert, 3), rec(ROOT.cert, 2), rec(INTER.cert, 2)], [LEAF.cert, INTER.cert])
    assert result.ok and result.matched == TlsaRecord.parse(rec(INTER.cert, 2))
    assert [c.matched for c in result.checks] == [False, False, True]
    assert all(c.reason for c in result.checks)


def test_no_records_is_not_dane() -> None:
    result = dane_match([], [LEAF.cert], host_names=[MX], at=NOW)
    assert not result.ok and not result.usable_records and not result.findings


def test_catalogue_entries() -> None:
    assert CATALOGUE["dane.no-match"].tlsrpt_result_type == "tlsa-invalid"
    assert CATALOGUE["dane.unusable-records"].tlsrpt_result_type == "tlsa-invalid"
    assert CATALOGUE["dane.dnssec-bogus"].tlsrpt_result_type == "dnssec-invalid"
    assert CATALOGUE["dane.starttls-missing"].tlsrpt_result_type == "starttls-not-supported"
    for code in ("dane.no-match", "dane.unusable-records", "dane.starttls-missing", "dane.dnssec-bogus"):
        assert "certkit dane tlsa" in CATALOGUE[code].remedy


# --- the command --------------------------------------------------------------------------------


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), env=ENV)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def validator() -> Any:
    schema = load("dane-tlsa.schema.json")
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def _home(tmp_path: Path, *, intermediate: bool, key: str = "ec-p256") -> tuple[Path, Path]:
    home, out = tmp_path / "home", tmp_path / "out"
    args = ["ca", "init", "--home", str(home), "--name", "Contoso Transport CA", "--key", "ec-p256"]
    assert run(*args, *(["--intermediate"] if intermediate else []))[0] == 0
    code, _, err = run("ca", "issue", MX, "--home", str(home), "--out", str(out), "--key", key)
    assert code == 0, err
    return home, out


@pytest.mark.parametrize("key", ["ec-p256", "rsa2048"])
def test_cli_from_home_with_intermediate(tmp_path: Path, key: str, validator: Any) -> None:
    home, out = _home(tmp_path, intermediate=True, key=key)
    leaf_pem = (out / f"{MX}.crt").read_bytes()
    inter_pem = (home / "issuing.crt").read_bytes()
    code, stdout, err = run("dane", "tlsa", MX, "--home", str(home), "--ttl", "3600")
    assert code == 0, err
    assert stdout.splitlines() == [
        f"_25._tcp.{MX}. 3600 IN TLSA 3 1 1 {openssl_spki_sha256(leaf_pem)}",
        f"_25._tcp.{MX}. 3600 IN TLSA 2 1 1 {openssl_spki_sha256(inter_pem)}",
    ]
    assert "note:" not in err  # the intermediate is in the chain the server sends
    code, stdout, _ = run("dane", "tlsa", MX.upper(), "--home", str(home), "--json", "--port", "587")
    data = json.loads(stdout)
    validator.validate(data)
    assert data["schema_version"] == 2 and data["port"] == 587
    ee, ta = data["records"]
    assert (ee["usage"], ee["selector"], ee["matching_type"], ee["name"]) == (3, 1, 1, f"_587._tcp.{MX}.")
    assert ee["certificate"]["role"] == "leaf" and ee["certificate"]["subject"] == f"CN={MX}"
    leaf_sha256 = x509.load_pem_x509_certificate(leaf_pem).fingerprint(hashes.SHA256()).hex().upper()
    assert ee["certificate"]["fingerprint_sha256"] == leaf_sha256
    assert ta["usage"] == 2 and ta["data"] == openssl_spki_sha256(inter_pem)
    # The records match the chain the CA wrote, as a DANE client would check it.
    chain = x509.load_pem_x509_certificates((out / f"{MX}.chain.pem").read_bytes())
    records = [TlsaRecord.parse(r["line"]) for r in data["records"]]
    result = dane_match(records, chain, host_names=[MX], at=dt.datetime.now(dt.UTC))
    assert result.ok and all(c.matched for c in result.checks)


def test_cli_from_home_without_intermediate_notes_the_root(tmp_path: Path) -> None:
    home, _ = _home(tmp_path, intermediate=False)
    code, stdout, err = run("dane", "tlsa", MX, "--home", str(home))
    assert code == 0
    assert stdout.splitlines()[1].endswith(openssl_spki_sha256((home / "root.crt").read_bytes()))
    assert "note:" in err and "append the root" in err
    code, stdout, err = run("dane", "tlsa", MX, "--home", str(home), "--usage", "ee")
    assert code == 0 and len(stdout.splitlines()) == 1 and " 3 1 1 " in stdout and "note:" not in err


def test_cli_from_cert_file(tmp_path: Path, validator: Any) -> None:
    chain = tmp_path / "chain.pem"
    chain.write_bytes(LEAF.pem + INTER.pem)
    code, stdout, err = run("dane", "tlsa", MX, "--cert", str(chain), "--json")
    assert code == 0, err
    data = json.loads(stdout)
    validator.validate(data)
    assert [r["data"] for r in data["records"]] == [openssl_spki_sha256(LEAF.pem), openssl_spki_sha256(INTER.pem)]
    assert data["records"][0]["ttl"] is None and data["source"] == str(chain)
    leaf_only = tmp_path / "leaf.pem"
    leaf_only.write_bytes(LEAF.pem)
    code, stdout, err = run("dane", "tlsa", MX, "--cert", str(leaf_only), "--usage", "ee")
    assert code == 0 and stdout == f"_25._tcp.{MX}. IN TLSA 3 1 1 {openssl_spki_sha256(LEAF.pem)}\n"
    for usage in ("ta", "both"):
        code, stdout, err = run("dane", "tlsa", MX, "--cert", str(leaf_only), "--usage", usage)
        assert code == 2 and not stdout
        assert len(err.strip().splitlines()) == 1 and "chain file" in err


@pytest.mark.parametrize(("args", "words"), [
    (("bad host",), "not a valid host name"),
    (("mx2.contoso.com",), "no certificate for mx2.contoso.com"),
    ((MX, "--cert", "/nonexistent/chain.pem"), "chain.pem"),
    ((MX, "--cert", "x.pem", "--home", "h"), "not both"),
    ((MX, "--port", "0"), "0"),
])
def test_cli_errors_are_one_line_exit_2(tmp_path: Path, args: tuple[str, ...], words: str) -> None:
    home, _ = _home(tmp_path, intermediate=True)
    full = [*args] if "--home" in args or "--cert" in args else [*args, "--home", str(home)]
    code, stdout, err = run("dane", "tlsa", *full)
    assert code == 2 and not stdout
    assert words in err


def test_cli_skips_revoked(tmp_path: Path) -> None:
    home, _ = _home(tmp_path, intermediate=True)
    code, _, _ = run("ca", "revoke", MX, "--home", str(home))
    assert code == 0
    code, _, err = run("dane", "tlsa", MX, "--home", str(home))
    assert code == 2 and "no certificate" in err
