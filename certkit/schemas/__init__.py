"""JSON Schemas of certkit's ``--json`` documents, shipped inside the package (docs/json.md).

One schema file per document, named after its command (``ca list`` -> ``ca-list.schema.json``); the four
``dane rollover`` steps print one document, ``dane-rollover.schema.json``. ``common.schema.json`` holds the
definitions the documents share (times, serials, a certificate's facts, a finding); the documents refer to
it by its ``$id``. Every document carries ``schema_version``: :data:`DOCUMENTS` says which, and a field is
never renamed or removed without a new version. Load a schema with :func:`load`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

__all__ = ["COMMON", "DOCUMENTS", "PROBE", "Document", "document", "load", "schema_files", "stamped"]

#: The file name of the ``certkit probe --json`` schema.
PROBE = "probe.schema.json"
#: The definitions every document shares.
COMMON = "common.schema.json"


@dataclass(frozen=True)
class Document:
    """One ``--json`` document: the command that prints it, its schema file and its current version."""

    command: str
    schema: str
    version: int


def _doc(command: str, version: int = 1, schema: str | None = None) -> Document:
    return Document(command, schema or command.replace(" ", "-") + ".schema.json", version)


#: Every ``--json`` document, by the command that prints it (``probe --jsonl``: one line of JSON Lines). Version
#: 2: a field was renamed to the contract's names (docs/json.md) in a document that had a version before.
DOCUMENTS: dict[str, Document] = {d.command: d for d in (
    _doc("ca init"), _doc("ca issue"), _doc("ca sign"), _doc("ca renew"), _doc("ca revoke"), _doc("ca crl"),
    _doc("ca list"), _doc("ca show"), _doc("ca status"), _doc("selfsigned"), _doc("inspect"),
    _doc("trust add"), _doc("trust fetch"), _doc("trust list"), _doc("trust show"), _doc("trust remove"),
    _doc("trust verify"),
    _doc("probe", 2), _doc("probe --jsonl", 1, "probe-line.schema.json"), _doc("preflight", 2),
    _doc("config exchange"), _doc("config postfix"), _doc("config partner-kit"),
    _doc("dane tlsa", 2),
    *(_doc(f"dane rollover {step}", 2, "dane-rollover.schema.json") for step in ("status", "next", "switch",
                                                                                   "retire")),
    _doc("lab send"), _doc("audit"), _doc("mta-sts check"),
    _doc("tlsrpt read"),
    _doc("watch list"), _doc("watch run"), _doc("watch report"),
)}


def document(command: str) -> Document:
    """The document ``command`` (e.g. ``"ca list"``) prints."""
    return DOCUMENTS[command]


def stamped(command: str, data: dict[str, Any]) -> dict[str, Any]:
    """``data`` as the document of ``command``: ``schema_version`` first, then the fields."""
    return {"schema_version": DOCUMENTS[command].version, **data}


def schema_files() -> list[str]:
    """The schema files shipped in this package, ``common.schema.json`` included."""
    return sorted(p.name for p in resources.files(__package__).iterdir() if p.name.endswith(".schema.json"))


def load(name: str = PROBE) -> dict[str, Any]:
    """The schema ``name`` (a file of this package) as a dict."""
    data: dict[str, Any] = json.loads(resources.files(__package__).joinpath(name).read_text("utf-8"))
    return data
