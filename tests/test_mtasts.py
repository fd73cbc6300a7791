"""MTA-STS (RFC 8461) and TLS-RPT records (RFC 8460): the rules as data, then the whole check over real sockets.

The integration tests use tests/sts_lab.py: a loopback DNS server, the policy host over HTTPS with a test CA's
certificate (the CA certkit is told to trust in place of the Web PKI) and the MX as the lab's SMTP server.
"""

from __future__ import annotations

import http.server
import json
import time
from pathlib import Path

import dns.name
import pytest
from click.testing import CliRunner

from certkit.adapters.dns import lookup_txt
from certkit.adapters.https import https_get
from certkit.checks.mtasts import check_mta_sts, mta_sts_of_sessions
from certkit.checks.preflight import PreflightOptions, render_text
from certkit.checks.probe import ProbeOptions, exit_code, probe_sync
from certkit.cli import main
from certkit.core.findings import CATALOGUE, Severity
from certkit.core.mtasts import (
    MAX_AGE_LIMIT,
    MxFacts,
    PolicyFacts,
    judge,
    mx_matches,
    parse_policy,
    select_sts_record,
    select_tlsrpt_record,
)
from certkit.core.verify import verify_chain
from certkit.errors import InputError, UsageError
from certkit.tlsrpt import tlsrpt_report
from tests.pki import make_leaf
from tests.sts_lab import DOMAIN, INTER, MX, MX_CERT, OTHER_ROOT, OURS, PATH, ROOT, StsLab, cadata, policy

# --- the rules, as data ------------------------------------------------------------------------------


@pytest.mark.parametrize(("pattern", "host", "expected"), [
    ("mx1.contoso.com", "mx1.contoso.com", True),
    ("mx1.contoso.com", "MX1.Contoso.COM.", True),
    ("*.contoso.com", "mx1.contoso.com", True),
    ("*.contoso.com", "contoso.com", False),            # the wildcard needs one more label
    ("*.contoso.com", "a.mx.contoso.com", False),       # ... and exactly one
    ("*.contoso.com", "mx1.fabrikam.com", False),
    ("mx1.contoso.com", "mx2.contoso.com", False),
    ("*.bücher.example", "mx.xn--bcher-kva.example", True),  # IDNA: compared as A-labels
])
def test_mx_patterns_match_as_rfc_8461_4_1_says(pattern: str, host: str, expected: bool) -> None:
    assert mx_matches(pattern, host) is expected


def test_a_policy_with_lf_or_crlf_lines_and_unknown_keys_parses() -> None:
    text = "version: STSv1\nmode: testing\nmx: mx1.contoso.com\nmx: *.backup.contoso.com\nmax_age:86400\nfoo: bar\n"
    p, problems = parse_policy(text)
    assert problems == [] and p is not None
    assert (p.mode, p.max_age, p.mx) == ("testing", 86400, ("mx1.contoso.com", "*.backup.contoso.com"))
    crlf, _ = parse_policy(text.replace("\n", "\r\n"))
    assert crlf is not None and crlf.mx == p.mx


@pytest.mark.parametrize(("text", "problem"), [
    ("version: STSv1\nmx: mx1.contoso.com\nmax_age: 86400\n", "the mode field is missing"),
    ("version: STSv1\nmode: enforce\nmode: testing\nmx: a.b\nmax_age: 1\n", "appears 2 times"),
    ("version: STSv2\nmode: enforce\nmx: a.b\nmax_age: 1\n", "not STSv1"),
    ("version: STSv1\nmode: strict\nmx: a.b\nmax_age: 1\n", "not enforce, testing or none"),
    ("version: STSv1\nmode: enforce\nmx: a.b\nmax_age: a week\n", "not a number of seconds"),
    ("version: STSv1\nmode: enforce\nmx: a.b\nmax_age: -1\n", "not a number of seconds"),
    (f"version: STSv1\nmode: enforce\nmx: a.b\nmax_age: {MAX_AGE_LIMIT + 1}\n", "over the limit of 31557600"),
    ("version: STSv1\nmode: enforce\nmax_age: 86400\n", "must list its MX hosts"),
    ("version: STSv1\nmode: enforce\nmx: mx..contoso.com\nmax_age: 86400\n", "is not a host name"),
    ("version: STSv1\nmode: enforce\nmx: a.b\nmax_age: 86400\nthis line has no colon\n", "line 5"),
])
def test_a_bad_policy_says_what_is_wrong(text: str, problem: str) -> None:
    p, problems = parse_policy(text)
    assert p is None and any(problem in x for x in problems), problems


