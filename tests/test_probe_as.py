"""``certkit probe --as NAME``: our client certificate from the CA home, and its one-line errors."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from certkit.adapters.truststore import TrustStore
from certkit.ca import CertificateAuthority, IssuedCertificate, WriteOptions
from certkit.cli import main
from certkit.cli.common import KEY_PASSPHRASE_ENV
from certkit.clock import FixedClock
from certkit.errors import NotFoundError
from tests.pki import make_intermediate, make_leaf, make_root
from tests.smtp_servers import Handler, Scripted, SmtpTestServer

Start = Callable[[Handler], SmtpTestServer]
THEIR_ROOT = make_root("Fabrikam As Root")
THEIR_INTER = make_intermediate(THEIR_ROOT, "Fabrikam As CA")
THEIR_SERVER = make_leaf(THEIR_INTER, ["mx1.fabrikam.test", "fabrikam.test"])


@dataclass
class Home:
    path: Path
    ca: CertificateAuthority
    out: Path
    clock: FixedClock

    def issue(self, name: str, *, key_passphrase: bytes | None = None, **kwargs: object) -> IssuedCertificate:
        self.clock.advance(dt.timedelta(minutes=1))
        issued = self.ca.issue(name, key_type="ec-p256", **kwargs)  # type: ignore[arg-type]
        folder = self.out / f"{issued.serial:x}"
        folder.mkdir()
        paths = issued.write_to(folder, key_passphrase=key_passphrase)
        self.ca.record_files(issued.serial, paths)
        return issued


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Home]:
    path = tmp_path / "ca"
    # The CA's clock starts three hours ago and moves a minute per issuance, so "newest" is well defined.
    clock = FixedClock(dt.datetime.now(dt.UTC) - dt.timedelta(hours=3))
    ca = CertificateAuthority.init(path, name="Contoso Transport CA", passphrase=b"ca secret", key_type="ec-p256",
                                   clock=clock)
    (tmp_path / "out").mkdir()
    try:
        yield Home(path, ca, tmp_path / "out", clock)
    finally:
        ca.close()


def _probe(home: Home, srv: SmtpTestServer, *args: str) -> Result:
    store = home.path.parent / "trust"
    if not store.exists():
        TrustStore(store).add(THEIR_ROOT.cert, label="fabrikam")
    return CliRunner().invoke(main, ["probe", f"127.0.0.1:{srv.port}", "--home", str(home.path), "--store",
                                     str(store), "--managed-only", "--validator", "postfix", "--domain",
                                     "fabrikam.test", "--timeout", "3", *args])


def _picky(home: Home) -> Scripted:
    """A Postfix-like server that trusts only our CA (421 otherwise)."""
    return Scripted(identity=THEIR_SERVER, chain=[THEIR_INTER.cert], trusted=[home.ca.issuer])


def test_as_presents_the_newest_valid_certificate(home: Home, smtp_server: Start) -> None:
    home.issue("edge.contoso.test")
    newest = home.issue("edge.contoso.test")
    home.issue("other.contoso.test")
    server = _picky(home)
    r = _probe(home, smtp_server(server), "--as", "edge.contoso.test")
    assert r.exit_code == 0, r.output
    assert "would deliver with Domain Security" in r.output
    [tls] = server.sessions
    assert tls.peer_chain[0].serial_number == newest.serial


def test_as_matches_a_san_name_case_insensitively(home: Home) -> None:
    issued = home.issue("edge.contoso.test", accepted_domains=["contoso.test"])
    assert home.ca.identity_for("CONTOSO.TEST", at=dt.datetime.now(dt.UTC)).cert.serial_number == issued.serial


def test_as_skips_revoked_records(home: Home) -> None:
    keep = home.issue("edge.contoso.test")
    gone = home.issue("edge.contoso.test")
    home.ca.unlock(b"ca secret")
    home.ca.revoke(gone.serial)
    assert home.ca.identity_for("edge.contoso.test", at=dt.datetime.now(dt.UTC)).cert.serial_number == keep.serial


def test_as_without_a_record_is_a_one_line_usage_error(home: Home, smtp_server: Start) -> None:
    home.issue("edge.contoso.test")
    r = _probe(home, smtp_server(_picky(home)), "--as", "nobody.contoso.test")
    assert r.exit_code == 2
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("certkit: error: ")
    assert "nobody.contoso.test" in lines[0] and "--client-cert" in lines[0]


def test_as_with_a_missing_key_file(home: Home, smtp_server: Start) -> None:
    issued = home.issue("edge.contoso.test")
    Path(home.ca.get(issued.serial).files["key"]).unlink()
    r = _probe(home, smtp_server(_picky(home)), "--as", "edge.contoso.test")
    assert r.exit_code == 2
    [line] = r.output.strip().splitlines()
    assert "key file" in line and "--client-cert and --client-key" in line


def test_as_with_a_missing_certificate_file(home: Home) -> None:
    issued = home.issue("edge.contoso.test")
    files = home.ca.get(issued.serial).files
    Path(files["chain.pem"]).unlink()
    Path(files["crt"]).unlink()
    with pytest.raises(NotFoundError, match="--client-cert"):
        home.ca.identity_for("edge.contoso.test", at=dt.datetime.now(dt.UTC))


def test_as_without_a_ca_home(tmp_path: Path, smtp_server: Start) -> None:
    srv = smtp_server(Scripted(identity=THEIR_SERVER, chain=[THEIR_INTER.cert]))
    r = CliRunner().invoke(main, ["probe", f"127.0.0.1:{srv.port}", "--home", str(tmp_path / "none"), "--store",
                                  str(tmp_path / "trust"), "--as", "edge.contoso.test"])
    assert r.exit_code == 2
    assert len(r.output.strip().splitlines()) == 1


def test_as_with_an_encrypted_key(home: Home, smtp_server: Start, monkeypatch: pytest.MonkeyPatch) -> None:
    home.issue("edge.contoso.test", key_passphrase=b"key secret")
    monkeypatch.delenv(KEY_PASSPHRASE_ENV, raising=False)
    r = _probe(home, smtp_server(_picky(home)), "--as", "edge.contoso.test")
    assert r.exit_code == 2 and "encrypted" in r.output
    monkeypatch.setenv(KEY_PASSPHRASE_ENV, "key secret")
    r = _probe(home, smtp_server(_picky(home)), "--as", "edge.contoso.test")
    assert r.exit_code == 0, r.output
    assert os.environ[KEY_PASSPHRASE_ENV] == "key secret"


def test_as_and_client_cert_are_exclusive(home: Home, smtp_server: Start, tmp_path: Path) -> None:
    home.issue("edge.contoso.test")
    r = _probe(home, smtp_server(_picky(home)), "--as", "edge.contoso.test", "--client-cert", str(tmp_path / "x"),
               "--client-key", str(tmp_path / "y"))
    assert r.exit_code == 2 and "mutually exclusive" in r.output


def test_client_key_that_does_not_match_is_a_usage_error(home: Home, smtp_server: Start, tmp_path: Path) -> None:
    other = make_leaf(THEIR_INTER, ["edge.contoso.test"])
    (tmp_path / "c.pem").write_bytes(THEIR_SERVER.pem)
    (tmp_path / "c.key").write_bytes(other.key_pem)
    r = _probe(home, smtp_server(_picky(home)), "--client-cert", str(tmp_path / "c.pem"), "--client-key",
               str(tmp_path / "c.key"))
    assert r.exit_code == 2 and "does not belong" in r.output


def test_as_after_a_renewal_that_kept_the_key(home: Home, smtp_server: Start) -> None:
    # `certkit ca renew NAME` keeps the key and writes no key file: --as takes the key of the
    # certificate it renewed (renewed_from) and presents the renewed certificate.
    home.ca.unlock(b"ca secret")
    home.clock.advance(dt.timedelta(minutes=1))
    first = home.ca.issue("edge.contoso.test", key_type="ec-p256", write=WriteOptions(home.out / "first"))
    home.clock.advance(dt.timedelta(minutes=1))
    second = home.ca.renew(first.serial, write=WriteOptions(home.out / "second", write_key=False))
    home.clock.advance(dt.timedelta(minutes=1))
    third = home.ca.renew(second.serial, write=WriteOptions(home.out / "third", write_key=False))
    assert "key" not in home.ca.get(third.serial).files
    identity = home.ca.identity_for("edge.contoso.test", at=dt.datetime.now(dt.UTC))
    assert identity.cert.serial_number == third.serial
    server = _picky(home)
    r = _probe(home, smtp_server(server), "--as", "edge.contoso.test")
    assert r.exit_code == 0, r.output
    [tls] = server.sessions
    assert tls.peer_chain[0].serial_number == third.serial


def test_as_after_a_rekey_without_a_key_file(home: Home) -> None:
    home.ca.unlock(b"ca secret")
    home.clock.advance(dt.timedelta(minutes=1))
    first = home.ca.issue("edge.contoso.test", key_type="ec-p256", write=WriteOptions(home.out / "first"))
    home.clock.advance(dt.timedelta(minutes=1))
    home.ca.renew(first.serial, rekey=True, write=WriteOptions(home.out / "second", write_key=False))
    with pytest.raises(NotFoundError, match="key file"):
        home.ca.identity_for("edge.contoso.test", at=dt.datetime.now(dt.UTC))


def test_a_reissue_into_the_same_files_takes_them_over_even_within_one_second(home: Home) -> None:
    """``--force`` writes a new certificate over the files of an older one: the older record gives them up, so
    two records never name one file, and ``--as`` presents the certificate that the files really hold,
    whatever the order of serial numbers when both were issued in the same second."""
    folder = home.out / "shared"
    folder.mkdir()
    first = home.ca.issue("edge.contoso.test", key_type="ec-p256")
    home.ca.record_files(first.serial, first.write_to(folder))
    second = home.ca.issue("edge.contoso.test", key_type="ec-p256")  # same clock reading: a tie on issued_at
    home.ca.record_files(second.serial, second.write_to(folder, overwrite=True))
    records = {r.serial: r for r in home.ca.records()}
    assert records[first.serial].files == {}
    assert set(records[second.serial].files) >= {"crt", "key"}
    assert home.ca.identity_for("edge.contoso.test", at=dt.datetime.now(dt.UTC)).cert.serial_number == second.serial
