"""``certkit tlsrpt read``: real-shaped reports (tests/tlsrpt_corpus) become causes tied to our certificates.

The corpus holds the shapes large senders produce (tests/tlsrpt_corpus/README.md says where each comes
from); the hostile files are made here. Certificates come from a real CA home on an injected clock.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from certkit.adapters.tlsrpt_files import filename_hint, gunzip, read_reports, unwrap
from certkit.ca import CertificateAuthority
from certkit.cli import main
from certkit.clock import FixedClock
from certkit.core.jsonfacts import serial_hex
from certkit.core.tlsrpt_read import KnownCertificate, analyse, parse_report
from certkit.errors import MalformedInputError
from certkit.schemas import load, schema_files
from tests.tlsrpt_corpus.build import build

CORPUS = Path(__file__).resolve().parent / "tlsrpt_corpus"
REPORTS = CORPUS / "reports"
AT = dt.datetime(2024, 9, 12, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Contoso's CA: mx1 issued 2023-09-09 for a year (expired 2024-09-08) and renewed 2024-09-11; mx2 valid."""
    path = tmp_path_factory.mktemp("tlsrpt") / "ca"
    clock = FixedClock(dt.datetime(2023, 9, 9, tzinfo=dt.UTC))
    with CertificateAuthority.init(path, name="Contoso Transport CA", passphrase=b"pw", key_type="ec-p256",
                                   intermediate=True, clock=clock) as ca:
        ca.issue("mx1.contoso.com", accepted_domains=["contoso.com"], key_type="ec-p256", days=365)
        ca.issue("mx2.contoso.com", key_type="ec-p256", days=730)
        clock.advance(dt.timedelta(days=368))
        ca.renew("mx1.contoso.com")
    return path


def _known(home: Path) -> list[KnownCertificate]:
    with CertificateAuthority.open(home) as ca:
        return [KnownCertificate(r.certificate, r.status, r.revoked_at) for r in ca.records()]


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout


# --- the corpus -----------------------------------------------------------------------------------------
def test_the_wrapped_corpus_files_are_what_their_recipe_builds() -> None:
    for name, data in build().items():
        assert (REPORTS / name).read_bytes() == data, f"rebuild with: python tests/tlsrpt_corpus/build.py ({name})"


def test_every_corpus_report_is_read_and_nothing_fails() -> None:
    reports, failures = read_reports([REPORTS])
    assert failures == []
    assert len(reports) == 10
    assert {r.organization for r in reports} == {"Fabrikam Mail", "Google Inc.", "Microsoft Corporation",
                                                 "mail.northwind.example", "Northwind Traders", "Tailspin Toys",
                                                 "Litware Bulk Mail"}


def test_microsoft_leaves_out_failure_details_mx_host_and_addresses() -> None:
    quiet = parse_report((REPORTS / "microsoft-sts-no-failures.json").read_bytes())
    [p] = quiet.policies
    assert (p.policy.type, p.policy.domain, p.policy.mx_hosts, p.failures) == ("sts", "contoso.com", (), ())
    assert (p.successful, p.failed) == (2, 0)
    fetch = parse_report((REPORTS / "microsoft-sts-fetch-error.json").read_bytes())
    [f] = fetch.policies[0].failures
    assert (f.result_type, f.sessions, f.sending_mta_ip, f.receiving_mx_hostname) == ("sts-policy-fetch-error", 3,
                                                                                      None, None)
    assert fetch.notes == ()


def test_a_tlsa_policy_string_holding_a_json_list_is_unpacked() -> None:
    [u] = unwrap((REPORTS / "microsoft-report.eml").read_bytes(), source="m.eml")
    report = parse_report(u.data, source=u.source, hint=u.hint)
    tlsa = report.policies[0].policy
    assert tlsa.type == "tlsa" and len(tlsa.strings) == 2 and tlsa.strings[0].startswith("3 1 1 5C04")
    assert "policy-string held a JSON-encoded list; unpacked" in report.notes


