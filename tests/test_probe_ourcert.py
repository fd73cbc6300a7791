"""The probe checks the certificate WE present, before connecting, as the partner's validator will (issue #12).

A Postfix partner (``smtpd_tls_req_ccert``) checks no CRL, so it accepts our revoked certificate; an Exchange
partner would not. The probe must say so even when the server in front of it accepted us. Over real sockets:
our CA's CRLs are served over HTTP (HttpFiles), Fabrikam's MX is a Postfix-personality lab server.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization

from certkit.adapters.transport import ClientIdentity
from certkit.adapters.truststore import TrustStore
from certkit.checks.probe import AddressResult, ProbeOptions, ProbeResult, exit_code, probe_sync
from certkit.cli import main
from certkit.clock import FixedClock
from certkit.core.findings import Severity, Side
from certkit.schemas import load
from tests.pki import NOW, SERVER, Issued, make_crl
from tests.test_preflight_world import World, pem, world

DAY = dt.timedelta(days=1)


@pytest.fixture(scope="module")
def w() -> Iterator[World]:
    with world() as w:
        # A certificate of ours on our issuing CA's CRL (its own CRL file, so that the others stay clean).
        w.revoked = w.leaf(cdp=w.http.url("contoso-issuing-revoked.crl"))  # type: ignore[attr-defined]
        w.http.files["/contoso-issuing-revoked.crl"] = make_crl(
            w.our_inter, [w.revoked.cert.serial_number]).public_bytes(serialization.Encoding.DER)  # type: ignore[attr-defined]
        w.serve(trusted=[w.our_root.cert])  # Fabrikam's MX: Postfix with smtpd_tls_req_ccert, trusting our root
        yield w


def run(w: World, leaf: Issued, *, validator: str = "exchange", chain: tuple[Any, ...] | None = None,
        our_roots: tuple[Any, ...] | None = None, **options: Any) -> list[ProbeResult]:
    """Probe Fabrikam's MX presenting ``leaf`` (with our intermediate); their root in the store, ours given apart."""
    assert w.server is not None
    identity = ClientIdentity(leaf.cert, leaf.key, (w.our_inter.cert,) if chain is None else chain)
    opts = ProbeOptions(domain="fabrikam.test", validator=validator, timeout=3, **options)  # type: ignore[arg-type]
    return probe_sync([f"127.0.0.1:{w.server.port}"], anchors=[w.their_root.cert], identity=identity, options=opts,
                      clock=FixedClock(NOW), our_roots=(w.our_root.cert,) if our_roots is None else our_roots)


def only(results: list[ProbeResult]) -> AddressResult:
    [r] = results
    [a] = r.addresses
    return a


def ours(results: list[ProbeResult]) -> dict[str, Any]:
    assert results[0].ours is not None
    return {f.code: f for f in results[0].ours.findings}


def test_our_revoked_certificate_accepted_by_postfix_is_refused_under_exchange_rules(w: World) -> None:
    results = run(w, w.revoked)  # type: ignore[attr-defined]
    a = only(results)
    # The Postfix server accepted it: its own findings are clean, mail got to RCPT.
    assert a.session_ok and a.findings == [], a.findings
    assert a.session is not None and a.session.tls is not None and a.session.tls.client_cert_sent
    assert w.scripted is not None and w.scripted.records[-1].verdict == "trusted"
    found = ours(results)
    assert found["revocation.revoked"].side is Side.OURS
    assert found["revocation.revoked"].severity is Severity.ERROR
    assert a.verdict == "this server accepted our certificate, but an Exchange partner would refuse it: " \
                       "certificate revoked"
    assert not a.ok and exit_code(results) == 1
    assert results[0].ours is a.ours  # once per run, not per address
    assert results[0].ours is not None and results[0].ours.domain == "contoso.test"


def test_the_same_certificate_under_postfix_rules_has_no_revocation_finding(w: World) -> None:
    results = run(w, w.revoked, validator="postfix")  # type: ignore[attr-defined]
    check = results[0].ours
    assert check is not None and check.ok
    assert not [f for f in check.findings if f.code.startswith("revocation.")]
    assert check.fetches == ()  # Postfix checks no CRL: none fetched
    assert check.domain is None  # and applies no name rule to a client certificate
    a = only(results)
    assert a.ok and a.verdict == "would deliver with Domain Security"
    assert exit_code(results) == 0


def test_a_good_certificate_of_ours_adds_nothing(w: World) -> None:
    results = run(w, w.our_leaf)
    check = results[0].ours
    assert check is not None and check.ok, check.findings if check else None
    assert [f.url for f in check.fetches] == [w.http.url("contoso-issuing.crl"), w.http.url("contoso-root.crl")]
    assert [c.subject for c in check.chain] == [w.our_leaf.cert.subject, w.our_inter.cert.subject,
                                                 w.our_root.cert.subject]
    assert only(results).verdict == "would deliver with Domain Security" and exit_code(results) == 0


