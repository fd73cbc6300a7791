"""MTA-STS (RFC 8461) and the TLS-RPT record (RFC 8460), judged from facts: no DNS, no HTTPS, no sockets here.

* :func:`select_sts_record` -- the ``_mta-sts.<domain>`` TXT records as RFC 8461 3.1 reads them: records
  that do not begin with ``v=STSv1`` are discarded, and exactly one valid one must remain (its ``id``).
* :func:`parse_policy` -- the policy file (RFC 8461 3.2): ``key: value`` lines ended by LF or CRLF;
  ``version: STSv1``, ``mode`` (``enforce``, ``testing``, ``none``) and ``max_age`` (0 to 31,557,600)
  exactly once, ``mx`` patterns at least once unless the mode is ``none``; other keys are ignored.
* :func:`mx_matches` -- an MX host against a pattern (RFC 8461 4.1): ``*.example.com`` matches exactly one
  more label on the left, never ``example.com`` nor ``a.b.example.com``; case and a final dot do not count;
  Unicode names are compared as A-labels.
* :func:`judge` -- the verdict for a domain from the facts gathered by :mod:`certkit.checks.mtasts`: the
  TXT records, the policy fetch, and per MX host whether it offered TLS, its certificate's Web PKI
  verification for the MX name (RFC 8461 4.2) and DANE's result. The verdict is ``none`` (no usable
  policy: senders deliver as before), ``testing`` (with what would fail under ``enforce``) or
  ``enforce`` (with what fails now). A failing DANE validation is never overridden by MTA-STS (RFC 8461
  2): for a DANE sender, DANE decides; the MTA-STS facts still count for senders without DANE.
* :func:`select_tlsrpt_record` -- the ``_smtp._tls.<domain>`` TXT record (RFC 8460 3): ``v=TLSRPTv1`` and
  ``rua=`` with ``mailto:`` or ``https:`` URIs.

Severities follow the effect on delivery: under ``enforce`` an MX that is not listed or fails the Web PKI
check gets no mail from MTA-STS senders (error); under ``testing`` the same facts are warnings; a policy
that cannot be fetched or read leaves senders without MTA-STS (warning).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from certkit.core.findings import CATALOGUE, Finding, Severity
from certkit.core.verify import VerificationResult
from certkit.errors import InputError

__all__ = [
    "MAX_AGE_LIMIT",
    "MODES",
    "MxFacts",
    "MxVerdict",
    "Policy",
    "PolicyFacts",
    "StsRecord",
    "StsReport",
    "TlsRptRecord",
    "judge",
    "mx_matches",
    "parse_policy",
    "policy_host",
    "policy_url",
    "select_sts_record",
    "select_tlsrpt_record",
    "sts_owner",
    "tlsrpt_owner",
]

#: RFC 8461 3.2: the largest ``max_age`` (one year of 365.25 days, in seconds).
MAX_AGE_LIMIT = 31_557_600
#: The policy modes (RFC 8461 5).
MODES = ("enforce", "testing", "none")

_WSP = "[ \t]*"
_EXT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,31}")
_EXT_VALUE = re.compile(r"[\x21-\x3a\x3c\x3e-\x7e]+")
_ID = re.compile(r"[A-Za-z0-9]{1,32}")
_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")


def sts_owner(domain: str) -> str:
    """``_mta-sts.<domain>``: where the MTA-STS TXT record lives."""
    return f"_mta-sts.{domain.rstrip('.')}"


def tlsrpt_owner(domain: str) -> str:
    """``_smtp._tls.<domain>``: where the TLS-RPT TXT record lives."""
    return f"_smtp._tls.{domain.rstrip('.')}"


def policy_host(domain: str) -> str:
    """``mta-sts.<domain>``: the policy host (RFC 8461 3.3)."""
    return f"mta-sts.{domain.rstrip('.')}"


def policy_url(domain: str) -> str:
    """``https://mta-sts.<domain>/.well-known/mta-sts.txt``."""
    return f"https://{policy_host(domain)}/.well-known/mta-sts.txt"