def test_max_age_at_the_limit_and_mode_none_without_mx_are_valid() -> None:
    p, _ = parse_policy(f"version: STSv1\nmode: enforce\nmx: a.b\nmax_age: {MAX_AGE_LIMIT}\n")
    assert p is not None and p.max_age == MAX_AGE_LIMIT
    none, problems = parse_policy("version: STSv1\nmode: none\nmax_age: 0\n")
    assert none is not None and none.mx == () and problems == []


@pytest.mark.parametrize(("records", "found", "problem"), [
    (["v=STSv1; id=20260101T000000"], "20260101T000000", None),
    (["v=spf1 -all", "v=STSv1;id=abc;ext=x"], "abc", None),   # others discarded, extensions ignored
    (["v=STSv1; id=abc;"], "abc", None),                       # a final ";" is allowed
    ([], None, None),
    (["v=spf1 -all"], None, None),
    (["v=STSv1; id=1", "v=STSv1; id=2"], None, "2 records begin with v=STSv1"),
    (["v=STSv1"], None, "no id= field"),
    (["v=STSv1; id=has-dash"], None, "not 1 to 32 letters and digits"),
    (["v=STSv1; id=" + "a" * 33], None, "not 1 to 32"),
    (["v=STSv1; id=1; junk"], None, "not a key=value field"),
])
def test_exactly_one_sts_record_counts(records: list[str], found: str | None, problem: str | None) -> None:
    record, why = select_sts_record(records)
    assert (record.id if record else None) == found
    assert (problem is None and why is None) or (problem is not None and why is not None and problem in why)


@pytest.mark.parametrize(("records", "rua", "problem"), [
    (["v=TLSRPTv1; rua=mailto:tlsrpt@contoso.com"], ("mailto:tlsrpt@contoso.com",), None),
    (["v=TLSRPTv1;rua=mailto:a@contoso.com, https://reports.contoso.com/tlsrpt"],
     ("mailto:a@contoso.com", "https://reports.contoso.com/tlsrpt"), None),
    ([], None, None),
    (["v=TLSRPTv1"], None, "no rua= field"),
    (["v=TLSRPTv1; rua=ftp://x"], None, "not a mailto: or https: URI"),
    (["v=TLSRPTv1; rua=mailto:a@b", "v=TLSRPTv1; rua=mailto:c@d"], None, "2 records"),
])
def test_the_tlsrpt_record(records: list[str], rua: tuple[str, ...] | None, problem: str | None) -> None:
    record, why = select_tlsrpt_record(records)
    assert (record.rua if record else None) == rua
    assert (problem is None and why is None) or (problem is not None and why is not None and problem in why)


def _verified(cert_names: list[str], host: str) -> MxFacts:
    leaf = make_leaf(INTER, cert_names)
    return MxFacts(host, True, verify_chain(leaf.cert, (INTER.cert,), [ROOT.cert], name=host))


def test_the_verdict_from_facts_testing_says_what_would_fail_enforce_what_fails() -> None:
    facts = {"txt": ["v=STSv1; id=1"], "tlsrpt_txt": []}
    good = _verified([MX], MX)
    wrong = _verified(["other.contoso.test"], "mx2.contoso.test")
    for mode, severity in (("testing", Severity.WARNING), ("enforce", Severity.ERROR)):
        fetch = PolicyFacts("u", policy(mode, mx=(MX, "mx2.contoso.test")), content_type="text/plain")
        r = judge(DOMAIN, **facts, fetch=fetch, mx=[good, wrong])
        assert r.verdict == mode
        assert r.failures == ["mx2.contoso.test: certificate not valid under the Web PKI"]
        [f] = [f for f in r.findings if f.code == "sts.mx-webpki-invalid"]
        assert f.severity is severity and f.evidence["tlsrpt_result_type"] == "certificate-host-mismatch"
        assert ("under enforce these would fail" in r.summary) == (mode == "testing")
        assert any(f.code == "tlsrpt.not-published" for f in r.findings)


