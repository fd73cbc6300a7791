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

from certkit.errors import StoreError

__all__ = ["render", "template_dir"]


def template_dir() -> Path:
    """Where the templates are: inside the installed package, else the checkout's ``templates/``."""
    here = Path(__file__).resolve().parent.parent
    for candidate in (here / "templates", here.parent / "templates"):
        if candidate.is_dir():
            return candidate
    raise StoreError("certkit's templates are missing from the installation.", "Reinstall certkit (pip install .).")


def _ts(value: dt.datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%SZ") if value else "-"


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
    return env


def render(name: str, **context: Any) -> str:
    """Render the template ``name`` (e.g. ``inspect.txt.j2``) with ``context``."""
    try:
        return _env().get_template(name).render(**context)
    except jinja2.TemplateNotFound:
        raise StoreError(f"The template {name} is missing from the installation.",
                         "Reinstall certkit (pip install .).") from None
