"""``certkit probe --jsonl FILE`` / ``--json-lines``: the bulk probe on the command line (docs/bulk.md).

Targets are read from ``--from FILE`` twice, line by line: once to check every line and count them (so that a
typo on line 900,000 stops the run before it starts, and the bar knows its total), then as the window has
room. Each result is written as one JSON line as soon as it is done, and dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import click

from certkit.adapters.inputs import iter_lines
from certkit.checks.bulk import JsonLines, RunTally, line_of, probe_stream, read_done, targets_of
from certkit.checks.probe import ProbeOptions, ProbeResult, parse_target
from certkit.cli.progress import AddressBar, worth_a_bar
from certkit.core.text import plural
from certkit.errors import InputError

__all__ = ["BulkRun"]


class BulkRun:
    """One bulk run of the command: where targets come from, where lines go, whether to resume."""

    def __init__(self, targets: tuple[str, ...], from_file: str | None, jsonl: str | None, resume: bool,
                 window: int, executor: str) -> None:
        if resume and jsonl is None:
            raise InputError("--resume needs --jsonl FILE.", "Give the file the interrupted run was writing.")
        self.targets, self.from_file, self.jsonl = targets, from_file, jsonl
        self.resume, self.window, self.executor = resume, window, executor

    def _source(self) -> Iterator[str]:
        yield from self.targets
        if self.from_file is not None:
            yield from targets_of(iter_lines(self.from_file, what="target list"))

    def _fresh(self, skip: set[str]) -> Iterator[str]:
        """The targets not yet done, each once (a list that names one twice is probed once)."""
        for text in self._source():
            if text not in skip:
                skip.add(text)
                yield text

    def count(self, port: int) -> int:
        """Check every target (an :class:`InputError` names the first bad one) and count them."""
        n = 0
        for text in self._source():
            parse_target(text, port)
            n += 1
        if not n:
            raise InputError("No target was given.", "Name a domain, host:port or [ip]:port, or use --from FILE.")
        return n

    def run(self, probe_args: dict[str, Any], options: ProbeOptions) -> int:
        total = self.count(options.port)
        done, tally = read_done(Path(self.jsonl)) if self.resume and self.jsonl else (set(), RunTally())
        skipped = len(done)
        left = max(0, total - skipped)
        progress = AddressBar(pending=left, eta=True) if worth_a_bar(left) else None
        with contextlib.ExitStack() as stack:
            if progress is not None:
                stack.callback(progress.close)
            out = (stack.enter_context(Path(self.jsonl).open("a" if self.resume else "w", encoding="utf-8"))
                   if self.jsonl else sys.stdout)
            writer = JsonLines(out)
            for result in self._results(self._fresh(done), probe_args, options, progress):
                line = line_of(result, options.validator)
                tally.add(line["exit_code"])
                writer.write(line)
        if self.jsonl:
            already = f" ({skipped} already in {self.jsonl})" if skipped else ""
            click.echo(f"{plural(tally.lines, 'target')} in {self.jsonl}{already}: {tally.failed} with errors, "
                       f"{tally.unreached} not reached; exit {tally.exit_code}.")
        return tally.exit_code

    def _results(self, targets: Iterable[str], probe_args: dict[str, Any], options: ProbeOptions,
                 progress: AddressBar | None) -> Iterator[ProbeResult]:
        if self.executor != "local":
            from certkit.adapters.executor import parse_executor, probe_distributed

            spec = parse_executor(self.executor)
            if spec.kind != "local":
                yield from probe_distributed(targets, spec, options=options, progress=progress, window=self.window,
                                             **probe_args)
                return
        yield from _drive(lambda: probe_stream(targets, options=options, progress=progress, window=self.window,
                                               **probe_args))


def _drive(make: Callable[[], Any]) -> Iterator[ProbeResult]:
    """An async iterator's items, from synchronous code, on a loop of its own.

    Ctrl-C is taken by the loop (``add_signal_handler``), which cancels the step in progress: a
    ``KeyboardInterrupt`` raised wherever the signal happened to land -- inside OpenSSL's verify callback,
    say -- would be swallowed there ("Exception ignored from cffi callback") and the run would go on.
    """
    loop = asyncio.new_event_loop()
    stream = make()
    interrupted = False
    step: asyncio.Task[ProbeResult] | None = None

    def on_sigint() -> None:
        nonlocal interrupted
        interrupted = True
        if step is not None:
            step.cancel()

    async def next_item() -> ProbeResult:
        item: ProbeResult = await stream.__anext__()
        return item

    handled = False
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # not the main thread, not POSIX
        loop.add_signal_handler(signal.SIGINT, on_sigint)
        handled = True
    try:
        while not interrupted:
            step = loop.create_task(next_item())
            try:
                item = loop.run_until_complete(step)
            except StopAsyncIteration:
                return
            except asyncio.CancelledError:
                if interrupted:
                    break
                raise
            yield item
        raise KeyboardInterrupt
    finally:
        if handled:
            loop.remove_signal_handler(signal.SIGINT)
        loop.run_until_complete(stream.aclose())
        loop.close()
