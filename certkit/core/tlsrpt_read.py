"""Reading RFC 8460 (SMTP TLS Reporting) aggregate reports that partners send us, and tying them to causes.

Two halves, both pure (bytes and data in, data out):

* :func:`parse_report`: the JSON of one report -> :class:`Report`. Tolerant the way real senders need it:
  optional fields that are missing are ``None`` (Microsoft leaves out ``mx-host``, ``failure-details`` when
  nothing failed, ``sending-mta-ip`` and ``receiving-mx-hostname`` on policy-fetch errors; the Postfix
  reporter leaves out ``policy-domain`` for ``no-policy-found``; Google sends ``"sending-mta-ip": ""``),
  unknown fields are ignored, keys are matched without regard to case, ``-`` or ``_``, ``mx-host-pattern``
  (RFC 8460 §4.4's prose) is read as ``mx-host`` (its JSON), a count sent as a string is read as a number,
  and a ``policy-string`` that holds a JSON-encoded list (Microsoft's ``tlsa`` policies) is unpacked. Each
  tolerance applied is kept in :attr:`Report.notes`. Hostile input (not UTF-8, not JSON, nested without
  end, the wrong shape) is one :class:`~certkit.errors.MalformedInputError` per report, never a traceback.
* :func:`analyse`: reports -> :class:`Analysis`: sessions per day, reporting organisation and policy, and the
  failures grouped into :class:`Cause` s, each tied where it can be to certkit's finding code (the catalogue
  entries with that ``tlsrpt_result_type``, narrowed by the ``failure-reason-code``), to our certificate for
  the receiving MX host (by serial and thumbprint, when the CA issued one), and to the remedy.

In a report we receive we are the *receiving* domain: a catalogue code whose side is ``theirs`` (the server
a sender reached) describes our own MX host here.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID

from certkit.core.extensions import san_dns_names
from certkit.core.findings import CATALOGUE
from certkit.core.jsonfacts import certificate_facts, rfc3339, rfc3339_or_none, serial_hex
from certkit.core.text import printable
from certkit.errors import MalformedInputError

__all__ = [
    "POLICY_TYPES",
    "RESULT_TYPES",
    "Analysis",
    "Cause",
    "DateRange",
    "FailureDetail",
    "KnownCertificate",
    "Policy",
    "PolicyResult",
    "ReadFailure",
    "Report",
    "ReportHint",
    "SummaryRow",
    "TiedCertificate",
    "analyse",
    "parse_report",
]

#: RFC 8460 §4.3's result types (and §4.3.2.2's ``sts-policy-fetch-error``), in the RFC's words.
RESULT_TYPES: Mapping[str, str] = {
    "starttls-not-supported": "The receiving MX did not offer STARTTLS.",
    "certificate-host-mismatch": "The certificate the MX presented does not name the MX host the policy allows.",
    "certificate-expired": "The certificate the MX presented has expired.",
    "certificate-not-trusted": "The certificate the MX presented does not chain to a root the sender trusts.",
    "validation-failure": "A failure not covered by another type (the failure-reason-code says more).",
    "tlsa-invalid": "None of the MX host's TLSA records matched the certificate chain it presented (DANE).",
    "dnssec-invalid": "The TLSA lookup for the MX host did not validate (DNSSEC bogus or SERVFAIL).",
    "dane-required": "The sender requires DANE and the MX host has no DNSSEC-validated TLSA records.",
    "sts-policy-fetch-error": "The sender could not fetch the MTA-STS policy over HTTPS.",
    "sts-policy-invalid": "The MTA-STS policy could not be parsed, or it does not list the MX host.",
    "sts-webpki-invalid": "The certificate of the MTA-STS policy host (mta-sts.DOMAIN) did not validate.",
}
#: RFC 8460 §4.4's policy types.
POLICY_TYPES = ("sts", "tlsa", "no-policy-found")

#: Remedies for result types no catalogue code carries, and for the policy-level MTA-STS ones, whose catalogue
#: remedies speak of "that URL": from a report we know the domain, so the remedy names the URL.
_REMEDIES: Mapping[str, str] = {
    "sts-policy-fetch-error": "Serve the policy at https://mta-sts.DOMAIN/.well-known/mta-sts.txt (HTTPS, "
                              "status 200, text/plain) and check that the mta-sts host resolves from outside.",
    "sts-policy-invalid": "Correct the policy file (version: STSv1, mode, one mx: line per MX host, max_age) and "
                          "bump the id= in the _mta-sts TXT record.",
    "sts-webpki-invalid": "Serve mta-sts.DOMAIN with a publicly trusted certificate that names it, with its "
                          "chain.",
    "validation-failure": "Read the failure-reason-code; probe the MX host from outside: certkit probe DOMAIN.",
}

#: The catalogue code a result type most often means (a ``failure-reason-code`` can say better).
_PRIMARY: Mapping[str, str] = {
    "certificate-expired": "cert.expired",
    "certificate-host-mismatch": "name.host-mismatch",
    "certificate-not-trusted": "chain.unknown-issuer",
    "starttls-not-supported": "smtp.no-starttls",
    "tlsa-invalid": "dane.no-match",
    "dnssec-invalid": "dane.dnssec-bogus",
    "dane-required": "dane.not-published",
}

#: Words of a ``failure-reason-code`` (OpenSSL's X509_V_ERR names, Windows' and senders' texts) -> catalogue code.
_REASONS: tuple[tuple[str, str], ...] = (
    ("CERT_HAS_EXPIRED", "cert.expired"), ("CERTIFICATE HAS EXPIRED", "cert.expired"),
    ("CERT_NOT_YET_VALID", "cert.not-yet-valid"),
    ("DEPTH_ZERO_SELF_SIGNED", "chain.self-signed"), ("SELF_SIGNED", "chain.self-signed"),
    ("SELF-SIGNED", "chain.self-signed"),
    ("UNABLE_TO_GET_ISSUER_CERT", "chain.missing-intermediate"),
    ("UNABLE_TO_VERIFY_LEAF_SIGNATURE", "chain.missing-intermediate"),
    ("UNTRUSTED", "chain.unknown-issuer"), ("NOT TRUSTED", "chain.unknown-issuer"),
    ("HOSTNAME_MISMATCH", "name.host-mismatch"), ("HOST MISMATCH", "name.host-mismatch"),
    ("CERT_REVOKED", "revocation.revoked"), ("REVOKED", "revocation.revoked"),
    ("UNABLE_TO_GET_CRL", "revocation.unreachable"), ("CRL_HAS_EXPIRED", "revocation.crl-stale"),
    ("CERT_CHAIN_TOO_LONG", "chain.too-deep"), ("PATH_LENGTH_EXCEEDED", "chain.path-length"),
    ("INVALID_PURPOSE", "eku.no-server-auth"),
    ("PROTOCOL_VERSION", "tls.handshake-failed"), ("HANDSHAKE", "tls.handshake-failed"),
)

#: A certificate issued this long before a report's period is "new" for it (a DANE rollover in progress).
_RECENT = _dt.timedelta(days=7)
#: How deep a report's JSON may nest (a report is five levels deep; unknown fields get room to spare).
MAX_DEPTH = 64
_SHOWN = 200


# --- the report ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DateRange:
    """The period a report covers (RFC 8460 recommends one UTC day)."""

    start: _dt.datetime
    end: _dt.datetime


@dataclass(frozen=True)
class Policy:
    """The policy the sender applied (``policy`` object): its type, domain, text and MX host patterns."""

    type: str
    domain: str | None
    strings: tuple[str, ...] = ()
    mx_hosts: tuple[str, ...] = ()


@dataclass(frozen=True)
class FailureDetail:
    """One ``failure-details`` entry: a result type, how many sessions, and where (every field but the type
    and count is optional in practice)."""

    result_type: str
    sessions: int
    sending_mta_ip: str | None = None
    receiving_mx_hostname: str | None = None
    receiving_mx_helo: str | None = None
    receiving_ip: str | None = None
    additional_information: str | None = None
    failure_reason_code: str | None = None


@dataclass(frozen=True)
class PolicyResult:
    """One entry of ``policies``: the policy, its session counts and its failures."""

    policy: Policy
    successful: int
    failed: int
    failures: tuple[FailureDetail, ...] = ()


@dataclass(frozen=True)
class ReportHint:
    """What the envelope says about a report: the e-mail's ``TLS-Report-Submitter`` and ``TLS-Report-Domain``
    headers and the RFC 8460 §5.1 file name (``sender!policy-domain!begin!end[!id].json[.gz]``). Used where
    the JSON leaves a field out."""

    submitter: str | None = None
    policy_domain: str | None = None
    start: _dt.datetime | None = None
    end: _dt.datetime | None = None
    report_id: str | None = None


@dataclass(frozen=True)
class Report:
    """One aggregate report, as read. ``notes`` lists each tolerance applied (what was missing or odd)."""

    source: str
    organization: str
    contact: str | None
    report_id: str | None
    date_range: DateRange | None
    policies: tuple[PolicyResult, ...]
    notes: tuple[str, ...] = ()

    @property
    def day(self) -> _dt.date | None:
        """The UTC day the report is for (its start)."""
        return None if self.date_range is None else self.date_range.start.astimezone(_dt.UTC).date()

    def to_dict(self) -> dict[str, Any]:
        r = self.date_range
        return {
            "source": self.source,
            "organization": self.organization,
            "contact": self.contact,
            "report_id": self.report_id,
            "start": None if r is None else rfc3339(r.start),
            "end": None if r is None else rfc3339(r.end),
            "policies": [{
                "policy_type": p.policy.type,
                "policy_domain": p.policy.domain,
                "policy_strings": list(p.policy.strings),
                "mx_hosts": list(p.policy.mx_hosts),
                "successful_sessions": p.successful,
                "failed_sessions": p.failed,
                "failure_details": len(p.failures),
            } for p in self.policies],
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class ReadFailure:
    """A file (or an attachment of one) that held no readable report, and why, in one line."""

    source: str
    error: str

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "error": self.error}


class _Reader:
    """Reads one report's JSON object, collecting the tolerances it applies."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.notes: list[str] = []

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def fail(self, what: str) -> MalformedInputError:
        return MalformedInputError(f"{printable(self.source, _SHOWN)}: {what}.",
                                   "Ask the sender for the report again; certkit read the other files.")

    def get(self, obj: Mapping[str, Any], *names: str) -> Any:
        """The value of the first of ``names`` in ``obj``, keys compared without case, ``-`` or ``_``."""
        for name in names:
            if name in obj:
                return obj[name]
        wanted = {_norm(n) for n in names}
        for key, value in obj.items():
            if _norm(key) in wanted:
                self.note(f"key {printable(key, 60)!r} read as {names[0]!r}")
                return value
        return None

    def text(self, obj: Mapping[str, Any], *names: str) -> str | None:
        value = self.get(obj, *names)
        if value is None:
            return None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            self.note(f"{names[0]} is not text; ignored")
            return None
        value = value.strip()
        return value or None

    def count(self, obj: Mapping[str, Any], name: str) -> int | None:
        value = self.get(obj, name)
        if value is None:
            return None
        if isinstance(value, bool):
            self.note(f"{name} is true/false; read as 0")
            return 0
        if isinstance(value, int):
            return max(value, 0)
        if isinstance(value, float) and value.is_integer() and 0 <= value < 2**63:
            return int(value)
        if isinstance(value, str) and re.fullmatch(r"\s*\d{1,18}\s*", value):
            self.note(f"{name} sent as a string")
            return int(value)
        self.note(f"{name} {printable(str(value), 40)!r} is not a count; read as 0")
        return 0

    def strings(self, value: Any, name: str) -> tuple[str, ...]:
        if value is None:
            return ()
        if isinstance(value, str):
            self.note(f"{name} sent as one string, not a list")
            value = [value]
        if not isinstance(value, list):
            self.note(f"{name} is not a list; ignored")
            return ()
        return tuple(v.strip() for v in value if isinstance(v, str) and v.strip())


