"""SMTP's wire format, once for both roles: limits, verbs, replies, command lines, addresses, DATA.

Everything here is pure (bytes and text in, values out). The client engine
(:mod:`certkit.core.smtp.client`) and the server engine (:mod:`certkit.core.smtp.server`) are built on
it, so a limit, a verb or the end-of-DATA rule cannot differ between the side that probes and the side
that serves.

Rules of this module:

* Limits are RFC 5321 4.5.3.1's where the RFC gives one (512 octets per command line and 1000 per text
  line, CRLF included); reply lines may be longer (:data:`MAX_REPLY_LINE`: real servers send long texts).
* :class:`LineBuffer` splits a stream into lines under a limit and reports an overlong line exactly once,
  whatever the packet boundaries: the rest of that line, when it arrives, is discarded up to its end, so
  the next line is read from its start and the dialogue never falls out of step.
* :class:`BodyReader` ends a DATA body only at ``CRLF . CRLF`` (the start of DATA counts as a CRLF). A bare
  LF, a bare CR or the tail of an overlong line never starts a line: ``LF . LF``, ``LF . CRLF`` and an
  overlong line followed by ``.`` end nothing (SMTP smuggling, CVE-2023-51764/51765/51766).
* Addresses and EHLO names are checked for syntax a receiving MTA would accept; control characters are
  refused (they would forge log lines or headers).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from certkit.core.text import printable  # the one escaping function; re-exported here

__all__ = [
    "MAX_COMMAND_LINE",
    "MAX_REPLY",
    "MAX_REPLY_LINE",
    "MAX_REPLY_LINES",
    "MAX_TEXT_LINE",
    "TOO_LONG",
    "BodyReader",
    "LineBuffer",
    "Path",
    "Reply",
    "Verb",
    "check_domain",
    "dot_stuff",
    "enhanced_status",
    "format_reply",
    "looks_like_smtp_text",
    "parse_capabilities",
    "parse_path",
    "printable",
]

#: Longest command line, CRLF included (RFC 5321 4.5.3.1.4).
MAX_COMMAND_LINE = 512
#: Longest text line of a message, CRLF included (RFC 5321 4.5.3.1.6).
MAX_TEXT_LINE = 1000
#: Longest reply line accepted, without the line ending (the RFC allows 512; real servers send more).
MAX_REPLY_LINE = 2048
#: Largest reply accepted, in octets.
MAX_REPLY = 64 * 1024
#: Most lines in one multi-line reply.
MAX_REPLY_LINES = 512


class Verb(enum.StrEnum):
    """SMTP commands, plus the pseudo-commands of the transition tables.

    ``GREETING`` stands for the banner, ``HANDSHAKE`` for the TLS handshake after STARTTLS, and
    ``MESSAGE`` for the message after ``354`` (answered after the final dot).
    """

    GREETING = "GREETING"
    EHLO = "EHLO"
    HELO = "HELO"
    STARTTLS = "STARTTLS"
    HANDSHAKE = "HANDSHAKE"
    MAIL = "MAIL"
    RCPT = "RCPT"
    DATA = "DATA"
    MESSAGE = "MESSAGE"
    RSET = "RSET"
    NOOP = "NOOP"
    VRFY = "VRFY"
    HELP = "HELP"
    QUIT = "QUIT"

    @property
    def pseudo(self) -> bool:
        """Not a command line: the banner, the handshake, the message."""
        return self in (Verb.GREETING, Verb.HANDSHAKE, Verb.MESSAGE)


#: Verbs that take no argument (RFC 5321 4.1.1; RFC 3207 for STARTTLS).
NO_ARGUMENT = frozenset({Verb.DATA, Verb.RSET, Verb.QUIT, Verb.STARTTLS})


# --- replies ----------------------------------------------------------------------------------------


# RFC 3463: class "." subject "." detail; the class must agree with the reply code's first digit.
_ENHANCED_RE = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?=\s|$)")


def enhanced_status(code: int, text: str) -> str | None:
    """The RFC 3463 status at the start of ``text`` (``4.7.5``), when its class agrees with ``code``."""
    m = _ENHANCED_RE.match(text)
    if m and int(m.group(1)) == code // 100:
        return m.group(0)
    return None


@dataclass(frozen=True)
class Reply:
    """One complete reply: the code, the RFC 3463 enhanced status (if any) and the text lines.

    ``command`` is the verb it answers (``GREETING`` for the banner, ``None`` for an unsolicited reply).
    ``lines`` hold the text after ``NNN-``/``NNN `` of each line, the enhanced status left in place.
    """

    code: int
    enhanced: str | None
    lines: tuple[str, ...]
    command: Verb | None = None

    @classmethod
    def of(cls, code: int, *lines: str, command: Verb | None = None) -> Reply:
        """A reply built from its parts (the enhanced status is read from the first line)."""
        texts = tuple(lines) or ("",)
        return cls(code, enhanced_status(code, texts[0]), texts, command)

    @property
    def positive(self) -> bool:
        """2xx or 3xx."""
        return 200 <= self.code < 400

    @property
    def transient(self) -> bool:
        """4xx."""
        return 400 <= self.code < 500

    @property
    def permanent(self) -> bool:
        """5xx."""
        return self.code >= 500

    @property
    def text(self) -> str:
        """The reply as one line of text, as an admin would quote it: ``454 4.7.5 Certificate ...``."""
        return f"{self.code} {' '.join(line for line in self.lines if line)}".rstrip()

    def wire_lines(self) -> list[str]:
        """The reply lines as they are on the wire (without line endings)."""
        last = len(self.lines) - 1
        return [f"{self.code}{' ' if i == last else '-'}{line}".rstrip() for i, line in enumerate(self.lines)]

    def wire(self) -> bytes:
        """The reply's wire bytes, CRLF after each line."""
        return format_reply(self.code, *self.lines)


