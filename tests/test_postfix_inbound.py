"""Inbound Domain Security in a real Postfix: ``certkit config postfix --out`` and ``certkit postfix-policy``.

We are fabrikam.test. Two domain-secure partners have their roots in our trust store: contoso.test
(root and issuing CA, both tagged) and northwind.test (root). A private Postfix (tests.postfix) listens
on loopback with the generated ``main.cf.inbound`` applied with ``postconf -e`` and the generated
partners file; swaks is the partner's sending Edge. Mail from contoso.test is delivered only with
contoso's certificate; without TLS, without a certificate, with a foreign one or with northwind's it
gets a 4.7.x reply naming the reason; a sender of no partner needs no certificate at all.

The policy service runs here as a daemon (``--policy-listen``): spawn(8) runs its command as an
unprivileged user, who cannot start this test's Python when it lives under /root. The spawn form is
tested on its own (``test_spawned_policy_service``), from a copy of certkit that user can read if needed.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization

from certkit.adapters.truststore import TrustStore
from certkit.cli import main
from tests.fixtures_net import require_postfix
from tests.pki import Issued, make_intermediate, make_leaf, make_root, make_self_signed
from tests.postfix import PostfixInstance, free_port
from tests.tools import in_ci, require_tool

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent

CONTOSO_ROOT = make_root("Contoso Root", org="Contoso")
CONTOSO_CA = make_intermediate(CONTOSO_ROOT, "Contoso Issuing CA", org="Contoso")
NORTHWIND_ROOT = make_root("Northwind Root", org="Northwind")
OUR_ROOT = make_root("Fabrikam Root", org="Fabrikam")
OUR_LEAF = make_leaf(OUR_ROOT, ["mx.fabrikam.test"])

CONTOSO_EDGE = make_leaf(CONTOSO_CA, ["edge.contoso.test", "contoso.test"])
CONTOSO_CA_OTHER_NAME = make_leaf(CONTOSO_CA, ["edge.elsewhere.test"])
NORTHWIND_EDGE = make_leaf(NORTHWIND_ROOT, ["edge.northwind.test", "northwind.test"])
FOREIGN = make_self_signed(["edge.contoso.test", "contoso.test"])
#: what smtpd writes before the policy's text when it refuses a sender
REJECTED = "<admin@contoso.test>: Sender address rejected:"


def _write(folder: Path, name: str, issued: Issued) -> tuple[Path, Path]:
    cert, key = folder / f"{name}.pem", folder / f"{name}.key"
    cert.write_bytes(issued.pem)
    key.write_bytes(issued.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()))
    return cert, key


def _store(folder: Path) -> Path:
    store = folder / "trust"
    ts = TrustStore(store)
    ts.add(CONTOSO_ROOT.cert, label="contoso root", partners=["contoso.test"])
    ts.add(CONTOSO_CA.cert, label="contoso issuing", partners=["contoso.test"])
    ts.add(NORTHWIND_ROOT.cert, label="northwind", partners=["northwind.test"])
    return store


def _generate(store: Path, etc: Path, out: Path, *more: str) -> None:
    result = CliRunner().invoke(main, ["config", "postfix", "--partner", "contoso.test", "--store", str(store),
                                       "--config-dir", str(etc), "--out", str(out), *more])
    assert result.exit_code == 0, result.output


def _apply(pf: PostfixInstance, out: Path, master_extra: str = "") -> None:
    """What the docs tell the admin: postconf -e every line of main.cf.inbound, files into the config folder."""
    for name in ("certkit-ca.pem", "certkit-partners.json"):
        (pf.etc / name).write_bytes((out / name).read_bytes())
    postconf = require_tool("postconf")
    for line in (out / "main.cf.inbound").read_text().splitlines():
        if line and not line.startswith("#"):
            done = subprocess.run([postconf, "-c", str(pf.etc), "-e", line], capture_output=True, text=True,
                                  timeout=30, check=False)
            assert done.returncode == 0 and not done.stderr, (line, done.stderr)
    if master_extra:
        with (pf.etc / "master.cf").open("a") as f:
            f.write(master_extra)
    old = time.time() - 10
    for f in pf.etc.iterdir():
        os.utime(f, (old, old))


@dataclass
class Sent:
    code: int
    transcript: str

    @property
    def replies(self) -> list[str]:
        prefixes = ("<-  ", "<** ", "<~  ", "<~* ")  # swaks: plain, plain error, TLS, TLS error
        return [line[4:] for line in self.transcript.splitlines() if line.startswith(prefixes)]


class Inbound:
    """Our Postfix with inbound enforcement, and swaks as the partners' Edge."""

    def __init__(self, tmp: Path, pf: PostfixInstance) -> None:
        self.tmp = tmp
        self.pf = pf
        self.swaks = require_tool("swaks")

    def send(self, sender: str, cert: Issued | None = None, *, tls: bool = True) -> Sent:
        args = [self.swaks, "--server", f"127.0.0.1:{self.pf.port}", "--from", sender, "--to",
                "postmaster@fabrikam.test", "--ehlo", "edge.example.test", "--timeout", "20",
                "--header", "Subject: certkit inbound"]
        if tls:
            args.append("--tls")
        if cert is not None:
            c, k = _write(self.tmp, f"client{abs(hash(cert.cert.serial_number))}", cert)
            args += ["--tls-cert", str(c), "--tls-key", str(k)]
        done = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
        return Sent(done.returncode, done.stdout + done.stderr)