def test_mode_none_and_no_record_are_verdict_none() -> None:
    none = judge(DOMAIN, txt=["v=STSv1; id=1"], fetch=PolicyFacts("u", b"version: STSv1\nmode: none\nmax_age: 0\n",
                                                                  content_type="text/plain"), mx=[MxFacts(MX, False)])
    assert none.verdict == "none" and none.mx == [] and none.ok
    nothing = judge(DOMAIN)
    assert nothing.verdict == "none" and [f.code for f in nothing.findings] == ["sts.not-published",
                                                                                 "tlsrpt.not-published"]


def test_dane_is_never_overridden_by_mta_sts() -> None:
    fetch = PolicyFacts("u", policy("enforce"), content_type="text/plain")
    r = judge(DOMAIN, txt=["v=STSv1; id=1"], fetch=fetch, mx=[MxFacts(MX, True, _verified([MX], MX).verification,
                                                                      dane="fail")])
    [f] = [f for f in r.findings if f.code == "sts.dane-precedence"]
    assert "fails" in f.detail and "never overrides a failing DANE validation" in f.detail
    assert r.mx[0].dane == "fail" and r.mx[0].webpki == "valid"


def test_catalogue_entries_carry_the_rfc_8460_types_and_remedies() -> None:
    assert CATALOGUE["sts.policy-fetch-error"].tlsrpt_result_type == "sts-policy-fetch-error"
    assert CATALOGUE["sts.policy-invalid"].tlsrpt_result_type == "sts-policy-invalid"
    assert CATALOGUE["sts.policy-webpki-invalid"].tlsrpt_result_type == "sts-webpki-invalid"
    assert 'IN TXT "v=STSv1; id=' in CATALOGUE["sts.not-published"].remedy
    assert 'IN TXT "v=TLSRPTv1; rua=mailto:' in CATALOGUE["tlsrpt.not-published"].remedy


# --- the adapters on real sockets --------------------------------------------------------------------


def test_txt_records_come_from_dns_joined(tmp_path: Path) -> None:
    long = "v=STSv1; id=1; " + "x" * 300
    with StsLab(tmp_path, txt=[long, "other"]) as lab:
        found = lookup_txt(f"_mta-sts.{DOMAIN}", nameserver=lab.dns.address, timeout=2)
        missing = lookup_txt(f"_mta-sts.nowhere.{DOMAIN}", nameserver=lab.dns.address, timeout=2)
    assert sorted(found.records) == sorted([long, "other"]) and found.error is None
    assert missing.none and not missing.records


def test_the_policy_host_must_have_a_certificate_for_its_name(tmp_path: Path) -> None:
    with StsLab(tmp_path) as lab:
        ok = https_get(f"mta-sts.{DOMAIN}", PATH, address="127.0.0.1", port=lab.https.port, cadata=cadata())
        wrong_name = https_get("www.contoso.test", PATH, address="127.0.0.1", port=lab.https.port, cadata=cadata())
        wrong_root = https_get(f"mta-sts.{DOMAIN}", PATH, address="127.0.0.1", port=lab.https.port,
                               cadata=OTHER_ROOT.pem.decode())
    assert ok.ok and ok.body == policy() and ok.content_type == "text/plain"
    assert wrong_name.certificate_error and "www.contoso.test" in (wrong_name.error or "")
    assert wrong_root.certificate_error and wrong_root.body is None


# --- the whole check over real DNS, HTTPS and SMTP ---------------------------------------------------


def _codes(report: object) -> list[str]:
    return [f.code for f in report.findings]  # type: ignore[attr-defined]


def test_enforce_with_a_good_mx_passes(tmp_path: Path) -> None:
    with StsLab(tmp_path) as lab:
        r = check_mta_sts(DOMAIN, **lab.options())
    assert r.verdict == "enforce" and r.ok and r.failures == []
    assert r.summary == "enforce: every MX passes"
    assert [(m.host, m.pattern, m.webpki) for m in r.mx] == [(MX, MX, "valid")]
    assert r.record is not None and r.record.id == "20260101"
    assert r.tlsrpt is not None and r.tlsrpt.rua == ("mailto:tlsrpt@contoso.test",)
    assert _codes(r) == []


def test_no_record_is_verdict_none_and_the_policy_is_not_fetched(tmp_path: Path) -> None:
    with StsLab(tmp_path, txt=[], tlsrpt=[]) as lab:
        r = check_mta_sts(DOMAIN, **lab.options())
        assert lab.https.hits == {}
    assert r.verdict == "none" and _codes(r) == ["sts.not-published", "tlsrpt.not-published"]