def _norm(key: str) -> str:
    return key.lower().replace("-", "").replace("_", "")


def _time(value: Any) -> _dt.datetime | None:
    """An RFC 3339 time (also: a space for ``T``, no zone = UTC, fractions, a bare date, or Unix seconds)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return _dt.datetime.fromtimestamp(value, _dt.UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if not isinstance(value, str) or len(value) > 64:
        return None
    text = value.strip()
    if text[-1:] in ("Z", "z"):
        text = text[:-1] + "+00:00"
    try:
        at = _dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return (at if at.tzinfo is not None else at.replace(tzinfo=_dt.UTC)).astimezone(_dt.UTC)


def _date_range(r: _Reader, doc: Mapping[str, Any], hint: ReportHint) -> DateRange | None:
    raw = r.get(doc, "date-range")
    start = end = None
    if isinstance(raw, Mapping):
        start = _time(r.get(raw, "start-datetime", "start-date-time", "start"))
        end = _time(r.get(raw, "end-datetime", "end-date-time", "end"))
    if start is None and hint.start is not None:
        r.note("date-range missing or unreadable; taken from the file name")
        start, end = hint.start, hint.end or hint.start
    if start is None:
        r.note("date-range missing or unreadable")
        return None
    if end is None or end < start:
        r.note("date-range end missing or before its start")
        end = start
    return DateRange(start, end)


def _policy_strings(r: _Reader, value: Any) -> tuple[str, ...]:
    strings = r.strings(value, "policy-string")
    # Microsoft sends a tlsa policy as one string holding a JSON list of the records: ["[\"3 1 1 ...\"]"].
    if len(strings) == 1 and strings[0].startswith("["):
        try:
            inner = json.loads(strings[0])
        except ValueError:
            return strings
        if isinstance(inner, list) and all(isinstance(v, str) for v in inner):
            r.note("policy-string held a JSON-encoded list; unpacked")
            return tuple(v.strip() for v in inner if v.strip())
    return strings


def _policy(r: _Reader, raw: Any, hint: ReportHint) -> Policy:
    if not isinstance(raw, Mapping):
        r.note("a policy entry without a policy object; read as no-policy-found")
        return Policy("no-policy-found", hint.policy_domain)
    kind = (r.text(raw, "policy-type") or "").lower()
    if kind not in POLICY_TYPES:
        r.note(f"policy-type {printable(kind, 40)!r} is not one of RFC 8460's" if kind else "policy-type missing")
        kind = kind or "no-policy-found"
    domain = r.text(raw, "policy-domain")
    if domain is None and hint.policy_domain:
        r.note("policy-domain missing; taken from the envelope")
        domain = hint.policy_domain
    mx = r.get(raw, "mx-host", "mx-host-pattern", "mx-hosts")
    return Policy(kind, domain.lower().rstrip(".") if domain else None,
                  _policy_strings(r, r.get(raw, "policy-string")), r.strings(mx, "mx-host"))


def _failure(r: _Reader, raw: Any) -> FailureDetail | None:
    if not isinstance(raw, Mapping):
        r.note("a failure-details entry that is not an object; skipped")
        return None
    kind = (r.text(raw, "result-type") or "").lower()
    if not kind:
        r.note("a failure-details entry without result-type; read as validation-failure")
        kind = "validation-failure"
    elif kind not in RESULT_TYPES:
        r.note(f"result-type {printable(kind, 40)!r} is not one of RFC 8460's")
    sessions = r.count(raw, "failed-session-count")
    if sessions is None:
        r.note("failed-session-count missing; read as 1")
        sessions = 1
    host = r.text(raw, "receiving-mx-hostname")
    return FailureDetail(kind, sessions, r.text(raw, "sending-mta-ip"),
                         host.lower().rstrip(".") if host else None, r.text(raw, "receiving-mx-helo"),
                         r.text(raw, "receiving-ip"), r.text(raw, "additional-information"),
                         r.text(raw, "failure-reason-code"))


def _policy_result(r: _Reader, raw: Any, hint: ReportHint) -> PolicyResult | None:
    if not isinstance(raw, Mapping):
        r.note("a policies entry that is not an object; skipped")
        return None
    policy = _policy(r, r.get(raw, "policy"), hint)
    details = r.get(raw, "failure-details")
    if details is None:
        details = []
    elif not isinstance(details, list):
        r.note("failure-details is not a list; ignored")
        details = []
    failures = tuple(f for f in (_failure(r, d) for d in details) if f is not None)
    summary = r.get(raw, "summary")
    ok = failed = None
    if isinstance(summary, Mapping):
        ok = r.count(summary, "total-successful-session-count")
        failed = r.count(summary, "total-failure-session-count")
    else:
        r.note("summary missing; counted from failure-details")
    if ok is None:
        ok = 0
    if failed is None:
        failed = sum(f.sessions for f in failures)
    return PolicyResult(policy, ok, failed, failures)


def _load_json(data: bytes, source: str) -> Any:
    r = _Reader(source)
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise r.fail(f"not UTF-8 (byte {exc.start}); a TLS-RPT report is UTF-8 JSON (RFC 8460 §4.4)") from None
    if not text.strip():
        raise r.fail("empty")
    if _too_deep(text):
        raise r.fail(f"JSON nested more than {MAX_DEPTH} levels deep; not a TLS-RPT report")
    try:
        return json.loads(text)
    except RecursionError:
        raise r.fail("JSON nested too deep; not a TLS-RPT report") from None
    except ValueError as exc:
        where = f"line {exc.lineno} column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else "somewhere"
        what = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
        raise r.fail(f"not JSON ({printable(what, 80)} at {where})") from None


_BRACKETS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def _too_deep(text: str) -> bool:
    """Whether the JSON nests deeper than :data:`MAX_DEPTH` (strings skipped), before the parser recurses."""
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return False
    depth = 0
    for m in _BRACKETS.finditer(text):
        c = m.group()
        if c in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                return True
        elif c in "]}":
            depth -= 1
    return False


def parse_report(data: bytes, *, source: str = "report", hint: ReportHint | None = None) -> Report:
    """The report in ``data`` (UTF-8 JSON, RFC 8460 §4.4), read as tolerantly as real senders need.

    ``hint`` fills what the JSON leaves out (from the e-mail headers or the file name). Raises
    :class:`~certkit.errors.MalformedInputError`, one line naming ``source``, when ``data`` is not a report.
    """
    hint = hint or ReportHint()
    doc = _load_json(data, source)
    r = _Reader(source)
    if not isinstance(doc, Mapping):
        raise r.fail(f"JSON {type(doc).__name__.replace('dict', 'object')} where a report object belongs")
    policies_raw = r.get(doc, "policies")
    known = {_norm(k) for k in ("organization-name", "date-range", "contact-info", "report-id", "policies")}
    if policies_raw is None and not known & {_norm(k) for k in doc}:
        raise r.fail("a JSON object without any TLS-RPT field (organization-name, date-range, policies)")
    if policies_raw is None:
        r.note("policies missing")
        policies_raw = []
    elif not isinstance(policies_raw, list):
        raise r.fail("policies is not a list")
    organization = r.text(doc, "organization-name", "organisation-name")
    if organization is None:
        r.note("organization-name missing" + ("; the submitter named instead" if hint.submitter else ""))
        organization = hint.submitter or "(unnamed)"
    report_id = r.text(doc, "report-id") or hint.report_id
    policies = tuple(p for p in (_policy_result(r, raw, hint) for raw in policies_raw) if p is not None)
    return Report(source, organization, r.text(doc, "contact-info"), report_id, _date_range(r, doc, hint),
                  policies, tuple(r.notes))


# --- our certificates ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class KnownCertificate:
    """A certificate our CA issued (``status``: ``valid`` or ``revoked`` as the CA records it)."""

    cert: x509.Certificate
    status: str = "valid"
    revoked_at: _dt.datetime | None = None

    @property
    def names(self) -> tuple[str, ...]:
        cns = [str(a.value) for a in self.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
        return tuple(dict.fromkeys(n.lower().rstrip(".") for n in [*san_dns_names(self.cert), *cns]))

    def names_host(self, host: str) -> bool:
        """Whether the certificate names ``host`` (RFC 6125: a wildcard stands for one left-most label)."""
        host = host.lower().rstrip(".")
        for name in self.names:
            if name == host:
                return True
            if name.startswith("*.") and host.count(".") >= 2 and host.split(".", 1)[1] == name[2:]:
                return True
        return False

    def valid_between(self, start: _dt.datetime, end: _dt.datetime) -> bool:
        if self.revoked_at is not None and self.revoked_at <= start:
            return False
        return self.cert.not_valid_before_utc <= end and self.cert.not_valid_after_utc >= start


@dataclass(frozen=True)
class TiedCertificate:
    """Our certificate a cause is tied to, and why (one sentence)."""

    certificate: KnownCertificate
    why: str

    def to_dict(self) -> dict[str, Any]:
        c = self.certificate
        return {**certificate_facts(c.cert), "status": c.status, "revoked_at": rfc3339_or_none(c.revoked_at),
                "why": self.why}


# --- the analysis ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SummaryRow:
    """Sessions one organisation reported for one policy on one day, with the failures by result type."""

    day: _dt.date | None
    organization: str
    policy_type: str
    policy_domain: str | None
    successful: int
    failed: int
    result_types: Mapping[str, int]

    def to_dict(self) -> dict[str, Any]:
        return {"day": None if self.day is None else self.day.isoformat(), "organization": self.organization,
                "policy_type": self.policy_type, "policy_domain": self.policy_domain,
                "successful_sessions": self.successful, "failed_sessions": self.failed,
                "result_types": dict(self.result_types)}


@dataclass(frozen=True)
class Cause:
    """Failures of one kind at one MX host (result type, policy, host, reason), over every report, tied to
    certkit's finding code, our certificate and the remedy where that can be done."""

    result_type: str
    policy_type: str
    policy_domain: str | None
    mx_host: str | None
    failure_reason_code: str | None
    sessions: int
    organizations: tuple[str, ...]
    receiving_ips: tuple[str, ...]
    first_day: _dt.date | None
    last_day: _dt.date | None
    code: str | None
    codes: tuple[str, ...]
    explanation: str
    remedy: str
    certificate: TiedCertificate | None = None
    additional_information: tuple[str, ...] = ()

    @property
    def title(self) -> str:
        return CATALOGUE[self.code].title if self.code else self.result_type

    def to_dict(self) -> dict[str, Any]:
        return {
            "result_type": self.result_type, "policy_type": self.policy_type, "policy_domain": self.policy_domain,
            "mx_host": self.mx_host, "failure_reason_code": self.failure_reason_code, "sessions": self.sessions,
            "organizations": list(self.organizations), "receiving_ips": list(self.receiving_ips),
            "first_day": None if self.first_day is None else self.first_day.isoformat(),
            "last_day": None if self.last_day is None else self.last_day.isoformat(),
            "code": self.code, "codes": list(self.codes), "title": self.title, "explanation": self.explanation,
            "remedy": self.remedy, "additional_information": list(self.additional_information),
            "certificate": None if self.certificate is None else self.certificate.to_dict(),
        }


