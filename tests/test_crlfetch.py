"""CRL downloads from a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import http.server
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives import serialization

from certkit.adapters.crlfetch import CrlCache, fetch_crl
from certkit.errors import UsageError
from certkit.lab.httpfiles import HttpFiles
from tests.pki import make_crl, make_root

ROOT = make_root()
CRL = make_crl(ROOT, revoked=[1234])
DER = CRL.public_bytes(serialization.Encoding.DER)
PEM = CRL.public_bytes(serialization.Encoding.PEM)


def _moved(request: http.server.BaseHTTPRequestHandler) -> None:
    request.send_response(302)
    request.send_header("Location", "http://elsewhere.test/root.crl")
    request.end_headers()


def _slow(request: http.server.BaseHTTPRequestHandler) -> None:
    request.send_response(200)
    request.end_headers()
    for _ in range(50):
        request.wfile.write(b"x")
        request.wfile.flush()
        time.sleep(0.1)


@pytest.fixture(scope="module")
def served() -> Iterator[HttpFiles]:
    with HttpFiles({"/root.crl": DER, "/root.pem": PEM, "/big.crl": b"x" * 5000,
                    "/junk.crl": b"<html>not a crl</html>", "/moved.crl": _moved, "/slow.crl": _slow}) as srv:
        yield srv


@pytest.fixture(scope="module")
def http_base(served: HttpFiles) -> str:
    return served.url("").rstrip("/")


def test_der_crl_is_fetched_and_parsed(http_base: str) -> None:
    r = fetch_crl(f"{http_base}/root.crl", timeout=2)
    assert r.ok and r.error is None and r.status == 200
    assert r.crl is not None and r.crl.get_revoked_certificate_by_serial_number(1234) is not None


def test_pem_crl_is_accepted(http_base: str) -> None:
    assert fetch_crl(f"{http_base}/root.pem", timeout=2).ok


def test_http_error_is_data(http_base: str) -> None:
    r = fetch_crl(f"{http_base}/missing.crl", timeout=2)
    assert not r.ok and r.status == 404 and r.error is not None and "404" in r.error


def test_redirects_are_not_followed(http_base: str) -> None:
    r = fetch_crl(f"{http_base}/moved.crl", timeout=2)
    assert not r.ok and r.error is not None and "not followed" in r.error


def test_size_limit(http_base: str) -> None:
    r = fetch_crl(f"{http_base}/big.crl", timeout=2, max_bytes=1000)
    assert not r.ok and r.error is not None and "limit" in r.error


def test_not_a_crl(http_base: str) -> None:
    r = fetch_crl(f"{http_base}/junk.crl", timeout=2)
    assert not r.ok and r.error is not None and "not a CRL" in r.error


def test_slow_download_times_out(http_base: str) -> None:
    t0 = time.monotonic()
    r = fetch_crl(f"{http_base}/slow.crl", timeout=0.5)
    assert time.monotonic() - t0 < 2
    assert not r.ok and r.error is not None


def test_unreachable_is_data() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = fetch_crl(f"http://127.0.0.1:{port}/root.crl", timeout=1)
    assert not r.ok and r.error is not None and "refused" in r.error


@pytest.mark.parametrize("url", ["https://127.0.0.1/x.crl", "ldap://dc.example/CN=x", "file:///etc/passwd", "http://"])
def test_only_http_urls(url: str) -> None:
    r = fetch_crl(url, timeout=1)
    assert not r.ok and r.error is not None


def test_cache_fetches_once(http_base: str, served: HttpFiles) -> None:
    cache = CrlCache(timeout=2)
    before = served.hits.get("/root.pem", 0)
    assert cache.get(f"{http_base}/root.pem").ok
    assert cache.get(f"{http_base}/root.pem").ok
    assert served.hits["/root.pem"] == before + 1


def _trickle_server(payload: bytes, delay: float) -> tuple[socket.socket, threading.Event]:
    """A loopback server that answers every connection with ``payload``, one byte every ``delay`` seconds."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.1)
    stop = threading.Event()

    def serve_one(conn: socket.socket) -> None:
        with conn:
            try:
                conn.recv(4096)
                for byte in payload:
                    if stop.is_set():
                        return
                    conn.sendall(bytes([byte]))
                    time.sleep(delay)
            except OSError:
                return

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=serve_one, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    return listener, stop


@pytest.mark.parametrize("where", ["headers", "body"])
def test_trickling_server_is_bounded_by_the_timeout(where: str) -> None:
    """Each byte arrives well within any per-read timeout; only an overall deadline stops it."""
    if where == "headers":
        payload = b"HTTP/1.1 200 OK\r\nContent-Type: application/pkix-crl\r\nX-Pad: " + b"p" * 400 + b"\r\n"
    else:
        payload = b"HTTP/1.1 200 OK\r\nContent-Length: 400\r\n\r\n" + b"x" * 400
    listener, stop = _trickle_server(payload, 0.05)
    try:
        t0 = time.monotonic()
        r = fetch_crl(f"http://127.0.0.1:{listener.getsockname()[1]}/trickle.crl", timeout=1)
        assert time.monotonic() - t0 < 3  # the timeout plus slack, not the ~20 s the trickle takes
        assert not r.ok and r.error is not None and "within 1 s" in r.error
    finally:
        stop.set()
        listener.close()


@pytest.mark.parametrize("timeout", [0, -1, -0.5, float("nan")])
def test_non_positive_timeout_is_a_usage_error(timeout: float) -> None:
    with pytest.raises(UsageError):
        fetch_crl("http://127.0.0.1:1/x.crl", timeout=timeout)
    with pytest.raises(UsageError):
        CrlCache(timeout=timeout)


def test_chunked_response_is_read() -> None:
    body = DER
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + f"{len(body):x}\r\n".encode() + body + \
        b"\r\n0\r\n\r\n"
    listener, stop = _trickle_server(chunked, 0)
    try:
        r = fetch_crl(f"http://127.0.0.1:{listener.getsockname()[1]}/c.crl", timeout=5)
        assert r.ok, r.error
    finally:
        stop.set()
        listener.close()