def test_two_sts_records_are_no_policy(tmp_path: Path) -> None:
    with StsLab(tmp_path, txt=["v=STSv1; id=1", "v=STSv1; id=2"]) as lab:
        r = check_mta_sts(DOMAIN, **lab.options())
        assert lab.https.hits == {}
    assert r.verdict == "none" and _codes(r) == ["sts.txt-invalid"]
    assert "2 records begin with v=STSv1" in r.findings[0].detail


def _redirect(request: http.server.BaseHTTPRequestHandler) -> None:
    request.send_response(301)
    request.send_header("Location", "https://elsewhere.contoso.test/.well-known/mta-sts.txt")
    request.end_headers()


def _slow(request: http.server.BaseHTTPRequestHandler) -> None:
    request.send_response(200)
    request.send_header("Content-Type", "text/plain")
    request.end_headers()
    for line in policy().splitlines(keepends=True):
        request.wfile.write(line)
        request.wfile.flush()
        time.sleep(1.0)


def _not_found(request: http.server.BaseHTTPRequestHandler) -> None:
    request.send_error(404)


@pytest.mark.parametrize(("body", "error"), [
    (_not_found, "HTTP 404"),
    (_redirect, "HTTP 301 redirect to https://elsewhere.contoso.test/.well-known/mta-sts.txt; redirects are not"),
    (b"version: STSv1\n" + b"#" * 70_000, "over the limit of 65536"),
    (_slow, "no complete answer within 3 s"),
])
def test_a_policy_that_cannot_be_fetched_is_a_fetch_error(tmp_path: Path, body: object, error: str) -> None:
    with StsLab(tmp_path, policy_body=body) as lab:  # type: ignore[arg-type]
        r = check_mta_sts(DOMAIN, **lab.options())
    assert r.verdict == "none" and _codes(r) == ["sts.policy-fetch-error"]
    assert error in (r.fetch_error or "") and error in r.findings[0].detail
    assert r.findings[0].entry.tlsrpt_result_type == "sts-policy-fetch-error"


def test_a_policy_served_as_html_is_ignored(tmp_path: Path) -> None:
    with StsLab(tmp_path, content_type="text/html") as lab:
        r = check_mta_sts(DOMAIN, **lab.options())
    assert r.verdict == "none" and _codes(r) == ["sts.policy-fetch-error"] and "text/plain" in r.findings[0].detail


def test_a_policy_host_with_a_certificate_for_another_name_is_webpki_invalid(tmp_path: Path) -> None:
    with StsLab(tmp_path, policy_cert=make_leaf(INTER, ["www.contoso.test"])) as lab:
        r = check_mta_sts(DOMAIN, **lab.options())
        assert lab.https.hits == {}  # no request went to a host that could not prove its name
    assert r.verdict == "none" and _codes(r) == ["sts.policy-webpki-invalid"]
    assert r.findings[0].entry.tlsrpt_result_type == "sts-webpki-invalid"


@pytest.mark.parametrize(("body", "problem"), [
    (b"version: STSv1\nmx: mx1.contoso.test\nmax_age: 86400\n", "the mode field is missing"),
    (b"version: STSv1\nmode: enforce\nmx: mx1.contoso.test\nmax_age: soon\n", "not a number of seconds"),
    (b"version: STSv1\nmode: enforce\nmx: mx1.contoso.test\nmax_age: 31557601\n", "over the limit"),
])
def test_a_syntactically_wrong_policy_is_invalid(tmp_path: Path, body: bytes, problem: str) -> None:
    with StsLab(tmp_path, policy_body=body) as lab:
        r = check_mta_sts(DOMAIN, **lab.options())
    assert r.verdict == "none" and _codes(r) == ["sts.policy-invalid"] and problem in r.findings[0].detail


@pytest.mark.parametrize("mode", ["testing", "enforce"])
def test_an_mx_the_policy_does_not_list(tmp_path: Path, mode: str) -> None:
    with StsLab(tmp_path, policy_body=policy(mode, mx=["mx9.contoso.test"])) as lab:
        r = check_mta_sts(DOMAIN, **lab.options())
    assert r.verdict == mode and r.failures == [f"{MX}: not listed in the policy"]
    [f] = r.findings
    assert f.code == "sts.mx-not-listed"
    assert f.severity is (Severity.ERROR if mode == "enforce" else Severity.WARNING)
    assert r.ok is (mode == "testing")


