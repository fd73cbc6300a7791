"""TLS-RPT reports as they arrive: JSON files, ``.json.gz`` (``application/tlsrpt+gzip``) and whole e-mails.

:func:`unwrap` turns the bytes of one file into the report JSON(s) inside: gzip is decompressed with a cap
read incrementally (a gzip bomb stops at the cap, not at the end of memory), an e-mail (RFC 8460 §5.3:
``multipart/report; report-type=tlsrpt`` with the report attached, also a plain message with an attachment)
is opened with the standard ``email`` package and its ``TLS-Report-Submitter``/``TLS-Report-Domain`` headers
and the attachment's §5.1 file name (``sender!policy-domain!begin!end[!id].json.gz``) become the
:class:`~certkit.core.tlsrpt_read.ReportHint`. :func:`read_reports` reads files and folders, one
:class:`~certkit.core.tlsrpt_read.ReadFailure` per file that holds no report, never an exception for one bad
file.
"""

from __future__ import annotations

import datetime as _dt
import email
import email.message
import email.policy
import os
import re
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from certkit.adapters.inputs import read_input
from certkit.core.text import printable
from certkit.core.tlsrpt_read import ReadFailure, Report, ReportHint, parse_report
from certkit.errors import CertkitError, MalformedInputError

__all__ = ["MAX_DECOMPRESSED", "MAX_FILE", "MEDIA_TYPES", "DecompressionLimitError", "Unwrapped", "filename_hint",
           "gunzip", "read_reports", "unwrap"]

#: A report file (an e-mail with a base64 attachment included) is read up to this size.
MAX_FILE = 32 * 1024 * 1024
#: What one report may decompress to (RFC 8460 §5.2 notes receivers that stop at ten megabytes).
MAX_DECOMPRESSED = 64 * 1024 * 1024
#: The media types of RFC 8460 §6.4 and §6.5.
MEDIA_TYPES = ("application/tlsrpt+json", "application/tlsrpt+gzip")
#: File names a folder is searched for (the server stores ``.json``; mail clients save ``.eml``).
_SUFFIXES = (".json", ".gz", ".eml")
_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 64 * 1024


class DecompressionLimitError(MalformedInputError):
    """Compressed data that decompresses to more than the cap allows (a gzip bomb, or a report too large)."""


def _size(n: int) -> str:
    return f"{n / 1024 / 1024:g} MiB" if n >= 1024 * 1024 else f"{n} bytes"


@dataclass(frozen=True)
class Unwrapped:
    """One report's JSON bytes, where they came from, and what the envelope said about them."""

    source: str
    data: bytes
    hint: ReportHint


def gunzip(data: bytes, *, limit: int = MAX_DECOMPRESSED, source: str = "report") -> bytes:
    """``data`` decompressed (every gzip member), refusing to produce more than ``limit`` bytes.

    Decompression is incremental with ``max_length``: a bomb costs ``limit`` bytes of memory, never more.
    """
    out: list[bytes] = []
    total = 0
    rest = data
    while rest:
        d = zlib.decompressobj(wbits=31)
        chunk_in = rest
        try:
            while True:
                piece = d.decompress(chunk_in, min(_CHUNK, limit + 1 - total))
                total += len(piece)
                out.append(piece)
                if total > limit:
                    raise DecompressionLimitError(f"{printable(source, 200)}: decompresses to more than "
                                                  f"{_size(limit)}.",
                                                  "Not a TLS-RPT report (a gzip bomb?); delete the file.")
                chunk_in = d.unconsumed_tail
                if d.eof or (not chunk_in and not piece):
                    break
        except zlib.error as exc:
            raise MalformedInputError(f"{printable(source, 200)}: not valid gzip ({exc}).",
                                      "Ask the sender for the report again.") from None
        if not d.eof:
            raise MalformedInputError(f"{printable(source, 200)}: the gzip data is cut short.",
                                      "Ask the sender for the report again.")
        rest = d.unused_data.lstrip(b"\x00")  # some writers pad the last member with NULs
    return b"".join(out)


_FILENAME = re.compile(r"^(?P<sender>[^!]+)!(?P<domain>[^!]+)!(?P<begin>\d{1,12})!(?P<end>\d{1,12})"
                       r"(?:!(?P<id>[^!.]+))?\.json(?:\.gz)?$", re.I)


def filename_hint(name: str) -> ReportHint:
    """What an RFC 8460 §5.1 file name says (``google.com!example.com!1725840000!1725926399!001.json.gz``)."""
    m = _FILENAME.match(os.path.basename(name))
    if not m:
        return ReportHint()

    def when(seconds: str) -> _dt.datetime | None:
        try:
            return _dt.datetime.fromtimestamp(int(seconds), _dt.UTC)
        except (OverflowError, OSError, ValueError):
            return None

    return ReportHint(submitter=m["sender"].lower(), policy_domain=m["domain"].lower(), start=when(m["begin"]),
                      end=when(m["end"]), report_id=m["id"])


