"""``certkit audit``: client certificates without clientAuth, or from public CAs dropping it, on real files.

The "Let's Encrypt" certificates come from a test PKI with Let's Encrypt's names (root ISRG Root X1,
intermediates R10 and E5 of O=Let's Encrypt); the transport certificate from a real certkit CA. Times are
injected (--at), so the windows are exact to the second.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization

from certkit import AuditReport, ClientCertificate, audit_client_certificates
from certkit.adapters.postfixconf import expand, parse_main_cf, parse_master_cf, postfix_client_certificates
from certkit.ca import CertificateAuthority
from certkit.cli import main
from certkit.core.clientauth import PUBLIC_ISSUERS, ROOT_PROGRAM, Source, Status, public_issuer_of
from certkit.core.findings import CATALOGUE
from certkit.core.formats import PfxTarget, pfx_bytes
from certkit.schemas import load
from tests.conftest import T0
from tests.pki import CLIENT, SERVER, Issued, make_intermediate, make_leaf, make_root
from tests.tools import require_tool

UTC = dt.UTC
ISSUED = dt.datetime(2026, 1, 20, 0, 0, 0, tzinfo=UTC)
EXPIRES = ISSUED + dt.timedelta(days=90)          # 2026-04-20T00:00:00Z
AT = EXPIRES - dt.timedelta(days=50)              # 50 days before the classic certificate expires

ISRG = make_root("ISRG Root X1", org="Internet Security Research Group", key_type="rsa", bits=2048)
R10 = make_intermediate(ISRG, "R10", org="Let's Encrypt", key_type="rsa", bits=2048)
E5 = make_intermediate(ISRG, "E5", org="Let's Encrypt")
#: Issued before 2026-02-11 from the classic profile: serverAuth and clientAuth.
LE_CLASSIC = make_leaf(R10, ["mail.contoso.test"], eku=(SERVER, CLIENT), key_type="rsa",
                       not_before=ISSUED, not_after=EXPIRES)
#: The renewal after 2026-02-11: serverAuth only.
LE_RENEWED = make_leaf(E5, ["mail.contoso.test"], eku=(SERVER,), not_before=ISSUED + dt.timedelta(days=40),
                       not_after=ISSUED + dt.timedelta(days=130))
PRIVATE_ROOT = make_root("Fabrikam Private Root", org="Fabrikam")
PRIVATE = make_leaf(make_intermediate(PRIVATE_ROOT, "Fabrikam Issuing CA", org="Fabrikam"), ["edge.fabrikam.test"],
                    not_before=ISSUED, not_after=ISSUED + dt.timedelta(days=365))

Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch) -> Run:
    monkeypatch.delenv("CERTKIT_PFX_PASSWORD", raising=False)

    def invoke(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
        result = CliRunner().invoke(main, ["audit", *args], env=env)
        return result.exit_code, result.stdout, result.stderr

    return invoke


def _pem(path: Path, *issued: Issued, key: bool = False) -> str:
    data = (issued[0].key_pem if key else b"") + b"".join(i.pem for i in issued)
    path.write_bytes(data)
    return str(path)


def _z(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _one_line_error(code: int, out: str, err: str) -> str:
    assert code == 2, (code, out, err)
    assert err.startswith("certkit: error:") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


# --- the library ---------------------------------------------------------------------------------------


def test_a_public_ca_certificate_with_client_auth_breaks_at_its_expiry_to_the_second() -> None:
    item = ClientCertificate(LE_CLASSIC.cert, (R10.cert,))
    exact = EXPIRES - AT
    inside = audit_client_certificates([item], at=AT, within=exact)
    outside = audit_client_certificates([item], at=AT, within=exact - dt.timedelta(seconds=1))
    [c] = inside.certificates
    assert c.client_auth and c.public_issuer is not None and c.public_issuer.name == "Let's Encrypt"
    assert c.breaks_at == EXPIRES
    assert [f.code for f in c.findings] == ["client.public-ca-dropping-client-auth"]
    assert c.status == "breaks" and inside.exit_code == 1
    assert outside.certificates[0].status == "warning" and outside.exit_code == 0
    detail = c.findings[0].detail
    assert "2026-02-11" in detail and "Let's Encrypt" in detail


def test_a_renewed_public_certificate_without_client_auth_breaks_now() -> None:
    report = audit_client_certificates([LE_RENEWED.cert], at=AT)
    [c] = report.certificates
    assert not c.client_auth and c.eku == ("serverAuth",)
    assert [f.code for f in c.findings] == ["client.no-client-auth"]
    assert c.breaks_at == AT and report.exit_code == 1
    assert "Let's Encrypt" in c.findings[0].detail


def test_a_private_transport_certificate_is_fine_and_an_expired_one_is_not() -> None:
    report = audit_client_certificates([PRIVATE.cert], at=AT, within=dt.timedelta(days=3650))
    assert report.certificates[0].status == "ok" and report.certificates[0].findings == () and report.exit_code == 0
    later = audit_client_certificates([PRIVATE.cert], at=PRIVATE.cert.not_valid_after_utc)
    assert [f.code for f in later.certificates[0].findings] == ["cert.expired"] and later.exit_code == 1


def test_no_eku_extension_means_any_usage() -> None:
    bare = make_leaf(make_root("Bare Root", org="Bare"), ["bare.test"], eku=None)
    assert audit_client_certificates([bare.cert], at=bare.cert.not_valid_before_utc).certificates[0].client_auth


def test_issuers_are_recognised_by_name_and_the_table_cites_a_source_for_every_date() -> None:
    assert public_issuer_of(LE_CLASSIC.cert) is PUBLIC_ISSUERS[0]
    assert public_issuer_of(PRIVATE.cert) is None
    digicert = make_intermediate(make_root("DigiCert Global Root G2", org="DigiCert Inc"),
                                 "GeoTrust TLS RSA CA G1", org="DigiCert Inc")
    leaf = make_leaf(digicert, ["www.contoso.test"])
    issuer = public_issuer_of(leaf.cert)
    assert issuer is not None and issuer.name == "DigiCert"
    latest = issuer.latest("issuance-ends")
    assert latest is not None and latest.date == dt.date(2027, 3, 1)
    for entry in PUBLIC_ISSUERS:
        assert entry.milestones and entry.recognised_by
        for m in (*entry.milestones, *ROOT_PROGRAM):
            assert m.source.startswith("https://") and m.status in set(Status) and m.note


def test_the_library_refuses_a_naive_time() -> None:
    from certkit.errors import UsageError

    with pytest.raises(UsageError, match="no time zone"):
        audit_client_certificates([PRIVATE.cert], at=dt.datetime(2026, 3, 1))


def test_the_catalogue_codes_have_remedies_that_are_commands() -> None:
    for code in ("client.no-client-auth", "client.public-ca-dropping-client-auth"):
        assert "certkit ca issue" in CATALOGUE[code].remedy


# --- the command on files --------------------------------------------------------------------------------


def test_cli_within_boundaries_with_an_injected_time(tmp_path: Path, run: Run) -> None:
    pem = _pem(tmp_path / "le.pem", LE_CLASSIC, R10)
    assert run(pem, "--at", _z(AT), "--within", "50d")[0] == 1
    assert run(pem, "--at", _z(AT), "--within", "49d")[0] == 0
    assert run(pem, "--at", _z(AT - dt.timedelta(seconds=1)), "--within", "50d")[0] == 0
    code, out, _ = run(pem, "--at", _z(AT))  # default 90d
    assert code == 1 and "BREAKS" in out and "client.public-ca-dropping-client-auth" in out
    assert "certkit ca issue" in out and "https://letsencrypt.org/" in out


def test_cli_renewed_certificate_and_transport_certificate(tmp_path: Path, run: Run,
                                                           ca: CertificateAuthority) -> None:
    renewed = _pem(tmp_path / "renewed.pem", LE_RENEWED, E5)
    code, out, _ = run(renewed, "--at", _z(AT))
    assert code == 1 and "client.no-client-auth" in out
    issued = ca.issue("edge.contoso.test")
    transport = tmp_path / "edge.pem"
    transport.write_bytes(issued.certificate.public_bytes(serialization.Encoding.PEM))
    code, out, _ = run(str(transport), "--at", _z(T0 + dt.timedelta(days=1)))
    assert code == 0 and out.splitlines()[2].startswith("OK") and "0 breaks, 0 warnings, 1 fine." in out


def test_cli_reads_a_pfx_with_its_password_from_env_or_file(tmp_path: Path, run: Run) -> None:
    pfx = tmp_path / "edge.pfx"
    pfx.write_bytes(pfx_bytes(LE_CLASSIC.key, LE_CLASSIC.cert, [R10.cert], b"pfx secret", target=PfxTarget.MODERN))
    code, out, _ = run(str(pfx), "--at", _z(AT), env={"CERTKIT_PFX_PASSWORD": "pfx secret"})
    assert code == 1 and "Let's Encrypt" in out
    secret = tmp_path / "pfx.pass"
    secret.write_text("pfx secret\n")
    assert run(str(pfx), "--at", _z(AT), "--within", "1d", "--pfx-password-file", str(secret))[0] == 0
    err = _one_line_error(*run(str(pfx), "--at", _z(AT), env={"CERTKIT_PFX_PASSWORD": "wrong"}))
    assert "password" in err
    assert "No PFX password was given" in _one_line_error(*run(str(pfx), "--at", _z(AT)))


def test_cli_json_matches_its_schema_and_the_canonical_names(tmp_path: Path, run: Run) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = load("audit.schema.json")
    validator = jsonschema.validators.validator_for(schema)
    validator.check_schema(schema)
    files = [_pem(tmp_path / "le.pem", LE_CLASSIC, R10), _pem(tmp_path / "renewed.pem", LE_RENEWED, E5),
             _pem(tmp_path / "private.pem", PRIVATE)]
    code, out, _ = run(*files, "--at", _z(AT), "--json")
    data: dict[str, Any] = json.loads(out)
    validator(schema, format_checker=jsonschema.FormatChecker()).validate(data)
    assert code == 1 == data["exit_code"] and data["schema_version"] == 1
    assert data["summary"] == {"ok": 1, "warning": 0, "breaks": 2}
    first = data["certificates"][0]
    assert first["serial"] == f"{LE_CLASSIC.cert.serial_number:X}".zfill(len(first["serial"]))
    assert len(first["serial"]) % 2 == 0 and first["serial"] == first["serial"].upper()
    assert first["not_after"] == "2026-04-20T00:00:00Z" == first["breaks_at"] and data["at"] == _z(AT)
    assert first["public_issuer"]["name"] == "Let's Encrypt"
    assert first["source"] == {"file": files[0], "parameter": None, "service": None}
    library = audit_client_certificates([LE_CLASSIC.cert, PRIVATE.cert], at=AT, notes=["a note"]).to_dict()
    validator(schema, format_checker=jsonschema.FormatChecker()).validate(library)
    assert library["notes"] == ["a note"]


@pytest.mark.parametrize(("args", "says"), [
    ((), "Nothing to audit"),
    (("{missing}",), "does not exist"),
    (("{garbage}",), "not a certificate"),
    (("{le}", "--within", "soon"), "--within 'soon' is not a period"),
    (("{le}", "--at", "yesterday"), "not an ISO 8601 time"),
    (("--postfix-config", "{missing}"), "is not a folder"),
])
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path: Path, run: Run, args: tuple[str, ...], says: str) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_bytes(b"\x00\x01not a certificate at all" * 10)
    names = {"missing": str(tmp_path / "missing.pem"), "garbage": str(garbage),
             "le": _pem(tmp_path / "le.pem", LE_CLASSIC)}
    err = _one_line_error(*run(*(a.format(**names) for a in args)))
    assert says in err


# --- Postfix main.cf and master.cf ---------------------------------------------------------------------------

MAIN_CF = """\
# client side
certs = $config_directory/certs
smtp_tls_security_level = may
smtp_tls_cert_file = ${certs}/le.pem
smtp_tls_CAfile =
    /etc/ssl/certs/ca-certificates.crt