def format_reply(code: int, *lines: str) -> bytes:
    """``250-first`` ... ``250 last`` with CRLF; line breaks and control characters in a text are escaped,
    so a text taken from the peer (an EHLO name, an address) cannot add a reply line."""
    if not 200 <= code <= 599:
        raise ValueError(f"{code} is not an SMTP reply code")
    texts = [printable(t) for t in (lines or ("",))]
    last = len(texts) - 1
    return b"".join(f"{code}{' ' if i == last else '-'}{t}".rstrip().encode("utf-8", "replace") + b"\r\n"
                    for i, t in enumerate(texts))


def parse_capabilities(reply: Reply) -> dict[str, str]:
    """EHLO keywords (upper case) and their parameters, from a positive EHLO reply (RFC 5321 4.1.1.1)."""
    caps: dict[str, str] = {}
    for line in reply.lines[1:]:
        words = line.strip().split(None, 1)
        if words:
            caps[words[0].upper()] = words[1] if len(words) > 1 else ""
    return caps


# --- text that came from the peer -------------------------------------------------------------------

_SMTP_LINE_RE = re.compile(rb"[2-5][0-9][0-9][ -]")
_TEXT_RE = re.compile(rb"[\t\r\n\x20-\x7e]+")


def looks_like_smtp_text(data: bytes) -> bool:
    """Whether ``data`` is SMTP-like plaintext (``NNN text`` or printable ASCII lines), not TLS records.

    Used on what a server sent where the TLS handshake was expected: text there is plaintext sent after
    the ``220`` to ``STARTTLS`` (response injection), not a broken TLS stack.
    """
    if not data or data[0] in (0x14, 0x15, 0x16, 0x17):  # TLS record content types
        return False
    return bool(_SMTP_LINE_RE.match(data) or _TEXT_RE.fullmatch(data))


# --- lines ------------------------------------------------------------------------------------------


class _TooLong:
    def __repr__(self) -> str:
        return "TOO_LONG"


#: Returned once per line that is longer than the limit.
TOO_LONG = _TooLong()