# --- the TXT records ---------------------------------------------------------------------------------


def _fields(text: str, version: str) -> list[tuple[str, str]] | str:
    """``text`` as ``key=value`` fields after ``version`` (``;``-separated, blanks around), or what is wrong."""
    parts = re.split(f"{_WSP};{_WSP}", text.strip(" \t"))
    if parts[0] != version:
        return f"it does not begin with {version}"
    if parts[-1] == "":
        parts.pop()  # a final ";" is allowed
    out: list[tuple[str, str]] = []
    for part in parts[1:]:
        key, eq, value = part.partition("=")
        if not eq or not _EXT_NAME.fullmatch(key):
            return f"{part!r} is not a key=value field"
        out.append((key, value))
    return out


@dataclass(frozen=True)
class StsRecord:
    """The one valid ``v=STSv1`` record: its ``id`` (which changes with every new policy) and its text."""

    id: str
    text: str


def select_sts_record(texts: Sequence[str]) -> tuple[StsRecord | None, str | None]:
    """The record RFC 8461 3.1 uses among ``texts`` (the TXT records at ``_mta-sts``), or why there is none.

    Records that do not begin with ``v=STSv1;`` are discarded; if the number left is not one, or that one
    is not valid, the domain has no MTA-STS policy. ``(None, None)`` when no record is left at all.
    """
    candidates = [t for t in texts if re.match(f"v=STSv1{_WSP};", t.strip(" \t")) or t.strip(" \t") == "v=STSv1"]
    if not candidates:
        return None, None
    if len(candidates) > 1:
        return None, f"{len(candidates)} records begin with v=STSv1; exactly one is allowed"
    text = candidates[0]
    fields = _fields(text, "v=STSv1")
    if isinstance(fields, str):
        return None, fields
    ids = [v for k, v in fields if k == "id"]
    if len(ids) != 1:
        return None, "it has no id= field" if not ids else "it has more than one id= field"
    if not _ID.fullmatch(ids[0]):
        return None, f"the id {ids[0]!r} is not 1 to 32 letters and digits"
    bad = next((k for k, v in fields if k != "id" and not _EXT_VALUE.fullmatch(v)), None)
    if bad is not None:
        return None, f"the value of {bad}= is empty or has characters a record may not carry"
    return StsRecord(ids[0], text), None


@dataclass(frozen=True)
class TlsRptRecord:
    """The one valid ``v=TLSRPTv1`` record: where reports go (``rua``: ``mailto:`` and ``https:`` URIs)."""

    rua: tuple[str, ...]
    text: str


def select_tlsrpt_record(texts: Sequence[str]) -> tuple[TlsRptRecord | None, str | None]:
    """The TLS-RPT record among ``texts`` (the TXT records at ``_smtp._tls``, RFC 8460 3), or why there is none.

    As for MTA-STS: records not beginning with ``v=TLSRPTv1;`` are discarded and exactly one must be left,
    with one ``rua=`` field of comma-separated ``mailto:`` or ``https:`` URIs. ``(None, None)``: no record.
    """
    candidates = [t for t in texts if re.match(f"v=TLSRPTv1{_WSP};", t.strip(" \t"))
                  or t.strip(" \t") == "v=TLSRPTv1"]
    if not candidates:
        return None, None
    if len(candidates) > 1:
        return None, f"{len(candidates)} records begin with v=TLSRPTv1; exactly one is allowed"
    fields = _fields(candidates[0], "v=TLSRPTv1")
    if isinstance(fields, str):
        return None, fields
    ruas = [v for k, v in fields if k == "rua"]
    if len(ruas) != 1:
        return None, "it has no rua= field" if not ruas else "it has more than one rua= field"
    uris = tuple(u.strip(" \t") for u in ruas[0].split(","))
    for uri in uris:
        scheme, colon, rest = uri.partition(":")
        if not colon or scheme.lower() not in ("mailto", "https") or not rest:
            return None, f"{uri!r} is not a mailto: or https: URI"
        if scheme.lower() == "mailto" and "@" not in rest:
            return None, f"{uri!r} has no mail address"
        if scheme.lower() == "https" and not rest.startswith("//"):
            return None, f"{uri!r} is not an https:// URL"
    return TlsRptRecord(uris, candidates[0]), None