@dataclass(frozen=True)
class Analysis:
    """What a set of reports says: the reports, the files that could not be read, sessions per day and
    organisation and policy, and the causes of the failures (most sessions first)."""

    at: _dt.datetime
    reports: tuple[Report, ...]
    failures: tuple[ReadFailure, ...] = ()
    rows: tuple[SummaryRow, ...] = ()
    causes: tuple[Cause, ...] = ()
    certificates_known: int = 0
    #: Reports read twice (same organisation, report-id and start), counted once; their sources.
    duplicates: tuple[str, ...] = ()

    @property
    def successful(self) -> int:
        return sum(r.successful for r in self.rows)

    @property
    def failed(self) -> int:
        return sum(r.failed for r in self.rows)

    @property
    def exit_code(self) -> int:
        """0: no failed sessions; 1: failures reported; 2: nothing could be read at all."""
        if not self.reports and self.failures:
            return 2
        return 1 if self.failed else 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "at": rfc3339(self.at),
            "totals": {"reports": len(self.reports), "unreadable": len(self.failures),
                       "successful_sessions": self.successful, "failed_sessions": self.failed,
                       "duplicates": len(self.duplicates), "causes": len(self.causes),
                       "certificates_known": self.certificates_known},
            "summary": [r.to_dict() for r in self.rows],
            "causes": [c.to_dict() for c in self.causes],
            "reports": [r.to_dict() for r in self.reports],
            "unreadable": [f.to_dict() for f in self.failures],
            "duplicates": list(self.duplicates),
        }


