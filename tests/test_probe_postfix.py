"""``certkit probe`` (the command, in-process) against real Postfix on loopback.

Two private instances (tests/postfix.py): one with ``smtpd_tls_security_level = may`` and a CA-signed
certificate, one with ``encrypt`` + ``smtpd_tls_ask_ccert`` + ``smtpd_tls_req_ccert`` and a
``smtpd_tls_CAfile`` holding our CA (a certkit CA home, used through ``--as``) and a test CA. The
probe must find their certificate fine, report our certificate rejected with the cause it can
correlate (foreign issuer, no clientAuth, expired), "no client certificate presented" when we send
none, and delivery possible with our CA's certificate.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from certkit.adapters.truststore import TrustStore
from certkit.ca import CertificateAuthority
from certkit.cli import main
from certkit.schemas import load
from tests.fixtures_net import require_postfix
from tests.pki import NOW, SERVER, Issued, make_intermediate, make_leaf, make_root
from tests.postfix import PostfixInstance

THEIR_ROOT = make_root("Fabrikam PF Root", org="Fabrikam")
THEIR_INTER = make_intermediate(THEIR_ROOT, "Fabrikam PF Issuing CA", org="Fabrikam")
THEIR_MX = make_leaf(THEIR_INTER, ["mx1.fabrikam.test", "fabrikam.test"])
# A second CA of ours that their Postfix also trusts: for client certificates a certkit CA would not issue.
OUR_TEST_CA = make_root("Contoso Lab CA", org="Contoso")
FOREIGN = make_leaf(make_root("Northwind Root", org="Northwind"), ["edge.contoso.test"])
SERVER_ONLY = make_leaf(OUR_TEST_CA, ["edge.contoso.test"], eku=[SERVER])
EXPIRED = make_leaf(OUR_TEST_CA, ["edge.contoso.test"], not_before=NOW - dt.timedelta(days=30),
                    not_after=NOW - dt.timedelta(days=1))


@dataclass
class Lab:
    home: Path
    store: Path
    files: Path
    ca_root: Any
    may: PostfixInstance | None = None
    req: PostfixInstance | None = None

    def probe(self, pf: PostfixInstance, *args: str) -> Result:
        return CliRunner().invoke(main, ["probe", f"127.0.0.1:{pf.port}", "--home", str(self.home), "--store",
                                         str(self.store), "--managed-only", "--validator", "postfix", "--domain",
                                         "fabrikam.test", "--timeout", "5", *args])

    def client_files(self, issued: Issued) -> list[str]:
        cert, key = self.files / f"{issued.cert.serial_number:x}.pem", self.files / f"{issued.cert.serial_number:x}.key"
        cert.write_bytes(issued.pem)
        key.write_bytes(issued.key_pem)
        return ["--client-cert", str(cert), "--client-key", str(key)]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    require_postfix()
    base = tmp_path_factory.mktemp("pflab")
    with CertificateAuthority.init(base / "ca", name="Contoso Transport CA", passphrase=b"pw",
                                   key_type="ec-p256") as ca:
        issued = ca.issue("edge.contoso.test", key_type="ec-p256")
        (base / "out").mkdir()
        ca.record_files(issued.serial, issued.write_to(base / "out"))
        root = ca.root
    TrustStore(base / "trust").add(THEIR_ROOT.cert, label="fabrikam")
    (base / "files").mkdir()
    lab = Lab(base / "ca", base / "trust", base / "files", root)
    with PostfixInstance(THEIR_MX.cert, THEIR_MX.key, [THEIR_INTER.cert], hostname="mx1.fabrikam.test") as may, \
         PostfixInstance(THEIR_MX.cert, THEIR_MX.key, [THEIR_INTER.cert], client_ca=[root, OUR_TEST_CA.cert],
                         hostname="mx1.fabrikam.test") as req:
        lab.may, lab.req = may, req
        yield lab


def _json(r: Result) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(r.output)
    try:
        import jsonschema
    except ImportError:
        return data
    jsonschema.validate(data, load())
    return data


def test_their_certificate_fine(lab: Lab) -> None:
    assert lab.may is not None
    r = lab.probe(lab.may, "--json")
    assert r.exit_code == 0, r.output
    [addr] = _json(r)["results"][0]["addresses"]
    assert addr["findings"] == []
    assert addr["verification"]["ok"] is True
    assert addr["tls"]["chain"] == [THEIR_MX.cert.subject.rfc4514_string(), THEIR_INTER.cert.subject.rfc4514_string()]
    assert addr["tls"]["version"] in ("TLSv1.2", "TLSv1.3")
    assert [t["text"] for t in addr["transcript"] if t["direction"] == "C"][-3:] == [
        "RCPT TO:<postmaster@fabrikam.test>", "RSET", "QUIT"]
    assert not any(t["text"].startswith("DATA") for t in addr["transcript"])
    # The host-name rule: a name the certificate does not carry fails.
    r = CliRunner().invoke(main, ["probe", f"127.0.0.1:{lab.may.port}", "--store", str(lab.store), "--managed-only",
                                  "--validator", "postfix", "--name", "mx2.fabrikam.test", "--timeout", "5"])
    assert r.exit_code == 1 and "name.host-mismatch" in r.output


def test_no_client_certificate_presented(lab: Lab) -> None:
    assert lab.req is not None
    r = lab.probe(lab.req, "--json")
    assert r.exit_code == 1, r.output
    [addr] = _json(r)["results"][0]["addresses"]
    assert [f["code"] for f in addr["findings"]] == ["peer.rejected-no-client-cert"]
    reply = addr["findings"][0]["evidence"]["reply"]
    assert reply == "421 4.7.1 mx1.fabrikam.test Error: No client certificate presented"
    assert addr["verification"]["ok"] is True  # their side is fine
    assert addr["tls"]["client_certificate_sent"] is False
    assert set(addr["tls"]["acceptable_client_issuers"]) == {lab.ca_root.subject.rfc4514_string(),
                                                             OUR_TEST_CA.cert.subject.rfc4514_string()}


def test_foreign_client_certificate_not_trusted(lab: Lab) -> None:
    assert lab.req is not None
    r = lab.probe(lab.req, *lab.client_files(FOREIGN))
    assert r.exit_code == 1, r.output
    assert "would fail: our issuer is not on their list" in r.output
    assert "peer.rejected-issuer-not-accepted" in r.output
    assert "421 4.7.1 mx1.fabrikam.test Error: Client certificate not trusted" in r.output
    # Our Edge's queue quotes the reply it got: Postfix's 421, not Exchange's own 454.
    assert 'Exchange shows: 451 4.4.0 Primary target IP address responded with: ' \
           '"421 4.7.1 mx1.fabrikam.test Error: Client certificate not trusted."' in r.output
    log = lab.req.wait_for_log("Client certificate not trusted")
    assert "untrusted issuer" in log


@pytest.mark.parametrize(("client", "code"), [(SERVER_ONLY, "peer.rejected-no-client-auth"),
                                              (EXPIRED, "peer.rejected-expired")])
def test_our_certificate_rejected_for_a_reason_we_can_name(lab: Lab, client: Issued, code: str) -> None:
    assert lab.req is not None
    r = lab.probe(lab.req, "--json", *lab.client_files(client))
    assert r.exit_code == 1, r.output
    [addr] = _json(r)["results"][0]["addresses"]
    assert [f["code"] for f in addr["findings"]] == [code]
    assert "Client certificate not trusted" in addr["findings"][0]["evidence"]["reply"]


def test_delivery_possible_with_our_ca_certificate(lab: Lab) -> None:
    assert lab.req is not None
    r = lab.probe(lab.req, "--as", "edge.contoso.test", "--json")
    assert r.exit_code == 0, r.output
    [addr] = _json(r)["results"][0]["addresses"]
    assert addr["findings"] == [] and addr["ok"] is True
    assert addr["tls"]["client_certificate_sent"] is True
    replies = [t["text"] for t in addr["transcript"] if t["direction"] == "S"]
    assert any(t.startswith("250 2.1.5") for t in replies), replies  # RCPT TO accepted
    assert "EHLO edge.contoso.test" in [t["text"] for t in addr["transcript"]]