def _merge(a: ReportHint, b: ReportHint) -> ReportHint:
    return ReportHint(a.submitter or b.submitter, a.policy_domain or b.policy_domain, a.start or b.start,
                      a.end or b.end, a.report_id or b.report_id)


def _is_json(data: bytes) -> bool:
    head = data[:64].lstrip(b"\xef\xbb\xbf \t\r\n")
    return head[:1] in (b"{", b"[")


def _looks_like_mail(data: bytes) -> bool:
    return re.match(rb"(?:[!-9;-~]+:[^\n]*\r?\n)+", data[:4096]) is not None


def _attachment_is_report(part: email.message.Message) -> bool:
    ctype = part.get_content_type()
    name = (part.get_filename() or "").lower()
    if ctype in MEDIA_TYPES:
        return True
    if ctype in ("application/json", "application/gzip", "application/x-gzip", "application/octet-stream",
                 "text/json", "text/plain"):
        return name.endswith((".json", ".json.gz", ".gz"))
    return False


def _mail(data: bytes, source: str, limit: int) -> list[Unwrapped]:
    msg = email.message_from_bytes(data, policy=email.policy.compat32)
    header = ReportHint(submitter=_header(msg, "TLS-Report-Submitter"), policy_domain=_header(msg, "TLS-Report-Domain"),
                        report_id=_subject_id(_header(msg, "Subject")))
    found: list[Unwrapped] = []
    for n, part in enumerate(msg.walk()):
        if part.is_multipart() or not _attachment_is_report(part):
            continue
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            continue
        name = part.get_filename() or f"part {n}"
        where = f"{source} [{printable(name, 120)}]"
        hint = _merge(filename_hint(name), header)
        if payload[:2] == _GZIP_MAGIC or part.get_content_type() == "application/tlsrpt+gzip":
            payload = gunzip(payload, limit=limit, source=where)
        found.append(Unwrapped(where, payload, hint))
    if not found:
        raise MalformedInputError(f"{printable(source, 200)}: an e-mail without a TLS-RPT attachment "
                                  f"(application/tlsrpt+gzip or +json).",
                                  "Save the report e-mail itself (.eml), or its attachment.")
    return found


def _header(msg: email.message.Message, name: str) -> str | None:
    value = msg.get(name)
    if value is None:
        return None
    text = " ".join(str(value).split()).strip().lower()
    return text[:253] or None


def _subject_id(subject: str | None) -> str | None:
    m = re.search(r"report-id:\s*<?([^\s>]+)>?", subject or "", re.I)
    return m.group(1) if m else None


def unwrap(data: bytes, *, source: str, limit: int = MAX_DECOMPRESSED) -> list[Unwrapped]:
    """The report JSON(s) in the bytes of one file: JSON itself, gzip, or an e-mail with the report attached."""
    hint = filename_hint(source)
    if data[:2] == _GZIP_MAGIC:
        data = gunzip(data, limit=limit, source=source)
    if _is_json(data) or not _looks_like_mail(data):
        return [Unwrapped(source, data, hint)]
    return [Unwrapped(u.source, u.data, _merge(u.hint, hint)) for u in _mail(data, source, limit)]


def _files(paths: Iterable[str | os.PathLike[str]]) -> Iterator[Path]:
    for p in paths:
        path = Path(p)
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                if child.is_file() and not child.name.startswith(".") and child.name.lower().endswith(_SUFFIXES):
                    yield child
        else:
            yield path


def read_reports(paths: Iterable[str | os.PathLike[str]], *, limit: int = MAX_DECOMPRESSED
                 ) -> tuple[list[Report], list[ReadFailure]]:
    """Every report in ``paths`` (files, and folders searched for ``.json``, ``.gz`` and ``.eml``), and one
    :class:`~certkit.core.tlsrpt_read.ReadFailure` per file or attachment that holds none."""
    reports: list[Report] = []
    failures: list[ReadFailure] = []
    for path in _files(paths):
        source = str(path)
        try:
            parts = unwrap(read_input(path, what="TLS-RPT report", limit=MAX_FILE), source=source, limit=limit)
        except CertkitError as err:
            failures.append(ReadFailure(source, str(err)))
            continue
        for part in parts:
            try:
                reports.append(parse_report(part.data, source=part.source, hint=part.hint))
            except CertkitError as err:
                failures.append(ReadFailure(part.source, str(err)))
    return reports, failures
