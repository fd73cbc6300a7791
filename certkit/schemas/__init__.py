"""JSON Schemas of certkit's ``--json`` outputs, shipped inside the package.

``probe.schema.json`` documents ``certkit probe --json``. Load one with :func:`load`.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

__all__ = ["PROBE", "load"]

#: The file name of the ``certkit probe --json`` schema.
PROBE = "probe.schema.json"


def load(name: str = PROBE) -> dict[str, Any]:
    """The schema ``name`` (a file of this package) as a dict."""
    data: dict[str, Any] = json.loads(resources.files(__package__).joinpath(name).read_text("utf-8"))
    return data
