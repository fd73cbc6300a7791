"""Text from certificates, CSRs, CRLs, servers and file names reaches the terminal and the logs escaped, by
one function (certkit.core.text.printable), in every command that shows it."""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from cryptography.hazmat.primitives import serialization

from certkit.adapters.transport import ClientIdentity, deliver_message
from certkit.cli import main
from certkit.core import smtp
from certkit.core.smtp import wire
from certkit.core.text import printable
from certkit.lab.server import LabServer
from tests import pki
from tests.lab_fixtures import LabPki
from tests.smtp_servers import Handler, Scripted, SmtpTestServer

#: CR/LF forge a line, ESC recolours, BEL rings, U+202E reverses what follows, U+2028 breaks the line.
HOSTILE = "evil\r\nInjected: line\x1b[31m\x07\u202eRTL\u2028x"
SHOWN = "evil\\r\\nInjected: line\\x1b[31m\\x07\\u202eRTL\\u2028x"
RAW = ("\r", "\x1b", "\x07", "\u202e", "\u2028")
PASS = "correct horse battery staple"


def assert_escaped(text: str, *, shown: str = SHOWN) -> None:
    for raw in RAW:
        assert raw not in text, (raw, text)
    assert not any(line.startswith("Injected") for line in text.splitlines()), text
    assert shown in text, text


@pytest.fixture(scope="module")
def hostile() -> dict[str, pki.Issued]:
    root = pki.make_root(HOSTILE)
    return {"root": root, "leaf": pki.make_leaf(root, ["mx.fabrikam.com"], cn=HOSTILE),
            "self": pki.make_self_signed(["edge.fabrikam.com"], cn=HOSTILE)}


@pytest.fixture
def files(tmp_path: Path, hostile: dict[str, pki.Issued]) -> dict[str, Path]:
    out = {}
    for name, issued in hostile.items():
        out[name] = tmp_path / f"{name}.pem"
        out[name].write_bytes(issued.pem)
    csr = pki.make_csr(HOSTILE, ["mx.contoso.com"], key=hostile["leaf"].key)
    out["csr"] = tmp_path / "req.csr"
    out["csr"].write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    crl = pki.make_crl(hostile["root"], [5])
    out["crl"] = tmp_path / "root.crl"
    out["crl"].write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    return out


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def run(*args: str | Path, env: dict[str, str] | None = None) -> Result:
    return CliRunner(env=env).invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_printable_is_the_one_function() -> None:
    assert wire.printable is printable and smtp.printable is printable
    assert printable(HOSTILE) == SHOWN
    assert printable(printable(HOSTILE)) == SHOWN  # escaping twice changes nothing
    assert printable("\u2066a\u2069\u200f\x9b\x7f") == "\\u2066a\\u2069\\u200f\\x9b\\x7f"
    assert printable("caf\udce9.pem") == "caf\\xe9.pem"  # an undecodable byte in a file name
    assert printable(b"\xff\r") == "\\xff\\r"
    assert printable("é ü 中文 ok") == "é ü 中文 ok"  # printable non-ASCII stays as it is


@pytest.mark.parametrize("which", ["leaf", "csr", "crl"])
def test_inspect_escapes_certificates_requests_and_crls(files: dict[str, Path], which: str) -> None:
    r = run("inspect", files[which])
    assert r.exit_code in (0, 1) and "Traceback" not in r.output, r.output
    assert_escaped(r.stdout)
    out = run("inspect", files[which], "--json").stdout
    for raw in RAW:  # JSON encodes control characters (\u000d) and, ASCII only, the bidi ones
        assert raw not in out
    assert any(HOSTILE in s for s in _strings(json.loads(out)))  # and keeps the exact value for a program


def test_trust_add_list_show_verify_remove_escape_the_subject(files: dict[str, Path], tmp_path: Path) -> None:
    home = tmp_path / "home"
    added = run("trust", "add", files["root"], "--label", "evil", "--home", home)
    assert added.exit_code == 0, added.output
    assert_escaped(added.stdout)
    listed = run("trust", "list", "--home", home)
    assert listed.exit_code == 0
    assert_escaped(listed.stdout)
    shown = run("trust", "show", "evil", "--home", home)
    assert shown.exit_code == 0
    assert_escaped(shown.stdout)
    verified = run("trust", "verify", files["leaf"], "--managed-only", "--home", home)
    assert verified.exit_code in (0, 1), verified.output
    assert_escaped(verified.stdout)
    assert "\\r\\nInjected" in verified.stdout.splitlines()[0]  # the verdict line quotes the leaf, escaped
    pinned = run("trust", "add", files["self"], "--pin", "--home", home)
    assert pinned.exit_code == 0, pinned.output
    assert_escaped(pinned.stdout)
    removed = run("trust", "remove", "evil", "--home", home)
    assert removed.exit_code == 0
    assert_escaped(removed.stdout)


