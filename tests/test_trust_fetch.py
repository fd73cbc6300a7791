"""``certkit trust fetch``: take the chain a live STARTTLS endpoint presents, add only what was vouched for."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from certkit.cli import main
from certkit.core.formats import sha256_fingerprint
from tests import pki
from tests.smtp_servers import Scripted, SmtpTestServer


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


@pytest.fixture(scope="module")
def chain() -> dict[str, pki.Issued]:
    root = pki.make_root("Fabrikam Root", org="Fabrikam")
    inter = pki.make_intermediate(root, "Fabrikam Issuing CA", org="Fabrikam")
    return {"root": root, "inter": inter, "leaf": pki.make_leaf(inter, ["mx.fabrikam.com"])}


@pytest.fixture
def server(chain: dict[str, pki.Issued]) -> Iterator[SmtpTestServer]:
    # The server sends leaf, intermediate and root, as many Edges do.
    handler = Scripted(identity=chain["leaf"], chain=[chain["inter"].cert, chain["root"].cert],
                       hostname="mx.fabrikam.com")
    with SmtpTestServer(handler) as srv:
        yield srv


def anchors(store: Path) -> list[dict[str, object]]:
    result = run("trust", "list", "--json", "--store", str(store))
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    return data["anchors"] if isinstance(data, dict) else data  # type: ignore[no-any-return]


def test_fetch_adds_the_top_certificate_when_the_fingerprint_matches(server: SmtpTestServer, tmp_path: Path,
                                                                     chain: dict[str, pki.Issued]) -> None:
    fp = sha256_fingerprint(chain["root"].cert)
    colons = ":".join(fp[i:i + 2] for i in range(0, 64, 2)).lower()
    result = run("trust", "fetch", f"127.0.0.1:{server.port}", "--expect-sha256", colons, "--label", "fabrikam",
                 "--partner", "fabrikam.com", "--store", str(tmp_path / "trust"))
    assert result.exit_code == 0, result.output
    assert "presented 3 certificates" in result.stdout and fp in result.stdout
    (entry,) = anchors(tmp_path / "trust")
    text = json.dumps(entry)
    assert fp.lower() in text.lower() and f"smtp://127.0.0.1:{server.port}" in text and "fabrikam.com" in text


def test_fetch_refuses_a_mismatched_fingerprint_and_adds_nothing(server: SmtpTestServer, tmp_path: Path) -> None:
    result = run("trust", "fetch", f"127.0.0.1:{server.port}", "--expect-sha256", "00" * 32,
                 "--store", str(tmp_path / "trust"))
    assert result.exit_code == 1
    assert "not the expected" in result.stderr and "nothing was added" in result.stderr
    assert not (tmp_path / "trust" / "index.json").exists() or anchors(tmp_path / "trust") == []


def test_fetch_without_a_fingerprint_or_a_terminal_adds_nothing(server: SmtpTestServer, tmp_path: Path) -> None:
    result = run("trust", "fetch", f"127.0.0.1:{server.port}", "--store", str(tmp_path / "trust"))
    assert result.exit_code == 2
    assert "--expect-sha256" in result.stderr


def test_fetch_pin_offers_the_leaf(server: SmtpTestServer, tmp_path: Path, chain: dict[str, pki.Issued]) -> None:
    fp = sha256_fingerprint(chain["leaf"].cert)
    result = run("trust", "fetch", f"127.0.0.1:{server.port}", "--pin", "--expect-sha256", fp,
                 "--store", str(tmp_path / "trust"))
    assert result.exit_code == 0, result.output
    assert "its own certificate" in result.stdout


def test_fetch_refuses_a_lone_self_signed_edge_certificate_without_pin(tmp_path: Path) -> None:
    edge = pki.make_self_signed(["edge.contoso.com"])
    with SmtpTestServer(Scripted(identity=edge, hostname="edge.contoso.com")) as srv:
        result = run("trust", "fetch", f"127.0.0.1:{srv.port}", "--expect-sha256", sha256_fingerprint(edge.cert),
                     "--store", str(tmp_path / "trust"))
        assert result.exit_code == 2
        assert "--pin" in result.stderr
        pinned = run("trust", "fetch", f"127.0.0.1:{srv.port}", "--pin", "--expect-sha256",
                     sha256_fingerprint(edge.cert), "--store", str(tmp_path / "trust"))
        assert pinned.exit_code == 0, pinned.output


def test_fetch_from_an_endpoint_without_starttls_is_a_clear_failure(tmp_path: Path,
                                                                    chain: dict[str, pki.Issued]) -> None:
    with SmtpTestServer(Scripted(identity=chain["leaf"], offer_starttls=False)) as srv:
        result = run("trust", "fetch", f"127.0.0.1:{srv.port}", "--expect-sha256", "00" * 32,
                     "--store", str(tmp_path / "trust"), "--timeout", "3")
    assert result.exit_code == 1
    assert "No certificate was obtained" in result.stderr
    assert result.stderr.count("\n") == 1


@pytest.mark.parametrize("target", ["", ":25", "mx.fabrikam.com:abc", "mx.fabrikam.com:70000"])
def test_fetch_bad_target_is_misuse(target: str, tmp_path: Path) -> None:
    result = run("trust", "fetch", target, "--store", str(tmp_path / "trust"))
    assert result.exit_code == 2


def test_fetch_from_nothing_listening_is_exit_3(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    result = run("trust", "fetch", f"127.0.0.1:{port}", "--expect-sha256", "00" * 32,
                 "--store", str(tmp_path / "trust"), "--timeout", "2")
    assert result.exit_code == 3 and "No certificate was obtained" in result.stderr


def test_fetch_refuses_a_short_ipv4_address_like_the_probe(tmp_path: Path) -> None:
    # One target parser for every command: "1.2.3" is not an address (the C resolver would read 1.2.0.3).
    result = run("trust", "fetch", "1.2.3", "--expect-sha256", "00" * 32, "--store", str(tmp_path / "trust"))
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "'1.2.3'" in result.stderr
