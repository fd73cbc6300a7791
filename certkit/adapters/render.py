"""Template rendering: the only module that imports jinja2.

Templates live in the repository's top-level ``templates/`` folder. The wheel ships them inside the
package as ``certkit/templates`` (hatch ``force-include``); an editable install or a checkout reads
them from ``templates/`` beside the package.
"""

from __future__ import annotations

import datetime as dt
from functools import cache
from pathlib import Path
from typing import Any

import jinja2
import markupsafe

from certkit.core.text import plural, printable
from certkit.errors import StoreError

__all__ = ["render", "template_dir"]


def template_dir() -> Path:
    """Where the templates are: inside the installed package, else the checkout's ``templates/``."""
    here = Path(__file__).resolve().parent.parent
    for candidate in (here / "templates", here.parent / "templates"):
        if candidate.is_dir():
            return candidate
    raise StoreError("certkit's templates are missing from the installation.", "Reinstall certkit (pip install .).")


#: Templates whose output a person reads on a terminal (inspect, preflight, the partner kit): every string
#: in their context is escaped with :func:`~certkit.core.text.printable` before rendering, so a
#: certificate's names cannot add lines or drive the terminal. HTML is escaped by autoescape; configuration
#: templates (Postfix, PowerShell) quote their values themselves.
_FOR_PEOPLE = (".txt.j2",)


def _escaped(value: Any) -> Any:
    """``value`` with every string in it (through dicts, lists and tuples) made printable."""
    if isinstance(value, markupsafe.Markup):  # already HTML: escaping controls adds no markup characters
        return markupsafe.Markup(printable(value))
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, dict):
        return {k: _escaped(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_escaped(v) for v in value) if type(value) in (list, tuple) else value
    return value


def _ts(value: dt.datetime | str | None) -> str:
    """A time to the second, in UTC: ``2026-12-02 03:13:13 UTC`` (a datetime, or a JSON document's RFC 3339 /
    ISO 8601 string); ``-`` for none. A naive time is taken as UTC."""
    if not value:
        return "-"
    when = dt.datetime.fromisoformat(value) if isinstance(value, str) else value
    if when.tzinfo is not None:
        when = when.astimezone(dt.UTC)
    return when.strftime("%Y-%m-%d %H:%M:%S UTC")


@cache
def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(template_dir())),
        autoescape=jinja2.select_autoescape(["html", "htm", "xml"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["ts"] = _ts
    env.filters["plural"] = plural  # {{ n | plural("warning") }}: 1 warning, 2 warnings
    return env


def render(name: str, **context: Any) -> str:
    """Render the template ``name`` (e.g. ``inspect.txt.j2``) with ``context``."""
    try:
        if name.endswith(_FOR_PEOPLE):
            context = {k: _escaped(v) for k, v in context.items()}
        return _env().get_template(name).render(**context)
    except jinja2.TemplateNotFound:
        raise StoreError(f"The template {name} is missing from the installation.",
                         "Reinstall certkit (pip install .).") from None