def _policy_daemon(partners: Path, port: int) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "certkit", "postfix-policy", "--partners", str(partners),
                             "--listen", f"127.0.0.1:{port}"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(proc.stderr.read().decode() if proc.stderr else "policy daemon exited") from None
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the policy daemon did not start")


@pytest.fixture(scope="module")
def inbound(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Inbound]:
    require_postfix()
    require_tool("swaks")
    tmp = tmp_path_factory.mktemp("inbound")
    pf = PostfixInstance(OUR_LEAF.cert, OUR_LEAF.key, hostname="mx.fabrikam.test", domain="fabrikam.test")
    port = free_port()
    out = tmp / "out"
    _generate(_store(tmp), pf.etc, out, "--policy-listen", f"127.0.0.1:{port}")
    _apply(pf, out)
    daemon = _policy_daemon(pf.etc / "certkit-partners.json", port)
    try:
        with pf:
            yield Inbound(tmp, pf)
    finally:
        daemon.terminate()
        daemon.wait(timeout=10)


def _queued(sent: Sent) -> bool:
    return sent.code == 0 and any(r.startswith("250 2.0.0 Ok: queued") for r in sent.replies)


def _refused(sent: Sent) -> str:
    """The refusal reply (to RCPT TO, where smtpd applies the sender restrictions); fails if there is none."""
    refusals = [r for r in sent.replies if r.startswith("450 ")]
    assert refusals and sent.code != 0, sent.transcript
    return refusals[0]


def test_partner_with_its_certificate_is_delivered(inbound: Inbound) -> None:
    sent = inbound.send("admin@contoso.test", CONTOSO_EDGE)
    assert _queued(sent), sent.transcript + inbound.pf.log()
    # a subdomain of the partner is the partner's too
    assert _queued(inbound.send("alerts@eu.contoso.test", CONTOSO_EDGE))
    assert _queued(inbound.send("admin@northwind.test", NORTHWIND_EDGE))


def test_partner_without_a_certificate_is_refused(inbound: Inbound) -> None:
    reply = _refused(inbound.send("admin@contoso.test"))
    assert reply == (f"450 4.7.1 {REJECTED} partner contoso.test requires a client certificate (Domain Security)")
    reply = _refused(inbound.send("admin@contoso.test", tls=False))
    assert reply == (f"450 4.7.1 {REJECTED} partner contoso.test requires TLS and a client certificate "
                     "(Domain Security)")


def test_partner_with_a_foreign_certificate_is_refused(inbound: Inbound) -> None:
    reply = _refused(inbound.send("Admin@CONTOSO.test", FOREIGN))
    assert reply.startswith("450 4.7.5 <Admin@CONTOSO.test>: Sender address rejected: partner contoso.test: "
                            "client certificate not trusted"), reply


def test_partner_with_another_partners_certificate_is_refused(inbound: Inbound) -> None:
    reply = _refused(inbound.send("admin@contoso.test", NORTHWIND_EDGE))
    assert reply == (f"450 4.7.5 {REJECTED} partner contoso.test: certificate from an issuer contoso.test "
                     "does not use (Northwind Root) (Domain Security)")
    # and the other way round
    reply = _refused(inbound.send("admin@northwind.test", CONTOSO_EDGE))
    assert "certificate from an issuer northwind.test does not use (Contoso Issuing CA)" in reply


def test_partner_ca_certificate_for_another_domain_is_refused(inbound: Inbound) -> None:
    reply = _refused(inbound.send("admin@contoso.test", CONTOSO_CA_OTHER_NAME))
    assert reply == (f"450 4.7.5 {REJECTED} partner contoso.test: certificate not issued for "
                     "contoso.test (CN edge.elsewhere.test) (Domain Security)")


