"""Domain Security inbound for Postfix: the decision ``certkit postfix-policy`` takes, without I/O.

Postfix asks a policy service through SMTPD policy delegation (``check_policy_service``,
SMTPD_POLICY_README): one request is ``name=value`` lines ending with an empty line, the answer is
``action=...`` and an empty line, and one connection carries many requests. :class:`PolicyConnection`
is that protocol as bytes in, bytes out; :func:`decide` is the rule; :class:`PolicyTable` is the data
(``certkit-partners.json``, written by ``certkit config postfix --out``).

The rule, for a sender whose domain is a domain-secure partner's ``D`` (or a subdomain of it), in order:

1. the session uses TLS (``encryption_protocol``), else ``450 4.7.1`` "requires TLS and a client certificate";
2. the client presented a certificate (``ccert_fingerprint``), else ``450 4.7.1`` "requires a client certificate";
3. Postfix verified it against ``smtpd_tls_CAfile`` (every partner's anchors): Postfix sends
   ``ccert_subject``/``ccert_issuer`` only for a verified certificate, the fingerprints for any, so an
   empty issuer with a fingerprint means "not trusted" -- ``450 4.7.5``;
4. its SHA-256 certificate or public-key fingerprint is one ``D`` pinned in the trust store: accepted;
5. its issuer (the CN Postfix reports, of the CA that signed it) is the name of one of the CA certificates
   the trust store holds for ``D`` -- else ``450 4.7.5`` "from an issuer D does not use". This is how
   "validates against *that partner's* anchors" is told apart in one CA bundle: partner B's certificate
   has B's issuer, so it never passes for ``D``;
6. its subject CN is ``D`` or a host within it (:func:`certkit.core.names.domain_rank`), else ``450 4.7.5``
   "not issued for D".

Everything else (other senders, the null sender) gets ``DUNNO``: the next restriction decides.

Limits (Postfix tells a policy service the CNs and fingerprints, never the certificate): the name checked
is the subject CN, not the subjectAltNames Exchange reads; the issuer is known by its CN only, so a CA
trusted for another partner that deliberately names itself like ``D``'s CA could pass as ``D``'s issuer
(the generator refuses accidental clashes; pinning ``D``'s certificates closes the rest); revocation is
not checked (Postfix's smtpd does not read CRLs).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from certkit.core.names import dns_name, domain_rank
from certkit.core.text import printable
from certkit.errors import InputError, MalformedInputError

__all__ = [
    "FORMAT",
    "MAX_ATTRIBUTES",
    "MAX_LINE",
    "Decision",
    "PartnerRule",
    "PolicyConnection",
    "PolicyTable",
    "decide",
    "table_from_rules",
    "xtext_decode",
]

FORMAT = "certkit-postfix-partners"
VERSION = 1
#: Longest request line accepted (Postfix's longest, ``ccert_subject`` or ``sender``, stays far below).
MAX_LINE = 4096
#: Most attributes in one request (Postfix 3.7 sends about 30).
MAX_ATTRIBUTES = 128
#: Largest partners file read (a few hundred bytes per partner).
MAX_TABLE_BYTES = 16 * 1024 * 1024

_XTEXT = re.compile(r"\+([0-9A-Fa-f]{2})")
_HEX64 = re.compile(r"^[0-9A-F]{64}$")
_REPLY_LIMIT = 120


def xtext_decode(text: str) -> str:
    """RFC 3461 xtext as Postfix writes ``ccert_subject``/``ccert_issuer`` (``A+20CA`` is ``A CA``)."""
    raw = _XTEXT.sub(lambda m: chr(int(m.group(1), 16)), text)
    try:
        return raw.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return raw


def _fingerprint(text: str) -> str:
    return text.replace(":", "").strip().upper()


def _shown(text: str) -> str:
    """Text from the client (sender, certificate names) as it may appear in an SMTP reply: ASCII, one line."""
    return printable(text, _REPLY_LIMIT).encode("ascii", "backslashreplace").decode("ascii")


@dataclass(frozen=True)
class PartnerRule:
    """What one domain-secure partner's certificates must be."""

    domain: str
    #: the issuer names (subject CN, else O, as Postfix reports a certificate's issuer) of the partner's CAs
    issuers: frozenset[str] = frozenset()
    #: SHA-256 fingerprints (64 upper-case hex digits) of pinned certificates or public keys
    fingerprints: frozenset[str] = frozenset()

    def to_dict(self) -> dict[str, Any]:
        """The rule as plain data (one entry of ``certkit-partners.json``)."""
        return {"domain": self.domain, "issuers": sorted(self.issuers), "fingerprints": sorted(self.fingerprints)}


