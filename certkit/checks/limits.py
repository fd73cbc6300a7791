"""Politeness for many targets: connections per server address and per network, and sessions shared by domains.

:class:`ServerLimits` holds one :class:`asyncio.Semaphore` per server address and one per network (an IPv4
/24, an IPv6 /48: one site's allocation, RFC 6177), created on first use and dropped when no session holds
or awaits it, so that a run over millions of addresses keeps only the busy ones in memory.
:class:`SessionShare` lets the domains of one run that share an MX host and address (hosting providers) share
one SMTP session: the first asks, the others await its answer; finished sessions are remembered in a bounded
least-recently-used table. Nothing here does I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from typing import Generic, TypeVar

__all__ = ["ServerLimits", "SessionShare", "network_of"]

_V = TypeVar("_V")


def network_of(address: str) -> str:
    """The network an address is limited with: ``192.0.2.0/24``, ``2001:db8:1::/48`` (else the text itself)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    prefix = 24 if ip.version == 4 else 48
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


class _Keyed:
    """Semaphores of ``limit`` by key, made on first use and dropped when idle."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._held: dict[str, tuple[asyncio.Semaphore, list[int]]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        entry = self._held.get(key)
        if entry is None:
            entry = self._held[key] = (asyncio.Semaphore(self.limit), [0])
        semaphore, users = entry
        users[0] += 1  # holders and waiters: the entry lives while any is there
        try:
            async with semaphore:
                yield
        finally:
            users[0] -= 1
            if not users[0]:
                del self._held[key]

    def __len__(self) -> int:
        return len(self._held)


class ServerLimits:
    """At most ``per_address`` sessions to one address and ``per_net`` to one network (``None``: no limit).

    The address is taken before the network, and both before the run's global slot (by the caller): a
    session waiting for a busy server holds no slot that a session to another server could use, so the
    sessions spread over the servers that are free.
    """

    def __init__(self, per_address: int | None, per_net: int | None) -> None:
        self.addresses = _Keyed(per_address) if per_address else None
        self.networks = _Keyed(per_net) if per_net else None

    @contextlib.asynccontextmanager
    async def hold(self, address: str) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            if self.addresses is not None:
                await stack.enter_async_context(self.addresses.hold(address))
            if self.networks is not None:
                await stack.enter_async_context(self.networks.hold(network_of(address)))
            yield

    @property
    def tracked(self) -> int:
        """How many addresses and networks have a semaphore now (bounded by the sessions in flight)."""
        return len(self.addresses or ()) + len(self.networks or ())


class SessionShare(Generic[_V]):
    """One answer per key: the first caller of :meth:`get` runs ``make``, the others (now or later) await it.

    Finished answers are kept for the ``keep`` most recently used keys; answers in flight always are.
    """

    def __init__(self, keep: int = 4096) -> None:
        self.keep = keep
        self._done: OrderedDict[Hashable, _V] = OrderedDict()
        self._running: dict[Hashable, asyncio.Future[_V]] = {}
        self.made = 0
        self.shared = 0

    async def get(self, key: Hashable, make: Callable[[], Awaitable[_V]]) -> tuple[_V, bool]:
        """The answer for ``key`` and whether it was shared (made for an earlier caller)."""
        if key in self._done:
            self._done.move_to_end(key)
            self.shared += 1
            return self._done[key], True
        running = self._running.get(key)
        if running is not None:
            self.shared += 1
            return await asyncio.shield(running), True
        future: asyncio.Future[_V] = asyncio.get_running_loop().create_future()
        self._running[key] = future
        try:
            value = await make()
        except BaseException as e:
            if isinstance(e, asyncio.CancelledError):
                future.cancel()
            else:
                future.set_exception(e)
                future.exception()  # retrieved: a failure nobody else awaited is not logged
            raise
        finally:
            del self._running[key]
        self.made += 1
        future.set_result(value)
        self._done[key] = value
        while len(self._done) > self.keep:
            self._done.popitem(last=False)
        return value, False
