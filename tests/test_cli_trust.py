"""``certkit trust ...`` end to end: exit codes, one-line errors, no tracebacks, no half-written store."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from certkit.adapters.roots import certifi_version
from certkit.cli import main
from certkit.core.formats import load_certificates, sha256_fingerprint
from tests import pki

NOW = pki.NOW
# `openssl crl2pkcs7 -nocrl -outform DER`: a PKCS#7 SignedData without certificates.
EMPTY_P7B = base64.b64decode("MCMGCSqGSIb3DQEHAqAWMBQCAQExADALBgkqhkiG9w0BBwExAA==")


@pytest.fixture(scope="module")
def pkis() -> dict[str, pki.Issued]:
    root = pki.make_root("Fabrikam Root", org="Fabrikam")
    inter = pki.make_intermediate(root, "Fabrikam Issuing CA", org="Fabrikam", cdp="http://crl.fabrikam.com/root.crl")
    leaf = pki.make_leaf(inter, ["mx.fabrikam.com"], cdp="http://crl.fabrikam.com/issuing.crl")
    return {"root": root, "inter": inter, "leaf": leaf, "edge": pki.make_self_signed(["edge.contoso.com"])}


@pytest.fixture
def files(tmp_path: Path, pkis: dict[str, pki.Issued]) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for name, issued in pkis.items():
        out[name] = tmp_path / f"{name}.pem"
        out[name].write_bytes(issued.pem)
    out["chain"] = tmp_path / "chain.pem"
    out["chain"].write_bytes(pkis["leaf"].pem + pkis["inter"].pem)
    out["root_der"] = tmp_path / "root.cer"
    out["root_der"].write_bytes(pkis["root"].der)
    return out


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def run(*args: str | Path, env: dict[str, str] | None = None) -> Result:
    return CliRunner(env=env).invoke(main, ["trust", *[str(a) for a in args]], catch_exceptions=False)


def one_line_error(result: Result, code: int) -> str:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    err = result.stderr.strip()
    assert err.startswith("certkit: error: ") and "\n" not in err, err
    return err


def test_add_list_show_remove(files: dict[str, Path], home: Path, pkis: dict[str, pki.Issued]) -> None:
    r = run("add", files["root_der"], "--label", "fabrikam", "--partner", "fabrikam.com", "--home", home)
    assert r.exit_code == 0, r.output
    fp = sha256_fingerprint(pkis["root"].cert)
    assert "Added: CN=Fabrikam Root,O=Fabrikam" in r.output and fp in r.output and "CA" in r.output
    assert (home / "trust" / f"{fp}.pem").exists()
    again = run("add", files["root"], "--home", home)
    assert again.exit_code == 0 and "Already trusted: CN=Fabrikam Root" in again.output and "(1 anchor)" in again.output
    listed = run("list", "--home", home)
    assert fp[:16] in listed.output and "fabrikam.com" in listed.output
    assert f"certifi {certifi_version()}" in listed.output
    data = json.loads(run("list", "--json", "--home", home).output)
    assert data["certifi"]["version"] == certifi_version()
    assert [a["label"] for a in data["anchors"]] == ["fabrikam"]
    shown = run("show", "fabrikam", "--home", home)
    assert shown.exit_code == 0 and fp in shown.output
    removed = run("remove", fp[:10], "--home", home)
    assert removed.exit_code == 0 and "Removed: CN=Fabrikam Root" in removed.output
    assert json.loads(run("list", "--json", "--home", home).output)["anchors"] == []


def test_home_from_environment_and_store_override(files: dict[str, Path], tmp_path: Path) -> None:
    env_home = tmp_path / "envhome"
    assert run("add", files["root"], env={"CERTKIT_HOME": str(env_home)}).exit_code == 0
    assert (env_home / "trust" / "index.json").exists()
    other = tmp_path / "elsewhere"
    assert run("add", files["root"], "--store", other).exit_code == 0
    assert (other / "index.json").exists()


def test_leaf_is_refused_unless_pinned(files: dict[str, Path], home: Path) -> None:
    err = one_line_error(run("add", files["edge"], "--home", home), 2)
    assert "not a CA certificate" in err and "--pin" in err
    assert not (home / "trust" / "index.json").exists()
    r = run("add", files["edge"], "--pin", "--home", home)
    assert r.exit_code == 0 and "pinned (not a CA)" in r.output


def test_expired_anchor_is_refused_unless_forced(tmp_path: Path, home: Path) -> None:
    old = tmp_path / "old.pem"
    old.write_bytes(pki.make_root(not_after=NOW - dt.timedelta(days=3)).pem)
    err = one_line_error(run("add", old, "--home", home), 2)
    assert "expired" in err and "--force" in err
    r = run("add", old, "--force", "--home", home)
    assert r.exit_code == 0 and "accepted with --force" in r.output


def test_verify_exit_codes_and_reasons(files: dict[str, Path], home: Path) -> None:
    run("add", files["root"], "--label", "fabrikam", "--home", home)
    ok = run("verify", files["chain"], "--domain", "fabrikam.com", "--managed-only", "--home", home)
    assert ok.exit_code == 0 and ok.output.startswith("ACCEPTED")
    bad = run("verify", files["leaf"], "--chain", files["inter"], "--name", "mx.contoso.com", "--home", home,
              "--at", "2099-01-01T00:00:00Z")
    assert bad.exit_code == 1
    assert "cert.expired" in bad.output and "name.host-mismatch" in bad.output and "DNS:mx.fabrikam.com" in bad.output
    missing = run("verify", files["leaf"], "--home", home, "--managed-only")
    assert missing.exit_code == 1 and "chain.missing-intermediate" in missing.output


def test_verify_json_and_client_purpose(files: dict[str, Path], home: Path) -> None:
    run("add", files["root"], "--home", home)
    r = run("verify", files["chain"], "--purpose", "client", "--json", "--home", home)
    assert r.exit_code == 0
    data = json.loads(r.output)
    assert data["ok"] is True and data["purpose"] == "client" and len(data["chain"]) == 3
    assert data["certifi_version"] == certifi_version()


def test_verify_exchange_validator_needs_crls(files: dict[str, Path], home: Path, tmp_path: Path,
                                              pkis: dict[str, pki.Issued]) -> None:
    run("add", files["root"], "--home", home)
    r = run("verify", files["chain"], "--validator", "exchange", "--home", home)
    assert r.exit_code == 1 and "revocation.unreachable" in r.output
    crls = []
    for name in ("root", "inter"):
        p = tmp_path / f"{name}.crl"
        p.write_bytes(pki.make_crl(pkis[name]).public_bytes(serialization.Encoding.PEM))
        crls += ["--crl", str(p)]
    assert run("verify", files["chain"], "--validator", "exchange", *crls, "--home", home).exit_code == 0
    revoked = tmp_path / "revoked.crl"
    revoked.write_bytes(pki.make_crl(pkis["inter"], [pkis["leaf"].cert.serial_number]).public_bytes(
        serialization.Encoding.DER))
    r = run("verify", files["chain"], "--crl", revoked, "--home", home)
    assert r.exit_code == 1 and "revocation.revoked" in r.output


@pytest.mark.parametrize(("extra", "needle"), [
    (["--name", "mx.fabrikam.com", "--domain", "fabrikam.com"], "mutually exclusive"),
    (["--at", "2027-01-01T00:00:00"], "no time zone"),
    (["--at", "next tuesday"], "not an ISO 8601 time"),
    (["--name", "bad name"], "not a valid host name"),
])
def test_verify_misuse_is_exit_2(files: dict[str, Path], home: Path, extra: list[str], needle: str) -> None:
    assert needle in one_line_error(run("verify", files["chain"], *extra, "--home", home), 2)


def test_export_formats(files: dict[str, Path], home: Path, tmp_path: Path, pkis: dict[str, pki.Issued]) -> None:
    run("add", files["root"], "--home", home)
    pem = run("export", "--home", home)
    assert pem.exit_code == 0
    assert [sha256_fingerprint(c) for c in load_certificates(pem.output.encode())] == [
        sha256_fingerprint(pkis["root"].cert)]
    assert "needs --out" in one_line_error(run("export", "--format", "p7b", "--home", home), 2)
    assert run("export", "--format", "p7b", "--out", tmp_path / "a.p7b", "--home", home).exit_code == 0
    assert len(load_certificates((tmp_path / "a.p7b").read_bytes())) == 1
    assert run("export", "--format", "der-dir", "--out", tmp_path / "cer", "--home", home).exit_code == 0
    assert len(list((tmp_path / "cer").glob("*.cer"))) == 1
    err = one_line_error(run("export", "--format", "p7b", "--out", tmp_path / "a.p7b", "--home", home), 2)
    assert "already exists" in err


# --- bad input ------------------------------------------------------------------------------------


def _broken_extension_cert(tmp_path: Path) -> Path:
    p = tmp_path / "broken-ext.pem"
    p.write_bytes(pki.make_unparseable_san(pki.make_root()).public_bytes(serialization.Encoding.PEM))
    return p


def _pfx(tmp_path: Path, pkis: dict[str, pki.Issued]) -> Path:
    p = tmp_path / "root.pfx"
    enc = serialization.BestAvailableEncryption(b"right password")
    p.write_bytes(pkcs12.serialize_key_and_certificates(b"x", pkis["root"].key, pkis["root"].cert, None, enc))
    return p


@pytest.mark.parametrize(("maker", "needle"), [
    (lambda d, _: d / "garbage.pem", "not a certificate in any format"),
    (lambda d, _: d / "broken.pem", "cannot be decoded"),
    # formats.py words this one generically (cryptography says "no certificate data", which it does not
    # recognise); still one line, exit 2.
    (lambda d, _: d / "empty.p7b", "PKCS#7"),
    (lambda d, _: d / "missing.pem", "does not exist"),
    (lambda d, p: _pfx(d, p), "password"),
    (lambda d, _: _broken_extension_cert(d), "cannot be parsed"),
])
def test_bad_input_files_are_one_line_exit_2(tmp_path: Path, home: Path, pkis: dict[str, pki.Issued],
                                             maker: object, needle: str) -> None:
    (tmp_path / "garbage.pem").write_bytes(b"this is not a certificate\n")
    (tmp_path / "broken.pem").write_bytes(b"-----BEGIN CERTIFICATE-----\nMIIB!!!not*base64\n"
                                          b"-----END CERTIFICATE-----\n")
    (tmp_path / "empty.p7b").write_bytes(EMPTY_P7B)
    path = maker(tmp_path, pkis)  # type: ignore[operator]
    env = {"CERTKIT_PFX_PASSWORD": "wrong password"}
    err = one_line_error(run("add", path, "--home", home, env=env), 2)
    assert needle in err
    assert not (home / "trust").exists() or not list((home / "trust").glob("*.pem"))


def test_pfx_with_right_password_adds_its_certificate(tmp_path: Path, home: Path,
                                                      pkis: dict[str, pki.Issued]) -> None:
    r = run("add", _pfx(tmp_path, pkis), "--home", home, env={"CERTKIT_PFX_PASSWORD": "right password"})
    assert r.exit_code == 0 and "Added: CN=Fabrikam Root" in r.output


def test_verify_broken_extension_leaf_is_rejected_not_crashed(tmp_path: Path, home: Path) -> None:
    r = run("verify", _broken_extension_cert(tmp_path), "--home", home)
    assert r.exit_code == 1 and "chain.invalid" in r.output and "cannot be parsed" in r.output


def test_folder_that_is_not_a_store(files: dict[str, Path], tmp_path: Path) -> None:
    notstore = tmp_path / "docs"
    notstore.mkdir()
    (notstore / "readme.txt").write_text("hi")
    for args in (["list"], ["add", str(files["root"])], ["verify", str(files["chain"])]):
        err = one_line_error(run(*args, "--store", notstore), 1)
        assert "is not a certkit trust store" in err
    assert sorted(p.name for p in notstore.iterdir()) == ["readme.txt"]


def test_tampered_store_is_reported(files: dict[str, Path], home: Path, pkis: dict[str, pki.Issued]) -> None:
    run("add", files["root"], "--home", home)
    pem = home / "trust" / f"{sha256_fingerprint(pkis['root'].cert)}.pem"
    pem.write_bytes(pkis["inter"].pem)
    err = one_line_error(run("verify", files["chain"], "--home", home), 1)
    assert "behind certkit's back" in err
    assert run("remove", sha256_fingerprint(pkis["root"].cert), "--home", home).exit_code == 0


def test_real_process_shows_no_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_bytes(b"-----BEGIN CERTIFICATE-----\n%%%%\n-----END CERTIFICATE-----\n")
    proc = subprocess.run([sys.executable, "-c", "from certkit.cli import main; main()", "trust", "add", str(bad),
                           "--store", str(tmp_path / "s")], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


def test_verify_exchange_validator_fetches_crls_from_the_distribution_points(tmp_path: Path) -> None:
    from certkit.lab.httpfiles import HttpFiles

    with HttpFiles() as http:
        root = pki.make_root("Contoso Root", org="Contoso")
        inter = pki.make_intermediate(root, "Contoso Issuing", org="Contoso", cdp=http.url("root.crl"))
        leaf = pki.make_leaf(inter, ["mail.contoso.com"], cdp=http.url("issuing.crl"))
        chain = tmp_path / "chain.pem"
        chain.write_bytes(leaf.pem + inter.pem)
        (tmp_path / "root.pem").write_bytes(root.pem)
        store = str(tmp_path / "trust")
        assert run("add", str(tmp_path / "root.pem"), "--store", store).exit_code == 0
        args = ["verify", str(chain), "--validator", "exchange", "--domain", "contoso.com", "--store", store,
                "--managed-only"]
        # Nothing published yet: Windows' RevocationCheckFailure, with the failed downloads named.
        r = run(*args)
        assert r.exit_code == 1 and "revocation.unreachable" in r.output and "404" in r.output
        http.files["/root.crl"] = pki.make_crl(root).public_bytes(serialization.Encoding.DER)
        http.files["/issuing.crl"] = pki.make_crl(inter).public_bytes(serialization.Encoding.DER)
        r = run(*args)
        assert r.exit_code == 0, r.output
        # Revoked on the published CRL: "revoked", a different finding from "could not check".
        http.files["/issuing.crl"] = pki.make_crl(inter, [leaf.cert.serial_number]).public_bytes(
            serialization.Encoding.DER)
        r = run(*args, "--json")
        codes = [f["code"] for f in json.loads(r.output)["findings"]]
        assert r.exit_code == 1 and "revocation.revoked" in codes and "revocation.unreachable" not in codes
        # The postfix validator fetches nothing and does not care.
        before = dict(http.hits)
        assert run("verify", str(chain), "--domain", "contoso.com", "--store", store, "--managed-only").exit_code == 0
        assert http.hits == before


def test_a_pinned_exchange_self_signed_certificate_validates_as_itself(tmp_path: Path) -> None:
    # New-ExchangeCertificate's certificates (and certkit selfsigned's) carry no authorityKeyIdentifier.
    from certkit import exchange_selfsigned

    pinned, other = exchange_selfsigned("edge.fabrikam.com"), exchange_selfsigned("edge.fabrikam.com")
    with pytest.raises(x509.ExtensionNotFound):
        pinned.certificate.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
    for name, issued in (("pinned", pinned), ("other", other)):
        (tmp_path / f"{name}.crt").write_bytes(issued.cert_pem())
    store = str(tmp_path / "trust")
    assert run("add", str(tmp_path / "pinned.crt"), "--pin", "--store", store).exit_code == 0
    for purpose in ("server", "client"):
        r = run("verify", str(tmp_path / "pinned.crt"), "--domain", "fabrikam.com", "--purpose", purpose,
                "--managed-only", "--store", store)
        assert r.exit_code == 0 and "chain.pinned-leaf" in r.output, r.output
    r = run("verify", str(tmp_path / "other.crt"), "--domain", "fabrikam.com", "--managed-only", "--store", store)
    assert r.exit_code == 1 and "chain.self-signed" in r.output


def test_export_refreshes_in_place_with_force(tmp_path: Path, pkis: dict[str, pki.Issued]) -> None:
    store = str(tmp_path / "trust")
    for name in ("a", "b"):
        root = pki.make_root(f"Root {name}", org=name, fresh_key=True)
        (tmp_path / f"{name}.pem").write_bytes(root.pem)
        assert run("add", str(tmp_path / f"{name}.pem"), "--label", name, "--store", store).exit_code == 0
    bundle, folder = tmp_path / "ca.pem", tmp_path / "cer"
    for fmt, out in (("pem", bundle), ("der-dir", folder)):
        assert run("export", "--format", fmt, "--out", str(out), "--store", store).exit_code == 0
        r = run("export", "--format", fmt, "--out", str(out), "--store", store)
        assert r.exit_code == 2 and "--force" in r.stderr
    assert len(list(folder.glob("*.cer"))) == 2
    assert run("remove", "b", "--store", store).exit_code == 0
    for fmt, out in (("pem", bundle), ("der-dir", folder)):
        assert run("export", "--format", fmt, "--out", str(out), "--store", store, "--force").exit_code == 0
    assert len(x509.load_pem_x509_certificates(bundle.read_bytes())) == 1
    assert [p.name.startswith("a-") for p in folder.glob("*.cer")] == [True]


@pytest.mark.parametrize("at", ["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00Z"])
def test_verify_at_an_absurd_time_is_misuse(at: str, files: dict[str, Path], home: Path) -> None:
    r = run("verify", files["chain"], "--at", at, "--home", home)
    assert r.exit_code == 2 and "Traceback" not in r.output


def test_list_reports_an_anchor_changed_behind_certkits_back_even_at_the_same_size(tmp_path: Path) -> None:
    store = tmp_path / "trust"
    root = pki.make_root("Tamper Root", org="T", fresh_key=True)
    (tmp_path / "r.pem").write_bytes(root.pem)
    assert run("add", str(tmp_path / "r.pem"), "--store", str(store)).exit_code == 0
    (pem,) = store.glob("*.pem")
    data = bytearray(pem.read_bytes())
    i = data.index(b"\n", 40) - 5
    data[i] = ord("A") if data[i] != ord("A") else ord("B")  # same size, different content
    pem.write_bytes(bytes(data))
    r = run("list", "--store", str(store))
    assert r.exit_code == 1 and "changed behind certkit's back" in r.stderr and pem.name in r.stderr


def test_add_ca_only_takes_the_ca_out_of_a_chain_file(tmp_path: Path, files: dict[str, Path],
                                                        pkis: dict[str, pki.Issued]) -> None:
    store = str(tmp_path / "only")
    r = run("add", files["chain"], "--store", store)
    assert r.exit_code == 2  # the leaf in the chain is refused, and with it the whole file
    r = run("add", files["chain"], "--ca-only", "--store", store)
    assert r.exit_code == 0, r.output
    added = {a["fingerprint_sha256"] for a in anchors_json(store)}
    assert added == {sha256_fingerprint(pkis["inter"].cert)}  # the chain file holds the leaf and the intermediate
    leaf_only = tmp_path / "leaf.pem"
    leaf_only.write_bytes(pkis["leaf"].pem)
    r = run("add", str(leaf_only), "--ca-only", "--store", store)
    assert r.exit_code == 2 and "no CA certificate" in r.stderr


def anchors_json(store: str) -> list[dict[str, object]]:
    r = run("list", "--json", "--store", store)
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    return data["anchors"]  # type: ignore[no-any-return]