"""

MASTER_CF = """\
# service type  private unpriv  chroot  wakeup  maxproc command + args
smtp      inet  n       -       y       -       -       smtpd
smtp      unix  -       -       y       -       -       smtp
partner   unix  -       -       y       -       -       smtp
  -o smtp_tls_chain_files=$certs/transport.pem
relay     unix  -       -       y       -       -       smtp
  -o { smtp_tls_cert_file = $(certs)/renewed.pem }
  -o smtp_tls_key_file=$certs/renewed.key
local     unix  -       n       n       -       -       local
"""


@pytest.fixture
def postfix_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "postfix"
    (folder / "certs").mkdir(parents=True)
    (folder / "main.cf").write_text(MAIN_CF)
    (folder / "master.cf").write_text(MASTER_CF)
    _pem(folder / "certs" / "le.pem", LE_CLASSIC, R10)
    _pem(folder / "certs" / "renewed.pem", LE_RENEWED, E5)
    _pem(folder / "certs" / "transport.pem", PRIVATE, key=True)  # key first, then the chain (chain_files)
    return folder


def test_postfix_reader_expands_main_cf_and_master_cf_overrides(postfix_dir: Path) -> None:
    found = postfix_client_certificates(postfix_dir)
    certs = postfix_dir / "certs"
    got = [(s.parameter, s.file, s.key_file, s.service) for s in found.settings]
    assert got == [
        ("smtp_tls_cert_file", certs / "le.pem", certs / "le.pem", None),
        ("smtp_tls_chain_files", certs / "transport.pem", None, "partner"),
        ("smtp_tls_cert_file", certs / "renewed.pem", certs / "renewed.key", "relay"),
    ]
    assert found.notes == ()


def test_cli_postfix_config(postfix_dir: Path, run: Run) -> None:
    code, out, _ = run("--postfix-config", str(postfix_dir), "--at", _z(AT), "--json")
    data = json.loads(out)
    assert code == 1
    by_service = {c["source"]["service"]: c for c in data["certificates"]}
    assert by_service[None]["status"] == "breaks" and by_service[None]["source"]["parameter"] == "smtp_tls_cert_file"
    assert by_service["partner"]["status"] == "ok"
    assert [f["code"] for f in by_service["relay"]["findings"]] == ["client.no-client-auth"]
    code, out, _ = run("--postfix-config", str(postfix_dir), "--at", _z(AT))
    assert "master.cf service relay" in out


def test_postfix_without_a_client_certificate_presents_none(tmp_path: Path, run: Run) -> None:
    (tmp_path / "main.cf").write_text("smtp_tls_security_level = may\n")
    code, out, _ = run("--postfix-config", str(tmp_path), "--at", _z(AT))
    assert code == 0 and "presents none" in out and "master.cf does not exist" in out


@pytest.mark.parametrize(("main_cf", "says"), [
    ("this line has no equals sign\n", "is not 'name = value'"),
    ("  smtp_tls_cert_file = /x.pem\n", "continues a line that does not exist"),
    ("smtp_tls_cert_file = $nowhere/x.pem\n", "refers to $nowhere, which main.cf does not set"),
    ("smtp_tls_cert_file = certs/x.pem\n", "is a relative file name"),
    ("a = $b\nb = $a\nsmtp_tls_cert_file = $a\n", "loops"),
    ("smtp_tls_cert_file = ${config_directory\n", "unbalanced"),
])
def test_malformed_main_cf_is_one_line_and_exit_2(tmp_path: Path, run: Run, main_cf: str, says: str) -> None:
    (tmp_path / "main.cf").write_text(main_cf)
    assert says in _one_line_error(*run("--postfix-config", str(tmp_path)))


def test_expansion_forms() -> None:
    params = {"a": "x", "empty": "", "d": "/etc/$a"}
    assert expand("${a}/$(a)/$a/$$", params) == "x/x/x/$"
    assert expand("${a?yes}${empty?no}${empty:fallback}${a:unused}", params) == "yesfallback"
    assert expand("$d/f", params) == "/etc/x/f"
    assert expand("$smtp_tls_key_file", {"smtp_tls_cert_file": "/c.pem"}) == "/c.pem"
    assert parse_main_cf("a = 1\n# c\n  2\na = 3\n") == {"a": "3"}
    [svc] = parse_master_cf("x unix - - y - - smtp -o {a = b c} -o d=e\n")
    assert svc.overrides == {"a": "b c", "d": "e"} and svc.command == "smtp"


def test_main_cf_reader_agrees_with_postconf(postfix_dir: Path) -> None:
    postconf = require_tool("postconf")
    params = {"config_directory": str(postfix_dir), **parse_main_cf((postfix_dir / "main.cf").read_text())}
    for name in ("smtp_tls_cert_file", "smtp_tls_key_file", "smtp_tls_chain_files", "smtp_tls_eccert_file",
                 "smtp_tls_dcert_file", "certs"):
        theirs = subprocess.run([postconf, "-c", str(postfix_dir), "-x", "-h", name], capture_output=True,
                                text=True, check=True, timeout=30).stdout.strip()
        ours = expand(params.get(name, f"${name}" if name == "smtp_tls_key_file" else ""), params)
        assert ours == theirs, name
    # master.cf: postconf -P shows each service's -o settings expanded as Postfix does.
    found = {(s.service, s.parameter): str(s.file) for s in postfix_client_certificates(postfix_dir).settings}
    for service, parameter in (("partner", "smtp_tls_chain_files"), ("relay", "smtp_tls_cert_file")):
        theirs = subprocess.run([postconf, "-c", str(postfix_dir), "-P", "-x", "-h", f"{service}/unix/{parameter}"],
                                capture_output=True, text=True, check=True, timeout=30).stdout.strip()
        assert found[(service, parameter)] == theirs, service


def test_sources_describe_where_a_certificate_came_from() -> None:
    assert Source("/c.pem", "smtp_tls_cert_file", "relay").describe() == \
        "/c.pem (smtp_tls_cert_file, master.cf service relay)"
    assert isinstance(audit_client_certificates([], at=AT), AuditReport)
