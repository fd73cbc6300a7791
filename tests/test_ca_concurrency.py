"""Several processes issuing at once, and processes killed mid-issue: the index stays whole."""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from cryptography import x509

from certkit import CertificateAuthority
from tests.conftest import PASS


def _issue_loop(home: str, worker: int, count: int) -> list[int]:
    authority = CertificateAuthority.open(home, passphrase=PASS)
    serials = [authority.issue(f"w{worker}-{i}.contoso.com", key_type="ec-p256").serial for i in range(count)]
    authority.close()
    return serials


def test_four_processes_issuing_at_once_never_duplicate_a_serial(ca: CertificateAuthority) -> None:
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(4) as pool:
        results = pool.starmap(_issue_loop, [(str(ca.home), w, 25) for w in range(4)])
    serials = [s for batch in results for s in batch]
    assert len(serials) == 100 == len(set(serials))
    reopened = CertificateAuthority.open(ca.home)
    assert reopened.index.integrity_ok()
    assert {r.serial for r in reopened.records()} == set(serials)


_KILL_SCRIPT = """
import sys
from pathlib import Path
from certkit import CertificateAuthority, IssueRequest
from certkit.ca import WriteOptions
ca = CertificateAuthority.open(sys.argv[1], passphrase=sys.argv[2].encode())
out = WriteOptions(Path(sys.argv[4]), pfx_password=b"pfx")
i = 0
while True:
    if i % 3 == 0:
        ca.issue_many([IssueRequest(f"b{sys.argv[3]}-{i}-{j}.contoso.com", key_type="ec-p256") for j in range(5)],
                      write=out if i % 2 else None)
    else:
        ca.issue(f"k{sys.argv[3]}-{i}.contoso.com", key_type="ec-p256", write=out)
    if i % 7 == 0:
        ca.publish_crl()
    i += 1
    print(i, flush=True)
"""


def test_a_process_killed_at_any_point_leaves_complete_records_or_none(ca: CertificateAuthority,
                                                                       tmp_path: Path) -> None:
    script = tmp_path / "issue_forever.py"
    out = tmp_path / "out"
    script.write_text(_KILL_SCRIPT)
    rng = random.Random(1234)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    for run in range(6):
        proc = subprocess.Popen([sys.executable, str(script), str(ca.home), PASS.decode(), str(run), str(out)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        assert proc.stdout is not None
        proc.stdout.readline()  # it has issued at least once: the kill lands in the middle of the loop
        time.sleep(rng.uniform(0.0, 0.15))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    reopened = CertificateAuthority.open(ca.home, passphrase=PASS)
    assert reopened.index.integrity_ok()
    records = reopened.records()
    assert records
    for rec in records:
        cert = x509.load_der_x509_certificate(rec.der)
        assert cert.serial_number == rec.serial
        assert rec.common_name.endswith(".contoso.com")
    # files: every published certificate has its record (it can be revoked), and every record that lists
    # files has them all, with the key that matches the certificate
    by_serial = {r.serial: r for r in records}
    for crt in out.glob("*.crt"):
        cert = x509.load_pem_x509_certificate(crt.read_bytes())
        assert cert.serial_number in by_serial, f"{crt.name} was published without a record"
    from cryptography.hazmat.primitives import serialization

    for rec in records:
        if rec.files:
            assert set(rec.files) == {"crt", "chain.pem", "key", "pfx"}, rec.files
            key = serialization.load_pem_private_key(Path(rec.files["key"]).read_bytes(), None)
            assert key.public_key() == x509.load_der_x509_certificate(rec.der).public_key()
    # batches are all-or-nothing: every batch's five certificates are there, or none is
    batches: dict[str, int] = {}
    for rec in records:
        if rec.common_name.startswith("b"):
            key = rec.common_name.rsplit("-", 1)[0]
            batches[key] = batches.get(key, 0) + 1
    assert all(n == 5 for n in batches.values()), batches
    # and the CA keeps working: issue and publish after the crashes
    reopened.issue("after.contoso.com", key_type="ec-p256")
    crls = reopened.publish_crl()
    assert crls[0].number > 0