def test_our_expired_certificate_by_the_injected_clock(w: World) -> None:
    leaf = w.leaf(not_before=NOW - 30 * DAY, not_after=NOW - dt.timedelta(seconds=1))
    found = ours(run(w, leaf))
    assert found["cert.expired"].side is Side.OURS and found["cert.expired"].severity is Severity.ERROR
    # One second before its notAfter it is fine (the probe judges at the clock it is given).
    still_valid = w.leaf(not_before=NOW - 30 * DAY, not_after=NOW + dt.timedelta(seconds=1))
    assert "cert.expired" not in ours(run(w, still_valid))


def test_our_certificate_without_client_auth(w: World) -> None:
    results = run(w, w.leaf(eku=[SERVER]))
    found = ours(results)
    assert found["eku.no-client-auth"].side is Side.OURS
    assert exit_code(results) == 1


def test_our_certificate_without_server_auth(w: World) -> None:
    from cryptography.x509.oid import ExtendedKeyUsageOID

    found = ours(run(w, w.leaf(eku=[ExtendedKeyUsageOID.CLIENT_AUTH])))
    assert found["eku.no-server-auth"].side is Side.OURS


def test_our_certificate_must_name_our_domain_under_exchange_rules(w: World) -> None:
    from tests.pki import make_leaf

    other = make_leaf(w.our_inter, ["edge.northwind.test"], key_type="rsa", cdp=w.http.url("contoso-issuing.crl"))
    results = run(w, other, mail_from="probe@contoso.test")
    found = ours(results)
    assert found["name.domain-mismatch"].side is Side.OURS
    assert found["name.domain-mismatch"].evidence["expected"] == "contoso.test"
    assert "an Exchange partner would refuse it: certificate does not name the domain" in only(results).verdict
    # Postfix applies no name rule to a client certificate.
    assert "name.domain-mismatch" not in ours(run(w, other, validator="postfix", mail_from="probe@contoso.test"))


def test_a_chain_the_partner_can_build(w: World) -> None:
    # The intermediate not sent: the partner cannot build the path (an error).
    found = ours(run(w, w.our_leaf, chain=()))
    assert found["chain.missing-intermediate"].severity is Severity.ERROR
    # Our root unknown here: we cannot follow the chain, but the partner may have it (a warning).
    results = run(w, w.our_leaf, our_roots=())
    found = ours(results)
    assert found["chain.unknown-issuer"].severity is Severity.WARNING
    assert found["chain.unknown-issuer"].side is Side.OURS
    assert results[0].ours is not None and "--as NAME" in results[0].ours.remedy(found["chain.unknown-issuer"])


def test_without_a_client_certificate_nothing_is_checked(w: World) -> None:
    assert w.server is not None
    results = probe_sync([f"127.0.0.1:{w.server.port}"], anchors=[w.their_root.cert],
                         options=ProbeOptions(domain="fabrikam.test", timeout=3))
    assert results[0].ours is None and only(results).ours is None


# --- the command -----------------------------------------------------------------------------------------


def _cli(w: World, tmp_path: Path, leaf: Issued, *args: str) -> Any:
    assert w.server is not None
    store = tmp_path / "trust"
    if not store.exists():
        TrustStore(store).add(w.their_root.cert, label="fabrikam")
        TrustStore(store).add(w.our_root.cert, label="contoso")
    (tmp_path / "me.pem").write_bytes(pem(leaf.cert, w.our_inter.cert))
    (tmp_path / "me.key").write_bytes(leaf.key_pem)
    return CliRunner().invoke(main, ["probe", f"127.0.0.1:{w.server.port}", "--domain", "fabrikam.test",
                                     "--client-cert", str(tmp_path / "me.pem"), "--client-key",
                                     str(tmp_path / "me.key"), "--store", str(store), "--managed-only",
                                     "--home", str(tmp_path / "no-ca"), "--mta-sts", "off", "--dane", "off",
                                     "--timeout", "3", *args])


def test_the_command_reports_our_side_in_text_and_json(w: World, tmp_path: Path) -> None:
    r = _cli(w, tmp_path, w.revoked)  # type: ignore[attr-defined]
    assert r.exit_code == 1, r.output
    assert "Our certificate CN=edge.contoso.test" in r.output and "under exchange rules for contoso.test" in r.output
    assert "revocation.revoked" in r.output
    assert "this server accepted our certificate, but an Exchange partner would refuse it" in r.output
    r = _cli(w, tmp_path, w.revoked, "--json")  # type: ignore[attr-defined]
    data = json.loads(r.output)
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(data, load())
    check = data["our_certificate"]
    assert check["ok"] is False and check["validator"] == "exchange" and check["domain"] == "contoso.test"
    assert [(f["code"], f["side"]) for f in check["findings"]] == [("revocation.revoked", "ours")]
    [address] = data["results"][0]["addresses"]
    assert address["ok"] is False and address["findings"] == []
    assert data["exit_code"] == 1
    r = _cli(w, tmp_path, w.revoked, "--json", "--validator", "postfix")  # type: ignore[attr-defined]
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["our_certificate"]["findings"] == []
