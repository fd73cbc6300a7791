"""Bytes between Postfix and the policy engine (:mod:`certkit.core.postfix_policy`): a pipe or a TCP listener.

* :func:`serve_stream` -- one connection on two file descriptors, as spawn(8) gives it (stdin/stdout);
* :class:`PolicyServer` -- a TCP listener (``check_policy_service inet:HOST:PORT``), one thread per smtpd
  connection, for a policy service run as a daemon rather than by spawn.
"""

from __future__ import annotations

import os
import socket
import socketserver
import threading
from collections.abc import Callable

from certkit.core.postfix_policy import PolicyConnection

__all__ = ["PolicyServer", "serve_stream"]

#: An smtpd that keeps a policy connection idle this long is gone (Postfix's own idle limit is 300 s).
IDLE_TIMEOUT = 330.0


def serve_stream(conn: PolicyConnection, fd_in: int, fd_out: int) -> None:
    """Answer requests read from ``fd_in`` on ``fd_out`` until end of input or until ``conn`` closes."""
    while not conn.closed:
        data = os.read(fd_in, 65536)
        if not data:
            return
        out = conn.receive(data)
        while out:
            out = out[os.write(fd_out, out):]


class PolicyServer:
    """A threaded TCP policy service on ``host:port`` (port 0: any free port, see :attr:`port`).

    ``make_connection`` returns a fresh :class:`PolicyConnection` for each client; :meth:`serve_forever`
    blocks, :meth:`start` runs it in a daemon thread, :meth:`close` stops it.
    """

    def __init__(self, host: str, port: int, make_connection: Callable[[], PolicyConnection]) -> None:
        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                sock: socket.socket = self.request
                sock.settimeout(IDLE_TIMEOUT)
                conn = make_connection()
                try:
                    while not conn.closed:
                        data = sock.recv(65536)
                        if not data:
                            return
                        sock.sendall(conn.receive(data))
                except OSError:
                    return  # timeout or reset: smtpd reconnects when it needs us again

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self._server = Server((host, port), Handler)
        self.host = host
        self.port = int(self._server.server_address[1])
        self._thread: threading.Thread | None = None

    def serve_forever(self) -> None:
        """Answer connections until :meth:`close`."""
        self._server.serve_forever(poll_interval=0.2)

    def start(self) -> PolicyServer:
        """Serve from a daemon thread; returns ``self``."""
        self._thread = threading.Thread(target=self.serve_forever, name="certkit-postfix-policy", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop listening (connections being served end with their thread)."""
        self._server.shutdown()
        self._server.server_close()