class LineBuffer:
    """Bytes in, lines out, never more than ``limit`` octets held for one line (its ending included).

    :meth:`next_line` returns a complete line without its ending, ``None`` when none is complete, or
    :data:`TOO_LONG` once per overlong line. ``limit`` counts the line ending unless ``ending_counts`` is
    false (reply lines, whose limit is on the text). An overlong line is reported as soon as ``limit`` octets
    without an end have arrived; whatever else of it arrives later is dropped up to and including its
    LF, and the following line is read from its start.

    ``crlf_only``: only CRLF ends a line (DATA); otherwise a bare LF does too (commands and replies, as
    Postfix and Exchange accept).
    """

    def __init__(self, limit: int, *, crlf_only: bool = False, ending_counts: bool = True) -> None:
        self.limit = limit
        self.crlf_only = crlf_only
        #: Whether the line ending counts toward ``limit`` (RFC 5321's command and text lines) or not (replies).
        self.ending_counts = ending_counts
        self._buf = bytearray()
        self._skipping = False  # inside the rest of an overlong line
        self._scan = 0          # where the search for the line end resumes

    def feed(self, data: bytes) -> None:
        """Add received bytes."""
        self._buf += data

    def __len__(self) -> int:
        return len(self._buf)

    def take_all(self) -> bytes:
        """Everything buffered, removed (for injected plaintext that must never be parsed)."""
        out = bytes(self._buf)
        self._buf.clear()
        self._scan = 0
        self._skipping = False
        return out

    def _end(self) -> tuple[int, int]:
        """(index of the line's end, length of the ending) or (-1, 0)."""
        buf = self._buf
        if not self.crlf_only:
            nl = buf.find(b"\n", self._scan)
            if nl < 0:
                self._scan = len(buf)
                return -1, 0
            return (nl - 1, 2) if nl > 0 and buf[nl - 1] == 0x0D else (nl, 1)
        i = buf.find(b"\r\n", self._scan)
        if i < 0:
            self._scan = max(0, len(buf) - 1)
            return -1, 0
        return i, 2

    def next_line(self) -> bytes | _TooLong | None:
        """The next line (without its ending), :data:`TOO_LONG`, or ``None`` when more bytes are needed."""
        while True:
            end, width = self._end()
            if end < 0:
                if self._skipping:
                    keep = 1 if self.crlf_only and self._buf.endswith(b"\r") else 0
                    del self._buf[: len(self._buf) - keep]
                    self._scan = 0
                    return None
                if self._partial_too_long():
                    # Report now: the client waiting for a reply must not wait for the end of the line.
                    keep = 1 if self.crlf_only and self._buf.endswith(b"\r") else 0
                    del self._buf[: len(self._buf) - keep]
                    self._scan = 0
                    self._skipping = True
                    return TOO_LONG
                return None
            line = bytes(self._buf[:end])
            del self._buf[: end + width]
            self._scan = 0
            if self._skipping:
                self._skipping = False
                continue
            if (end + width if self.ending_counts else end) > self.limit:
                return TOO_LONG
            return line

    def _partial_too_long(self) -> bool:
        """Whether the line received so far (no ending yet) is already longer than the limit allows."""
        size = len(self._buf)
        if self.ending_counts:
            return size >= self.limit
        # Without the ending: a final CR may still be the start of CRLF.
        return size > self.limit + (1 if self._buf.endswith(b"\r") else 0)


class BodyReader:
    """The message after ``354``: CRLF lines until ``CRLF . CRLF``, dot-stuffing removed, size-bounded.

    :meth:`feed` takes bytes and returns the number of octets of ``data`` that belong to the message
    (everything after the final dot is the client's next command, RFC 2920 pipelining) once the end is
    seen, else ``None``. Lines longer than :data:`MAX_TEXT_LINE` and messages larger than ``max_size``
    mark the message :attr:`oversized` (the server answers ``552`` after the final dot); their content is
    not kept, but the end of the message is still found exactly.
    """

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self.content = bytearray()
        self.oversized = False
        self.bare_newline = False   # a bare LF or CR was seen in the body
        self.done = False
        self._lines = LineBuffer(MAX_TEXT_LINE, crlf_only=True)

    def feed(self, data: bytes) -> bytes | None:
        """Take ``data``; once the final dot is seen, returns the bytes after it (possibly ``b""``)."""
        self._lines.feed(data)
        while True:
            line = self._lines.next_line()
            if line is None:
                return None
            if line is TOO_LONG:
                self.oversized = True
                self.content.clear()
                continue
            assert isinstance(line, bytes)
            if line == b".":
                self.done = True
                return self._lines.take_all()
            if b"\n" in line or b"\r" in line:
                self.bare_newline = True
            if line.startswith(b"."):
                line = line[1:]
            if not self.oversized:
                self.content += line + b"\r\n"
                if len(self.content) > self.max_size:
                    self.oversized = True
                    self.content.clear()


