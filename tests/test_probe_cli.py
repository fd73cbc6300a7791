"""``certkit probe`` on the command line (in-process), against in-test servers and real Postfix."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from certkit.adapters.truststore import TrustStore
from certkit.checks.probe import ProbeOptions, probe_sync
from certkit.cli import main
from certkit.cli.probe import probe_cmd
from certkit.errors import UsageError
from tests.pki import make_intermediate, make_leaf, make_root
from tests.smtp_servers import Handler, Scripted, SmtpTestServer

Start = Callable[[Handler], SmtpTestServer]
ROOT = make_root("Fabrikam Root")
INTER = make_intermediate(ROOT, "Fabrikam Issuing CA")
SERVER = make_leaf(INTER, ["mx1.fabrikam.test", "fabrikam.test"])
CLIENT = make_leaf(INTER, ["edge.contoso.test"])


def _store(tmp_path: Path, *certs: object) -> str:
    ts = TrustStore(tmp_path / "trust")
    for c in certs:
        ts.add(c, label="fabrikam")  # type: ignore[arg-type]
    return str(tmp_path / "trust")


def test_probe_json_good_chain(smtp_server: Start, tmp_path: Path) -> None:
    srv = smtp_server(Scripted(identity=SERVER, chain=[INTER.cert]))
    store = _store(tmp_path, ROOT.cert)
    r = CliRunner().invoke(probe_cmd, [f"127.0.0.1:{srv.port}", "--store", store, "--managed-only",
                                       "--validator", "postfix", "--domain", "fabrikam.test", "--json",
                                       "--timeout", "3"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    [addr] = data["results"][0]["addresses"]
    assert addr["verdict"].startswith("TLS and their certificate OK; Domain Security not tested: no client cert")
    assert addr["domain_security_tested"] is False
    assert addr["domain_security_untested"] == [
        "no client certificate was presented (use --as NAME or --client-cert/--client-key)"]
    assert r.exit_code == 0
    assert addr["tls"]["chain"][0] == "CN=mx1.fabrikam.test"


def test_probe_text_rejected_client_cert(smtp_server: Start, tmp_path: Path) -> None:
    # Without a client certificate the probe sends MAIL FROM:<probe@localhost>: domain-secure there.
    srv = smtp_server(Scripted(identity=SERVER, chain=[INTER.cert], trusted=[INTER.cert], exchange=True,
                               domain_secure=["localhost"]))
    store = _store(tmp_path, ROOT.cert)
    r = CliRunner().invoke(probe_cmd, [f"127.0.0.1:{srv.port}", "--store", store, "--managed-only",
                                       "--validator", "postfix", "--timeout", "3", "-v"])
    assert r.exit_code == 1, r.output
    assert "would fail: we presented no client certificate" in r.output
    assert 'Exchange shows: 451 4.4.0 Primary target IP address responded with: ' \
           '"454 4.7.5 Certificate validation failure."' in r.output
    assert "C: STARTTLS" in r.output


def test_probe_client_cert_files(smtp_server: Start, tmp_path: Path) -> None:
    srv = smtp_server(Scripted(identity=SERVER, chain=[INTER.cert], trusted=[INTER.cert]))
    (tmp_path / "c.pem").write_bytes(CLIENT.pem + INTER.pem)
    (tmp_path / "c.key").write_bytes(CLIENT.key_pem)
    store = _store(tmp_path, ROOT.cert)
    r = CliRunner().invoke(probe_cmd, [f"127.0.0.1:{srv.port}", "--store", store, "--managed-only",
                                       "--validator", "postfix", "--timeout", "3",
                                       "--client-cert", str(tmp_path / "c.pem"), "--client-key",
                                       str(tmp_path / "c.key")])
    assert r.exit_code == 0, r.output


def test_probe_unreachable_exits_3(tmp_path: Path) -> None:
    r = CliRunner().invoke(probe_cmd, ["127.0.0.1:1", "--store", str(tmp_path / "t"), "--managed-only",
                                       "--timeout", "1"])
    assert r.exit_code == 3, r.output
    assert "net.refused" in r.output


def test_probe_without_target_is_usage(tmp_path: Path) -> None:
    r = CliRunner().invoke(main, ["probe", "--store", str(tmp_path / "t")])
    assert r.exit_code == 2, r.output
    assert "No target was given" in r.output


@pytest.mark.parametrize("args", [["--timeout", "-1"], ["--timeout", "0"],
                                  ["--concurrency", "0"], ["--concurrency", "-3"]])
def test_probe_bad_numbers_are_usage(tmp_path: Path, args: list[str]) -> None:
    r = CliRunner().invoke(main, ["probe", "127.0.0.1:1", "--store", str(tmp_path / "t"), *args])
    assert r.exit_code == 2, r.output
    assert f"Invalid value for '{args[0]}'" in r.output  # refused by the option, before anything runs
    assert "net.refused" not in r.output


@pytest.mark.parametrize(("kwargs"), [{"timeout": -1.0}, {"timeout": 0.0}, {"timeout": float("nan")},
                                      {"concurrency": 0}])
def test_probe_library_refuses_bad_numbers(kwargs: dict[str, float]) -> None:
    with pytest.raises(UsageError):
        probe_sync(["127.0.0.1:1"], options=ProbeOptions(**kwargs))  # type: ignore[arg-type]


@pytest.mark.parametrize("target", ["[1.2.3]:25", "[1.2.3.4.5]:25", "[mx.fabrikam.test]:25", "[]:25", "[::g]:25"])
def test_bracketed_targets_must_be_ip_addresses(tmp_path: Path, target: str) -> None:
    r = CliRunner().invoke(main, ["probe", target, "--store", str(tmp_path / "t"), "--timeout", "1"])
    assert r.exit_code == 2, r.output
    assert "is not an IP address" in r.output


def test_human_output_escapes_the_server_s_control_characters(smtp_server: Start, tmp_path: Path) -> None:
    """Banner, replies and certificate names are the server's text: no ESC sequence or CR reaches the terminal."""
    evil = make_leaf(INTER, ["mx1.fabrikam.test"], cn="mx1\x1b[31m.fabrikam.test\r")
    srv = smtp_server(Scripted(identity=evil, chain=[INTER.cert], hostname="mx\x1b[31m.test\rOK",
                               rcpt_reply="550 5.1.1 \x1b[2J\x1b[Hno such user\r\x9b"))
    r = CliRunner().invoke(probe_cmd, [f"127.0.0.1:{srv.port}", "--store", _store(tmp_path, ROOT.cert),
                                       "--managed-only", "--validator", "postfix", "--domain", "fabrikam.test",
                                       "--timeout", "3", "-v"])
    assert r.exit_code == 0, r.output
    for raw in ("\x1b", "\r", "\x9b"):
        assert raw not in r.stdout
    assert "220 mx\\x1b[31m.test\\rOK Microsoft ESMTP MAIL Service ready at " in r.stdout  # the banner
    assert "550 5.1.1 \\x1b[2J\\x1b[Hno such user\\r\\x9b" in r.stdout  # a reply, in a finding
    assert "CN=mx1\\x1b[31m.fabrikam.test\\r" in r.stdout             # a certificate subject