def test_the_report_e_mail_gives_its_headers_and_file_name() -> None:
    [u] = unwrap((REPORTS / "microsoft-report.eml").read_bytes(), source="m.eml")
    assert u.hint.submitter == "microsoft.com" and u.hint.policy_domain == "contoso.com"
    assert u.hint.start == dt.datetime(2024, 9, 11, tzinfo=dt.UTC)
    assert u.source.startswith("m.eml [microsoft.com!contoso.com!")
    [plain] = unwrap((REPORTS / "google-report-json-attachment.eml").read_bytes(), source="g.eml")
    assert parse_report(plain.data).organization == "Google Inc."


def test_postfix_no_policy_found_without_a_domain_and_empty_failure_details() -> None:
    report = parse_report((REPORTS / "postfix-no-policy.json").read_bytes())
    [p] = report.policies
    assert (p.policy.type, p.policy.domain, p.failures, p.successful) == ("no-policy-found", None, (), 14)


def test_odd_variants_are_read_with_a_note_for_each_tolerance() -> None:
    report = parse_report((REPORTS / "odd-variants.json").read_bytes(), source="odd")
    [p] = report.policies
    assert report.organization == "Tailspin Toys" and report.report_id == "20240911"
    assert report.date_range is not None and report.date_range.start == dt.datetime(2024, 9, 11, tzinfo=dt.UTC)
    assert (p.policy.type, p.policy.domain, p.policy.mx_hosts) == ("sts", "contoso.com", ("*.contoso.com",))
    assert (p.successful, p.failed) == (120, 7)
    [f] = p.failures
    assert (f.result_type, f.receiving_mx_hostname, f.sessions) == ("certificate-host-mismatch", "mx2.contoso.com", 7)
    assert "failed-session-count sent as a string" in report.notes
    assert "mx-host sent as one string, not a list" in report.notes


def test_several_policies_in_one_report_keep_their_own_counts() -> None:
    report = parse_report((REPORTS / "several-policies.json").read_bytes())
    assert [(p.policy.type, p.successful, p.failed) for p in report.policies] == [
        ("tlsa", 20, 5), ("sts", 30, 6), ("no-policy-found", 3, 0)]


def test_a_report_of_thousands_of_failure_records_is_read_quickly() -> None:
    [u] = unwrap((REPORTS / "litware-large.json.gz").read_bytes(), source="large")
    report = parse_report(u.data)
    analysis = analyse([report], at=AT)
    assert len(report.policies[0].failures) == 5000
    assert sum(c.sessions for c in analysis.causes) == report.policies[0].failed == 12500
    assert len(analysis.causes) == 2


def test_the_rfc_file_name_is_read() -> None:
    hint = filename_hint("/x/google.com!contoso.com!1725926400!1726012799!001.json.gz")
    assert (hint.submitter, hint.policy_domain, hint.report_id) == ("google.com", "contoso.com", "001")
    assert hint.end == dt.datetime(2024, 9, 10, 23, 59, 59, tzinfo=dt.UTC)
    assert filename_hint("report.json") == filename_hint("a!b!c.json")


# --- the causes -----------------------------------------------------------------------------------------
def test_an_expired_certificate_is_tied_to_ours_by_serial_and_its_renewal_named(home: Path) -> None:
    reports, _ = read_reports([REPORTS])
    known = _known(home)
    analysis = analyse(reports, at=AT, certificates=known)
    cause = next(c for c in analysis.causes if c.result_type == "certificate-expired")
    assert cause.mx_host == "mx1.contoso.com" and cause.code == "cert.expired"
    assert cause.sessions == 100 + 9 + 4168
    assert set(cause.organizations) == {"Fabrikam Mail", "Google Inc.", "Litware Bulk Mail"}
    assert cause.certificate is not None
    old = cause.certificate.certificate.cert
    assert old.not_valid_after_utc == dt.datetime(2024, 9, 8, tzinfo=dt.UTC)
    renewal = next(k.cert for k in known if k.names_host("mx1.contoso.com") and k.cert is not old
                   and k.cert.not_valid_after_utc > AT)
    assert f"A renewal exists (serial {serial_hex(renewal.serial_number)}" in cause.remedy
    assert "install it on mx1.contoso.com" in cause.remedy
    facts = cause.to_dict()["certificate"]
    assert facts["serial"] == serial_hex(old.serial_number)
    assert facts["not_after"] == "2024-09-08T00:00:00Z" and len(facts["thumbprint_sha1"]) == 40