# --- the policy --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    """A valid policy: its mode, ``max_age`` in seconds, the ``mx`` patterns, and the text as fetched."""

    mode: str
    max_age: int
    mx: tuple[str, ...]
    text: str
    version: str = "STSv1"

    def pattern_for(self, host: str) -> str | None:
        """The first ``mx`` pattern that ``host`` matches, if any."""
        return next((p for p in self.mx if mx_matches(p, host)), None)

    @property
    def lines(self) -> list[str]:
        """The policy's lines, as TLS-RPT's ``policy-string`` carries them."""
        return [line.rstrip("\r") for line in self.text.split("\n") if line.strip()]


def _ascii_name(name: str) -> str | None:
    """``name`` as lower-case A-labels without a final dot, or ``None`` when it is no host name."""
    from certkit.core.names import dns_name

    try:
        return dns_name(name.strip().rstrip("."), allow_wildcard=True, allow_mixed_script=True)
    except InputError:
        return None


def _valid_pattern(value: str) -> bool:
    name = _ascii_name(value)
    if name is None:
        return False
    labels = name.split(".")
    if labels[0] == "*":
        labels = labels[1:]
    return len(labels) >= 1 and all(_LABEL.fullmatch(label) for label in labels)


def parse_policy(text: str) -> tuple[Policy | None, list[str]]:
    """The policy in ``text`` (RFC 8461 3.2), or ``None`` and every problem found (see the module docstring)."""
    problems: list[str] = []
    seen: dict[str, list[str]] = {}
    for number, raw in enumerate(text.split("\n"), 1):
        line = raw[:-1] if raw.endswith("\r") else raw
        if not line.strip(" \t"):
            continue
        key, colon, value = line.partition(":")
        if not colon or not _EXT_NAME.fullmatch(key):
            problems.append(f"line {number} is not 'key: value': {line[:80]!r}")
            continue
        seen.setdefault(key, []).append(value.strip(" \t"))
    for key in ("version", "mode", "max_age"):
        values = seen.get(key, [])
        if not values:
            problems.append(f"the {key} field is missing")
        elif len(values) > 1:
            problems.append(f"the {key} field appears {len(values)} times; exactly once is allowed")
    version = (seen.get("version") or [""])[0]
    if seen.get("version") and version != "STSv1":
        problems.append(f"the version is {version!r}, not STSv1")
    mode = (seen.get("mode") or [""])[0]
    if seen.get("mode") and mode not in MODES:
        problems.append(f"the mode is {mode!r}, not enforce, testing or none")
    age_text = (seen.get("max_age") or [""])[0]
    max_age = -1
    if seen.get("max_age"):
        if not re.fullmatch(r"[0-9]{1,10}", age_text):
            problems.append(f"max_age {age_text!r} is not a number of seconds")
        elif int(age_text) > MAX_AGE_LIMIT:
            problems.append(f"max_age {int(age_text)} is over the limit of {MAX_AGE_LIMIT} seconds (one year)")
        else:
            max_age = int(age_text)
    patterns = seen.get("mx", [])
    problems += [f"mx {p!r} is not a host name or *.domain pattern" for p in patterns if not _valid_pattern(p)]
    if not patterns and mode in ("enforce", "testing"):
        problems.append(f"no mx field: a policy in mode {mode} must list its MX hosts")
    if problems:
        return None, problems
    return Policy(mode, max_age, tuple(patterns), text), []