def _codes_for(result_type: str) -> tuple[str, ...]:
    return tuple(c.code for c in CATALOGUE.values() if c.tlsrpt_result_type == result_type)


def _code_for(result_type: str, policy_type: str, reason: str | None) -> str | None:
    if reason:
        if reason in CATALOGUE:  # certkit's own reports carry the finding code (certkit preflight --tlsrpt)
            return reason
        upper = reason.upper()
        for words, code in _REASONS:
            if words in upper:
                return code
    if result_type == "starttls-not-supported" and policy_type == "tlsa":
        return "dane.starttls-missing"
    primary = _PRIMARY.get(result_type)
    if primary is not None and primary in CATALOGUE:
        return primary
    codes = _codes_for(result_type)
    return codes[0] if len(codes) == 1 or (codes and result_type.startswith("sts-")) else None


def _tie(result_type: str, host: str | None, first: _dt.datetime, last: _dt.datetime,
         certificates: Sequence[KnownCertificate], at: _dt.datetime) -> tuple[TiedCertificate | None, str | None]:
    """Our certificate for ``host`` in the period, and a sentence for the remedy when there is something to do."""
    if host is None or not certificates:
        return None, None
    named = [c for c in certificates if c.names_host(host)]
    if not named:
        return None, (f"Our CA has issued no certificate that names {host}: issue one (certkit ca issue {host}) "
                      f"and install it on that host, or check which certificate the host presents "
                      f"(certkit probe {host}).")
    newest = max(named, key=lambda c: c.cert.not_valid_after_utc)
    current = [c for c in named if c.status == "valid" and c.cert.not_valid_before_utc <= at
               <= c.cert.not_valid_after_utc]
    replacement = max(current, key=lambda c: c.cert.not_valid_after_utc) if current else None
    if result_type == "certificate-expired":
        expired = [c for c in named if c.cert.not_valid_after_utc <= last]
        if expired:
            gone = max(expired, key=lambda c: c.cert.not_valid_after_utc)
            why = f"our certificate for {host} expired at {rfc3339(gone.cert.not_valid_after_utc)}"
            if replacement is not None and replacement is not gone:
                sid = _serial(replacement)
                return TiedCertificate(gone, why), (f"A renewal exists (serial {sid}, valid to "
                                                    f"{rfc3339(replacement.cert.not_valid_after_utc)}): install it "
                                                    f"on {host} and restart the SMTP service.")
            return TiedCertificate(gone, why), f"Renew it (certkit ca renew {_serial(gone)}) and install it on {host}."
    during = [c for c in named if c.valid_between(first, last)]
    if during:
        chosen = max(during, key=lambda c: c.cert.not_valid_after_utc)
        why = f"our certificate for {host} during the reported period"
        if chosen.status == "revoked":
            return TiedCertificate(chosen, why + " (revoked)"), (f"It is revoked: issue a new one (certkit ca issue "
                                                                  f"{host}) and install it on {host}.")
        if result_type == "certificate-host-mismatch":
            return TiedCertificate(chosen, why), (f"Serial {_serial(chosen)} names {host}, so the host presented "
                                                  f"another certificate: install serial {_serial(chosen)} on {host} "
                                                  f"(check with certkit probe {host}).")
        older = [c for c in named if c.cert.not_valid_before_utc < chosen.cert.not_valid_before_utc]
        if result_type == "tlsa-invalid" and older and chosen.cert.not_valid_before_utc >= first - _RECENT:
            before = max(older, key=lambda c: c.cert.not_valid_before_utc)
            return TiedCertificate(chosen, why + f" (it replaced serial {_serial(before)} on "
                                   f"{chosen.cert.not_valid_before_utc.date()})"), (
                f"The TLSA records probably still name the certificate it replaced: publish records for the new "
                f"one (certkit dane tlsa {host}), keeping the old ones until every resolver has the new ones "
                f"(certkit dane rollover plans it).")
        return TiedCertificate(chosen, why), None
    return TiedCertificate(newest, f"our newest certificate for {host} (not valid during the reported period)"), \
        f"No certificate of ours for {host} was valid then: issue one (certkit ca issue {host}) and install it."


