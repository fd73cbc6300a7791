"""The pre-flight end to end on loopback: a ready pair, and one case per blocking finding.

Fabrikam's MX is an in-test STARTTLS server (Postfix-like: 421 to the first command after the
handshake when it does not trust our client certificate), found through a real DNS server on
127.0.0.1; both sides' CRLs are served over HTTP on 127.0.0.1.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import jsonschema
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization

from certkit.checks.preflight import PreflightReport, render_text
from certkit.cli.common import CertkitGroup
from certkit.cli.common import parse_at as parse_time
from certkit.cli.preflight import COMMANDS
from certkit.errors import InputError
from certkit.tlsrpt import tlsrpt_report
from tests.pki import NOW, SERVER, make_crl, make_leaf, make_self_signed
from tests.test_preflight_world import World, pem

SCHEMA = json.loads((Path(__file__).parent.parent / "certkit/schemas/preflight.schema.json").read_text())
DAY = dt.timedelta(days=1)


def run(w: World, partner: str = "fabrikam.test", **overrides: Any) -> PreflightReport:
    return w.preflight(partner, **overrides)


def codes(report: PreflightReport, severity: str = "error") -> set[str]:
    return {i.finding.code for i in report.items if i.finding.severity == severity}


def test_a_ready_pair(w: World) -> None:
    report = run(w)
    assert report.ready, [i.finding for i in report.items]
    assert report.exit_code == 0 and report.verdict == "ready"
    assert report.items == []
    assert [c.role for c in report.our_chain] == ["leaf", "intermediate", "root"]
    assert all(c.status == "valid" for c in report.our_chain)
    [where] = report.their_chains
    assert where.startswith("mx1.fabrikam.test [127.0.0.1]:")
    assert [c.status for c in report.their_chains[where]] == ["valid", "valid", "valid"]
    # The partner's server saw our client certificate.
    assert w.scripted is not None and w.scripted.sessions[0].peer_chain[0] == w.our_leaf.cert
    text = render_text(report)
    assert "Verdict:   READY" in text and "Blocking" not in text


def _self_signed(w: World) -> dict[str, Any]:
    return {"leaf": make_self_signed(["edge.contoso.test", "contoso.test"], key_type="rsa"), "chain": []}


BLOCKING: dict[str, tuple[Callable[[World], dict[str, Any]], str, str]] = {
    # name: (overrides, step, code)
    "self-signed": (_self_signed, "endpoints", "peer.rejected-self-signed"),
    "missing clientAuth": (lambda w: {"leaf": w.leaf(eku=[SERVER])}, "certificate", "eku.no-client-auth"),
    "expired": (lambda w: {"leaf": w.leaf(not_before=NOW - 400 * DAY, not_after=NOW - DAY)}, "certificate",
                "cert.expired"),
    "unreachable CRL": (lambda w: {"leaf": w.leaf(cdp=w.http.url("missing.crl"))}, "certificate",
                        "revocation.unreachable"),
    "no MX": (lambda w: {"partner": "nomx.test"}, "routing", "dns.no-mx"),
    "smart host": (lambda w: {"smart_host": "relay.contoso.test"}, "routing", "route.smart-host"),
    "we reject them": (lambda w: {"anchors": [w.our_root.cert]}, "endpoints", "chain.unknown-issuer"),
    "key mismatch": (lambda w: {"key": w.leaf(key_type="ec").key}, "certificate", "key.mismatch"),
}


@pytest.mark.parametrize("case", list(BLOCKING))
def test_each_blocking_finding(w: World, case: str) -> None:
    make, step, code = BLOCKING[case]
    overrides = make(w)
    partner = overrides.pop("partner", "fabrikam.test")
    report = run(w, partner, **overrides)
    assert not report.ready and report.exit_code == 1
    found = [i for i in report.blocking if i.finding.code == code]
    assert found, [(i.step, i.finding.code) for i in report.items]
    assert found[0].step == step
    assert report.step_status(step) == "fail"
    text = render_text(report)
    assert "NOT READY" in text and code in text and found[0].finding.entry.remedy in text


def test_partner_rejects_us(w: World) -> None:
    assert w.server is not None
    w.server.close()
    w.serve(trusted=[w.their_inter.cert])  # they trust only their own CA
    report = run(w)
    rejected = [i for i in report.blocking if i.finding.code.startswith("peer.rejected")]
    assert rejected and rejected[0].directions == ("outbound",)
    assert "421 4.7.1" in rejected[0].finding.detail
    assert rejected[0].finding.entry.exchange_text is not None
    assert report.exit_code == 1


def test_self_signed_is_a_warning_to_pin_it(w: World) -> None:
    report = run(w, **_self_signed(w))
    warnings = {i.finding.code: i for i in report.warnings}
    assert "pin" in warnings["chain.self-signed"].finding.detail
    assert report.our_chain[0].status == "valid"  # pinned by ourselves


def test_nothing_reachable_exits_3(base: World) -> None:
    report = run(base, port=1)
    assert report.exit_code == 3
    assert "net.refused" in codes(report)


def test_crl_near_next_update_is_a_warning(w: World) -> None:
    w.http.files["/soon.crl"] = make_crl(w.our_inter, next_update=NOW + dt.timedelta(hours=3)).public_bytes(
        serialization.Encoding.DER)
    report = run(w, leaf=w.leaf(cdp=w.http.url("soon.crl")))
    assert "revocation.crl-expiring" in codes(report, "warning")
    assert report.ready and report.exit_code == 0


def test_names_edge_fqdn_and_accepted_domains(w: World) -> None:
    report = run(w, edge_fqdn="mail.contoso.test", accepted_domains=["contoso-mail.test"])
    details = [i.finding.detail for i in report.blocking]
    assert any("mail.contoso.test" in d for d in details)
    assert any("contoso-mail.test" in d for d in details)
    assert {"name.host-mismatch", "name.domain-mismatch"} <= codes(report)


def test_their_certificate_without_client_auth_blocks_inbound(w: World) -> None:
    assert w.server is not None
    w.server.close()
    leaf = make_leaf(w.their_inter, ["mx1.fabrikam.test", "fabrikam.test"], eku=[SERVER],
                     cdp=w.http.url("fabrikam-issuing.crl"))
    w.serve(identity=leaf)
    report = run(w)
    [item] = [i for i in report.blocking if i.finding.code == "eku.no-client-auth"]
    assert item.directions == ("inbound",) and item.finding.side == "theirs"


def test_refuses_bad_arguments(base: World) -> None:
    with pytest.raises(InputError):
        run(base, "contoso.test")
    assert parse_time("2026-06-01T12:00:00Z") == dt.datetime(2026, 6, 1, 12, tzinfo=dt.UTC)
    assert parse_time("2026-06-01") == dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
    with pytest.raises(InputError):
        parse_time("yesterday")


def test_json_validates_against_the_schema(w: World) -> None:
    for report in (run(w), run(w, smart_host="relay.contoso.test", leaf=w.leaf(eku=[SERVER])),
                   run(w, "nomx.test"), run(w, port=1)):
        data = json.loads(json.dumps(report.to_dict(), default=str))
        jsonschema.validate(data, SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
        assert data["exit_code"] == report.exit_code


def test_tlsrpt_report(w: World) -> None:
    assert w.server is not None
    w.server.close()
    w.serve(trusted=[w.their_inter.cert])
    data = tlsrpt_report(run(w), report_id="r1", organization="Contoso")
    assert set(data) == {"organization-name", "date-range", "contact-info", "report-id", "policies"}
    [policy] = data["policies"]
    assert policy["policy"]["policy-type"] == "no-policy-found"
    assert policy["policy"]["policy-domain"] == "fabrikam.test"
    assert policy["policy"]["mx-host"] == ["mx1.fabrikam.test"]
    assert policy["summary"] == {"total-successful-session-count": 0, "total-failure-session-count": 1}
    [detail] = policy["failure-details"]
    assert detail["result-type"] == "validation-failure"
    assert detail["failure-reason-code"].startswith("421 4.7.1")
    assert detail["receiving-ip"] == "127.0.0.1" and detail["sending-mta-ip"] == "127.0.0.1"
    assert detail["receiving-mx-hostname"] == "mx1.fabrikam.test" and detail["failed-session-count"] == 1
    assert data["date-range"]["start-datetime"].endswith("Z")
    ok = tlsrpt_report(run(w, anchors=[w.our_root.cert]), report_id="r2")
    assert ok["policies"][0]["failure-details"][0]["result-type"] == "certificate-not-trusted"


# --- the command ---------------------------------------------------------------------------------


def cli() -> click.Group:
    group = CertkitGroup("certkit")
    for command in COMMANDS:
        group.add_command(command)
    return group


def files(w: World, tmp_path: Path, leaf: Any = None) -> list[str]:
    mine = leaf or w.our_leaf
    (tmp_path / "cert.pem").write_bytes(pem(mine.cert))
    (tmp_path / "key.pem").write_bytes(mine.key_pem)
    (tmp_path / "chain.pem").write_bytes(pem(w.our_inter.cert, w.our_root.cert))
    store = tmp_path / "trust"
    from certkit.adapters.truststore import TrustStore

    TrustStore(store).add_many([w.their_root.cert, w.our_root.cert], label="test")
    assert w.server is not None
    return ["preflight", "--partner", "fabrikam.test", "--our-domain", "contoso.test",
            "--cert", str(tmp_path / "cert.pem"), "--key", str(tmp_path / "key.pem"),
            "--chain", str(tmp_path / "chain.pem"), "--store", str(store), "--managed-only",
            "--nameserver", w.dns.address, "--port", str(w.server.port), "--timeout", "3"]


def test_cli_ready_text_json_html_tlsrpt(w: World, tmp_path: Path) -> None:
    args = files(w, tmp_path)
    result = CliRunner().invoke(cli(), args)
    assert result.exit_code == 0, result.output
    assert "Verdict:   READY" in result.output
    result = CliRunner().invoke(cli(), [*args, "--json", "--report", str(tmp_path / "r.html"),
                                        "--tlsrpt", str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    jsonschema.validate(data, SCHEMA)
    assert data["ready"] is True
    html = (tmp_path / "r.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and "<script" not in html.lower()
    assert json.loads((tmp_path / "r.json").read_text())["policies"][0]["summary"][
        "total-successful-session-count"] == 1


def test_cli_not_ready_and_at(w: World, tmp_path: Path) -> None:
    args = files(w, tmp_path)
    later = (w.our_leaf.cert.not_valid_after_utc + DAY).strftime("%Y-%m-%dT%H:%M:%SZ")
    result = CliRunner().invoke(cli(), [*args, "--at", later])
    assert result.exit_code == 1
    assert "cert.expired" in result.stdout and "NOT READY" in result.stdout
    assert result.stderr == ""  # no progress when stderr is not a terminal


def test_cli_usage_errors(w: World, tmp_path: Path) -> None:
    args = files(w, tmp_path)
    result = CliRunner().invoke(cli(), [*args, "--at", "soon"])
    assert result.exit_code == 2 and "certkit: error:" in result.stderr
    (tmp_path / "cert.pem").write_text("not a certificate")
    result = CliRunner().invoke(cli(), args)
    assert result.exit_code == 2


def test_progress_reports_each_step_and_address(w: World) -> None:
    seen: list[tuple[str, str]] = []
    run(w, progress=lambda step, text: seen.append((step, text)))
    assert [s for s, _ in seen] == ["certificate", "routing", "endpoints", "address"]
    assert seen[-1][1].startswith("[1/1] mx1.fabrikam.test [127.0.0.1]:")


def test_terminal_progress_draws_a_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    from certkit.cli.preflight import _Steps
    from tests.test_cli_term import on_a_terminal

    def show() -> None:
        steps = _Steps()
        steps("routing", "resolving the MX records of fabrikam.test")
        steps("address", "[1/2] mx1 [192.0.2.1]:25: would deliver with Domain Security")
        steps("address", "[2/2] mx2 [192.0.2.2]:25: would fail: issuer not trusted")
        steps.close()

    err = on_a_terminal(show, monkeypatch)
    assert "routing: resolving" in err
    assert "[##########----------] 1/2 addresses  mx1 [192.0.2.1]:25: would deliver" in err
    assert "[####################] 2/2 addresses  mx2 [192.0.2.2]:25: would fail" in err


def test_terminal_progress_has_no_bar_for_one_address(monkeypatch: pytest.MonkeyPatch) -> None:
    from certkit.cli.preflight import _Steps
    from tests.test_cli_term import on_a_terminal

    def show() -> None:
        steps = _Steps()
        steps("endpoints", "probing 1 address of fabrikam.test on port 25")
        steps("address", "[1/1] mx1 [192.0.2.1]:25: would deliver with Domain Security")
        steps.close()

    assert on_a_terminal(show, monkeypatch) == "endpoints: probing 1 address of fabrikam.test on port 25\r\n"


# --- review findings: bad arguments, unwritable outputs, exit 3, our CA's root ---------------------------


@pytest.mark.parametrize("timeout", ["-5", "0", "nan"])
def test_cli_refuses_a_useless_timeout(w: World, tmp_path: Path, timeout: str) -> None:
    args = files(w, tmp_path)
    args[args.index("--timeout") + 1] = timeout
    result = CliRunner().invoke(cli(), args)
    assert result.exit_code == 2, result.output
    assert "--timeout" in result.stderr and "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)


@pytest.mark.parametrize("timeout", [-5.0, 0.0, float("nan"), float("inf")])
def test_library_refuses_a_useless_timeout(base: World, timeout: float) -> None:
    with pytest.raises(InputError, match="timeout"):
        run(base, timeout=timeout)


@pytest.mark.parametrize("option", ["--report", "--tlsrpt"])
def test_cli_unwritable_output_is_one_line(w: World, tmp_path: Path, option: str) -> None:
    args = files(w, tmp_path)
    (tmp_path / "afile").write_text("a regular file, not a folder")
    for target in (tmp_path / "afile" / "x.out", tmp_path / "afile" / "deeper" / "x.out"):
        result = CliRunner().invoke(cli(), [*args, option, str(target)])
        assert result.exit_code == 2, (target, result.output)
        assert isinstance(result.exception, SystemExit)
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("certkit: error:") and option in lines[0], lines
        assert result.stdout == ""
    result = CliRunner().invoke(cli(), [*args, option, str(tmp_path)])  # a folder: click's usage error
    assert result.exit_code == 2 and "Traceback" not in result.output
    # A folder that exists but cannot be written into (even by root): the write itself fails, one line.
    result = CliRunner().invoke(cli(), [*args, option, "/proc/certkit-x.out"])
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)
    assert len(result.stderr.splitlines()) == 1 and "certkit: error:" in result.stderr


def test_dns_failure_exits_3_like_the_probe(base: World, tmp_path: Path) -> None:
    report = run(base, "unknown.test")
    assert report.route is not None and report.route.failure is not None
    assert not report.endpoints and report.exit_code == 3
    # A name server that does not answer at all.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        report = run(base, nameserver=f"127.0.0.1:{silent.getsockname()[1]}", timeout=0.5)
    assert report.exit_code == 3 and report.to_dict()["exit_code"] == 3
    base.serve()
    try:
        args = files(base, tmp_path)
        args[args.index("fabrikam.test")] = "unknown.test"
        result = CliRunner().invoke(cli(), args)
        assert result.exit_code == 3, result.output
        assert "NOT READY" in result.stdout
    finally:
        assert base.server is not None
        base.server.close()
        base.server = None


def _our_ca(w: World, tmp_path: Path) -> tuple[Path, Path]:
    """A real CA home (root + issuing CA, CRLs served) and the files `certkit ca issue` writes."""
    from certkit.ca import CertificateAuthority, WriteOptions

    home = tmp_path / "ca"
    url = w.http.url("ourca.crl")
    with CertificateAuthority.init(home, name="Contoso Transport CA", passphrase=b"ca secret", key_type="rsa2048",
                                   crl_url=url, intermediate=True) as ca:
        ca.issue("edge.contoso.test", accepted_domains=["contoso.test"], write=WriteOptions(tmp_path / "certs"))
        for crl in ca.publish_crl():
            name = crl.der_path.name.replace("ca.crl", "ourca.crl").replace("root.crl", "ourca-root.crl")
            w.http.files[f"/{name}"] = crl.der_path.read_bytes()
        w.serve(trusted=list(ca.intermediates))
    return home, tmp_path / "certs"


def test_our_ca_root_is_taken_from_the_home(base: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CERTKIT_HOME", raising=False)
    monkeypatch.chdir(tmp_path)  # ./ca would be the default home
    try:
        home, certs = _our_ca(base, tmp_path)
        assert base.server is not None
        store = tmp_path / "trust"
        from certkit.adapters.truststore import TrustStore

        TrustStore(store).add(base.their_root.cert, label="fabrikam", partners=["fabrikam.test"])
        args = ["preflight", "--partner", "fabrikam.test", "--our-domain", "contoso.test",
                "--cert", str(certs / "edge.contoso.test.crt"), "--key", str(certs / "edge.contoso.test.key"),
                "--chain", str(certs / "edge.contoso.test.chain.pem"), "--store", str(store), "--managed-only",
                "--nameserver", base.dns.address, "--port", str(base.server.port), "--timeout", "3"]
        # A home without a CA: our chain ends at our issuing CA, whose root the pre-flight was not given.
        result = CliRunner().invoke(cli(), [*args, "--home", str(tmp_path / "elsewhere"), "--json"])
        assert result.exit_code == 1, result.output
        [item] = [i for i in json.loads(result.stdout)["blocking"] if i["code"] == "chain.unknown-issuer"]
        assert item["side"] == "ours" and item["step"] == "certificate"
        assert "--home" in item["remedy"] and "--chain" in item["remedy"]
        assert "partner's root" not in item["remedy"]
        # The CA home given (or ./ca, the default): its root completes our chain, no passphrase needed.
        for extra in (["--home", str(home)], []):
            result = CliRunner().invoke(cli(), [*args, *extra])
            assert result.exit_code == 0, result.output
            assert "Verdict:   READY" in result.stdout
            assert "Contoso Transport CA Root [root, valid]" in result.stdout
        # Our root given with --chain instead (the remedy's other way).
        (tmp_path / "root-and-chain.pem").write_bytes((certs / "edge.contoso.test.chain.pem").read_bytes() +
                                                      (home / "root.crt").read_bytes())
        args[args.index("--chain") + 1] = str(tmp_path / "root-and-chain.pem")
        result = CliRunner().invoke(cli(), [*args, "--home", str(tmp_path / "elsewhere")])
        assert result.exit_code == 0, result.output
    finally:
        if base.server is not None:
            base.server.close()
            base.server = None


def test_validator_decides_what_an_unreachable_crl_means(w: World, tmp_path: Path) -> None:
    leaf = w.leaf(cdp=w.http.url("missing.crl"))
    exchange = run(w, leaf=leaf)
    assert not exchange.ready and "revocation.unreachable" in codes(exchange)
    postfix = run(w, leaf=leaf, validator="postfix")
    assert postfix.ready and postfix.exit_code == 0, [i.finding for i in postfix.items]
    assert "revocation.unreachable" in codes(postfix, "info")
    assert postfix.to_dict()["validator"] == "postfix" and exchange.to_dict()["validator"] == "exchange"
    with pytest.raises(InputError, match="validator"):
        run(w, validator="windows")


def test_cli_validator(w: World, tmp_path: Path) -> None:
    args = files(w, tmp_path, leaf=w.leaf(cdp=w.http.url("missing.crl")))
    result = CliRunner().invoke(cli(), [*args, "--json"])
    assert result.exit_code == 1, result.output
    assert json.loads(result.stdout)["validator"] == "exchange"
    result = CliRunner().invoke(cli(), [*args, "--validator", "postfix", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    jsonschema.validate(data, SCHEMA)
    assert data["validator"] == "postfix" and data["ready"] is True
    assert any(f["code"] == "revocation.unreachable" and f["severity"] == "info"
               for s in data["steps"] for f in s["findings"])
    result = CliRunner().invoke(cli(), [*args, "--validator", "windows"])
    assert result.exit_code == 2


@pytest.mark.parametrize("partner", ["bad dom", "fabrikam..test", "-x.test", ""])
def test_cli_malformed_partner_is_a_usage_error(w: World, tmp_path: Path, partner: str) -> None:
    args = files(w, tmp_path)
    i = args.index("--partner")
    args[i + 1] = partner
    result = CliRunner().invoke(cli(), args)
    assert result.exit_code == 2, result.output
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("certkit: error: ")
    if partner:
        assert "--partner" in line and partner in line


def test_library_malformed_domains(base: World) -> None:
    with pytest.raises(InputError, match="--partner"):
        run(base, "bad dom")
    with pytest.raises(InputError, match="--our-domain"):
        run(base, our_domain="contoso test")