def mx_matches(pattern: str, host: str) -> bool:
    """Whether MX ``host`` matches policy ``pattern`` (RFC 8461 4.1; see the module docstring)."""
    p, h = _ascii_name(pattern), _ascii_name(host)
    if p is None or h is None or h.startswith("*"):
        return False
    if p.startswith("*."):
        first, dot, rest = h.partition(".")
        return bool(dot) and bool(first) and rest == p[2:]
    return p == h


# --- the verdict -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PolicyFacts:
    """How the policy fetch went: the body, or the error (``certificate_error``: the policy host's
    certificate failed the Web PKI check for ``mta-sts.<domain>``)."""

    url: str
    body: bytes | None = None
    error: str | None = None
    certificate_error: bool = False
    status: int | None = None
    content_type: str | None = None


@dataclass(frozen=True)
class MxFacts:
    """One MX host as the sessions saw it.

    ``tls``: ``True`` a TLS session was set up, ``False`` the server offered no STARTTLS, ``None`` it was
    not reached (nothing to judge). ``verification``: the chain's Web PKI verification with the MX host
    name. ``dane``: ``"pass"`` or ``"fail"`` when DANE applies to the host (secure TLSA records), else ``None``.
    """

    host: str
    tls: bool | None = None
    verification: VerificationResult | None = None
    dane: str | None = None
    note: str | None = None


@dataclass(frozen=True)
class MxVerdict:
    """One MX host under the policy: the pattern it matched, its Web PKI result, and what fails."""

    host: str
    pattern: str | None
    webpki: str  # "valid", "invalid", "no-tls", "not-checked"
    dane: str | None
    failures: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"host": self.host, "listed": self.pattern is not None, "pattern": self.pattern,
                "webpki": self.webpki, "dane": self.dane, "failures": list(self.failures)}


@dataclass
class StsReport:
    """MTA-STS and TLS-RPT for one domain: the verdict, what was found on the way, and the findings."""

    domain: str
    verdict: str = "none"
    summary: str = ""
    record: StsRecord | None = None
    records: tuple[str, ...] = ()
    policy: Policy | None = None
    policy_url: str = ""
    fetch_error: str | None = None
    mx: list[MxVerdict] = field(default_factory=list)
    tlsrpt: TlsRptRecord | None = None
    tlsrpt_records: tuple[str, ...] = ()
    findings: list[Finding] = field(default_factory=list)

    @property
    def failures(self) -> list[str]:
        """What fails now (``enforce``) or would fail under ``enforce`` (``testing``)."""
        return [f"{m.host}: {why}" for m in self.mx for why in m.failures]

    @property
    def ok(self) -> bool:
        return not any(f.severity is Severity.ERROR for f in self.findings)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for ``--json`` (``mta-sts-check.schema.json``; the ``mta_sts`` object of probe and preflight)."""
        p = self.policy
        return {
            "domain": self.domain, "verdict": self.verdict, "summary": self.summary, "ok": self.ok,
            "record": None if self.record is None else {"id": self.record.id, "text": self.record.text},
            "txt_records": list(self.records),
            "policy_url": self.policy_url,
            "policy": None if p is None else {"version": p.version, "mode": p.mode, "max_age": p.max_age,
                                              "mx": list(p.mx), "text": p.text},
            "fetch_error": self.fetch_error,
            "mx": [m.to_dict() for m in self.mx],
            "failures": self.failures,
            "tlsrpt": {"published": self.tlsrpt is not None,
                       "rua": [] if self.tlsrpt is None else list(self.tlsrpt.rua),
                       "txt_records": list(self.tlsrpt_records)},
            "findings": [f.to_dict() for f in self.findings],
        }


def _with_mode(code: str, detail: str, mode: str, **kwargs: Any) -> Finding:
    """An MX finding: the catalogue's severity under ``enforce``, a warning under ``testing``."""
    if mode == "testing":
        kwargs["severity"] = Severity.WARNING
        detail += " The policy is in testing mode: delivery goes on, but this fails once it is enforce."
    return Finding(code, detail, **kwargs)


