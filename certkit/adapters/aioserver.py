"""The life cycle both of certkit's asyncio servers share (the lab's SMTP server, the TLS-RPT receiver).

A subclass listens in ``start()`` (setting ``self._server``) and registers each connection's task with
:meth:`TaskServer._track`; :meth:`TaskServer.stop` then cancels the connections in progress, so a stopped
server leaves no task behind.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Self

__all__ = ["TaskServer"]


class TaskServer:
    """Start, serve until cancelled, stop with every connection's task cancelled; ``async with`` runs it."""

    def __init__(self) -> None:
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Listen; set ``self._server``."""
        raise NotImplementedError

    async def stop(self) -> None:
        """Stop listening and cancel the connections in progress."""
        if self._server is not None:
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            with contextlib.suppress(Exception):
                await asyncio.gather(*self._tasks, return_exceptions=True)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None

    async def serve_forever(self) -> None:
        """Start (if needed) and serve until cancelled."""
        if self._server is None:
            await self.start()
        assert self._server is not None
        try:
            await self._server.serve_forever()
        finally:
            await self.stop()

    @contextlib.contextmanager
    def _track(self) -> Iterator[None]:
        """Inside a connection handler: the handler's task is cancelled by :meth:`stop`."""
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            yield
        finally:
            if task is not None:
                self._tasks.discard(task)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