def dot_stuff(message: bytes) -> bytes:
    """``message`` as sent after ``354``: CRLF line endings, a dot doubled at the start of a line, the final
    ``.`` line. Bare LF and bare CR become CRLF, so the receiver cannot see an end where we meant none."""
    text = message.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    lines = text.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    body = b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n" for line in lines)
    return body + b".\r\n"


# --- command arguments ----------------------------------------------------------------------------------

# C0 and C1 controls, DEL, and the Unicode line and paragraph separators (str.splitlines() breaks on them).
_CONTROL_RE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_PATH_RE = re.compile(r"^(FROM|TO):[ ]?<([^<>]*)>(?:[ ]+(.*))?$", re.IGNORECASE | re.DOTALL)
# Negated classes (everything but ASCII specials) rather than ranges up to U+10FFFF: the same sets, and
# compiled in microseconds instead of milliseconds at every start-up. Controls are refused before these run.
_ATEXT = r"[^\x00-\x20\x7f\"(),.:;<>@\[\\\]]"
_LOCAL_RE = re.compile(rf'^(?:{_ATEXT}+(?:\.{_ATEXT}+)*|"(?:[^\x00-\x1f\x7f"\\]|\\[\x20-\x7e])*")$')
# Letters, digits and hyphens in ASCII; any non-ASCII character (UTF-8 domains, RFC 6531).
_LABEL_RE = re.compile(r"^(?!-)[^\x00-\x2c\x2e\x2f\x3a-\x40\x5b-\x60\x7b-\x7f]{1,63}(?<!-)$")
_LITERAL_RE = re.compile(r"^\[(?:IPv6:[0-9A-Fa-f:.]+|[0-9]{1,3}(?:\.[0-9]{1,3}){3})\]$")


@dataclass(frozen=True)
class Path:
    """A ``MAIL FROM``/``RCPT TO`` argument: the address (``""`` for the null path) and its parameters."""

    address: str
    parameters: tuple[str, ...] = ()

    @property
    def domain(self) -> str:
        """The domain part, lower case without a final dot (``""`` for the null path)."""
        return self.address.rsplit("@", 1)[1].lower().rstrip(".") if "@" in self.address else ""

    def parameter(self, keyword: str) -> str | None:
        """The value of an ESMTP parameter (``SIZE``), ``""`` for a keyword without value, or ``None``."""
        for p in self.parameters:
            key, _, value = p.partition("=")
            if key.upper() == keyword.upper():
                return value
        return None


def check_domain(name: str) -> str | None:
    """Why ``name`` is not a usable EHLO/HELO argument or address domain, or ``None`` when it is.

    A domain (labels of letters, digits, hyphens; UTF-8 allowed, RFC 6531) or an address literal
    (``[192.0.2.1]``, ``[IPv6:...]``). Control characters are never allowed.
    """
    if not name:
        return "it is empty"
    if _CONTROL_RE.search(name):
        return "it contains control characters"
    if name.startswith("["):
        return None if _LITERAL_RE.match(name) else "it is not a valid address literal"
    labels = name.rstrip(".").split(".")
    if len(name) > 255 or not all(_LABEL_RE.match(label) for label in labels):
        return "it is not a valid domain name"
    return None


def parse_path(argument: str, keyword: str) -> Path | str:
    """Parse ``FROM:<a@b> SIZE=10`` (``keyword`` ``"FROM"``) or ``TO:<a@b>``; the reason as a string on error.

    The null path ``<>`` is allowed for ``FROM`` only. Source routes (``<@a:b@c>``) are refused, as
    current MTAs do. Control characters anywhere are refused.
    """
    if _CONTROL_RE.search(argument):
        return "the address contains control characters"
    m = _PATH_RE.match(argument.strip())
    if not m or m.group(1).upper() != keyword:
        return f"expected {keyword}:<address>"
    address, rest = m.group(2), (m.group(3) or "").strip()
    params = tuple(rest.split()) if rest else ()
    if address == "":
        return Path("", params) if keyword == "FROM" else "the recipient must not be empty"
    local, at, domain = address.rpartition("@")
    if not at or not local or len(address) > 254 or len(local) > 64:
        return "the address is not local@domain"
    if not _LOCAL_RE.match(local):
        return "the local part of the address is not valid"
    why = check_domain(domain)
    if why is not None:
        return f"the domain of the address: {why}"
    return Path(address, params)
