"""Colour for what needs the eye: severities (``ERROR``, ``WARNING``, ``INFO``) and verdicts.

Only on a terminal, and never when ``NO_COLOR`` is set to anything non-empty (https://no-color.org): a pipe,
a file, a CI log and ``--json`` stay plain text. Colour is added *after* :func:`~certkit.core.text.printable`
has escaped outside text, so the escape sequences here are the only ones that reach the terminal.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any

import click

__all__ = ["colour_on", "paint_report", "severity", "verdict"]

_SEVERITY: dict[str, dict[str, Any]] = {
    "error": {"fg": "red", "bold": True},
    "breaks": {"fg": "red", "bold": True},  # certkit audit
    "warning": {"fg": "yellow", "bold": True},
    "warn": {"fg": "yellow", "bold": True},
    "info": {"fg": "cyan"},
    "ok": {"fg": "green"},
}
_GOOD: dict[str, Any] = {"fg": "green", "bold": True}
_BAD: dict[str, Any] = {"fg": "red", "bold": True}


def colour_on(*, err: bool = False) -> bool:
    """Colour for stdout (or stderr with ``err``): a terminal, and ``NO_COLOR`` unset or empty."""
    if os.environ.get("NO_COLOR"):
        return False
    try:
        return (sys.stderr if err else sys.stdout).isatty()
    except (AttributeError, ValueError):
        return False


def severity(word: str, *, err: bool = False) -> str:
    """``word`` (``error``, ``WARNING``, ``OK``, padded or not) in its severity's colour, when colour is on."""
    style = _SEVERITY.get(word.strip().lower())
    return click.style(word, **style) if style is not None and colour_on(err=err) else word


def verdict(text: str, ok: bool, *, err: bool = False) -> str:
    """A verdict (``READY``, ``ACCEPTED``, a probe's ``would deliver ...``): green when ``ok``, else red."""
    return click.style(text, **(_GOOD if ok else _BAD)) if colour_on(err=err) else text


# A severity in the first column of a rendered report (inspect, preflight, audit), and the pre-flight's verdict.
_REPORT_SEVERITY = re.compile(r"^(\s*)(ERROR|WARNING|WARN|BREAKS|INFO|OK)(?=\s)", re.MULTILINE)
_REPORT_VERDICT = re.compile(r"^(Verdict:\s+)(NOT READY|READY)\b", re.MULTILINE)


def paint_report(text: str, *, err: bool = False) -> str:
    """A report rendered from a template (its outside text already escaped) with its severities and verdict
    coloured, when colour is on."""
    if not colour_on(err=err):
        return text
    text = _REPORT_SEVERITY.sub(lambda m: m.group(1) + severity(m.group(2), err=err), text)
    return _REPORT_VERDICT.sub(lambda m: m.group(1) + verdict(m.group(2), m.group(2) == "READY", err=err), text)
