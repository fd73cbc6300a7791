"""The CA against real faults: a full disk at every step, a read-only home, umask 000, SIGKILL mid-batch.

The disk and read-only tests mount a small tmpfs (or a read-only bind mount): they need root and
``mount``; without them they skip locally and fail in CI.
"""

from __future__ import annotations

import contextlib
import gc
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from cryptography import x509

from certkit import CertificateAuthority
from certkit.cli import main
from certkit.core.formats import cert_pem
from tests.conftest import PASS
from tests.tools import require_tool, unavailable

ENV = {"CERTKIT_CA_PASSPHRASE": PASS.decode(), "CERTKIT_PFX_PASSWORD": "pfx-secret"}
ROOT = Path(__file__).resolve().parent.parent


def _need_mount() -> str:
    mount = require_tool("mount")
    if os.geteuid() != 0:
        unavailable("mounting a tmpfs needs root (CI runs these tests as root)")
    return mount


@contextlib.contextmanager
def _mounted(*args: str) -> Iterator[None]:
    target = args[-1]
    subprocess.run([_need_mount(), *args], check=True, capture_output=True)
    try:
        yield
    finally:
        gc.collect()  # the in-process CLI leaves connections to the index for the collector
        if subprocess.run(["umount", target], capture_output=True).returncode:
            subprocess.run(["umount", "-l", target], capture_output=True)


def _cli(*args: str) -> Result:
    result = CliRunner(env=ENV).invoke(main, list(args))
    gc.collect()
    return result