def test_a_wildcard_matches_one_label_only(tmp_path: Path) -> None:
    deep = "mx1.mail.contoso.test"
    cert = make_leaf(INTER, [deep])
    with StsLab(tmp_path, policy_body=policy(mx=["*.contoso.test"]), mx_cert=cert, mx_name=deep) as lab:
        r = check_mta_sts(DOMAIN, **lab.options())
    assert _codes(r) == ["sts.mx-not-listed"] and r.mx[0].webpki == "valid"
    with StsLab(tmp_path, policy_body=policy(mx=["*.mail.contoso.test"]), mx_cert=cert, mx_name=deep) as lab:
        r = check_mta_sts(DOMAIN, **lab.options())
    assert r.ok and r.mx[0].pattern == "*.mail.contoso.test"


@pytest.mark.parametrize("mode", ["testing", "enforce"])
def test_an_mx_certificate_for_another_name(tmp_path: Path, mode: str) -> None:
    with StsLab(tmp_path, policy_body=policy(mode), mx_cert=make_leaf(INTER, ["smtp.fabrikam.test"])) as lab:
        r = check_mta_sts(DOMAIN, **lab.options())
    [f] = r.findings
    assert f.code == "sts.mx-webpki-invalid" and "smtp.fabrikam.test" in f.detail
    assert f.evidence["tlsrpt_result_type"] == "certificate-host-mismatch"
    assert r.summary.startswith("testing: under enforce these would fail" if mode == "testing"
                                else "enforce: failing now")


def test_an_mx_under_a_root_that_is_not_the_web_pki(tmp_path: Path) -> None:
    with StsLab(tmp_path, mx_cert=make_leaf(OTHER_ROOT, [MX])) as lab:
        r = check_mta_sts(DOMAIN, **lab.options())
    [f] = r.findings
    assert f.code == "sts.mx-webpki-invalid" and f.evidence["tlsrpt_result_type"] == "certificate-not-trusted"


def test_an_mx_without_starttls_under_enforce(tmp_path: Path) -> None:
    with StsLab(tmp_path, smtp={"offer_starttls": False}) as lab:
        r = check_mta_sts(DOMAIN, **lab.options())
    assert _codes(r) == ["sts.starttls-missing"] and not r.ok and r.mx[0].webpki == "no-tls"


def test_the_command_prints_the_verdict_and_json(tmp_path: Path) -> None:
    with StsLab(tmp_path, policy_body=policy("testing", mx=["mx9.contoso.test"])) as lab:
        opts = lab.cli_options(tmp_path / "ca.pem")
        text = CliRunner().invoke(main, ["mta-sts", "check", DOMAIN, *opts])
        data = CliRunner().invoke(main, ["mta-sts", "check", DOMAIN, *opts, "--json"])
    assert text.exit_code == 0, text.output
    assert f"MTA-STS {DOMAIN}: testing -- testing: under enforce these would fail: {MX}: not listed" in text.output
    assert "TLS-RPT contoso.test: mailto:tlsrpt@contoso.test" in text.output
    doc = json.loads(data.stdout)
    assert doc["schema_version"] == 1 and doc["verdict"] == "testing" and doc["exit_code"] == 0
    assert doc["policy"]["mx"] == ["mx9.contoso.test"] and doc["tlsrpt"]["published"]
    assert doc["failures"] == [f"{MX}: not listed in the policy"]


def test_the_command_exits_1_when_enforce_fails(tmp_path: Path) -> None:
    with StsLab(tmp_path, policy_body=policy("enforce", mx=["mx9.contoso.test"])) as lab:
        r = CliRunner().invoke(main, ["mta-sts", "check", DOMAIN, *lab.cli_options(tmp_path / "ca.pem")])
    assert r.exit_code == 1 and "error: sts.mx-not-listed" in r.output and "fix: Add the host" in r.output


# --- in the probe ------------------------------------------------------------------------------------