def test_ctrl_c_interrupts_promptly_with_exit_130(smtp_server: Start, tmp_path: Path) -> None:
    """SIGINT while sessions wait on a silent server: no waiting for --timeout, one line, exit 130."""
    connected = threading.Event()

    def silent(sock: socket.socket) -> None:
        connected.set()
        time.sleep(15)

    servers = [smtp_server(silent) for _ in range(3)]
    proc = subprocess.Popen([sys.executable, "-m", "certkit", "probe", *(f"127.0.0.1:{s.port}" for s in servers),
                             "--store", _store(tmp_path), "--managed-only", "--timeout", "10"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert connected.wait(10), "the probe never connected"
        time.sleep(0.5)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
        assert time.monotonic() - t0 < 3  # a guard against waiting for the 10 s step timeout, not a benchmark
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    assert err == "certkit: interrupted\n"
    assert out == ""


@pytest.mark.parametrize("target", [":25", "a b", "a b:25", "bad_host.test:25", "mx..fabrikam.test",
                                    "mx-.fabrikam.test:25", "1.2.3:25", "1.2.3", "2001:db8::zz", "::1::2"])
def test_malformed_targets_are_usage_errors_before_any_network_step(tmp_path: Path, target: str) -> None:
    # No DNS server is given: a target that got as far as resolving would be exit 3, not 2.
    r = CliRunner().invoke(main, ["probe", target, "--store", str(tmp_path / "t"), "--timeout", "1",
                                  "--nameserver", "127.0.0.1:1"])
    assert r.exit_code == 2, r.output
    [line] = r.output.strip().splitlines()
    assert line.startswith("certkit: error: ") and repr(target) in line


@pytest.mark.parametrize("option", ["--domain", "--name"])
def test_malformed_domain_and_name_are_usage_errors(tmp_path: Path, option: str) -> None:
    r = CliRunner().invoke(main, ["probe", "127.0.0.1:1", "--store", str(tmp_path / "t"), "--timeout", "1",
                                  option, "bad dom"])
    assert r.exit_code == 2, r.output
    assert option in r.output and "space" in r.output


def test_well_formed_targets_still_parse() -> None:
    from certkit.checks.probe import parse_target

    assert parse_target("Fabrikam.TEST.").host == "fabrikam.test"
    assert parse_target("MX1.fabrikam.test:2525").port == 2525
    assert parse_target("192.0.2.1").host == "192.0.2.1"
    assert parse_target("2001:db8::1").host == "2001:db8::1"
    assert parse_target("[2001:db8::1]:26").port == 26
    assert parse_target("localhost:25").host == "localhost"


@pytest.mark.parametrize("domain", [None, "fabrikam.test"])
def test_verdict_says_whether_domain_security_was_tested(smtp_server: Start, tmp_path: Path,
                                                         domain: str | None) -> None:
    """An address target without --domain checks no name: TLS is fine, but Domain Security was not tested."""
    from certkit.schemas import load

    jsonschema = pytest.importorskip("jsonschema")
    srv = smtp_server(Scripted(identity=SERVER, chain=[INTER.cert], trusted=[INTER.cert]))
    (tmp_path / "c.pem").write_bytes(CLIENT.pem + INTER.pem)
    (tmp_path / "c.key").write_bytes(CLIENT.key_pem)
    args = [f"127.0.0.1:{srv.port}", "--store", _store(tmp_path, ROOT.cert), "--managed-only",
            "--validator", "postfix", "--timeout", "3", "--client-cert", str(tmp_path / "c.pem"),
            "--client-key", str(tmp_path / "c.key"), *(["--domain", domain] if domain else [])]
    r = CliRunner().invoke(probe_cmd, args)
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(probe_cmd, [*args, "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    jsonschema.validate(data, load())
    [addr] = data["results"][0]["addresses"]
    if domain is None:
        assert addr["verdict"] == ("TLS and their certificate OK; Domain Security not tested: no partner domain to "
                                   "check their certificate's name against (use --domain)")
        assert addr["domain_security_tested"] is False
        assert addr["domain_security_untested"] == [
            "no partner domain to check their certificate's name against (use --domain)"]
    else:
        assert addr["verdict"] == "would deliver with Domain Security"
        assert addr["domain_security_tested"] is True and addr["domain_security_untested"] == []


@pytest.mark.parametrize(("option", "value"), [
    ("--mail-from", "bad addr"), ("--mail-from", "probe@contoso.test\r\nRCPT TO:<x@y>"), ("--mail-from", "probe"),
    ("--mail-from", "@contoso.test"), ("--mail-from", "probe@"), ("--mail-from", "probe@bad dom"),
    ("--mail-from", "a<b@contoso.test"), ("--rcpt", "postmaster@fabrikam..test"), ("--rcpt", ""),
    ("--helo", "bad helo"), ("--helo", "192.0.2.1"), ("--helo", "edge_1.contoso.test"), ("--helo", "[1.2.3]"),
])
def test_malformed_addresses_and_helo_are_usage_errors(tmp_path: Path, option: str, value: str) -> None:
    # Port 1 is closed: an address that got as far as connecting would be exit 3, not 2.
    r = CliRunner().invoke(main, ["probe", "127.0.0.1:1", "--store", str(tmp_path / "t"), "--timeout", "1",
                                  "--domain", "fabrikam.test", option, value])
    assert r.exit_code == 2, r.output
    [line] = r.output.strip().splitlines()
    assert line.startswith("certkit: error: ") and option in line


@pytest.mark.parametrize(("option", "value", "sent"), [
    ("--mail-from", "<probe@Contoso.TEST>", "MAIL FROM:<probe@contoso.test>"),
    ("--mail-from", "", "MAIL FROM:<>"),
    ("--rcpt", "postmaster", "RCPT TO:<postmaster>"),
    ("--rcpt", "admin@[127.0.0.1]", "RCPT TO:<admin@[127.0.0.1]>"),
    ("--helo", "[127.0.0.1]", "EHLO [127.0.0.1]"),
    ("--helo", "[IPv6:::1]", "EHLO [IPv6:::1]"),
    ("--helo", "Edge.Contoso.TEST", "EHLO edge.contoso.test"),
])
def test_well_formed_addresses_and_helo_are_sent(smtp_server: Start, tmp_path: Path, option: str, value: str,
                                                 sent: str) -> None:
    srv = smtp_server(Scripted(identity=SERVER, chain=[INTER.cert]))
    store = _store(tmp_path, ROOT.cert)
    r = CliRunner().invoke(main, ["probe", f"127.0.0.1:{srv.port}", "--store", store, "--managed-only",
                                  "--validator", "postfix", "--timeout", "3", "--domain", "fabrikam.test",
                                  "--json", option, value])
    assert r.exit_code == 0, r.output
    [addr] = json.loads(r.output)["results"][0]["addresses"]
    assert any(t["text"] == sent for t in addr["transcript"]), addr["transcript"]