def _serial(c: KnownCertificate) -> str:
    return serial_hex(c.cert.serial_number)


def _remedy(code: str | None, result_type: str, host: str | None, domain: str | None,
            tied: TiedCertificate | None, extra: str | None) -> str:
    if result_type in _REMEDIES and (result_type.startswith("sts-") or not code):
        text = _REMEDIES[result_type] + (" Then check: certkit mta-sts check DOMAIN." if code else "")
    elif code:
        text = CATALOGUE[code].remedy
    else:
        text = "Probe the MX host: certkit probe DOMAIN."
    # Placeholders are filled in where they are a command's argument (certkit ca renew SERIAL), not in prose.
    command = r"(certkit (?:[a-z-]+ )+(?:--?[a-z-]+ )*)"
    if tied is not None:
        text = re.sub(command + r"SERIAL\b", lambda m: m.group(1) + _serial(tied.certificate), text)
    if host:
        text = re.sub(command + r"(?:FQDN|MX-HOST)\b", lambda m: m.group(1) + host, text)
    if domain:
        text = re.sub(command + r"DOMAIN\b", lambda m: m.group(1) + domain, text)
        text = text.replace("mta-sts.DOMAIN", f"mta-sts.{domain}")
    return extra or text  # what our certificate says is more precise than the catalogue's general remedy