def test_the_probe_reports_mta_sts_and_tls_rpt_for_a_domain(tmp_path: Path) -> None:
    with StsLab(tmp_path, policy_body=policy("enforce", mx=["mx9.contoso.test"])) as lab:
        opts = lab.probe_options(tmp_path)
        text = CliRunner().invoke(main, ["probe", DOMAIN, *opts])
        data = CliRunner().invoke(main, ["probe", DOMAIN, *opts, "--json"])
        off = CliRunner().invoke(main, ["probe", DOMAIN, *opts, "--json", "--mta-sts", "off"])
        hits = lab.https.hits[PATH]
    assert text.exit_code == 1, text.output  # the session is fine; MTA-STS enforce fails the MX
    assert f"{MX} [127.0.0.1]:{lab.smtp.port}: TLS and their certificate OK" in text.output
    assert f"MTA-STS {DOMAIN}: enforce -- enforce: failing now: {MX}: not listed in the policy" in text.output
    assert "TLS-RPT contoso.test: mailto:tlsrpt@contoso.test" in text.output
    doc = json.loads(data.stdout)
    [result] = doc["results"]
    assert doc["exit_code"] == 1 and result["mta_sts"]["verdict"] == "enforce"
    assert result["mta_sts"]["mx"] == [{"host": MX, "listed": False, "pattern": None, "webpki": "valid",
                                        "dane": None, "failures": ["not listed in the policy"]}]
    assert json.loads(off.stdout)["results"][0]["mta_sts"] is None and off.exit_code == 0
    assert hits == 2  # text and JSON; nothing with --mta-sts off


def test_mta_sts_never_overrides_a_failing_dane_validation(tmp_path: Path) -> None:
    from tests.test_probe_dane import WRONG, AdDnsServer

    with StsLab(tmp_path, tlsa=[WRONG], dns_class=AdDnsServer, secure=[]) as lab:
        assert isinstance(lab.dns, AdDnsServer)
        lab.dns.secure = {dns.name.from_text(n) for n in lab.zones}  # a validating resolver: every answer secure
        data = CliRunner().invoke(main, ["probe", DOMAIN, *lab.probe_options(tmp_path), "--json"])
    doc = json.loads(data.stdout)
    [result] = doc["results"]
    [address] = result["addresses"]
    assert "dane.no-match" in [f["code"] for f in address["findings"]] and doc["exit_code"] == 1
    sts = result["mta_sts"]
    assert sts["verdict"] == "enforce" and sts["mx"][0]["webpki"] == "valid" and sts["mx"][0]["dane"] == "fail"
    [f] = [f for f in sts["findings"] if f["code"] == "sts.dane-precedence"]
    assert "never overrides a failing DANE validation" in f["detail"]


# --- in the library's probe and pre-flight (ProbeOptions/PreflightOptions) ---------------------------


@pytest.mark.parametrize("make", [ProbeOptions, PreflightOptions])
@pytest.mark.parametrize(("fields", "error", "text"), [
    ({"mta_sts": "on"}, InputError, "Unknown MTA-STS mode 'on'"),
    ({"sts_policy_port": 0}, UsageError, "policy port 0 is not a TCP port"),
    ({"sts_policy_port": "443"}, UsageError, "policy port '443' is not a TCP port"),
    ({"sts_cadata": "no certificate here"}, InputError, "holds no PEM certificate"),
    ({"sts_cadata": b"bytes"}, UsageError, "must be PEM text"),
])
def test_the_options_check_mta_sts_once_when_made(make: type, fields: dict[str, object], error: type,
                                                   text: str) -> None:
    with pytest.raises(error, match=text):
        make(**fields)
    assert make().mta_sts == "off" and make().sts_cadata is None and make().sts_policy_port == 443


def test_the_library_probe_judges_mta_sts_per_domain_target(tmp_path: Path) -> None:
    with StsLab(tmp_path, policy_body=policy("enforce", mx=["mx9.contoso.test"])) as lab:
        on = lab.probe(**lab.sts_fields())
        off = lab.probe()  # the library's default: nothing looked up
        fetched = lab.https.hits[PATH]
        direct = probe_sync([f"{MX}:{lab.smtp.port}"], anchors=[ROOT.cert],
                            options=ProbeOptions(nameserver=lab.dns.address, validator="postfix", timeout=3,
                                                 **lab.sts_fields()))
        assert lab.https.hits[PATH] == fetched == 1  # a host:port target has no MTA-STS to look up
    sts = on.mta_sts
    assert sts is not None and sts.verdict == "enforce" and not sts.ok
    assert sts.failures == [f"{MX}: not listed in the policy"] and sts.mx[0].webpki == "valid"
    assert sts.tlsrpt is not None and sts.tlsrpt.rua == ("mailto:tlsrpt@contoso.test",)
    # The session itself is fine: the MTA-STS error is its own (not in the findings), yet counts in the exit code.
    assert on.addresses[0].ok and not [f for f in on.all_findings if f.code.startswith("sts.")]
    assert exit_code([on]) == 1 and exit_code([off]) == 0
    assert on.to_dict()["mta_sts"] == sts.to_dict() and off.to_dict()["mta_sts"] is None and off.mta_sts is None
    assert direct[0].mta_sts is None and direct[0].to_dict()["mta_sts"] is None


