"""``certkit probe --json`` against its JSON Schema (certkit/schemas/probe.schema.json), real output only."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from certkit.adapters.truststore import TrustStore
from certkit.cli import main
from certkit.core.findings import CATALOGUE
from certkit.schemas import load
from tests.dnsserver import DnsServer
from tests.pki import make_intermediate, make_leaf, make_root
from tests.smtp_servers import Handler, Scripted, SmtpTestServer, raw_garbage

jsonschema = pytest.importorskip("jsonschema")


Start = Callable[[Handler], SmtpTestServer]
ROOT = make_root("Schema Root")
INTER = make_intermediate(ROOT, "Schema Issuing CA")
SERVER = make_leaf(INTER, ["mx1.fabrikam.test", "fabrikam.test"])
CLIENT = make_leaf(INTER, ["edge.contoso.test"])
FOREIGN = make_leaf(make_root("Contoso Root", org="Contoso"), ["edge.contoso.test"])


@pytest.fixture(scope="module")
def validator() -> Any:
    schema = load()
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def _run(tmp_path: Path, *args: str) -> tuple[int, dict[str, Any]]:
    store = tmp_path / "trust"
    if not store.exists():
        TrustStore(store).add(ROOT.cert, label="schema root")
    r = CliRunner().invoke(main, ["probe", *args, "--store", str(store), "--managed-only", "--json",
                                  "--timeout", "2"])
    assert r.exit_code in (0, 1, 3), r.output
    data = json.loads(r.output)
    assert data["exit_code"] == r.exit_code
    return r.exit_code, data


def _findings(data: dict[str, Any]) -> list[dict[str, Any]]:
    return [f for t in data["results"] for f in [*t["findings"], *(f for a in t["addresses"] for f in a["findings"])]]


def test_schema_codes_are_the_catalogue() -> None:
    assert set(load()["$defs"]["code"]["enum"]) == set(CATALOGUE)
    assert len(load()["$defs"]["code"]["enum"]) == len(CATALOGUE)


def test_schema_requires_the_stable_finding_fields() -> None:
    required = set(load()["$defs"]["finding"]["required"])
    assert {"code", "severity", "side", "tlsrpt_result_type", "enhanced_status", "exchange_text"} <= required


def test_schema_is_shipped_in_the_package() -> None:
    from importlib import resources

    assert resources.files("certkit.schemas").joinpath("probe.schema.json").is_file()


def test_good_chain_and_rejected_client_cert(validator: Any, smtp_server: Start, tmp_path: Path) -> None:
    good = smtp_server(Scripted(identity=SERVER, chain=[INTER.cert]))
    picky = smtp_server(Scripted(identity=SERVER, chain=[INTER.cert], trusted=[INTER.cert], exchange=True,
                                 domain_secure=["contoso.test"]))  # our certificate's domain, the probe's sender
    (tmp_path / "c.pem").write_bytes(FOREIGN.pem)
    (tmp_path / "c.key").write_bytes(FOREIGN.key_pem)
    code, data = _run(tmp_path, f"127.0.0.1:{good.port}", f"127.0.0.1:{picky.port}", "--validator", "postfix",
                      "--domain", "fabrikam.test", "--client-cert", str(tmp_path / "c.pem"),
                      "--client-key", str(tmp_path / "c.key"))
    validator.validate(data)
    assert code == 1
    first, second = (t["addresses"][0] for t in data["results"])
    assert first["ok"] and first["findings"] == [] and first["verification"]["ok"]
    assert first["tls"]["version"].startswith("TLSv1.")
    [f] = second["findings"]
    assert f["code"] == "peer.rejected-issuer-not-accepted"
    assert (f["severity"], f["side"], f["tlsrpt_result_type"], f["enhanced_status"]) == (
        "error", "ours", "validation-failure", "4.7.5")
    assert f["exchange_text"] == '451 4.4.0 Primary target IP address responded with: ' \
                                 '"454 4.7.5 Certificate validation failure."'
    assert second["tls"]["client_certificate_sent"] is True
    assert second["tls"]["acceptable_client_issuers"] == [INTER.cert.subject.rfc4514_string()]


def test_unreachable_and_broken(validator: Any, smtp_server: Start, tmp_path: Path) -> None:
    broken = smtp_server(raw_garbage)
    code, data = _run(tmp_path, "127.0.0.1:1", f"127.0.0.1:{broken.port}")
    validator.validate(data)
    assert code == 1
    refused, garbage = (t["addresses"][0] for t in data["results"])
    assert refused["reached"] is False and refused["tls"] is None and refused["verification"] is None
    [f] = refused["findings"]
    assert f["code"] == "net.refused"
    assert (f["tlsrpt_result_type"], f["enhanced_status"]) == (None, "4.4.1")
    assert "Winsock error code: 10061" in f["exchange_text"]
    assert [f["code"] for f in garbage["findings"]] == ["smtp.protocol-error"]

    code, data = _run(tmp_path, "127.0.0.1:1")
    validator.validate(data)
    assert code == 3


def test_domain_targets_with_dns_findings(validator: Any, dns_server: DnsServer, tmp_path: Path) -> None:
    code, data = _run(tmp_path, "nullmx.test", "nothing.test", "--nameserver", dns_server.address, "--port", "1")
    validator.validate(data)
    assert code == 3
    assert all(t["findings"] for t in data["results"])
    assert {f["code"] for f in _findings(data)} <= set(CATALOGUE)


def test_schema_rejects_drift(validator: Any, smtp_server: Start, tmp_path: Path) -> None:
    srv = smtp_server(Scripted(identity=SERVER, chain=[INTER.cert], offer_starttls=False))
    _, data = _run(tmp_path, f"127.0.0.1:{srv.port}", "--validator", "postfix")
    validator.validate(data)
    finding = data["results"][0]["addresses"][0]["findings"][0]
    assert finding["code"] == "smtp.no-starttls"
    for mutate in (lambda f: f.pop("exchange_text"), lambda f: f.update(code="no.such-code"),
                   lambda f: f.update(severity="fatal"), lambda f: f.update(enhanced_status="4.7")):
        bad = copy.deepcopy(data)
        mutate(bad["results"][0]["addresses"][0]["findings"][0])
        with pytest.raises(jsonschema.ValidationError):
            validator.validate(bad)
