"""A small authoritative DNS server on 127.0.0.1 (UDP and TCP, one free port), built on dnspython.

Zones are a dict of owner name to records::

    ZONES = {
        "fabrikam.test": {"MX": ["10 mx1.fabrikam.test.", "20 mx2.fabrikam.test."]},
        "mx1.fabrikam.test": {"A": ["127.0.0.1"], "AAAA": ["::1"]},
    }

A name in the dict answers its records (NOERROR with no answer for other types); any other name is
NXDOMAIN. Names in ``silent`` are never answered (for timeout tests); names in ``servfail`` get SERVFAIL.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterable, Mapping, Sequence

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

Zones = Mapping[str, Mapping[str, Sequence[str]]]


class DnsServer:
    """Serves ``zones`` on ``127.0.0.1:port`` over UDP and TCP until :meth:`close`."""

    def __init__(self, zones: Zones, *, silent: Iterable[str] = (), servfail: Iterable[str] = (),
                 ttl: int = 60) -> None:
        self.ttl = ttl  # of every answer
        self.zones = {dns.name.from_text(k): v for k, v in zones.items()}
        self.silent = {dns.name.from_text(n) for n in silent}
        self.servfail = {dns.name.from_text(n) for n in servfail}
        self.queries: list[tuple[str, str]] = []
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        # One port for both protocols: bind UDP to a free port, then TCP to the same (retry if taken).
        for _ in range(20):
            self.udp.bind(("127.0.0.1", 0))
            self.port: int = self.udp.getsockname()[1]
            try:
                self.tcp.bind(("127.0.0.1", self.port))
                break
            except OSError:
                self.udp.close()
                self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.tcp.listen(16)
        self.udp.settimeout(0.1)
        self.tcp.settimeout(0.1)
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._serve_udp, daemon=True),
                         threading.Thread(target=self._serve_tcp, daemon=True)]
        for t in self._threads:
            t.start()

    @property
    def address(self) -> str:
        """``127.0.0.1:PORT``, as ``--nameserver`` takes it."""
        return f"127.0.0.1:{self.port}"

    def answer(self, wire: bytes) -> bytes | None:
        """The response to one query in wire format (``None``: stay silent)."""
        try:
            query = dns.message.from_wire(wire)
        except Exception:
            return None
        if not query.question:
            return None
        q = query.question[0]
        self.queries.append((q.name.to_text(), dns.rdatatype.to_text(q.rdtype)))
        if q.name in self.silent:
            return None
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if q.name in self.servfail:
            response.set_rcode(dns.rcode.SERVFAIL)
        elif q.name not in self.zones:
            response.set_rcode(dns.rcode.NXDOMAIN)
        else:
            records = self.zones[q.name].get(dns.rdatatype.to_text(q.rdtype), ())
            if records:
                response.answer.append(dns.rrset.from_text_list(q.name, self.ttl, dns.rdataclass.IN, q.rdtype,
                                                                list(records)))
        return response.to_wire()

    def _serve_udp(self) -> None:
        while not self._stop.is_set():
            try:
                wire, peer = self.udp.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            reply = self.answer(wire)
            if reply is not None:
                self.udp.sendto(reply, peer)

    def _serve_tcp(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.tcp.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(2)
                try:
                    head = conn.recv(2)
                    (size,) = struct.unpack("!H", head)
                    wire = b""
                    while len(wire) < size:
                        chunk = conn.recv(size - len(wire))
                        if not chunk:
                            break
                        wire += chunk
                    reply = self.answer(wire)
                    if reply is not None:
                        conn.sendall(struct.pack("!H", len(reply)) + reply)
                except (OSError, struct.error):
                    continue

    def close(self) -> None:
        self._stop.set()
        self.udp.close()
        self.tcp.close()
        for t in self._threads:
            t.join(2)

    def __enter__(self) -> DnsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