def test_reason_codes_narrow_the_finding_and_tlsa_invalid_after_a_renewal_points_at_the_records(home: Path) -> None:
    reports, _ = read_reports([REPORTS])
    analysis = analyse(reports, at=AT, certificates=_known(home))
    by = {(c.result_type, c.mx_host, c.failure_reason_code): c for c in analysis.causes}
    assert by["certificate-not-trusted", "mx2.contoso.com",
              "X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY"].code == "chain.missing-intermediate"
    assert by["validation-failure", "mx2.contoso.com", "X509_V_ERR_CERT_REVOKED"].code == "revocation.revoked"
    assert by["starttls-not-supported", "mx1.contoso.com", None].code == "dane.starttls-missing"  # a tlsa policy
    assert by["starttls-not-supported", "mx2.contoso.com", None].code == "smtp.no-starttls"
    tlsa = by["tlsa-invalid", "mx1.contoso.com", None]
    assert tlsa.code == "dane.no-match" and "certkit dane tlsa mx1.contoso.com" in tlsa.remedy
    assert tlsa.certificate is not None and "replaced serial" in tlsa.certificate.why
    fetch = by["sts-policy-fetch-error", None, None]
    assert fetch.certificate is None and "https://mta-sts.contoso.com/.well-known/mta-sts.txt" in fetch.remedy
    mismatch = by["certificate-host-mismatch", "mx2.contoso.com", None]
    assert mismatch.certificate is not None and "presented another certificate" in mismatch.remedy


def test_a_host_our_ca_never_issued_for_says_so() -> None:
    reports, _ = read_reports([REPORTS / "rfc8460-example.json"])
    analysis = analyse(reports, at=AT, certificates=[])
    backup = next(c for c in analysis.causes if c.mx_host == "mx-backup.contoso.com")
    assert backup.code == "chain.path-length" and backup.certificate is None


def test_certkits_own_reports_carry_the_finding_code_and_are_read_back_exactly() -> None:
    doc = {"organization-name": "contoso.com", "date-range": {"start-datetime": "2024-09-11T10:00:00Z",
                                                             "end-datetime": "2024-09-11T10:00:00Z"},
           "contact-info": "postmaster@contoso.com", "report-id": "x", "policies": [{
               "policy": {"policy-type": "no-policy-found", "policy-domain": "fabrikam.com"},
               "summary": {"total-successful-session-count": 0, "total-failure-session-count": 1},
               "failure-details": [{"result-type": "certificate-not-trusted", "sending-mta-ip": "192.0.2.1",
                                    "receiving-mx-hostname": "mx.fabrikam.com", "receiving-ip": "192.0.2.9",
                                    "failed-session-count": 1, "failure-reason-code": "chain.self-signed"}]}]}
    [cause] = analyse([parse_report(json.dumps(doc).encode())], at=AT).causes
    assert cause.code == "chain.self-signed"


def test_the_same_report_read_twice_is_counted_once(tmp_path: Path) -> None:
    data = (CORPUS / "sources" / "google-sts.json").read_bytes()
    (tmp_path / "a.json").write_bytes(data)
    (tmp_path / "b.json.gz").write_bytes(gzip.compress(data))
    reports, _ = read_reports([tmp_path])
    analysis = analyse(reports, at=AT)
    assert analysis.failed == 12 and analysis.duplicates == (str(tmp_path / "b.json.gz"),)