def test_error_lines_escape_names(files: dict[str, Path], tmp_path: Path) -> None:
    """A refused anchor's subject, quoted in the error line, cannot add a line to it."""
    r = run("trust", "add", files["leaf"], "--home", tmp_path / "home")  # not a CA, no --pin: refused
    assert r.exit_code == 2, r.output
    assert r.stderr.startswith("certkit: error: ") and r.stderr.count("\n") == 1, r.stderr
    for raw in RAW:
        assert raw not in r.stderr


def test_ca_sign_of_a_hostile_request(files: dict[str, Path], tmp_path: Path) -> None:
    """ca sign refuses a request whose name holds control characters (it is not a host name), in one escaped
    line, and records nothing."""
    env = {"CERTKIT_CA_PASSPHRASE": PASS}
    home = tmp_path / "ca"
    assert run("ca", "init", "--name", "Test CA", "--home", home, env=env).exit_code == 0
    r = run("ca", "sign", files["csr"], "--out", tmp_path / "out", "--home", home, env=env)
    assert "Traceback" not in r.output
    for raw in RAW:
        assert raw not in r.output
    assert r.exit_code == 2 and r.stderr.count("\n") == 1, r.output
    assert "No certificates." in run("ca", "list", "--home", home).output


def test_probe_verbose_escapes_a_hostile_subject(smtp_server: Callable[[Handler], SmtpTestServer],
                                                 tmp_path: Path) -> None:
    root = pki.make_root("Fabrikam Root")
    evil = pki.make_leaf(root, ["mx1.fabrikam.test"], cn=HOSTILE)
    srv = smtp_server(Scripted(identity=evil, hostname="mx.fabrikam.test"))
    home = tmp_path / "home"
    run("trust", "add", str(_write(tmp_path / "root.pem", root.pem)), "--home", home)
    r = run("probe", f"127.0.0.1:{srv.port}", "--home", home, "--managed-only", "--validator", "postfix",
            "--domain", "fabrikam.test", "--timeout", "3", "-v")
    assert r.exit_code in (0, 1), r.output
    assert_escaped(r.stdout)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.usefixtures("time_limit")
def test_lab_logs_escape_a_hostile_client_certificate(lab_server: Callable[..., LabServer], lab_pki: LabPki) -> None:
    """The session line names the client certificate's subject: escaped by the receiver, and the CLI's log
    formatter escapes each record as a whole again (a no-op on escaped text)."""
    from certkit.cli.lab import _EscapingFormatter

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(_EscapingFormatter("%(asctime)s %(message)s"))
    logger = logging.getLogger("certkit.lab")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        evil = pki.make_leaf(lab_pki.root, ["mx.contoso.test", "contoso.test"], cn=HOSTILE)
        server = lab_server()
        deliver_message("127.0.0.1", server.port, mail_from="alice@contoso.test", rcpt_to="bob@lab.test",
                        message=b"Subject: x\r\n\r\nhi\r\n", identity=ClientIdentity(evil.cert, evil.key),
                        timeout=5)
        deadline = time.monotonic() + 10
        while "client-cert=" not in stream.getvalue() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    log = stream.getvalue()
    assert "client-cert=" in log, log
    assert_escaped(log)
    assert all(" session " in line or "session" in line for line in log.splitlines()), log


def test_the_lab_s_log_formatter_keeps_every_record_one_line() -> None:
    from certkit.cli.lab import _EscapingFormatter

    record = logging.LogRecord("certkit.lab", logging.INFO, __file__, 1, "helo=%s", (HOSTILE,), None)
    line = _EscapingFormatter("%(asctime)s %(message)s").format(record)
    assert line.endswith("helo=" + SHOWN) and "\n" not in line
