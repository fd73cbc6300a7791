"""Issuance throughput: certkit (persisted) vs raw cryptography (build + sign only) vs trustme,
and the CLI issuing 200 names from a file vs an openssl CLI loop doing the same.

Run: .venv/bin/python bench/bench_ca.py [--ec N] [--rsa N] [--names N]
Not a test: it prints numbers and ratios, and never fails on a timing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certkit import CertificateAuthority, IssueRequest

PASS = b"bench-passphrase"


def rate(n: int, fn: Callable[[int], object]) -> float:
    start = time.perf_counter()
    for i in range(n):
        fn(i)
    return n / (time.perf_counter() - start)


def raw_issue(issuer_key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, issuer: x509.Certificate,
              key_type: str) -> Callable[[int], object]:
    """The same transport certificate certkit issues (same extensions), built and signed with cryptography
    alone and kept in memory: the fair baseline for what persisting costs."""
    now = dt.datetime.now(dt.UTC)
    aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
        issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value)
    cdp = x509.CRLDistributionPoints([x509.DistributionPoint(
        [x509.UniformResourceIdentifier("http://pki.example/ca.crl")], None, None, None)])

    def one(i: int) -> object:
        key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey = (
            ec.generate_private_key(ec.SECP256R1()) if key_type == "ec-p256"
            else rsa.generate_private_key(public_exponent=65537, key_size=2048))
        name = f"h{i}.contoso.com"
        return (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
                .issuer_name(issuer.subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now).not_valid_after(now + dt.timedelta(days=397))
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                             key_encipherment=key_type != "ec-p256", data_encipherment=False,
                                             key_agreement=False, key_cert_sign=False, crl_sign=False,
                                             encipher_only=False, decipher_only=False), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                      ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                .add_extension(aki, critical=False)
                .add_extension(cdp, critical=False)
                .sign(issuer_key, hashes.SHA256()))
    return one


def library(n_ec: int, n_rsa: int, work: Path) -> list[tuple[str, float]]:
    import trustme

    rows: list[tuple[str, float]] = []
    for key_type, n in (("ec-p256", n_ec), ("rsa2048", n_rsa)):
        ca = CertificateAuthority.init(work / f"lib-{key_type}", name="Bench CA", passphrase=PASS,
                                       key_type="ec-p256", crl_url="http://pki.example/ca.crl")
        issuer_key = ca._signing_key()
        r_raw = rate(n, raw_issue(issuer_key, ca.issuer, key_type))
        r_one = rate(n, lambda i, kt=key_type, c=ca: c.issue(f"one{i}.contoso.com", key_type=kt))
        start = time.perf_counter()
        ca.issue_many([IssueRequest(f"batch{i}.contoso.com", key_type=key_type) for i in range(n)])
        r_batch = n / (time.perf_counter() - start)
        tm = trustme.CA(key_type=trustme.KeyType.ECDSA if key_type == "ec-p256" else trustme.KeyType.RSA)
        r_trustme = rate(n, lambda i, t=tm: t.issue_cert(f"t{i}.contoso.com"))
        rows += [(f"{key_type}: raw cryptography (same certificate, build+sign, nothing stored)", r_raw),
                 (f"{key_type}: certkit ca.issue() persisted, one transaction each", r_one),
                 (f"{key_type}: certkit ca.issue_many() persisted, one transaction", r_batch),
                 (f"{key_type}: trustme issue_cert (in memory)", r_trustme)]
        print(f"{key_type}: certkit persisted/raw = {r_one / r_raw:.2f} (issue), {r_batch / r_raw:.2f} (issue_many); "
              f"certkit/trustme = {r_one / r_trustme:.2f}")
        ca.close()
    return rows


def cli_batch(n: int, work: Path) -> None:
    exe = shutil.which("certkit", path=os.path.dirname(sys.executable)) or "certkit"
    env = {**os.environ, "CERTKIT_CA_PASSPHRASE": PASS.decode(), "CERTKIT_HOME": str(work / "cli-ca")}
    subprocess.run([exe, "ca", "init", "--name", "CLI Bench CA", "--key", "ec-p256"], env=env, check=True,
                   capture_output=True)
    names = work / "names.txt"
    names.write_text("".join(f"edge{i}.contoso.com contoso.com\n" for i in range(n)))
    start = time.perf_counter()
    subprocess.run([exe, "ca", "issue", "--from", str(names), "--key", "ec-p256", "--out", str(work / "cli-out")],
                   env=env, check=True, capture_output=True)
    t_certkit = time.perf_counter() - start

    # The openssl loop an admin would script: a key, a CSR, and a signature with an extension file, per name.
    ossl = work / "ossl"
    ossl.mkdir()
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", str(ossl / "ca.key"), "-out", str(ossl / "ca.crt"), "-subj", "/CN=OpenSSL Bench CA",
                    "-days", "3650"], check=True, capture_output=True)
    start = time.perf_counter()
    for i in range(n):
        host = f"edge{i}.contoso.com"
        ext = ossl / f"{host}.ext"
        ext.write_text(f"basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                       f"extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=DNS:{host},DNS:contoso.com\n")
        subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out",
                        str(ossl / f"{host}.key")], check=True, capture_output=True)
        subprocess.run(["openssl", "req", "-new", "-key", str(ossl / f"{host}.key"), "-subj", f"/CN={host}", "-out",
                        str(ossl / f"{host}.csr")], check=True, capture_output=True)
        subprocess.run(["openssl", "x509", "-req", "-in", str(ossl / f"{host}.csr"), "-CA", str(ossl / "ca.crt"),
                        "-CAkey", str(ossl / "ca.key"), "-CAcreateserial", "-days", "397", "-sha256", "-extfile",
                        str(ext), "-out", str(ossl / f"{host}.crt")], check=True, capture_output=True)
    t_openssl = time.perf_counter() - start
    print(f"CLI, {n} names, EC P-256: certkit ca issue --from {t_certkit:.2f} s; openssl loop {t_openssl:.2f} s; "
          f"certkit is {t_openssl / t_certkit:.1f}x faster")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ec", type=int, default=500)
    parser.add_argument("--rsa", type=int, default=30)
    parser.add_argument("--names", type=int, default=200)
    args = parser.parse_args()
    # Work under bench/out (gitignored) rather than /tmp: on some machines /tmp creates files ten times slower,
    # which would measure the file system instead of the tools.
    base = Path(__file__).resolve().parent / "out"
    base.mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="ca-", dir=base))
    try:
        for label, r in library(args.ec, args.rsa, work):
            print(f"  {r:9.1f} certs/s  {label}")
        cli_batch(args.names, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
