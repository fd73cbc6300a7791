"""The CLI's one progress display: click's progress bar on stderr, for more than one address, on a terminal.

``certkit probe`` and ``certkit preflight`` both count probed addresses with :class:`AddressBar`; neither
draws anything when stderr is not a terminal (a pipe, a log file, ``2>`` to a file) or when there is only one
thing to wait for, and stdout (the report, the JSON) never receives a byte of it.
"""

from __future__ import annotations

import sys
from types import TracebackType
from typing import TYPE_CHECKING

import click

from certkit.cli.common import stderr_is_terminal
from certkit.core.text import plural, printable

if TYPE_CHECKING:
    from click._termui_impl import ProgressBar

__all__ = ["AddressBar", "worth_a_bar"]


def worth_a_bar(count: int) -> bool:
    """A bar is drawn for more than one target (or address), and only on a terminal."""
    return count > 1 and stderr_is_terminal()


class AddressBar:
    """A bar of probed addresses: ``[#####---------------]  12/40 addresses (3 targets to resolve)``.

    ``pending`` targets whose addresses are not known yet count as one address each until
    :meth:`planned` says how many they have (the probe learns that after DNS), so the bar never runs ahead.
    Call the object once per finished address (the probe's progress callback); :meth:`close` ends the line.
    ``eta``: click's estimate of the time left (``eta 00:12:31``) after the counts, for a bulk run.
    """

    def __init__(self, *, total: int = 0, pending: int = 0, eta: bool = False) -> None:
        self.total = total
        self.pending = pending
        self.done = 0
        self._last = ""
        self._bar: ProgressBar[int] = click.progressbar(
            length=self._expected(), file=sys.stderr, bar_template="[%(bar)s] %(info)s", width=20, fill_char="#",
            empty_char="-", show_eta=False, show_percent=False, item_show_func=lambda _item: self.info())
        self.eta = eta
        self._bar.__enter__()

    def _expected(self) -> int:
        return max(1, self.total + self.pending)

    def info(self) -> str:
        """The text after the bar: counts, then the last address's verdict (if one was given)."""
        text = f"{self.done}/{plural(self.total, 'address')}"
        if self.pending:
            text += f" ({plural(self.pending, 'target')} to resolve)"
        # click's estimate (a rolling mean, known after a second), after our counts rather than before them.
        if self.eta and self._bar.eta_known and not self._bar.finished:
            text += f"  eta {self._bar.format_eta()}"
        return f"{text}  {self._last}" if self._last else text

    def planned(self, count: int) -> None:
        """One pending target resolved to ``count`` addresses."""
        self.pending = max(0, self.pending - 1)
        self.total += count
        # click's bar reads its length on every frame; the total grows as targets resolve.
        self._bar.length = self._expected()
        self._bar.render_progress()

    def __call__(self, _result: object = None, *, last: str | None = None) -> None:
        """One more address done; ``last`` (escaped here, it holds a server's words) is shown after the counts."""
        self.done += 1
        if last is not None:
            self._last = printable(last, 60)
        self._bar.update(1)

    def close(self) -> None:
        """End the bar's line (and give the cursor back), so that what follows starts on its own line."""
        self._bar.render_finish()

    def __enter__(self) -> AddressBar:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
