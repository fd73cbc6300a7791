"""Injected time. The core never reads the wall clock itself: it asks a :class:`Clock`."""

from __future__ import annotations

import datetime as _dt
from typing import Protocol

__all__ = ["Clock", "FixedClock", "SystemClock", "aware", "utcnow"]


class Clock(Protocol):
    """Anything that tells the current time as an aware UTC datetime."""

    def now(self) -> _dt.datetime: ...


class SystemClock:
    """The real clock. Only the edges (CLI, servers) construct it."""

    def now(self) -> _dt.datetime:
        return _dt.datetime.now(_dt.UTC)


class FixedClock:
    """A clock that says what it is told; tests move it with :meth:`advance`."""

    def __init__(self, at: _dt.datetime) -> None:
        self._at = aware(at)

    def now(self) -> _dt.datetime:
        return self._at

    def advance(self, delta: _dt.timedelta) -> None:
        self._at = self._at + delta


def aware(at: _dt.datetime) -> _dt.datetime:
    """Return ``at`` in UTC; a naive datetime is refused rather than guessed."""
    from certkit.errors import UsageError

    if at.tzinfo is None or at.utcoffset() is None:
        raise UsageError(
            f"The time {at.isoformat()} has no time zone.",
            "Pass an aware datetime, e.g. datetime(..., tzinfo=datetime.UTC).",
        )
    return at.astimezone(_dt.UTC)


def utcnow(clock: Clock | None = None) -> _dt.datetime:
    """The current time from ``clock``, or from the system clock at the edge."""
    return (clock or SystemClock()).now()