def test_the_library_probe_reports_a_policy_that_passes(tmp_path: Path) -> None:
    with StsLab(tmp_path, policy_body=policy("testing")) as lab:
        result = lab.probe(**lab.sts_fields())
    assert result.mta_sts is not None and result.mta_sts.verdict == "testing" and result.mta_sts.ok
    assert result.mta_sts.summary == "testing: nothing would fail under enforce" and exit_code([result]) == 0


def test_the_library_preflight_reports_mta_sts_without_changing_the_verdict(tmp_path: Path) -> None:
    with StsLab(tmp_path, policy_body=policy("enforce", mx=["mx9.contoso.test"])) as lab:
        on = lab.preflight(**lab.sts_fields())
        off = lab.preflight()
    sts = on.mta_sts
    assert sts is not None and sts.verdict == "enforce" and not sts.ok and off.mta_sts is None
    assert (on.ready, on.exit_code, len(on.items)) == (off.ready, off.exit_code, len(off.items))
    assert on.to_dict()["mta_sts"] == sts.to_dict() and off.to_dict()["mta_sts"] is None
    # The TLS-RPT report takes the report's own MTA-STS by default.
    [entry] = tlsrpt_report(on, report_id="r1")["policies"]
    assert entry["policy"]["policy-type"] == "sts" and entry["policy"]["mx-host"] == ["mx9.contoso.test"]
    assert tlsrpt_report(off, report_id="r2")["policies"][0]["policy"]["policy-type"] == "no-policy-found"
    text = render_text(on)
    assert f"MTA-STS {DOMAIN}: enforce -- enforce: failing now: {MX}: not listed in the policy" in text
    assert "Record:  published: v=STSv1; id=20260101" in text
    assert "Policy:  mode enforce, max_age 86400, mx mx9.contoso.test" in text
    assert f"MX {MX}: NOT listed, Web PKI valid; fails: not listed in the policy" in text
    assert "TLS-RPT: published: mailto:tlsrpt@contoso.test" in text and "ERROR   sts.mx-not-listed" in text
    assert "MTA-STS" not in render_text(off)


def test_the_library_preflight_reports_the_records_of_a_partner_without_a_policy(tmp_path: Path) -> None:
    with StsLab(tmp_path, smtp={"offer_starttls": False}, txt=[], tlsrpt=["v=TLSRPTv1; rua=ftp://x"]) as lab:
        report = lab.preflight(**lab.sts_fields())
    sts = report.mta_sts
    assert sts is not None and sts.verdict == "none" and sts.ok
    assert [f.code for f in sts.findings] == ["sts.not-published", "tlsrpt.record-invalid"]
    text = render_text(report)
    assert "Record:  not published" in text and "Policy:  not fetched (no usable record)" in text
    assert "TLS-RPT: not usable" in text


# --- in the pre-flight and its TLS-RPT report --------------------------------------------------------

def test_the_tls_rpt_report_has_the_sts_policy_and_its_failures(tmp_path: Path) -> None:
    body = policy("testing", mx=["mx9.contoso.test"])
    with StsLab(tmp_path, policy_body=body) as lab:
        report = lab.preflight()
        sts = mta_sts_of_sessions(DOMAIN, report.endpoints, **{k: v for k, v in lab.options().items() if k != "port"})
    data = tlsrpt_report(report, report_id="r1", sts=sts)
    [entry] = data["policies"]
    assert entry["policy"] == {"policy-type": "sts", "policy-domain": DOMAIN, "mx-host": ["mx9.contoso.test"],
                               "policy-string": ["version: STSv1", "mode: testing", "mx: mx9.contoso.test",
                                                 "max_age: 86400"]}
    assert entry["summary"] == {"total-successful-session-count": 0, "total-failure-session-count": 1}
    [detail] = entry["failure-details"]
    assert detail["result-type"] == "validation-failure" and detail["failure-reason-code"] == "sts.mx-not-listed"
    assert detail["receiving-mx-hostname"] == MX


