"""Issued certificates, chains, CRLs and PFX files against real OpenSSL and real TLS handshakes."""

from __future__ import annotations

import socket
import ssl
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from certkit import CertificateAuthority, IssuedCertificate
from certkit.clock import SystemClock
from tests.conftest import PASS
from tests.tools import require_tool


@pytest.fixture
def live_ca(tmp_path: Path) -> Callable[..., CertificateAuthority]:
    """CAs on the real clock: OpenSSL and TLS stacks check validity against the wall clock."""
    n = iter(range(100))

    def factory(**kwargs: object) -> CertificateAuthority:
        opts: dict[str, object] = {"name": "Contoso Transport CA", "key_type": "ec-p256",
                                   "crl_url": "http://127.0.0.1:1/contoso.crl"}
        opts.update(kwargs)
        return CertificateAuthority.init(tmp_path / f"live{next(n)}", passphrase=PASS, clock=SystemClock(),
                                         **opts)  # type: ignore[arg-type]
    return factory


def openssl(*args: str, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([require_tool("openssl"), *args], input=input, capture_output=True, timeout=60)


def write(issued: IssuedCertificate, folder: Path) -> dict[str, Path]:
    return issued.write_to(folder, pfx_password=b"pfxpass")


@pytest.mark.parametrize("intermediate", [False, True])
@pytest.mark.parametrize("purpose", ["sslserver", "sslclient"])
def test_openssl_verifies_transport_chain_for_both_purposes(live_ca: Callable[..., CertificateAuthority],
                                                            tmp_path: Path, intermediate: bool, purpose: str) -> None:
    authority = live_ca(intermediate=intermediate)
    files = write(authority.issue("mail.contoso.com", key_type="rsa2048"), tmp_path / "out")
    root = tmp_path / "root.pem"
    root.write_bytes(authority.root_pem())
    args = ["verify", "-purpose", purpose, "-CAfile", str(root)]
    if intermediate:
        args += ["-untrusted", str(files["chain.pem"])]
    result = openssl(*args, str(files["crt"]))
    assert result.returncode == 0, result.stderr.decode()
    assert b": OK" in result.stdout


@pytest.mark.parametrize(("profile", "purpose"), [("server", "sslclient"), ("client", "sslserver")])
def test_openssl_rejects_a_certificate_used_for_the_wrong_purpose(live_ca: Callable[..., CertificateAuthority],
                                                                  tmp_path: Path, profile: str, purpose: str) -> None:
    authority = live_ca()
    files = write(authority.issue("mail.contoso.com", profile=profile, key_type="ec-p256"), tmp_path / "out")
    root = tmp_path / "root.pem"
    root.write_bytes(authority.root_pem())
    result = openssl("verify", "-purpose", purpose, "-CAfile", str(root), str(files["crt"]))
    assert result.returncode != 0
    assert b"unsuitable certificate purpose" in result.stdout + result.stderr


def test_openssl_rejects_a_chain_from_another_ca(live_ca: Callable[..., CertificateAuthority], tmp_path: Path) -> None:
    ours, theirs = live_ca(), live_ca(name="Fabrikam CA")
    files = write(theirs.issue("mail.fabrikam.com", key_type="ec-p256"), tmp_path / "out")
    root = tmp_path / "root.pem"
    root.write_bytes(ours.root_pem())
    result = openssl("verify", "-CAfile", str(root), str(files["crt"]))
    assert result.returncode != 0


def test_openssl_verifies_the_crl_signature_and_sees_the_revocation(live_ca: Callable[..., CertificateAuthority],
                                                                     tmp_path: Path) -> None:
    authority = live_ca()
    issued = authority.issue("mail.contoso.com", key_type="ec-p256")
    authority.revoke(issued.serial, reason="superseded")
    info = authority.publish_crl()[0]
    root = tmp_path / "root.pem"
    root.write_bytes(authority.root_pem())
    result = openssl("crl", "-in", str(info.der_path), "-inform", "DER", "-CAfile", str(root), "-noout", "-text")
    assert result.returncode == 0, result.stderr
    assert b"verify OK" in result.stderr + result.stdout
    assert format(issued.serial, "X").encode() in result.stdout.upper()
    assert b"Superseded" in result.stdout
    # and openssl verify -crl_check refuses the revoked certificate
    files = write(issued, tmp_path / "out")
    verify = openssl("verify", "-crl_check", "-CAfile", str(root), "-CRLfile", str(info.pem_path), str(files["crt"]))
    assert verify.returncode != 0
    assert b"certificate revoked" in verify.stdout + verify.stderr


def test_openssl_reads_the_legacy_pfx_with_3des_and_sha1_mac(live_ca: Callable[..., CertificateAuthority],
                                                             tmp_path: Path) -> None:
    authority = live_ca()
    issued = authority.issue("mail.contoso.com", key_type="rsa2048")
    pfx = tmp_path / "legacy.pfx"
    pfx.write_bytes(issued.pfx(b"pfxpass", "legacy"))
    result = openssl("pkcs12", "-info", "-legacy", "-in", str(pfx), "-passin", "pass:pfxpass", "-nokeys")
    text = result.stdout + result.stderr
    assert result.returncode == 0, text.decode()
    assert b"MAC: sha1" in text
    assert b"pbeWithSHA1And3-KeyTripleDES-CBC" in text
    assert b"mail.contoso.com" in text


def test_openssl_reads_the_modern_pfx_with_aes256(live_ca: Callable[..., CertificateAuthority],
                                                  tmp_path: Path) -> None:
    authority = live_ca()
    pfx = tmp_path / "modern.pfx"
    pfx.write_bytes(authority.issue("mail.contoso.com", key_type="rsa2048").pfx(b"pfxpass", "modern"))
    result = openssl("pkcs12", "-info", "-in", str(pfx), "-passin", "pass:pfxpass", "-nokeys")
    text = result.stdout + result.stderr
    assert result.returncode == 0, text.decode()
    assert b"MAC: sha256" in text
    assert b"AES-256-CBC" in text


# --- a real mutual-TLS handshake on 127.0.0.1 ---------------------------------------------------

def _handshake(server_files: dict[str, Path], client_files: dict[str, Path], trust_for_server: Path,
               trust_for_client: Path, crl: Path | None = None) -> str:
    """Run a TLS server on loopback that requires a client certificate; return 'ok' or the error text."""
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(server_files["chain.pem"], server_files["key"])
    sctx.load_verify_locations(trust_for_server)
    sctx.verify_mode = ssl.CERT_REQUIRED
    if crl is not None:
        sctx.load_verify_locations(crl)
        sctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    cctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    cctx.load_verify_locations(trust_for_client)
    cctx.load_cert_chain(client_files["chain.pem"], client_files["key"])
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    server_result: list[str] = []

    def serve() -> None:
        conn, _ = listener.accept()
        conn.settimeout(10)
        try:
            with sctx.wrap_socket(conn, server_side=True) as tls:
                tls.sendall(b"hello")
                server_result.append("ok")
        except (ssl.SSLError, OSError) as exc:
            server_result.append(str(exc))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
                cctx.wrap_socket(raw, server_hostname="mail.fabrikam.com") as tls:
            tls.recv(5)
    except (ssl.SSLError, OSError):
        pass
    thread.join(10)
    listener.close()
    return server_result[0] if server_result else "no result"


@pytest.fixture
def two_orgs(live_ca: Callable[..., CertificateAuthority], tmp_path: Path) -> dict[str, object]:
    contoso = live_ca(intermediate=True)
    fabrikam = live_ca(name="Fabrikam CA")
    server = write(fabrikam.issue("mail.fabrikam.com", key_type="ec-p256"), tmp_path / "server")
    client_cert = contoso.issue("mail.contoso.com", key_type="ec-p256")
    client = write(client_cert, tmp_path / "client")
    roots = {}
    for name, authority in (("contoso", contoso), ("fabrikam", fabrikam)):
        roots[name] = tmp_path / f"{name}-root.pem"
        roots[name].write_bytes(authority.root_pem())
    return {"contoso": contoso, "server": server, "client": client, "roots": roots, "client_cert": client_cert}


def test_mutual_tls_handshake_with_issued_server_and_client_certificates(two_orgs: dict[str, object]) -> None:
    roots = two_orgs["roots"]
    assert _handshake(two_orgs["server"], two_orgs["client"], roots["contoso"], roots["fabrikam"]) == "ok"  # type: ignore[arg-type, index]


def test_handshake_fails_when_the_server_trusts_another_ca(two_orgs: dict[str, object]) -> None:
    roots = two_orgs["roots"]
    result = _handshake(two_orgs["server"], two_orgs["client"], roots["fabrikam"], roots["fabrikam"])  # type: ignore[arg-type, index]
    assert "certificate verify failed" in result


def test_handshake_fails_for_a_revoked_client_certificate_when_the_crl_is_checked(two_orgs: dict[str, object],
                                                                                tmp_path: Path) -> None:
    contoso: CertificateAuthority = two_orgs["contoso"]  # type: ignore[assignment]
    issued: IssuedCertificate = two_orgs["client_cert"]  # type: ignore[assignment]
    roots = two_orgs["roots"]
    # Trust file for the server: contoso root + intermediate (so the CRL's issuer is known).
    trust = tmp_path / "contoso-trust.pem"
    trust.write_bytes(contoso.root_pem() + issued.chain_pem().split(b"-----END CERTIFICATE-----\n", 1)[1])
    good = contoso.publish_crl()[0].pem_path.read_bytes()
    crl_file = tmp_path / "good.crl.pem"
    crl_file.write_bytes(good)
    assert _handshake(two_orgs["server"], two_orgs["client"], trust, roots["fabrikam"], crl=crl_file) == "ok"  # type: ignore[arg-type, index]
    contoso.revoke(issued.serial, reason="keyCompromise")
    crl_file.write_bytes(contoso.publish_crl()[0].pem_path.read_bytes())
    result = _handshake(two_orgs["server"], two_orgs["client"], trust, roots["fabrikam"], crl=crl_file)  # type: ignore[arg-type, index]
    assert "revoked" in result