def test_other_senders_need_no_certificate(inbound: Inbound) -> None:
    assert _queued(inbound.send("someone@example.test", tls=False))
    assert _queued(inbound.send("someone@example.test"))
    # a look-alike of the partner's domain is not the partner
    assert _queued(inbound.send("someone@evilcontoso.test", tls=False))
    # bounces (the null sender) are nobody's
    assert _queued(inbound.send("<>", tls=False))
    log = inbound.pf.wait_for_log("certkit inbound")
    assert "reject" not in "\n".join(line for line in log.splitlines() if "someone@" in line)


#: What ``certkit postfix-policy`` imports from site-packages (checked by running it from a copy).
_POLICY_DEPENDENCIES = ("click", "cryptography", "idna", "cffi", "_cffi_backend")


def _nobody_runs(python: str, path: str) -> bool:
    probe = subprocess.run(["su", "-s", "/bin/sh", "nobody", "-c",
                            f"cd / && PYTHONPATH={path} {python} -c 'import certkit.cli.postfix_policy'"],
                           capture_output=True, timeout=60, check=False)
    return probe.returncode == 0


def _runtime_for_nobody(folder: Path) -> tuple[str, str]:
    """An interpreter and a PYTHONPATH the account nobody can use, to run certkit as spawn(8) does.

    ``CERTKIT_TEST_SPAWN_PYTHON`` wins; else this Python with the source tree; else, when those live under a
    folder nobody cannot enter (a pyenv Python under /root), the system's Python of the same version with
    a copy of certkit and its few run-time dependencies in ``folder``.
    """
    import shutil
    import sysconfig

    python = os.environ.get("CERTKIT_TEST_SPAWN_PYTHON", sys.executable)
    if _nobody_runs(python, str(ROOT)):
        return python, str(ROOT)
    system = f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"
    folder.mkdir(mode=0o755)
    site = Path(sysconfig.get_paths()["purelib"])
    shutil.copytree(ROOT / "certkit", folder / "certkit", ignore=shutil.ignore_patterns("__pycache__"))
    for entry in site.iterdir():
        if entry.name.split(".")[0] in _POLICY_DEPENDENCIES:
            (shutil.copytree if entry.is_dir() else shutil.copy2)(entry, folder / entry.name)
    subprocess.run(["chmod", "-R", "a+rX", str(folder)], check=True)
    if os.path.exists(system) and _nobody_runs(system, str(folder)):
        return system, str(folder)
    message = f"the account nobody cannot run {python} or {system} with certkit (spawn runs the policy as nobody)"
    if in_ci():
        pytest.fail(f"{message}; set CERTKIT_TEST_SPAWN_PYTHON")
    pytest.skip(f"{message}; set CERTKIT_TEST_SPAWN_PYTHON")


def test_spawned_policy_service(tmp_path: Path) -> None:
    """The default form: master.cf.inbound's spawn service, run as nobody, with the command as generated.

    The policy runs as nobody, who may not enter the folders of the tests' own Python: then certkit and its
    few dependencies are copied to a folder nobody can read and run by the system's Python of the same version.
    """
    require_postfix()
    require_tool("swaks")
    import tempfile

    with tempfile.TemporaryDirectory(prefix="certkit-spawn-") as scratch:
        os.chmod(scratch, 0o755)
        python, path = _runtime_for_nobody(Path(scratch) / "runtime")
        _spawned_policy_service(tmp_path, python, path)


def _spawned_policy_service(tmp_path: Path, python: str, path: str) -> None:
    pf = PostfixInstance(OUR_LEAF.cert, OUR_LEAF.key, hostname="mx.fabrikam.test", domain="fabrikam.test")
    out = tmp_path / "out"
    _generate(_store(tmp_path), pf.etc, out, "--policy-command",
              f"/usr/bin/env PYTHONPATH={path} {python} -m certkit")
    _apply(pf, out, (out / "master.cf.inbound").read_text())
    checked = subprocess.run([require_tool("postconf"), "-c", str(pf.etc), "-n"], capture_output=True, text=True,
                             timeout=30, check=False)
    assert checked.returncode == 0 and not checked.stderr, checked.stderr  # e.g. no "unused parameter"
    assert "certkit-policy_time_limit = 3600s" in checked.stdout.splitlines()
    with pf:
        client = Inbound(tmp_path, pf)
        assert _queued(client.send("admin@contoso.test", CONTOSO_EDGE)), pf.log()
        reply = _refused(client.send("admin@contoso.test", NORTHWIND_EDGE))
        assert "certificate from an issuer contoso.test does not use" in reply, pf.log()
        assert not [line for line in pf.log().splitlines() if "warning" in line or "fatal" in line], pf.log()