@dataclass(frozen=True)
class PolicyTable:
    """Every domain-secure partner, looked up by sender domain (the most specific partner domain wins)."""

    partners: tuple[PartnerRule, ...] = ()
    _by_domain: dict[str, PartnerRule] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_domain", {p.domain: p for p in self.partners})

    def partner_for(self, sender: str) -> PartnerRule | None:
        """The partner whose domain the envelope ``sender`` is in (its domain or a subdomain), or ``None``."""
        _, at, domain = sender.rpartition("@")
        if not at or not domain:
            return None
        try:
            name = dns_name(domain.strip().rstrip("."), allow_mixed_script=True)
        except InputError:
            return None  # an address literal or garbage is no partner's domain
        labels = name.split(".")
        for i in range(len(labels)):
            found = self._by_domain.get(".".join(labels[i:]))
            if found is not None:
                return found
        return None

    def to_json(self) -> bytes:
        """``certkit-partners.json``."""
        doc = {"format": FORMAT, "version": VERSION, "fingerprint_digest": "sha256",
               "partners": [p.to_dict() for p in sorted(self.partners, key=lambda p: p.domain)]}
        return (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes, *, source: str = "partners file") -> PolicyTable:
        """Read ``certkit-partners.json``; raises :class:`MalformedInputError` saying what is wrong."""
        fix = "Write it again with certkit config postfix --out DIR."
        if len(data) > MAX_TABLE_BYTES:
            raise MalformedInputError(f"{source} is over {MAX_TABLE_BYTES} bytes.", fix)
        try:
            doc = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise MalformedInputError(f"{source} is not JSON ({exc}).", fix) from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("version") != VERSION:
            raise MalformedInputError(f"{source} is not a {FORMAT} version {VERSION} file.", fix)
        entries = doc.get("partners")
        if not isinstance(entries, list):
            raise MalformedInputError(f"{source} has no partners list.", fix)
        rules = [_rule(e, source, fix) for e in entries]
        domains = [r.domain for r in rules]
        if len(set(domains)) != len(domains):
            raise MalformedInputError(f"{source} names a partner twice.", fix)
        return cls(tuple(rules))