@dataclass
class _Group:
    sessions: int = 0
    organizations: dict[str, None] = field(default_factory=dict)
    ips: dict[str, None] = field(default_factory=dict)
    info: dict[str, None] = field(default_factory=dict)
    first: _dt.datetime | None = None
    last: _dt.datetime | None = None

    def add(self, report: Report, f: FailureDetail) -> None:
        self.sessions += f.sessions
        self.organizations[report.organization] = None
        if f.receiving_ip:
            self.ips[f.receiving_ip] = None
        if f.additional_information and len(self.info) < 5:
            self.info[f.additional_information] = None
        if report.date_range is not None:
            s, e = report.date_range.start, report.date_range.end
            self.first = s if self.first is None else min(self.first, s)
            self.last = e if self.last is None else max(self.last, e)


def _rows(reports: Iterable[Report]) -> list[SummaryRow]:
    table: dict[tuple[str, str, str, str], list[Any]] = {}
    for report in reports:
        day = report.day
        for p in report.policies:
            key = (day.isoformat() if day else "", report.organization, p.policy.type, p.policy.domain or "")
            row = table.setdefault(key, [day, 0, 0, {}])
            row[1] += p.successful
            row[2] += p.failed
            for f in p.failures:
                row[3][f.result_type] = row[3].get(f.result_type, 0) + f.sessions
    return [SummaryRow(v[0], k[1], k[2], k[3] or None, v[1], v[2], dict(sorted(v[3].items())))
            for k, v in sorted(table.items())]