def _one_line_error(result: Result) -> str:
    """The failure is one line on stderr and an exit code, never a traceback."""
    assert isinstance(result.exception, SystemExit), result.exception
    lines = [line for line in result.output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("certkit: error: ")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    return errors[0]


def _hidden(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob(".*") if p.name != ".lock") if folder.is_dir() else []


def assert_consistent(home: Path, out: Path) -> None:
    """Index and files agree: every recorded file exists with the recorded certificate, every certificate
    file belongs to a record, no temporary file, set-aside original or journal is left, the CRL files
    are the index's latest CRLs."""
    assert _hidden(home) == [] and _hidden(out) == []
    with CertificateAuthority.open(home) as ca:
        newest: dict[Path, x509.Certificate] = {}  # --force hands a file to the newer certificate
        for rec in ca.records():
            for kind, path in rec.files.items():
                assert Path(path).is_file(), f"{rec.common_name}: its {kind} {path} is not where the CA recorded it"
            if "crt" in rec.files:
                newest[Path(rec.files["crt"])] = rec.certificate
            newest.update({Path(p): rec.certificate for k, p in rec.files.items() if k != "crt"})
        for crt, cert in newest.items():
            if crt.suffix == ".crt":
                assert crt.read_bytes() == cert_pem(cert), f"{crt} does not hold the certificate recorded for it"
        on_disk = {p.resolve() for p in out.iterdir()} if out.is_dir() else set()
        assert on_disk == set(newest), f"files without a record: {on_disk - set(newest)}"
        for row in ca.index.latest_crls():
            assert (home / f"{row['issuer']}.crl").read_bytes() == bytes(row["der"])


def _free_pages(folder: Path) -> int:
    st = os.statvfs(folder)
    return st.f_bavail * st.f_frsize // 4096


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA with one issued certificate (files in out/) and a CRL, in ``live``; a copy of it is put back
    there (then on a tmpfs mounted at ``live``) for each run, so that the recorded paths hold."""
    base = tmp_path_factory.mktemp("tpl") / "live"
    assert _cli("ca", "init", "--name", "Contoso Transport CA", "--key", "ec-p256", "--home", str(base / "home"),
                "--crl-url", "http://127.0.0.1:1/contoso.crl").exit_code == 0
    assert _cli("ca", "issue", "old.contoso.com", "--key", "ec-p256", "--pfx", "--home", str(base / "home"),
                "--out", str(base / "out")).exit_code == 0
    assert _cli("ca", "crl", "--home", str(base / "home")).exit_code == 0
    saved = base.with_name("saved")
    base.rename(saved)
    base.mkdir()
    return saved


OPERATIONS = {
    "issue": ["ca", "issue", "new.contoso.com", "--key", "ec-p256", "--pfx"],
    "issue --from": ["ca", "issue", "--from", "{names}", "--key", "ec-p256"],
    "renew --rekey": ["ca", "renew", "old.contoso.com", "--rekey", "--pfx", "--force"],
    "revoke": ["ca", "revoke", "old.contoso.com", "--reason", "superseded"],
    "crl": ["ca", "crl"],
}


@pytest.mark.parametrize("operation", list(OPERATIONS))
def test_a_full_disk_at_every_step_leaves_index_and_files_agreeing(template: Path, tmp_path: Path,
                                                                    operation: str) -> None:
    mnt = template.with_name("live")
    names = tmp_path / "names.txt"
    names.write_text("a.contoso.com\nb.contoso.com contoso.com\n")
    failures: set[str] = set()
    with _mounted("-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)):
        successes = 0
        for free in range(0, 80):
            for child in mnt.iterdir():
                shutil.rmtree(child) if child.is_dir() else child.unlink()
            shutil.copytree(template, mnt, dirs_exist_ok=True)
            home, out = mnt / "home", mnt / "out"
            ballast = mnt / "ballast"
            with contextlib.suppress(OSError), ballast.open("wb") as fh:
                fh.write(b"\0" * max(0, (_free_pages(mnt) - free) * 4096))
            args = [a.replace("{names}", str(names)) for a in OPERATIONS[operation]]
            result = _cli(*args, "--home", str(home), *(["--out", str(out)] if args[0] == "ca" and args[1] in
                                                        ("issue", "renew") else []))
            ballast.unlink()
            if result.exit_code == 0:
                successes += 1
            else:
                line = _one_line_error(result)
                assert result.exit_code == 1, line
                assert "full" in line or "No space left" in line, line
                assert "backup" not in line, line
                failures.add(line)
                successes = 0
            assert_consistent(home, out)
            if successes == 3:
                break
        assert successes == 3, "never succeeded: the tmpfs is too small"
    # the disk filled up at several steps: opening the index, the journal, each file, the index's COMMIT
    assert any("The CA index" in f for f in failures), failures
    assert operation in ("revoke",) or any("No space left" in f for f in failures), failures


def test_a_read_only_home_can_be_read_but_not_changed(template: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(template, src)
    home = src / "home"
    assert _cli("trust", "add", str(home / "root.crt"), "--label", "contoso", "--home", str(home)).exit_code == 0
    mnt = tmp_path / "ro"
    mnt.mkdir()
    with _mounted("--bind", str(src), str(mnt)):
        subprocess.run(["mount", "-o", "remount,bind,ro", str(mnt)], check=True, capture_output=True)
        ro = str(mnt / "home")
        leaf = str(mnt / "out" / "old.contoso.com.chain.pem")
        for args in (["ca", "list"], ["ca", "show", "old.contoso.com"], ["ca", "root"], ["trust", "list"],
                     ["trust", "show", "contoso"], ["trust", "export"],
                     ["trust", "verify", leaf, "--managed-only", "--at", "2027-01-01T00:00:00Z"]):
            result = _cli(*args, "--home", ro)
            assert result.exit_code == 0, (args, result.output)
        status = _cli("ca", "status", "--home", ro, "--expiring", "1d")
        assert status.exit_code in (0, 1) and "CA 'Contoso Transport CA'" in status.output, status.output
        for args in (["ca", "issue", "x.contoso.com", "--out", str(tmp_path / "x")],
                     ["ca", "revoke", "old.contoso.com"], ["ca", "crl"]):
            result = _cli(*args, "--home", ro)
            line = _one_line_error(result)
            assert result.exit_code == 2 and "read-only" in line, line
        assert not (tmp_path / "x").exists()


def test_under_umask_000_homes_and_stores_are_private_and_files_keep_their_modes(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        home, out = tmp_path / "new" / "home", tmp_path / "out"
        assert _cli("ca", "init", "--name", "U", "--key", "ec-p256", "--home", str(home)).exit_code == 0
        assert _cli("ca", "issue", "u.contoso.com", "--key", "ec-p256", "--home", str(home),
                    "--out", str(out)).exit_code == 0
        assert _cli("trust", "add", str(home / "root.crt"), "--store", str(tmp_path / "store")).exit_code == 0
    finally:
        os.umask(old)

    def mode(p: Path) -> int:
        return p.stat().st_mode & 0o777

    assert mode(tmp_path / "new") == mode(home) == mode(tmp_path / "store") == 0o700
    assert mode(home / "root.key") == mode(home / ".lock") == mode(out / "u.contoso.com.key") == 0o600
    assert mode(home / "root.crt") == mode(out / "u.contoso.com.crt") == 0o644
    assert mode(out) == 0o755
    for p in [*home.iterdir(), *(tmp_path / "store").iterdir(), *out.iterdir()]:
        assert not mode(p) & 0o022, f"{p} is {oct(mode(p))}"


# --- SIGKILL ----------------------------------------------------------------------------------

_KILL_AT = """
import os, signal, sys
from pathlib import Path
import certkit.adapters.fs as fs
point, keep = sys.argv[1], Path(sys.argv[2])
real_sync, real_publish = fs._sync, fs._publish
calls = []
def keep_temps(paths):
    for i, p in enumerate(paths):   # hard links: the test sees whether the key material was overwritten
        os.link(p, keep / f"{i}-{Path(p).name}")
def sync(paths):
    real_sync(paths)
    if point == "staged":
        keep_temps(paths); os.kill(os.getpid(), signal.SIGKILL)
    calls.extend(paths)
def publish(tmp, path, overwrite):
    real_publish(tmp, path, overwrite)
    if point == "published" and len(calls) and path.name.endswith(".key"):
        os.kill(os.getpid(), signal.SIGKILL)
fs._sync, fs._publish = sync, publish
from certkit.cli import main
main(sys.argv[3:])
"""


@pytest.mark.parametrize("point", ["staged", "published"])
def test_killed_between_steps_the_next_run_removes_the_leftovers_and_overwrites_keys(
        ca: CertificateAuthority, tmp_path: Path, point: str) -> None:
    out, keep = tmp_path / "out", tmp_path / "keep"
    keep.mkdir()
    names = tmp_path / "names.txt"
    names.write_text("".join(f"n{i}.contoso.com\n" for i in range(4)))
    script = tmp_path / "kill.py"
    script.write_text(_KILL_AT)
    proc = subprocess.run([sys.executable, str(script), point, str(keep), "ca", "issue", "--from", str(names),
                           "--key", "ec-p256", "--home", str(ca.home), "--out", str(out)],
                          env={**os.environ, **ENV, "PYTHONPATH": str(ROOT)}, capture_output=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    assert list(ca.home.glob(".txn-*.json")), "the killed run left its journal"
    left = _hidden(out) + [p for p in out.glob("*") if point == "published"]
    assert left, "the killed run left files behind"
    assert ca.records() == []
    status = _cli("ca", "status", "--home", str(ca.home), "--json")
    assert '"leftovers": []' in status.output  # status cleaned up (it could take the lock)
    assert_consistent(ca.home, out)
    assert _cli("ca", "issue", "n0.contoso.com", "--key", "ec-p256", "--home", str(ca.home),
                "--out", str(out)).exit_code == 0
    assert_consistent(ca.home, out)
    for kept in keep.iterdir():
        if ".key." in kept.name:
            assert set(kept.read_bytes()) <= {0}, f"{kept} still holds key material"


_NAMES = "".join(f"b{i}.contoso.com contoso.com\n" for i in range(12))


def test_sigkill_at_random_points_of_a_batch_then_a_clean_run_removes_every_leftover(
        ca: CertificateAuthority, tmp_path: Path) -> None:
    out = tmp_path / "out"
    names = tmp_path / "names.txt"
    names.write_text(_NAMES)
    rng = random.Random(11)
    env = {**os.environ, **ENV, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-c", "from certkit.cli import main; main()", "ca", "issue", "--from", str(names),
           "--key", "ec-p256", "--pfx", "--home", str(ca.home), "--out", str(out), "--force"]
    for _ in range(5):
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.25, 0.9))
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    with CertificateAuthority.open(ca.home) as reopened:
        assert reopened.index.integrity_ok()
    done = subprocess.run(cmd, env=env, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode()
    assert_consistent(ca.home, out)
    with CertificateAuthority.open(ca.home) as reopened:
        valid = {r.common_name for r in reopened.records(revoked=False)}
    assert {f"b{i}.contoso.com" for i in range(12)} <= valid
    assert x509.load_pem_x509_certificate((out / "b0.contoso.com.crt").read_bytes())
