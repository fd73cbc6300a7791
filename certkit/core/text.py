"""Text for people: the one escaping function for text certkit did not write (certificate and CSR names,
CRL issuers, a server's replies, file names), and the one way certkit writes a time and a duration.

Everything certkit prints that came from outside goes through :func:`printable` -- the CLI's lines, its
error lines, the lab's logs, the probe's transcripts -- so no input can forge an output line (CR, LF),
drive the terminal (ESC, BEL), or reorder what is shown (bidi overrides).

:func:`plural` is the one place where a count meets its noun (``1 anchor``, ``2 anchors``), for the CLI's
lines and the templates alike.
"""

from __future__ import annotations

import datetime as dt
import re

__all__ = ["camel_case", "duration_text", "plural", "printable", "snake_case", "utc_text"]

# C0 and C1 controls (ESC starts terminal sequences, CR rewrites a line), DEL, the Unicode controls that
# reorder or break displayed text (bidi marks, overrides and isolates, line and paragraph separators), and
# lone surrogates (an undecodable byte in a file name; unprintable on a UTF-8 terminal).
_UNSAFE_RE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069"
                        "\ud800-\udfff]")
_NAMED = {"\r": "\\r", "\n": "\\n", "\t": "\\t"}


def _escape(m: re.Match[str]) -> str:
    c = m.group(0)
    n = ord(c)
    if 0xDC80 <= n <= 0xDCFF:  # os.fsdecode's surrogateescape: the byte the name really holds
        return f"\\x{n - 0xDC00:02x}"
    return _NAMED.get(c) or (f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}")


def printable(text: str | bytes, limit: int | None = None) -> str:
    """Text from outside (peer replies, certificate names, file names) made safe for a terminal or a log.

    Control characters are escaped (``\\x1b``, ``\\r``), so the text cannot move the cursor, recolour or
    overwrite what certkit prints, nor add a line; bytes are read as UTF-8 with undecodable octets escaped.
    With ``limit``, at most that many characters of the input are kept, and ``...`` marks the cut.
    Backslashes are kept as they are, so escaping twice changes nothing.
    """
    t = text.decode("utf-8", "backslashreplace") if isinstance(text, bytes) else text
    cut = limit is not None and len(t) > limit
    if cut:
        t = t[:limit]
    return _UNSAFE_RE.sub(_escape, t) + ("..." if cut else "")


def plural(count: int, noun: str, plural_form: str | None = None) -> str:
    """``count`` with ``noun`` in the right number: ``plural(1, "anchor")`` is ``1 anchor``, ``plural(3,
    "address")`` ``3 addresses``; ``plural_form`` for a noun the English rules below get wrong."""
    if count == 1:
        return f"{count} {noun}"
    if plural_form is None:
        if noun.endswith(("s", "x", "z", "ch", "sh")):
            plural_form = noun + "es"
        elif noun.endswith("y") and noun[-2:-1] not in ("a", "e", "i", "o", "u"):
            plural_form = noun[:-1] + "ies"
        else:
            plural_form = noun + "s"
    return f"{count} {plural_form}"


_UNITS = (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1))


def duration_text(delta: dt.timedelta) -> str:
    """A duration as people say it: its largest unit and the next one when not zero, sign ignored.

    ``3 days 4 hours``, ``1 hour``, ``5 minutes 2 seconds``, ``less than a second``; whole seconds.
    """
    left = int(abs(delta.total_seconds()))
    for i, (unit, size) in enumerate(_UNITS):
        if left >= size:
            parts = [(left // size, unit)]
            if i + 1 < len(_UNITS):
                after, after_size = _UNITS[i + 1]
                parts.append(((left % size) // after_size, after))
            return " ".join(plural(n, u) for n, u in parts if n)
    return "less than a second"


def utc_text(t: dt.datetime) -> str:
    """A time as ``2026-12-02 07:24:14 UTC`` (an aware datetime, shown in UTC)."""
    return t.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def camel_case(snake: str) -> str:
    """``key_compromise`` -> ``keyCompromise``: cryptography's names as RFC 5280 and Windows write them."""
    head, *rest = snake.split("_")
    return head + "".join(w.title() for w in rest)


def snake_case(camel: str) -> str:
    """``keyCompromise`` -> ``key_compromise`` (the inverse of :func:`camel_case`)."""
    return "".join("_" + c.lower() if c.isupper() else c for c in camel)