def _strings(value: object, what: str, source: str, fix: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise MalformedInputError(f"{source}: {what} is not a list of strings.", fix)
    return list(value)


def _rule(entry: object, source: str, fix: str) -> PartnerRule:
    if not isinstance(entry, dict) or not isinstance(entry.get("domain"), str):
        raise MalformedInputError(f"{source}: a partner entry has no domain.", fix)
    try:
        domain = dns_name(entry["domain"])
    except InputError as exc:
        raise MalformedInputError(f"{source}: partner {printable(entry['domain'], 80)!r}: {exc.message}", fix) from None
    fps = [_fingerprint(f) for f in _strings(entry.get("fingerprints", []), "fingerprints", source, fix)]
    if not all(_HEX64.match(f) for f in fps):
        raise MalformedInputError(f"{source}: partner {domain}: a fingerprint is not 64 hex digits (SHA-256).", fix)
    return PartnerRule(domain, frozenset(_strings(entry.get("issuers", []), "issuers", source, fix)), frozenset(fps))


@dataclass(frozen=True)
class Decision:
    """The answer to one request: the ``action`` Postfix applies and why, as a short code."""

    action: str
    #: ``not-partner``, ``no-tls``, ``no-certificate``, ``not-trusted``, ``pinned``, ``issuer``, ``name``,
    #: ``accepted``, or ``malformed``
    reason: str
    partner: str | None = None

    @property
    def refused(self) -> bool:
        """A 4xx/5xx action, not ``DUNNO``."""
        return self.action[:1] in "45"


def _refuse(code: str, text: str, reason: str, partner: str) -> Decision:
    return Decision(f"450 {code} {text} (Domain Security)", reason, partner)


def decide(request: Mapping[str, str], table: PolicyTable) -> Decision:
    """The rule of the module docstring for one ``smtpd_access_policy`` request (attribute name -> value)."""
    sender = request.get("sender", "")
    rule = table.partner_for(sender)
    if rule is None:
        return Decision("DUNNO", "not-partner")
    d = rule.domain
    who = f"partner {d}"  # smtpd writes "<sender>: Sender address rejected: " before it
    if not request.get("encryption_protocol"):
        return _refuse("4.7.1", f"{who} requires TLS and a client certificate", "no-tls", d)
    fingerprint = _fingerprint(request.get("ccert_fingerprint", ""))
    if not fingerprint:
        return _refuse("4.7.1", f"{who} requires a client certificate", "no-certificate", d)
    issuer = xtext_decode(request.get("ccert_issuer", ""))
    subject = xtext_decode(request.get("ccert_subject", ""))
    if not issuer:
        return _refuse("4.7.5", f"{who}: client certificate not trusted (it does not chain to an anchor we hold)",
                       "not-trusted", d)
    if fingerprint in rule.fingerprints or _fingerprint(request.get("ccert_pubkey_fingerprint", "")) in \
            rule.fingerprints:
        return Decision("DUNNO", "pinned", d)
    if issuer not in rule.issuers:
        return _refuse("4.7.5", f"{who}: certificate from an issuer {d} does not use ({_shown(issuer)})", "issuer", d)
    if domain_rank(subject, d) is None:
        return _refuse("4.7.5", f"{who}: certificate not issued for {d} (CN {_shown(subject) or 'missing'})",
                       "name", d)
    return Decision("DUNNO", "accepted", d)


class PolicyConnection:
    """One connection from Postfix's smtpd: :meth:`receive` the bytes read, send back what it returns.

    Hostile or broken input gets a clean refusal, never an exception: a line over :data:`MAX_LINE` bytes or
    more than :data:`MAX_ATTRIBUTES` attributes is answered with ``451 4.3.5`` and :attr:`closed` is set
    (the driver then closes the connection); a line without ``=``, a repeated attribute or another request
    type is answered with ``451 4.3.5`` at the end of that request. Without a table (``table_error`` says why
    the partners file could not be read) every request gets ``451 4.3.5``, like Postfix's own answer when
    its policy service fails: mail waits at the sender until the file is fixed.
    """

    def __init__(self, table: PolicyTable | None, *, table_error: str = "no partners table") -> None:
        self.table = table
        self.table_error = table_error
        self.closed = False
        #: the decisions taken so far, oldest first (for tests and logs)
        self.decisions: list[Decision] = []
        self._buffer = b""
        self._attrs: dict[str, str] = {}
        self._lines = 0
        self._problem: str | None = None

    def receive(self, data: bytes) -> bytes:
        """Feed bytes from Postfix; returns the bytes to write back (possibly empty)."""
        if self.closed:
            return b""
        self._buffer += data
        out: list[bytes] = []
        while not self.closed:
            line, nl, rest = self._buffer.partition(b"\n")
            if not nl:
                if len(self._buffer) > MAX_LINE:
                    out.append(self._fatal("a request line is too long"))
                break
            self._buffer = rest
            if len(line) > MAX_LINE:
                out.append(self._fatal("a request line is too long"))
            elif line in (b"", b"\r"):
                out.append(self._answer())
            else:
                self._lines += 1
                self._attribute(line.rstrip(b"\r"))
                if self._lines > MAX_ATTRIBUTES:
                    out.append(self._fatal("too many attributes"))
        return b"".join(out)

    def _attribute(self, line: bytes) -> None:
        name, eq, value = line.decode("utf-8", "replace").partition("=")
        if not eq or not name:
            self._problem = self._problem or "a line without name=value"
        elif name in self._attrs:
            self._problem = self._problem or f"attribute {_shown(name)} given twice"
        else:
            self._attrs[name] = value

    def _answer(self) -> bytes:
        attrs, problem = self._attrs, self._problem
        self._attrs, self._problem, self._lines = {}, None, 0
        if problem is None and attrs.get("request") != "smtpd_access_policy":
            problem = "not an smtpd_access_policy request"
        if problem is not None:
            decision = Decision(f"451 4.3.5 certkit postfix-policy: malformed request ({problem})", "malformed")
        elif self.table is None:
            decision = Decision(f"451 4.3.5 certkit postfix-policy: {_shown(self.table_error)}", "malformed")
        else:
            decision = decide(attrs, self.table)
        self.decisions.append(decision)
        return f"action={decision.action}\n\n".encode("ascii")

    def _fatal(self, problem: str) -> bytes:
        self.closed = True
        self._buffer = b""
        decision = Decision(f"451 4.3.5 certkit postfix-policy: malformed request ({problem})", "malformed")
        self.decisions.append(decision)
        return f"action={decision.action}\n\n".encode("ascii")


def table_from_rules(rules: Iterable[PartnerRule]) -> PolicyTable:
    """A table from ``rules``, merging rules for the same domain."""
    merged: dict[str, PartnerRule] = {}
    for r in rules:
        old = merged.get(r.domain)
        merged[r.domain] = r if old is None else PartnerRule(r.domain, old.issuers | r.issuers,
                                                             old.fingerprints | r.fingerprints)
    return PolicyTable(tuple(merged[d] for d in sorted(merged)))
