"""The CA and its commands on names and validity: IDNA 2008, mixed scripts, CSR SANs the profile does not carry,
and a validity kept within the CA's (cut back with a warning; a clock before the CA refused)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from certkit.ca import CertificateAuthority, IssueRequest
from certkit.cli import main
from certkit.clock import FixedClock
from certkit.errors import PolicyError
from tests.conftest import T0
from tests.pki import make_csr

ENV = {"CERTKIT_CA_PASSPHRASE": "ca-secret"}
MIXED = "p\u0430ypal.com"  # a Cyrillic U+0430 in a Latin word

MakeCA = Callable[..., CertificateAuthority]


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), env=ENV)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def _home(tmp_path: Path, *extra: str) -> Path:
    h = tmp_path / "home"
    code, _, err = run("ca", "init", "--home", str(h), "--name", "Names CA", "--key", "ec-p256", "--crl-url",
                       "http://127.0.0.1:1/names.crl", *extra)
    assert code == 0, err
    return h


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return _home(tmp_path)


def _one_line_refusal(code: int, out: str, err: str) -> str:
    assert code == 2, (out, err)
    line = err.strip()
    assert line.startswith("certkit: error: ") and "\n" not in line and "Traceback" not in err, err
    return line


def _cert(folder: Path, stem: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate((folder / f"{stem}.crt").read_bytes())


def _dns(cert: x509.Certificate) -> list[str]:
    return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName)


# --- names on the command line --------------------------------------------------------------------

def test_an_invalid_a_label_is_refused_in_one_line(home: Path, tmp_path: Path) -> None:
    line = _one_line_refusal(*run("ca", "issue", "xn--zz.example.com", "--home", str(home), "--out",
                                  str(tmp_path / "o")))
    assert "'xn--zz' starts with xn-- but is not a valid Punycode A-label" in line
    assert not (tmp_path / "o").exists()


def test_a_mixed_script_name_is_refused_naming_the_scripts_and_accepted_when_allowed(home: Path,
                                                                                     tmp_path: Path) -> None:
    out_dir = tmp_path / "o"
    line = _one_line_refusal(*run("ca", "issue", MIXED, "--home", str(home), "--out", str(out_dir)))
    assert "mixes the scripts Cyrillic and Latin" in line and "--allow-mixed-script" in line
    code, out, err = run("ca", "issue", MIXED, "--allow-mixed-script", "--key", "ec-p256", "--home", str(home),
                         "--out", str(out_dir))
    assert code == 0, err
    assert "Issued xn--pypal-4ve.com" in out
    assert _dns(_cert(out_dir, "xn--pypal-4ve.com")) == ["xn--pypal-4ve.com"]


def test_the_names_file_and_san_follow_the_same_rule(home: Path, tmp_path: Path) -> None:
    names = tmp_path / "names.txt"
    names.write_text(f"edge1.contoso.com\n{MIXED}\n", encoding="utf-8")
    line = _one_line_refusal(*run("ca", "issue", "--from", str(names), "--home", str(home), "--out",
                                  str(tmp_path / "o")))
    assert f"{names}:2:" in line and "Cyrillic and Latin" in line
    line = _one_line_refusal(*run("ca", "issue", "mail.contoso.com", "--san", f"DNS:{MIXED}", "--home", str(home),
                                  "--out", str(tmp_path / "o")))
    assert "Cyrillic and Latin" in line
    code, out, err = run("ca", "issue", "--from", str(names), "--allow-mixed-script", "--key", "ec-p256", "--home",
                         str(home), "--out", str(tmp_path / "o"))
    assert code == 0, err
    assert [row.split("\t")[0] for row in out.splitlines()[1:]] == ["edge1.contoso.com", "xn--pypal-4ve.com"]


def test_sharp_s_is_issued_as_its_idna_2008_a_label(home: Path, tmp_path: Path) -> None:
    out_dir = tmp_path / "o"
    code, out, err = run("ca", "issue", "fa\u00df.example", "--key", "ec-p256", "--home", str(home), "--out",
                         str(out_dir))
    assert code == 0, err
    cert = _cert(out_dir, "xn--fa-hia.example")
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "xn--fa-hia.example"
    assert _dns(cert) == ["xn--fa-hia.example"]  # not "fass.example" (IDNA 2003)


def test_selfsigned_takes_allow_mixed_script(tmp_path: Path) -> None:
    line = _one_line_refusal(*run("selfsigned", f"mail.{MIXED}", "--out", str(tmp_path / "o")))
    assert "Cyrillic and Latin" in line
    code, out, err = run("selfsigned", f"mail.{MIXED}", "--allow-mixed-script", "--out", str(tmp_path / "o"))
    assert code == 0, err
    assert _dns(_cert(tmp_path / "o", "mail.xn--pypal-4ve.com")) == ["mail", "mail.xn--pypal-4ve.com"]


# --- ca sign: SANs the profile does not carry -----------------------------------------------------

def _csr_file(tmp_path: Path, sans: list[x509.GeneralName], cn: str = "mx.contoso.com") -> Path:
    csr = make_csr(cn, sans)
    path = tmp_path / "req.csr"
    path.write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    return path


def test_sign_warns_about_email_and_uri_sans_and_refuses_them_with_strict_sans(home: Path, tmp_path: Path) -> None:
    csr = _csr_file(tmp_path, [x509.DNSName("mx.contoso.com"), x509.RFC822Name("postmaster@contoso.com"),
                               x509.UniformResourceIdentifier("https://contoso.com/")])
    line = _one_line_refusal(*run("ca", "sign", str(csr), "--strict-sans", "--home", str(home), "--out",
                                  str(tmp_path / "strict")))
    assert "email:postmaster@contoso.com, URI:https://contoso.com/" in line and "without --strict-sans" in line
    assert not (tmp_path / "strict").exists()
    code, out, _ = run("ca", "list", "--home", str(home), "--json")
    assert json.loads(out)["certificates"] == []  # nothing was issued
    code, out, err = run("ca", "sign", str(csr), "--home", str(home), "--out", str(tmp_path / "o"))
    assert code == 0, err
    assert "Issued mx.contoso.com" in out and "warning" not in out
    assert err.startswith("  warning    The request also asks for email:postmaster@contoso.com, "
                          "URI:https://contoso.com/;") and err.count("\n") == 1, err
    san = _cert(tmp_path / "o", "mx.contoso.com").extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert list(san.value) == [x509.DNSName("mx.contoso.com")]


def test_a_hostile_dropped_san_is_shown_escaped(home: Path, tmp_path: Path) -> None:
    csr = _csr_file(tmp_path, [x509.DNSName("mx.contoso.com"), x509.RFC822Name("a@b\x1b[31m\r\nInjected: x")])
    code, out, err = run("ca", "sign", str(csr), "--home", str(home), "--out", str(tmp_path / "o"))
    assert code == 0, err
    assert "\x1b" not in err and "\r" not in err and err.count("\n") == 1
    assert "email:a@b\\x1b[31m\\r\\nInjected: x" in err


def test_sign_applies_the_mixed_script_rule_to_the_request(home: Path, tmp_path: Path) -> None:
    csr = _csr_file(tmp_path, [x509.DNSName("xn--pypal-4ve.com")], cn="xn--pypal-4ve.com")
    line = _one_line_refusal(*run("ca", "sign", str(csr), "--home", str(home), "--out", str(tmp_path / "o")))
    assert "Cyrillic and Latin" in line
    code, _, err = run("ca", "sign", str(csr), "--allow-mixed-script", "--home", str(home), "--out",
                       str(tmp_path / "o"))
    assert code == 0, err


def test_library_sign_csr_carries_the_warning(ca: CertificateAuthority) -> None:
    csr = make_csr("mx.contoso.com", [x509.RFC822Name("pm@contoso.com")])
    issued = ca.sign_csr(csr)
    assert issued.warnings and "email:pm@contoso.com" in issued.warnings[0]
    with pytest.raises(PolicyError, match=r"email:pm@contoso\.com"):
        ca.sign_csr(csr, refuse_dropped=True)


# --- validity within the CA's ---------------------------------------------------------------------

def test_a_validity_past_a_ca_expiring_in_30_days_ends_with_the_ca(tmp_path: Path) -> None:
    home = _home(tmp_path, "--days", "30")
    out_dir = tmp_path / "o"
    code, out, err = run("ca", "issue", "mail.contoso.com", "--days", "397", "--key", "ec-p256", "--home",
                         str(home), "--out", str(out_dir))
    assert code == 0, err
    root = x509.load_pem_x509_certificate((home / "root.crt").read_bytes())
    assert _cert(out_dir, "mail.contoso.com").not_valid_after_utc == root.not_valid_after_utc
    assert "  warning    The certificate is valid until" in err and "instead of the 397 days asked for" in err


def test_a_batch_names_the_certificate_each_warning_is_about(tmp_path: Path) -> None:
    home = _home(tmp_path, "--days", "30")
    names = tmp_path / "names.txt"
    names.write_text("edge1.contoso.com\nedge2.contoso.com\n")
    code, out, err = run("ca", "issue", "--from", str(names), "--days", "397", "--key", "ec-p256", "--home",
                         str(home), "--out", str(tmp_path / "o"))
    assert code == 0, err
    assert "  warning    edge1.contoso.com: The certificate is valid until" in err
    assert "  warning    edge2.contoso.com: The certificate is valid until" in err
    assert "warning" not in out


def test_library_clamps_issue_and_renew_and_reports_it(make_ca: MakeCA, clock: FixedClock) -> None:
    authority = make_ca(days=30)
    end = authority.root.not_valid_after_utc
    issued = authority.issue("mail.contoso.com", days=397, key_type="ec-p256")
    assert issued.certificate.not_valid_after_utc == end and issued.warnings
    assert authority.issue("short.contoso.com", days=10, key_type="ec-p256").warnings == ()
    renewed = authority.renew("short.contoso.com", days=100)
    assert renewed.certificate.not_valid_after_utc == end and renewed.warnings
    [batch] = authority.issue_many([IssueRequest("b.contoso.com", days=397, key_type="ec-p256")])
    assert batch.certificate.not_valid_after_utc == end and batch.warnings


def test_an_intermediate_bounds_the_leaf(make_ca: MakeCA) -> None:
    authority = make_ca(days=30, intermediate=True)
    issued = authority.issue("mail.contoso.com", days=397, key_type="ec-p256")
    assert issued.certificate.not_valid_after_utc == authority.issuer.not_valid_after_utc
    assert authority.issuer.not_valid_after_utc < authority.root.not_valid_after_utc


def test_a_clock_before_the_ca_is_valid_refuses_to_issue(make_ca: MakeCA, clock: FixedClock) -> None:
    authority = make_ca()
    clock._at = T0 - dt.timedelta(days=1)
    with pytest.raises(PolicyError, match="before the CA certificate 'Contoso Transport CA' is valid") as err:
        authority.issue("mail.contoso.com", key_type="ec-p256")
    assert "clock" in (err.value.hint or "")
    assert authority.records() == []
    clock._at = T0  # issued with a right clock; renewing with a clock before the CA is refused too
    authority.issue("mail.contoso.com", key_type="ec-p256")
    clock._at = T0 - dt.timedelta(hours=1)
    with pytest.raises(PolicyError, match="clock"):
        authority.renew("mail.contoso.com")
    assert len(authority.records()) == 1
