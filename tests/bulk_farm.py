"""A farm of STARTTLS endpoints on many loopback addresses that counts connections per address (bulk probing).

Linux routes all of 127.0.0.0/8 to the loopback interface, so ``127.X.Y.1`` can be bound without any set-up:
the farm serves one port on each of its addresses, from one asyncio loop (on a thread for tests, in a child
process for the benchmark), with the stdlib's ``ssl``. Each address counts its open connections and remembers
the peak, the total and the SNI names asked for, so that tests can assert the per-address limit at the
server, where it matters.

:func:`zones` makes the DNS of a farm for ``tests/dnsserver.py``: domains with MX records to host names, host
names with A records to the farm's addresses.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from certkit.checks.limits import network_of


def addresses(count: int, *, per_net: int = 1) -> list[str]:
    """``count`` loopback addresses, ``per_net`` in each /24: 127.1.0.1, 127.1.0.2, ... then 127.2.0.1 ..."""
    return [f"127.{1 + i // per_net // 250}.{i // per_net % 250}.{1 + i % per_net}" for i in range(count)]


def free_port(addresses: Sequence[str]) -> int:
    """A port that is free on every one of ``addresses`` (they share one, as MX hosts on port 25 do)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind((addresses[0], 0))
            port: int = s.getsockname()[1]
        try:
            for a in addresses[1:]:
                with socket.socket() as t:
                    t.bind((a, port))
        except OSError:
            continue
        return port
    raise RuntimeError("no common free port")


def zones(domains: dict[str, str], hosts: dict[str, str]) -> dict[str, dict[str, list[str]]]:
    """DNS for the farm: each domain's one MX host, each host's A record."""
    out: dict[str, dict[str, list[str]]] = {d: {"MX": [f"10 {h}."]} for d, h in domains.items()}
    out.update({h: {"A": [a]} for h, a in hosts.items()})
    return out


@dataclass
class Gauge:
    """Connections to one address: open now, the most at once, the total, the SNI names asked for."""

    now: int = 0
    peak: int = 0
    total: int = 0
    names: Counter[str] = field(default_factory=Counter)


class Farm:
    """STARTTLS endpoints on ``port`` of every address in ``addresses`` (see the module docstring).

    ``delay``: seconds to wait before the banner (so that sessions overlap and limits show).
    """

    def __init__(self, addresses: Sequence[str], port: int, cert_pem: Path, key_pem: Path, *,
                 delay: float = 0.0) -> None:
        self.addresses = list(addresses)
        self.port = port
        self.delay = delay
        self.gauges: dict[str, Gauge] = {a: Gauge() for a in self.addresses}
        self.nets: dict[str, Gauge] = {network_of(a): Gauge() for a in self.addresses}
        #: every connection to the farm (how many servers were busy at once)
        self.all = Gauge()
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(str(cert_pem), str(key_pem))
        self.ctx.sni_callback = self._sni
        self.loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    @staticmethod
    def _sni(ssl_object: ssl.SSLObject | ssl.SSLSocket, name: str | None, _ctx: ssl.SSLContext) -> None:
        ssl_object.farm_sni = name  # type: ignore[union-attr]  # read back after the handshake

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        address = writer.get_extra_info("sockname")[0]
        gauge, net = self.gauges[address], self.nets[network_of(address)]
        for g in (gauge, net, self.all):
            g.now += 1
            g.total += 1
            g.peak = max(g.peak, g.now)

        async def send(text: str) -> None:
            writer.write(text.encode() + b"\r\n")
            await writer.drain()

        tls = False
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            await send("220 mx.farm.test ESMTP farm")
            while line := await asyncio.wait_for(reader.readline(), 30):
                verb = line.split(b" ", 1)[0].strip().upper()
                if verb in (b"EHLO", b"HELO"):
                    caps = ["mx.farm.test", "PIPELINING", *([] if tls else ["STARTTLS"]), "8BITMIME"]
                    await send("\r\n".join(f"250{'-' if i < len(caps) - 1 else ' '}{c}" for i, c in enumerate(caps)))
                elif verb == b"STARTTLS" and not tls:
                    await send("220 2.0.0 Ready to start TLS")
                    await writer.start_tls(self.ctx)
                    ssl_object = writer.get_extra_info("ssl_object")
                    gauge.names[getattr(ssl_object, "farm_sni", None) or ""] += 1
                    tls = True
                elif verb in (b"MAIL", b"RCPT", b"RSET", b"NOOP"):
                    await send("250 2.0.0 Ok")
                elif verb == b"QUIT":
                    await send("221 2.0.0 Bye")
                    return
                else:
                    await send("502 5.5.2 Error: command not recognized")
        except (TimeoutError, OSError, ssl.SSLError, asyncio.IncompleteReadError):
            return
        finally:
            gauge.now -= 1
            net.now -= 1
            self.all.now -= 1
            writer.close()

    async def serve(self, ready: threading.Event | None = None) -> None:
        """Serve until :meth:`stop` (on this loop)."""
        logging.getLogger("asyncio").setLevel(logging.ERROR)  # clients that close without close_notify
        self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        servers = [await asyncio.start_server(self._session, a, self.port, backlog=256, reuse_address=True)
                   for a in self.addresses]
        if ready is not None:
            ready.set()
        try:
            await self._stop.wait()
        finally:
            for s in servers:
                s.close()

    def start(self) -> Farm:
        """Serve on a daemon thread of this process."""
        ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self.serve(ready)), daemon=True)
        self._thread.start()
        if not ready.wait(30):
            raise RuntimeError("the farm did not start")
        return self

    def stop(self) -> None:
        if self.loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):
                self.loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)

    def peaks(self) -> dict[str, int]:
        return {a: g.peak for a, g in self.gauges.items()}

    def totals(self) -> dict[str, int]:
        return {a: g.total for a, g in self.gauges.items()}

    def __enter__(self) -> Farm:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
