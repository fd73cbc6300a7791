"""``certkit tlsrpt serve``: the HTTPS report endpoint against hostile posts over real sockets on loopback.

The server runs on its own event loop in a thread; clients are plain sockets wrapped in TLS, so every test
sees the bytes a sender on the internet would. Well-behaved senders come from 127.0.0.2 (Linux routes all of
127/8 to the loopback), attackers from 127.0.0.1, so the per-address limits can be told apart.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from certkit.adapters.tlsrpt_server import ReportServer, ServeOptions, tls_context
from tests.pki import make_leaf, make_root

REPORT = (Path(__file__).resolve().parent / "tlsrpt_corpus" / "reports" / "rfc8460-example.json").read_bytes()
GOOD_SOURCE = "127.0.0.2"
pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="needs 127.0.0.2 on the loopback (Linux)")


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("tls")
    root = make_root()
    leaf = make_leaf(root, ["reports.contoso.com"])
    cert, key = folder / "reports.pem", folder / "reports.key"
    cert.write_bytes(leaf.cert.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(leaf.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert, key


@contextmanager
def serving(tls_files: tuple[Path, Path], out: Path, **limits: object) -> Iterator[ReportServer]:
    options = ServeOptions(out, **{"header_timeout": 1.0, "body_timeout": 1.0, **limits})  # type: ignore[arg-type]
    server = ReportServer(options, tls_context(str(tls_files[0]), str(tls_files[1])))
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(server.start())
        ready.set()
        loop.run_forever()
        loop.run_until_complete(server.stop())
        loop.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        yield server
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def _client_ctx() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def connect(port: int, source: str = GOOD_SOURCE, timeout: float = 5.0) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source, 0))
    return _client_ctx().wrap_socket(raw, server_hostname="reports.contoso.com")


def request(port: int, body: bytes, *, media: str = "application/tlsrpt+json", method: str = "POST",
            path: str = "/tlsrpt", extra: str = "", source: str = GOOD_SOURCE) -> tuple[int, bytes]:
    """One request; the status code and the whole answer."""
    with connect(port, source) as s:
        head = (f"{method} {path} HTTP/1.1\r\nHost: reports.contoso.com\r\nContent-Type: {media}\r\n"
                f"Content-Length: {len(body)}\r\n{extra}\r\n")
        s.sendall(head.encode() + body)
        return _answer(s)


def _answer(s: ssl.SSLSocket) -> tuple[int, bytes]:
    data = b""
    try:
        while chunk := s.recv(65536):
            data += chunk
    except (ConnectionError, ssl.SSLError, TimeoutError):
        pass
    return (int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else 0), data


def stored(out: Path) -> list[Path]:
    return sorted(p for p in out.iterdir() if not p.name.startswith("."))


# --- well-behaved senders -----------------------------------------------------------------------------
def test_a_report_is_stored_under_a_name_the_server_chooses_and_a_repost_is_not_stored_twice(
        tls_files: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    with serving(tls_files, out) as server:
        status, answer = request(server.port, REPORT, extra="Content-Disposition: attachment; filename=../../x\r\n")
        assert status == 201, answer
        [file] = stored(out)
        assert file.read_bytes() == REPORT
        assert file.name.endswith(".json") and "x" not in file.name.split("-", 1)[1].removesuffix(".json")
        assert request(server.port, REPORT)[0] == 200
        assert stored(out) == [file]
        zipped = json.loads(REPORT)
        zipped["report-id"] = "another"
        status, _ = request(server.port, gzip.compress(json.dumps(zipped).encode()), media="application/tlsrpt+gzip")
        assert status == 201 and len(stored(out)) == 2
    assert not (tmp_path / "x").exists()


def test_the_cli_serves_over_tls_and_stores_a_report(tls_files: tuple[Path, Path], tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    proc = subprocess.Popen([sys.executable, "-m", "certkit", "tlsrpt", "serve", "--listen", f"127.0.0.1:{port}",
                             "--cert", str(tls_files[0]), "--key", str(tls_files[1]), "--out", str(tmp_path / "in")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                status, _ = request(port, REPORT)
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None, proc.stderr and proc.stderr.read()
                time.sleep(0.1)
        assert status == 201
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    assert " 201 stored -> " in out and "Fabrikam Mail" in out
    assert len(stored(tmp_path / "in")) == 1


# --- what is refused --------------------------------------------------------------------------------------
@pytest.mark.parametrize(("kwargs", "status"), [
    ({"media": "application/json"}, 415),
    ({"media": "text/html"}, 415),
    ({"media": "application/tlsrpt+json", "extra": "Content-Encoding: br\r\n"}, 415),
    ({"method": "GET"}, 405),
    ({"method": "PUT"}, 405),
    ({"path": "/../../etc/passwd"}, 404),
    ({"path": "/tlsrpt/../../../tmp/x.json"}, 404),
    ({"path": "http://evil/tlsrpt"}, 400),
])
def test_wrong_methods_paths_and_media_types_are_refused(tls_files: tuple[Path, Path], tmp_path: Path,
                                                         kwargs: dict[str, str], status: int) -> None:
    with serving(tls_files, tmp_path / "out") as server:
        got, answer = request(server.port, REPORT, **kwargs)
        assert got == status, answer
        assert b"Connection: close" in answer
    assert stored(tmp_path / "out") == []


def test_garbage_is_400_with_the_reason(tls_files: tuple[Path, Path], tmp_path: Path) -> None:
    with serving(tls_files, tmp_path / "out") as server:
        status, answer = request(server.port, b'{"organization-name": "x", "policies": 7}')
        assert status == 400 and b"policies is not a list" in answer
        assert request(server.port, b"\xff\xfe")[0] == 400
        assert request(server.port, b"[" * 100_000)[0] == 400
        assert request(server.port, b"\x1f\x8b garbage", media="application/tlsrpt+gzip")[0] == 400
    assert stored(tmp_path / "out") == []


def test_an_oversized_body_is_refused_from_its_content_length_before_it_is_sent(tls_files: tuple[Path, Path],
                                                                               tmp_path: Path) -> None:
    with serving(tls_files, tmp_path / "out", max_body=4096) as server, connect(server.port) as s:
        s.sendall(b"POST / HTTP/1.1\r\nContent-Type: application/tlsrpt+json\r\nContent-Length: 999999999\r\n\r\n")
        status, answer = _answer(s)
        assert status == 413, answer


def test_a_chunked_body_over_the_cap_is_refused_while_reading(tls_files: tuple[Path, Path], tmp_path: Path) -> None:
    with serving(tls_files, tmp_path / "out", max_body=4096) as server, connect(server.port) as s:
        s.sendall(b"POST / HTTP/1.1\r\nContent-Type: application/tlsrpt+json\r\nTransfer-Encoding: chunked\r\n\r\n")
        try:
            for _ in range(100):
                s.sendall(b"400\r\n" + b"x" * 1024 + b"\r\n")
        except (ConnectionError, ssl.SSLError):
            pass  # the server stopped reading at the cap
        assert _answer(s)[0] in (413, 0)
    with serving(tls_files, tmp_path / "out", max_body=4096) as server, connect(server.port) as s:
        s.sendall(b"POST / HTTP/1.1\r\nContent-Type: application/tlsrpt+json\r\nTransfer-Encoding: chunked\r\n\r\n"
                  + b"1000\r\n" + b"x" * 4096 + b"\r\n1\r\nx\r\n0\r\n\r\n")
        assert _answer(s)[0] == 413


def test_a_chunked_report_is_accepted_and_smuggling_shapes_are_not(tls_files: tuple[Path, Path],
                                                                   tmp_path: Path) -> None:
    with serving(tls_files, tmp_path / "out") as server:
        with connect(server.port) as s:
            s.sendall(b"POST /tlsrpt HTTP/1.1\r\nContent-Type: application/tlsrpt+json\r\n"
                      b"Transfer-Encoding: chunked\r\n\r\n" + f"{len(REPORT):x}\r\n".encode() + REPORT
                      + b"\r\n0\r\n\r\n")
            assert _answer(s)[0] == 201
        status, _ = request(server.port, REPORT, extra="Transfer-Encoding: chunked\r\n")
        assert status == 400
        status, _ = request(server.port, REPORT, extra="Content-Length: 5\r\n")
        assert status == 400


def test_a_gzip_bomb_is_413_and_nothing_is_stored(tls_files: tuple[Path, Path], tmp_path: Path) -> None:
    bomb = gzip.compress(b" " * (64 * 1024 * 1024), compresslevel=9)
    assert len(bomb) < 1024 * 1024
    with serving(tls_files, tmp_path / "out", max_decompressed=1024 * 1024) as server:
        status, answer = request(server.port, bomb, media="application/tlsrpt+gzip")
        assert status == 413, answer
        assert request(server.port, REPORT)[0] == 201  # and it still serves
    assert len(stored(tmp_path / "out")) == 1


def test_the_rate_limit_answers_429_with_retry_after(tls_files: tuple[Path, Path], tmp_path: Path) -> None:
    with serving(tls_files, tmp_path / "out", rate_per_minute=3) as server:
        answers = [request(server.port, REPORT, source="127.0.0.1") for _ in range(4)]
        assert [a[0] for a in answers] == [201, 200, 200, 429]
        assert b"Retry-After: " in answers[3][1]
        assert request(server.port, REPORT, source=GOOD_SOURCE)[0] == 200  # another address has its own bucket


def test_a_huge_request_head_is_431(tls_files: tuple[Path, Path], tmp_path: Path) -> None:
    with serving(tls_files, tmp_path / "out") as server:
        status, _ = request(server.port, REPORT, extra="X-Pad: " + "a" * 40_000 + "\r\n")
        assert status == 431


# --- slow and many ----------------------------------------------------------------------------------------
def test_slow_headers_and_slow_bodies_are_cut_at_the_deadline(tls_files: tuple[Path, Path], tmp_path: Path) -> None:
    with serving(tls_files, tmp_path / "out", header_timeout=1.0, body_timeout=1.0) as server:
        for head, drip in ((b"POST /tlsrpt HTTP/1.1\r\n", b"X-A: b\r\n"),
                           (b"POST / HTTP/1.1\r\nContent-Type: application/tlsrpt+json\r\nContent-Length: 100\r\n\r\n",
                            b"x")):
            with connect(server.port, "127.0.0.1") as s:
                started = time.monotonic()
                s.sendall(head)
                s.settimeout(0.1)
                for _ in range(60):  # a byte now and then does not keep the request alive
                    try:
                        s.sendall(drip)
                        if s.recv(1) == b"":
                            break
                    except TimeoutError:
                        continue
                    except (ConnectionError, ssl.SSLError, OSError):
                        break
                else:
                    pytest.fail("the server kept a slow request open for 6 s")
                assert time.monotonic() - started < 3


def test_a_plain_http_client_on_the_tls_port_is_dropped(tls_files: tuple[Path, Path], tmp_path: Path) -> None:
    with serving(tls_files, tmp_path / "out") as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw:
            raw.sendall(b"POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}")
            try:
                answer = raw.recv(100)
            except ConnectionError:
                answer = b""
            assert not answer.startswith(b"HTTP/")  # a TLS alert or nothing
        assert stored(tmp_path / "out") == []
        assert request(server.port, REPORT)[0] == 201


def test_a_flood_from_one_address_does_not_keep_out_a_well_behaved_sender(tls_files: tuple[Path, Path],
                                                                          tmp_path: Path) -> None:
    stop = threading.Event()
    held: list[socket.socket] = []

    def slowloris() -> None:
        while not stop.is_set():
            try:
                raw = socket.create_connection(("127.0.0.1", server.port), timeout=2, source_address=("127.0.0.1", 0))
                held.append(raw)
                raw.sendall(b"\x16\x03\x01")  # a TLS record header, and then nothing
            except OSError:
                time.sleep(0.01)

    def hammer() -> None:
        while not stop.is_set():
            with suppress(OSError):
                request(server.port, REPORT, source="127.0.0.1")

    with serving(tls_files, tmp_path / "out", header_timeout=5.0, rate_per_minute=5) as server:
        attackers = [threading.Thread(target=f, daemon=True) for f in (slowloris, slowloris, hammer, hammer)]
        for t in attackers:
            t.start()
        time.sleep(1.0)
        try:
            for i in range(3):
                doc = json.loads(REPORT)
                doc["report-id"] = f"good-{i}"
                status, answer = request(server.port, json.dumps(doc).encode())  # its timeout bounds the wait
                assert status == 201, answer
        finally:
            stop.set()
            for t in attackers:
                t.join(10)
            for raw in held:
                raw.close()
        assert server._per_ip.get("127.0.0.1", 0) <= server.options.max_connections_per_ip