# --- hostile input ------------------------------------------------------------------------------------------
HOSTILE: dict[str, bytes] = {
    "not-utf8.json": b'{"organization-name": "\xff\xfe"}',
    "deep.json": b"[" * 200_000 + b"]" * 200_000,
    "deep-in-a-field.json": b'{"policies": [], "x": ' + b"{\"a\":" * 5000 + b"1" + b"}" * 5000 + b"}",
    "list.json": b"[1, 2, 3]",
    "garbage.json": b"{organization-name: nope",
    "empty.json": b"",
    "not-a-report.json": b'{"hello": "world"}',
    "policies-not-a-list.json": b'{"organization-name": "x", "policies": {"a": 1}}',
    "huge-int.json": b'{"organization-name": "x", "policies": [], "n": ' + b"9" * 50_000 + b"}",
    "truncated.json.gz": gzip.compress(b'{"organization-name": "x"}' * 100)[:40],
    "not-gzip.json.gz": b"\x1f\x8b" + b"\x00" * 30,
    "no-attachment.eml": b"From: a@b\r\nSubject: hi\r\nContent-Type: text/plain\r\n\r\nno report here\r\n",
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_files_are_one_line_each_never_a_traceback(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_bytes(HOSTILE[name])
    reports, failures = read_reports([tmp_path / name])
    assert reports == [] and len(failures) == 1
    [f] = failures
    assert "\n" not in f.error and name in f.error
    code, out = _run("tlsrpt", "read", str(tmp_path / name))
    assert code == 2 and "unreadable:" in out


def test_a_gzip_bomb_stops_at_the_cap(tmp_path: Path) -> None:
    bomb = gzip.compress(b"\x00" * (256 * 1024 * 1024), compresslevel=9)
    assert len(bomb) < 300_000
    with pytest.raises(MalformedInputError, match="decompresses to more than 1 MiB"):
        gunzip(bomb, limit=1024 * 1024)
    (tmp_path / "bomb.json.gz").write_bytes(bomb)
    reports, [failure] = read_reports([tmp_path], limit=1024 * 1024)
    assert reports == [] and "gzip bomb" in failure.error


def test_one_bad_file_does_not_stop_the_others(tmp_path: Path) -> None:
    (tmp_path / "good.json").write_bytes((REPORTS / "rfc8460-example.json").read_bytes())
    (tmp_path / "bad.json").write_bytes(b"\xff")
    (tmp_path / "ignored.pdf").write_bytes(b"%PDF")
    code, out = _run("tlsrpt", "read", str(tmp_path))
    assert code == 1 and "1 report from" in out and "1 file unreadable" in out and "ignored.pdf" not in out


# --- the command --------------------------------------------------------------------------------------------
def test_read_prints_the_causes_with_our_certificate(home: Path) -> None:
    code, out = _run("tlsrpt", "read", str(REPORTS), "--home", str(home), "--at", "2024-09-12T00:00:00Z")
    assert code == 1
    assert "TLS-RPT: 10 reports from 7 organisations (2024-09-09..2024-09-11)" in out
    assert "FAIL certificate-expired at mx1.contoso.com (sts contoso.com): 4277 sessions" in out
    assert "expired at 2024-09-08T00:00:00Z" in out
    assert "FAIL sts-policy-fetch-error at mta-sts.contoso.com" in out


def test_read_json_follows_its_schema_and_html_is_a_page_with_peer_text_escaped(home: Path, tmp_path: Path) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    referencing = pytest.importorskip("referencing")
    doc = json.loads((REPORTS / "rfc8460-example.json").read_text())
    doc["organization-name"] = "<script>alert(1)</script>"
    (tmp_path / "evil.json").write_text(json.dumps(doc))
    page = tmp_path / "out" / "report.html"
    page.parent.mkdir()
    code, out = _run("tlsrpt", "read", str(REPORTS), str(tmp_path / "evil.json"), "--home", str(home), "--json",
                     "--html", str(page))
    assert code == 1
    data: dict[str, Any] = json.loads(out)
    registry = referencing.Registry().with_resources(
        [(load(n)["$id"], referencing.Resource.from_contents(load(n))) for n in schema_files()])
    validator = jsonschema.Draft202012Validator(load("tlsrpt-read.schema.json"), registry=registry)
    assert not list(validator.iter_errors(data))
    assert next(iter(data)) == "schema_version" and data["totals"]["reports"] == 11
    html = page.read_text()
    assert html.startswith("<!DOCTYPE html>") and "<script>" not in html and "&lt;script&gt;" in html
    assert "mx1.contoso.com" in html