def judge(domain: str, *, txt: Sequence[str] = (), txt_error: str | None = None, fetch: PolicyFacts | None = None,
          mx: Sequence[MxFacts] = (), tlsrpt_txt: Sequence[str] = (), tlsrpt_error: str | None = None) -> StsReport:
    """The MTA-STS verdict for ``domain`` and the TLS-RPT record's state, from the facts (module docstring).

    ``txt``: the TXT records at ``_mta-sts`` (``txt_error``: the lookup failed); ``fetch``: the policy fetch
    (``None`` when no valid record asked for one); ``mx``: the MX hosts; ``tlsrpt_txt``: the TXT records at
    ``_smtp._tls``.
    """
    report = StsReport(domain, records=tuple(txt), policy_url=policy_url(domain), tlsrpt_records=tuple(tlsrpt_txt))
    _judge_policy(report, txt, txt_error, fetch)
    if report.policy is not None and report.policy.mode != "none":
        for facts in mx:
            report.mx.append(_judge_mx(report, report.policy, facts))
    report.verdict = report.policy.mode if report.policy is not None else "none"
    report.summary = _summary(report)
    _judge_tlsrpt(report, tlsrpt_txt, tlsrpt_error)
    return report


def _judge_policy(report: StsReport, txt: Sequence[str], txt_error: str | None, fetch: PolicyFacts | None) -> None:
    domain, out = report.domain, report.findings
    owner = sts_owner(domain)
    if txt_error is not None:
        out.append(Finding("dns.failure", f"The TXT lookup of {owner} failed: {txt_error}. A sender that cannot "
                           "read it delivers without MTA-STS (or with a policy it cached).", subject=owner,
                           severity=Severity.WARNING))
        return
    record, problem = select_sts_record(txt)
    if record is None and problem is None:
        out.append(Finding("sts.not-published", f"{domain} publishes no MTA-STS record ({owner} has no v=STSv1 "
                           "TXT record).", subject=owner, evidence={"txt_records": list(txt)}))
        return
    if record is None:
        out.append(Finding("sts.txt-invalid", f"The MTA-STS record at {owner} is not usable: {problem}. Senders "
                           "treat the domain as having no policy.", subject=owner,
                           evidence={"txt_records": list(txt), "problem": problem}))
        return
    report.record = record
    if fetch is None:
        return
    if fetch.body is None or fetch.error is not None:
        report.fetch_error = fetch.error or "no policy"
        code = "sts.policy-webpki-invalid" if fetch.certificate_error else "sts.policy-fetch-error"
        out.append(Finding(code, f"The policy at {fetch.url} could not be fetched: {report.fetch_error}. Senders "
                           "without a cached policy deliver without MTA-STS.", subject=fetch.url,
                           evidence={"url": fetch.url, "error": report.fetch_error, "status": fetch.status}))
        return
    media = (fetch.content_type or "").split(";")[0].strip().lower()
    if media != "text/plain":
        report.fetch_error = f"the media type is {fetch.content_type or '(none)'!r}, not text/plain"
        out.append(Finding("sts.policy-fetch-error", f"The policy at {fetch.url} is served as "
                           f"{fetch.content_type or 'no media type'}; RFC 8461 3.3 requires text/plain, so senders "
                           "ignore it.", subject=fetch.url,
                           evidence={"url": fetch.url, "error": report.fetch_error, "status": fetch.status}))
        return
    try:
        text = fetch.body.decode("utf-8")
    except UnicodeDecodeError:
        text, problems = "", ["the policy is not UTF-8 text"]
    else:
        policy, problems = parse_policy(text)
    if problems:
        out.append(Finding("sts.policy-invalid", f"The policy at {fetch.url} is not valid: {'; '.join(problems)}. "
                           "Senders ignore it.", subject=fetch.url,
                           evidence={"url": fetch.url, "problems": problems, "text": text[:4096]}))
        return
    report.policy = policy


