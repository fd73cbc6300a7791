"""Bulk probing: many targets, politely, streamed as JSON Lines, resumable (docs/bulk.md).

:func:`probe_stream` probes targets from any iterable (a file read line by line) with a bounded window of
targets in flight, and yields each :class:`~certkit.checks.probe.ProbeResult` as soon as it is done: nothing
holds the whole run. Politeness comes from :class:`~certkit.checks.probe.ProbeOptions`: ``per_address`` and
``per_net`` limit the sessions per server address and network, ``share_sessions`` gives the targets that reach
the same MX host and address one session. :func:`line_of` is the JSON Lines document of one result
(``certkit/schemas/probe-line.schema.json``); :func:`read_done` reads what an earlier, interrupted run wrote,
so that ``--resume`` skips it. Nothing here prints.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from cryptography import x509

from certkit.adapters.transport import ClientIdentity
from certkit.checks.probe import (
    ProbeOptions,
    ProbeResult,
    ProgressCallback,
    _open_run,
    exit_code,
    parse_target,
)
from certkit.clock import Clock
from certkit.errors import InputError
from certkit.schemas import stamped

__all__ = ["LINE_DOCUMENT", "JsonLines", "RunTally", "line_of", "probe_stream", "read_done", "targets_of"]

#: The document name of one JSON Lines line (``certkit.schemas.DOCUMENTS``).
LINE_DOCUMENT = "probe --jsonl"


async def probe_stream(targets: Iterable[str], *, anchors: Any = (), identity: ClientIdentity | None = None,
                       options: ProbeOptions | None = None, clock: Clock | None = None,
                       progress: ProgressCallback | None = None, our_roots: Sequence[x509.Certificate] = (),
                       window: int = 1000) -> AsyncIterator[ProbeResult]:
    """Each target's result as soon as it is done (in completion order), at most ``window`` targets in flight.

    Targets are read from ``targets`` only as the window has room, so a file of millions costs the memory of
    ``window`` targets (and of the sessions ``options.share_sessions`` remembers), not of the file.
    """
    if window < 1:
        raise InputError(f"The window must be at least 1 target, not {window}.", "Pass e.g. --window 1000.")
    opts = options or ProbeOptions()
    source = iter(targets)
    async with _open_run(opts, anchors, identity, clock, progress, our_roots, window) as run:
        flying: set[asyncio.Task[ProbeResult]] = set()
        try:
            while True:
                for text in source:
                    flying.add(asyncio.ensure_future(run.target(parse_target(text, opts.port))))
                    if len(flying) >= window:
                        break
                if not flying:
                    return
                done, flying = await asyncio.wait(flying, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    yield task.result()
        finally:
            for task in flying:
                task.cancel()
            if flying:
                await asyncio.gather(*flying, return_exceptions=True)


def line_of(result: ProbeResult, validator: str) -> dict[str, Any]:
    """One JSON Lines document: one target's result, complete on its own (``probe-line.schema.json``).

    ``exit_code`` is this target's alone (0, 1 or 3, as :func:`~certkit.checks.probe.exit_code` of it): a
    reader can filter a file of millions of lines with ``jq 'select(.exit_code != 0)'``.
    """
    ours = result.ours
    return stamped(LINE_DOCUMENT, {
        "target": result.target, "validator": validator, "exit_code": exit_code([result]),
        "our_certificate_ok": None if ours is None else ours.ok, "result": result.to_dict()})


@dataclass
class RunTally:
    """The exit code of a whole run from its lines' codes, without keeping them: 3 when no target was
    reached, else 1 when any target had an error (or was not reached), else 0."""

    lines: int = 0
    unreached: int = 0
    failed: int = 0

    def add(self, code: int) -> None:
        self.lines += 1
        self.unreached += code == 3
        self.failed += code == 1

    @property
    def exit_code(self) -> int:
        if self.lines and self.unreached == self.lines:
            return 3
        return 1 if self.failed or self.unreached else 0


def read_done(path: Path) -> tuple[set[str], RunTally]:
    """The targets already in the JSON Lines file ``path`` (complete lines only), and their tally.

    A last line without its newline (the run was killed while writing it) is cut off the file here, so that
    the resumed run appends after the last complete line and probes that target again.
    """
    done: set[str] = set()
    tally = RunTally()
    if not path.exists():
        return done, tally
    with path.open("rb+") as f:
        good = 0
        for raw in f:
            if not raw.endswith(b"\n"):
                break
            try:
                line = json.loads(raw)
                target, code = line["target"], int(line["exit_code"])
            except (ValueError, KeyError, TypeError):
                raise InputError(f"{path} has a line that is not a probe result (at byte {good}).",
                                 "Resume only into a file an earlier `certkit probe --jsonl` wrote.") from None
            if target not in done:
                done.add(target)
                tally.add(code)
            good += len(raw)
        f.truncate(good)
    return done, tally


class JsonLines:
    """Writes one document per line, flushed (and handed to the OS) as it is written: a killed run loses at
    most the line it was writing, which :func:`read_done` then cuts off."""

    def __init__(self, out: IO[str], *, sync: bool = False) -> None:
        self.out = out
        self.sync = sync

    def write(self, doc: dict[str, Any]) -> None:
        self.out.write(json.dumps(doc, ensure_ascii=False, separators=(",", ":")) + "\n")
        self.out.flush()
        if self.sync:
            os.fsync(self.out.fileno())


def targets_of(lines: Iterable[str]) -> Iterator[str]:
    """The targets of a target list: one per line, ``#`` comments and blank lines skipped."""
    for line in lines:
        text = line.split("#", 1)[0].strip()
        if text:
            yield text