def test_the_tls_rpt_report_says_sts_fetch_error_and_tlsa_where_dane_applied(tmp_path: Path) -> None:
    from tests.test_probe_dane import AdDnsServer

    with StsLab(tmp_path, policy_body=b"version: STSv1\n") as lab:
        sts = check_mta_sts(DOMAIN, **lab.options())
        report = lab.preflight()
    [entry] = tlsrpt_report(report, report_id="r1", sts=sts)["policies"]
    assert entry["policy"] == {"policy-type": "sts", "policy-domain": DOMAIN}
    assert entry["failure-details"][0]["result-type"] == "sts-policy-invalid"
    from certkit.core.dane import tlsa_for

    ee = tlsa_for(MX_CERT.cert, 3).text()  # a DANE-EE record for the MX's own key: DANE applies and passes
    with StsLab(tmp_path, tlsa=[ee], dns_class=AdDnsServer) as lab:
        assert isinstance(lab.dns, AdDnsServer)
        lab.dns.secure = {dns.name.from_text(n) for n in lab.zones}
        report = lab.preflight(dane="auto")
        sts = mta_sts_of_sessions(DOMAIN, report.endpoints, **{k: v for k, v in lab.options().items() if k != "port"})
    [entry] = tlsrpt_report(report, report_id="r2", sts=sts)["policies"]
    assert entry["policy"] == {"policy-type": "tlsa", "policy-string": [ee], "policy-domain": DOMAIN, "mx-host": MX}
    assert entry["summary"]["total-successful-session-count"] == 1
    assert sts.mx[0].dane == "pass" and any(f.code == "sts.dane-precedence" for f in sts.findings)


def test_the_preflight_command_reports_mta_sts_without_changing_the_verdict(tmp_path: Path) -> None:
    (tmp_path / "ours.pem").write_bytes(OURS.pem)
    (tmp_path / "ours.key").write_bytes(OURS.key_pem)
    (tmp_path / "chain.pem").write_bytes(INTER.pem + ROOT.pem)
    with StsLab(tmp_path, policy_body=policy("enforce", mx=["mx9.contoso.test"])) as lab:
        opts = lab.probe_options(tmp_path)
        args = ["preflight", "--partner", DOMAIN, "--our-domain", "fabrikam.example", "--cert",
                str(tmp_path / "ours.pem"), "--key", str(tmp_path / "ours.key"), "--chain", str(tmp_path / "chain.pem"),
                *opts, "--tlsrpt", str(tmp_path / "tlsrpt.json")]
        text = CliRunner().invoke(main, args)
        data = CliRunner().invoke(main, [*args, "--json"])
        off = CliRunner().invoke(main, [*args, "--json", "--mta-sts", "off"])
    assert f"MTA-STS {DOMAIN}: enforce -- enforce: failing now: {MX}: not listed in the policy" in text.output
    doc = json.loads(data.stdout)
    assert doc["mta_sts"]["verdict"] == "enforce" and not doc["mta_sts"]["ok"]
    assert data.exit_code == off.exit_code == doc["exit_code"]  # the verdict is Domain Security's
    assert json.loads(off.stdout)["mta_sts"] is None
    written = json.loads((tmp_path / "tlsrpt.json").read_text())
    assert [p["policy"]["policy-type"] for p in written["policies"]] == ["no-policy-found"]  # the --mta-sts off run


def test_the_mx_web_pki_checks_wait_for_a_policy_that_needs_them(tmp_path: Path) -> None:
    """Most domains publish no MTA-STS record: the probe's default (--mta-sts auto) then checks no MX chain
    against the Web PKI at all -- here roots that cannot even be read are never read."""
    with StsLab(tmp_path, txt=()) as lab:
        r = mta_sts_of_sessions(DOMAIN, [], nameserver=lab.dns.address, cadata="not a PEM file", timeout=3.0)
    assert r.verdict == "none" and "sts.not-published" in [f.code for f in r.findings]