def _judge_mx(report: StsReport, policy: Policy, facts: MxFacts) -> MxVerdict:
    host, mode, out = facts.host, policy.mode, report.findings
    failures: list[str] = []
    pattern = policy.pattern_for(host)
    if pattern is None:
        failures.append("not listed in the policy")
        out.append(_with_mode("sts.mx-not-listed", f"The MX host {host} matches none of the policy's mx patterns "
                              f"({', '.join(policy.mx)}); MTA-STS senders do not deliver to it.", mode, subject=host,
                              evidence={"mx": list(policy.mx), "mode": mode}))
    webpki = "not-checked"
    if facts.tls is False:
        webpki = "no-tls"
        failures.append("no STARTTLS")
        said = facts.note or "offered no STARTTLS"
        out.append(_with_mode("sts.starttls-missing", f"{host} {said}; under MTA-STS a sender "
                              "delivers to it only over TLS with a valid certificate.", mode, subject=host,
                              evidence={"mode": mode}))
    elif facts.tls and facts.verification is not None:
        v = facts.verification
        webpki = "valid" if v.ok else "invalid"
        if not v.ok:
            errors = v.errors or v.findings
            reasons = "; ".join(f.detail.rstrip(".") for f in errors[:3]) or v.reason or "no valid path"
            failures.append("certificate not valid under the Web PKI")
            cause = errors[0].code if errors else None
            out.append(_with_mode("sts.mx-webpki-invalid", f"The certificate of {host} is not valid for {host} "
                                  f"under the Web PKI: {reasons}.", mode, subject=host,
                                  evidence={"mode": mode, "causes": [f.code for f in errors],
                                            "tlsrpt_result_type": _cause_type(cause)}))
    if facts.dane is not None:
        verdict = "passes" if facts.dane == "pass" else "fails"
        out.append(Finding("sts.dane-precedence", f"DANE applies to {host} and {verdict}: a sender that does DANE "
                           "decides by it, and MTA-STS never overrides a failing DANE validation (RFC 8461 2); the "
                           "MTA-STS result counts for senders without DANE.", subject=host,
                           evidence={"dane": facts.dane}))
    return MxVerdict(host, pattern, webpki, facts.dane, tuple(failures))


def _cause_type(code: str | None) -> str:
    """The TLS-RPT result type of a Web PKI failure: the catalogue's for its first error."""
    entry = CATALOGUE.get(code or "")
    return entry.tlsrpt_result_type if entry is not None and entry.tlsrpt_result_type else "validation-failure"


def _summary(report: StsReport) -> str:
    if report.policy is None:
        if report.record is None:
            return "no MTA-STS policy: senders deliver as without MTA-STS"
        return "an MTA-STS record, but no usable policy: senders deliver as without MTA-STS"
    mode = report.policy.mode
    if mode == "none":
        return "policy mode none: MTA-STS is switched off"
    fails = report.failures
    if mode == "testing":
        return ("testing: nothing would fail under enforce" if not fails
                else "testing: under enforce these would fail: " + "; ".join(fails))
    return "enforce: every MX passes" if not fails else "enforce: failing now: " + "; ".join(fails)


def _judge_tlsrpt(report: StsReport, texts: Sequence[str], error: str | None) -> None:
    owner = tlsrpt_owner(report.domain)
    if error is not None:
        report.findings.append(Finding("dns.failure", f"The TXT lookup of {owner} failed: {error}.", subject=owner,
                                       severity=Severity.WARNING))
        return
    record, problem = select_tlsrpt_record(texts)
    report.tlsrpt = record
    if record is None and problem is None:
        report.findings.append(Finding("tlsrpt.not-published", f"{report.domain} publishes no TLS-RPT record "
                                        f"({owner}): senders' TLS failures are reported to nobody.", subject=owner))
    elif record is None:
        report.findings.append(Finding("tlsrpt.record-invalid", f"The TLS-RPT record at {owner} is not usable: "
                                       f"{problem}. Senders send no reports.", subject=owner,
                                       evidence={"txt_records": list(texts), "problem": problem}))