def analyse(reports: Sequence[Report], *, at: _dt.datetime, failures: Sequence[ReadFailure] = (),
            certificates: Sequence[KnownCertificate] = ()) -> Analysis:
    """What ``reports`` say, at ``at``: sessions per day, organisation and policy; the failures grouped into
    causes tied to the catalogue, to our ``certificates`` (those our CA issued) and to the remedy."""
    unique: dict[tuple[str, str, str], Report] = {}
    duplicates: list[str] = []
    for report in reports:
        seen = (report.organization, report.report_id or report.source,
                "" if report.date_range is None else rfc3339(report.date_range.start))
        if seen in unique:
            duplicates.append(report.source)  # the same report saved twice (the e-mail and its attachment)
        else:
            unique[seen] = report
    reports = list(unique.values())
    groups: dict[tuple[str, str, str, str, str], _Group] = {}
    for report in reports:
        for p in report.policies:
            for f in p.failures:
                key = (f.result_type, p.policy.type, p.policy.domain or "", f.receiving_mx_hostname or "",
                       f.failure_reason_code or "")
                groups.setdefault(key, _Group()).add(report, f)
    causes = []
    for (result_type, policy_type, domain, host, reason), g in groups.items():
        code = _code_for(result_type, policy_type, reason or None)
        first = g.first or at
        last = g.last or at
        tied, extra = _tie(result_type, host or None, first, last, certificates, at)
        explanation = CATALOGUE[code].explanation if code else RESULT_TYPES.get(
            result_type, "A result type RFC 8460 does not define; the sender's documentation says what it means.")
        causes.append(Cause(result_type, policy_type, domain or None, host or None, reason or None, g.sessions,
                            tuple(g.organizations), tuple(g.ips), None if g.first is None else g.first.date(),
                            None if g.last is None else g.last.date(), code, _codes_for(result_type), explanation,
                            _remedy(code, result_type, host or None, domain or None, tied, extra), tied,
                            tuple(g.info)))
    causes.sort(key=lambda c: (-c.sessions, c.result_type, c.mx_host or ""))
    return Analysis(at, tuple(reports), tuple(failures), tuple(_rows(reports)), tuple(causes), len(certificates),
                    tuple(duplicates))
