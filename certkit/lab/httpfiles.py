"""A small HTTP file server on loopback: where the lab (and the tests and benchmarks) publish CRLs.

:class:`HttpFiles` serves a mapping of URL paths to contents from a daemon thread: bytes, a file
(read at each request, so a republished CRL is served at once) or a function that answers the
request itself (a redirect, a slow or broken answer, for tests of the fetcher). Anything else is a
404. It counts the GETs per path: the probe fetches each CRL once per run.

With ``tls`` (a server :class:`ssl.SSLContext`) it serves HTTPS instead: an MTA-STS policy host for the
tests and the lab. The handshake runs on the request's thread, so a client that never sends its hello
holds up only itself.
"""

from __future__ import annotations

import http.server
import socketserver
import ssl
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

__all__ = ["Content", "HttpFiles", "Responder"]

#: A function that answers one GET itself, given the request handler.
Responder = Callable[[http.server.BaseHTTPRequestHandler], None]
#: What a path serves: bytes, a file read at each request, or a :data:`Responder`.
Content = bytes | Path | Responder


class _Server(http.server.ThreadingHTTPServer):
    def handle_error(self, request: socketserver._RequestType, client_address: object) -> None:
        """A client that broke off (a refused certificate, a timeout) is the test's subject, not an error here."""


class HttpFiles:
    """An HTTP server on ``host:port`` (default 127.0.0.1 and a free port) serving :attr:`files`.

    Keys are URL paths with their leading slash (``/contoso.crl``); :attr:`files` may be changed
    while it runs. Use it as a context manager, or call :meth:`close`.
    """

    def __init__(self, files: Mapping[str, Content] | None = None, *, host: str = "127.0.0.1", port: int = 0,
                 content_type: str = "application/pkix-crl", tls: ssl.SSLContext | None = None) -> None:
        self.files: dict[str, Content] = dict(files or {})
        #: GETs per path, found or not
        self.hits: dict[str, int] = {}
        self.content_type = content_type
        self.tls = tls
        self.server = _Server((host, port), self._handler())
        self.server.daemon_threads = True
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True, do_handshake_on_connect=False)
        self.host = host
        self.port: int = int(self.server.server_address[1])
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="certkit-http-files", daemon=True)
        self._thread.start()

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.hits[self.path] = outer.hits.get(self.path, 0) + 1
                outer._answer(self)

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler

    def _answer(self, request: http.server.BaseHTTPRequestHandler) -> None:
        content = self.files.get(request.path)
        if callable(content):
            content(request)
            return
        body = content.read_bytes() if isinstance(content, Path) and content.is_file() else content
        if not isinstance(body, bytes):
            request.send_error(404)
            return
        request.send_response(200)
        request.send_header("Content-Type", self.content_type)
        request.send_header("Content-Length", str(len(body)))
        request.end_headers()
        request.wfile.write(body)

    def url(self, path: str) -> str:
        """The ``http://HOST:PORT/path`` URL of ``path`` (``https://`` with ``tls``)."""
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://{self.host}:{self.port}/{path.lstrip('/')}"

    def close(self) -> None:
        """Stop serving and close the socket."""
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)

    def __enter__(self) -> HttpFiles:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
