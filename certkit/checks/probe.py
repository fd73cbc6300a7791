"""The STARTTLS probe: talk to a partner's MX as the sending Edge would, and explain what goes wrong.

:func:`probe_sync` (and the coroutine :func:`probe`) resolve each target (a mail domain through MX
records, or ``host[:port]``/``[ip]:port``), run one SMTP session per address with
:func:`certkit.adapters.transport.run_session_async`, verify the presented chain with
:func:`certkit.core.verify.verify_chain` (fetching the CRLs of its distribution points), and turn what
was seen into :class:`~certkit.core.findings.Finding` data. Nothing here prints.

Whose rules decide (``validator``): ``exchange`` requires revocation to be checkable (no CDP, an
unreachable or stale CRL fail, as Windows does for Domain Security); ``postfix`` checks no revocation
and reports revocation facts as information only.

DANE (``dane``, RFC 7672): with ``auto`` (the CLI's default) or ``require``, the TLSA records of each MX
host are looked up on a worker thread while its SMTP session runs. They count when the resolver marked
them secure (AD bit; certkit does not validate DNSSEC itself) and the host name came from a secure MX
lookup or was given directly. Then STARTTLS is mandatory, the chain must match a usable record
(:func:`certkit.core.dane.dane_match`), and when one matches, the PKIX verdict on their certificate is
only information. ``require`` makes the absence of secure TLSA records an error (``dane.not-published``);
``off`` (the library's default, so that the pre-flight, which models Exchange, is unchanged) looks up nothing.

MTA-STS (``mta_sts``, RFC 8461 and the TLS-RPT record of RFC 8460): with ``auto`` (the CLI's default) each
domain target's policy is judged from the sessions this probe ran to its MX hosts
(:func:`certkit.checks.mtasts.mta_sts_of_sessions`: the ``_mta-sts`` record, the policy over HTTPS, every MX
against it and the Web PKI -- ``sts_cadata`` replaces the Web PKI, ``sts_policy_port`` the policy host's port,
for a lab) into ``ProbeResult.mta_sts``; under ``enforce`` an MX that MTA-STS senders will not deliver to
counts in :func:`exit_code`. ``off`` (the library's default) looks up nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import functools
import ipaddress
import queue
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, TypeVar

from cryptography import x509

from certkit.adapters.crlfetch import CrlCache
from certkit.adapters.dns import (
    DnsFailure,
    MailRoute,
    TlsaLookup,
    lookup_tlsa,
    make_resolver,
    resolve_host,
    resolve_mail_domain,
)
from certkit.adapters.transport import ClientIdentity, SmtpSession, run_session_async
from certkit.checks.limits import ServerLimits, SessionShare
from certkit.checks.mtasts import MTA_STS_MODES, check_sts_options, mta_sts_of_sessions
from certkit.checks.ourcert import OurCertificate, check_our_certificate
from certkit.clock import Clock, SystemClock
from certkit.core.extensions import allows_client_auth, san_dns_names
from certkit.core.findings import EXCHANGE_DNS_ERROR, EXCHANGE_WRAP, Finding, Severity, Side
from certkit.core.mtasts import StsReport
from certkit.core.names import dns_name
from certkit.core.personality import rejection_of_us
from certkit.core.smtp import Reply, printable
from certkit.core.text import plural
from certkit.core.trust import AnchorSet, as_anchor_set, is_self_signed
from certkit.core.verify import VerificationResult
from certkit.errors import InputError, UsageError
from certkit.validation import VALIDATOR_NAMES, Validator, validate_peer

if TYPE_CHECKING:
    from certkit.core.dane import RecordCheck, TlsaRecord

__all__ = [
    "DANE_MODES",
    "MTA_STS_MODES",
    "AddressResult",
    "DaneReport",
    "ProbeOptions",
    "ProbeResult",
    "ProgressCallback",
    "Target",
    "diagnose_session",
    "dns_finding",
    "exit_code",
    "failure_finding",
    "parse_target",
    "probe",
    "probe_sync",
    "rejection_of_us",
]


_R = TypeVar("_R")

#: The values of ``dane`` (``--dane``).
DANE_MODES = ("auto", "require", "off")


@dataclass(frozen=True)
class Target:
    """A parsed TARGET: a mail domain (to resolve through MX) or a host/address with a port."""

    text: str
    host: str
    port: int
    is_domain: bool


def parse_target(text: str, default_port: int = 25) -> Target:
    """``fabrikam.com`` (a domain), ``mx.fabrikam.com:25``, ``192.0.2.1``, ``[2001:db8::1]:25``.

    A bare name without a port is a mail domain (resolved through MX); a name with a port, or an IP
    address, is probed directly.
    """
    t = text.strip()
    if not t:
        raise InputError("An empty target was given.", "Give a domain, host:port or [ip]:port.")
    if t.startswith("["):
        end = t.find("]")
        if end < 0:
            raise InputError(f"Bad target {text!r}.", "Write IPv6 addresses as [ADDRESS]:PORT.")
        host, rest = t[1:end], t[end + 1:]
        port = _port(rest[1:], text) if rest.startswith(":") else default_port
        if rest and not rest.startswith(":"):
            raise InputError(f"Bad target {text!r}.", "Write [ADDRESS]:PORT.")
        if not _is_ip(host):  # strict: no "1.2.3" (which the C resolver would read as 1.2.0.3)
            raise InputError(f"{host!r} in target {text!r} is not an IP address.",
                             "Write a full IPv4 or IPv6 address in brackets, e.g. [192.0.2.1]:25 or [2001:db8::1]:25.")
        return Target(text, host, port, False)
    if t.count(":") > 1:
        if not _is_ip(t):
            raise InputError(f"{t!r} in target {text!r} is not an IP address.",
                             "Write IPv6 addresses as [ADDRESS]:PORT, e.g. [2001:db8::1]:25.")
        return Target(text, t, default_port, False)  # a bare IPv6 address
    if ":" in t:
        host, p = t.rsplit(":", 1)
        port = _port(p, text)
        return Target(text, host if _is_ip(host) else _host_name(host, text), port, False)
    if _is_ip(t):
        return Target(text, t, default_port, False)
    return Target(text, _host_name(t, text), default_port, True)


def _address_literal(text: str) -> bool:
    """``[192.0.2.1]`` or ``[IPv6:2001:db8::1]`` (RFC 5321 4.1.3)."""
    if not (text.startswith("[") and text.endswith("]")):
        return False
    inner = text[1:-1]
    if inner[:5].lower() == "ipv6:":
        inner = inner[5:]
        return ":" in inner and _is_ip(inner)
    return "." in inner and ":" not in inner and _is_ip(inner)


def check_address(value: str, option: str, *, null_ok: bool = False, postmaster_ok: bool = False) -> str:
    """A MAIL FROM / RCPT TO address as sent between ``<`` and ``>``: ``local@domain``, or an :class:`InputError`.

    One pair of angle brackets around it is dropped. No spaces or control characters (a CR or LF
    would inject a command), a non-empty local part of at most 64 characters, and a domain that is a
    host name or an address literal. ``null_ok``: the empty null reverse-path; ``postmaster_ok``: the
    bare ``postmaster`` RCPT TO allows.
    """
    raw = value.strip()
    if raw.startswith("<") and raw.endswith(">"):
        raw = raw[1:-1]
    hint = "Give an address like probe@contoso.com (no spaces, no angle brackets inside)."
    if not raw:
        if null_ok:
            return ""
        raise InputError(f"{option} is empty.", hint)
    if postmaster_ok and raw.lower() == "postmaster":
        return raw
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 or c in "<>" for c in raw):
        raise InputError(f"{option} {value!r} is not a mail address: it contains a space, a control character "
                         "or an angle bracket.", hint)
    local, at, domain = raw.rpartition("@")
    if not at or not local or not domain:
        raise InputError(f"{option} {value!r} is not a mail address: it needs the form local@domain.", hint)
    if len(local) > 64:
        raise InputError(f"{option} {value!r} is not a mail address: the part before @ is over 64 characters.", hint)
    if _address_literal(domain):
        return raw
    try:
        return f"{local}@{dns_name(domain)}"
    except InputError as e:
        raise InputError(f"{option} {value!r} is not a mail address: {e.message}", hint) from None


def check_helo(value: str) -> str:
    """The ``--helo`` name: a host name or an address literal (``[192.0.2.1]``), or an :class:`InputError`."""
    raw = value.strip()
    hint = "Give our Edge's host name (mail.contoso.com) or an address literal such as [192.0.2.1]."
    if _address_literal(raw):
        return raw
    if _is_ip(raw):
        raise InputError(f"--helo {value!r}: an address must be written as an address literal in brackets.",
                         f"Write [{raw}]." if "." in raw else f"Write [IPv6:{raw}].")
    try:
        return dns_name(raw)
    except InputError as e:
        raise InputError(f"Bad --helo: {e.message}", hint) from None


def _option_name(value: str, option: str) -> str:
    try:
        return dns_name(value)
    except InputError as e:
        raise InputError(f"Bad {option}: {e.message}", e.hint) from None


def _host_name(host: str, original: str) -> str:
    """``host`` as a checked host name (lower-case A-label), or an :class:`InputError` naming the target."""
    if not host.strip():
        raise InputError(f"Bad target {original!r}: the host name is missing.",
                         "Give a domain, host:port or [ip]:port, e.g. fabrikam.com or mx1.fabrikam.com:25.")
    if all(label.isdigit() for label in host.rstrip(".").split(".")):
        raise InputError(f"{host!r} in target {original!r} is not an IP address.",
                         "Write a full IPv4 address, e.g. 192.0.2.1 or [192.0.2.1]:25.")
    try:
        return dns_name(host)
    except InputError as e:
        raise InputError(f"Bad target {original!r}: {e.message}", e.hint) from None


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _port(text: str, original: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise InputError(f"Bad port in target {original!r}.", "The port must be 1 to 65535.")
    return int(text)


@dataclass
class AddressResult:
    """One probed address: the session, the verification of their certificate, and the findings."""

    target: str
    host: str
    address: str
    port: int
    session: SmtpSession | None = None
    verification: VerificationResult | None = None
    findings: list[Finding] = field(default_factory=list)
    #: What DANE found for this address (``None``: ``dane="off"``, or an IP address target under ``auto``).
    dane: DaneReport | None = None
    #: The run's check of the certificate we present (the same object for every address; ``None``: none was made).
    ours: OurCertificate | None = None
    #: The target whose session to this address this result reuses (``ProbeOptions(share_sessions=True)``: the
    #: TLS session and chain are shared, the judging is this target's own); ``None``: its own session.
    session_of: str | None = None

    @property
    def reached(self) -> bool:
        return self.session is not None and self.session.connected

    @property
    def ok(self) -> bool:
        """No error in this session, and none in our certificate under the validator's rules: a server that
        accepts a certificate the partner's validator refuses (Postfix does not check our CRL) is no proof."""
        return self.session_ok and (self.ours is None or self.ours.ok)

    @property
    def session_ok(self) -> bool:
        """No error finding of this address's own (the session, their certificate, DANE)."""
        return not any(f.severity is Severity.ERROR for f in self.findings)

    @property
    def verdict(self) -> str:
        if self.session_ok and self.ours is not None and not self.ours.ok:
            return self._refused_by_the_rules(self.ours)
        if self.ok:
            refused = next((f for f in self.findings if f.code == "smtp.recipient-refused"), None)
            if refused is not None:
                return "TLS and certificates are fine, but the test recipient was refused (not delivered)"
            untested = self.domain_security_untested
            if untested:
                return "TLS and their certificate OK; Domain Security not tested: " + "; ".join(untested)
            return "would deliver with Domain Security"
        first = next(f for f in self.findings if f.severity is Severity.ERROR)
        return f"would fail: {first.entry.title}"

    def _refused_by_the_rules(self, ours: OurCertificate) -> str:
        """The verdict when this session went through but our certificate fails the validator's rules."""
        tls = self.session.tls if self.session else None
        partner = _PARTNER_PHRASE.get(ours.validator, f"a partner with the {ours.validator} rules")
        title = ours.errors[0].entry.title
        if tls is not None and tls.client_cert_sent:
            return f"this server accepted our certificate, but {partner} would refuse it: {title}"
        return f"{partner} would refuse our certificate: {title}"

    @property
    def domain_security_untested(self) -> list[str]:
        """Why this session did not test Domain Security, though TLS was set up (empty: it did, or no TLS).

        Domain Security is mutual: a session that presented no client certificate did not test whether
        they accept ours, and one that checked their certificate against no name (an address target
        without ``--domain``/``--name``) did not test the partner-domain rule.
        """
        tls = self.session.tls if self.session else None
        if tls is None:
            return []
        reasons: list[str] = []
        if not tls.client_cert_sent:
            reasons.append("no client certificate was presented (use --as NAME or --client-cert/--client-key)")
        if self.verification is None or self.verification.rule is None:
            reasons.append("no partner domain to check their certificate's name against (use --domain)")
        return reasons

    def to_dict(self) -> dict[str, Any]:
        """Plain data for ``--json`` (see ``certkit/schemas/probe.schema.json``)."""
        s = self.session
        tls = s.tls if s else None
        untested = self.domain_security_untested
        return {
            "target": self.target, "host": self.host, "address": self.address, "port": self.port,
            "reached": self.reached, "ok": self.ok, "verdict": self.verdict,
            "domain_security_tested": tls is not None and not untested,
            "domain_security_untested": untested,
            "tls": None if tls is None else {
                "version": tls.version, "cipher": tls.cipher,
                "chain": [_subject_text(c) for c in tls.peer_chain],
                "acceptable_client_issuers": [n.rfc4514_string() for n in tls.client_ca_names],
                "client_certificate_sent": tls.client_cert_sent,
            },
            "verification": _verification_dict(self.verification),
            "dane": None if self.dane is None else self.dane.to_dict(),
            "session_of": self.session_of,
            "findings": [f.to_dict() for f in self.findings],
            "transcript": [{"direction": t.direction, "text": t.text, "elapsed": t.elapsed}
                           for t in (s.transcript if s else [])],
            "timings": s.timings if s else {},
            "seconds": round(s.seconds, 4) if s else None,
        }


#: Who refuses our certificate, in a verdict, per validator.
_PARTNER_PHRASE = {"exchange": "an Exchange partner", "postfix": "a Postfix partner",
                   "exchange-online": "an Exchange Online partner"}


@dataclass(frozen=True)
class DaneReport:
    """DANE for one address: the TLSA lookup, whether DANE applied, and which record matched.

    ``lookup``: ``secure``, ``insecure`` (records without the resolver's AD bit), ``none``, ``bogus``
    (SERVFAIL), ``error`` (timeout, other failure) or ``skipped`` (no host name to look up).
    ``name_secure``: the host name came from a secure MX lookup or was given directly (RFC 7672 2.2.1).
    ``applies``: secure records and a secure name, so a DANE sender requires STARTTLS and a match.
    """

    mode: str
    lookup: str
    owner: str | None
    name_secure: bool
    applies: bool
    records: tuple[TlsaRecord, ...]
    matched: TlsaRecord | None
    checks: tuple[RecordCheck, ...]
    summary: str

    def to_dict(self) -> dict[str, Any]:
        """Plain data for ``--json`` (the address's ``dane`` object in ``certkit/schemas/probe.schema.json``)."""
        return {
            "mode": self.mode, "lookup": self.lookup, "owner": self.owner, "name_secure": self.name_secure,
            "applies": self.applies, "records": [r.text() for r in self.records],
            "matched": None if self.matched is None else self.matched.text(),
            "checks": [{"record": c.record.text(), "usable": c.usable, "matched": c.matched, "reason": c.reason}
                       for c in self.checks],
            "summary": self.summary,
        }


@functools.lru_cache(maxsize=4096)
def _subject_text(cert: x509.Certificate) -> str:
    """A certificate's subject as RFC 4514 text, remembered: many MX hosts present the same intermediates."""
    return cert.subject.rfc4514_string()


def _verification_dict(v: VerificationResult | None) -> dict[str, Any] | None:
    """The verification of their chain without its findings (those are the address's findings)."""
    if v is None:
        return None
    data = v.to_dict()
    data.pop("findings", None)
    return data


@dataclass
class ProbeResult:
    """The results of one TARGET: DNS findings (if any) and one :class:`AddressResult` per address."""

    target: str
    addresses: list[AddressResult] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    #: MTA-STS and TLS-RPT of a domain target (``mta_sts="auto"``); ``None`` for host and address targets and
    #: with ``mta_sts="off"``. Its findings are its own: not in :attr:`findings` nor :attr:`all_findings`.
    mta_sts: StsReport | None = None
    #: The run's check of the certificate we present, before connecting (the same object for every target;
    #: ``None``: no client certificate, or ``ProbeOptions(our_certificate=False)``). Its findings are not in
    #: :attr:`all_findings` (they are the run's, not the target's) but count in :func:`exit_code`.
    ours: OurCertificate | None = None

    @property
    def all_findings(self) -> list[Finding]:
        return [*self.findings, *(f for a in self.addresses for f in a.findings)]

    def to_dict(self) -> dict[str, Any]:
        """Plain data for ``--json`` (see ``certkit/schemas/probe.schema.json``)."""
        return {"target": self.target, "findings": [f.to_dict() for f in self.findings],
                "addresses": [a.to_dict() for a in self.addresses],
                "mta_sts": None if self.mta_sts is None else self.mta_sts.to_dict()}


def exit_code(results: Sequence[ProbeResult]) -> int:
    """0 no error findings, 1 error findings (an MTA-STS error included: under ``enforce``, an MX that MTA-STS
    senders will not deliver to; and our certificate's), 3 nothing could be reached."""
    if not any(a.reached for r in results for a in r.addresses):
        return 3
    if any(r.mta_sts is not None and not r.mta_sts.ok for r in results):
        return 1
    if any(r.ours is not None and not r.ours.ok for r in results):
        return 1
    return 1 if any(f.severity is Severity.ERROR for r in results for f in r.all_findings) else 0


# --- diagnosis ---------------------------------------------------------------------------------------


def _reply_status(reply: Reply) -> str:
    """The reply's RFC 3463 status, or ``X.0.0`` (other or undefined status) when it gave none."""
    return reply.enhanced or f"{reply.code // 100}.0.0"


def _wrapped(reply: Reply) -> str | None:
    """What Exchange's queue shows for a transient reply (``451 4.4.0 ... responded with: "..."``)."""
    return EXCHANGE_WRAP.format(inner=reply.text.rstrip(".")) if reply.transient else None


def _our_causes(session: SmtpSession, identity: ClientIdentity | None, at: _dt.datetime, reply: Reply,
                when: str) -> list[Finding]:
    tls = session.tls
    ev: dict[str, Any] = {"reply": reply.text, "step": when}
    if tls is not None:
        ev["acceptable_issuers"] = [n.rfc4514_string() for n in tls.client_ca_names]
    # What our Exchange queue would show is their reply, wrapped (Postfix's 421 as much as Exchange's 454).
    shown = _wrapped(reply)
    if reply.code == 554:
        return [Finding("peer.rejected-weak-session", f"They answered '{reply.text}' {when}.",
                        evidence=ev, exchange_text=shown)]
    if identity is None or tls is None or not tls.client_cert_sent:
        why = "we have no client certificate" if identity is None else "the server did not ask for one"
        return [Finding("peer.rejected-no-client-cert",
                        f"They answered '{reply.text}' {when}; we presented no certificate ({why}).",
                        evidence=ev, exchange_text=shown)]
    ours = identity.cert
    who = ours.subject.rfc4514_string()
    out: list[Finding] = []
    ours_issuers = {ours.issuer, *(c.subject for c in identity.chain), *(c.issuer for c in identity.chain)}
    not_listed = bool(tls.client_ca_names) and not ours_issuers & set(tls.client_ca_names)
    # A self-signed certificate has no issuer (no root to send): it gets its own finding and remedy.
    self_signed = is_self_signed(ours)
    if not_listed and not self_signed:
        out.append(Finding("peer.rejected-issuer-not-accepted",
                           f"They answered '{reply.text}' {when}; our issuer {ours.issuer.rfc4514_string()} is not "
                           f"among the {len(tls.client_ca_names)} issuer(s) they accept.", subject=who, evidence=ev,
                           exchange_text=shown))
    if not allows_client_auth(ours):
        out.append(Finding("peer.rejected-no-client-auth",
                           f"They answered '{reply.text}' {when}; our certificate has no clientAuth EKU.", subject=who,
                           evidence=ev, exchange_text=shown))
    if ours.not_valid_after_utc < at:
        out.append(Finding("peer.rejected-expired", f"They answered '{reply.text}' {when}; our certificate expired on "
                           f"{ours.not_valid_after_utc:%Y-%m-%d}.", subject=who, evidence=ev, exchange_text=shown))
    if self_signed and (not_listed or not out):
        listed = f" (issued by none of the {len(tls.client_ca_names)} issuer(s) they accept)" if not_listed else ""
        out.insert(0, Finding("peer.rejected-self-signed",
                              f"They answered '{reply.text}' {when}; our certificate is self-signed{listed}.",
                              subject=who, evidence=ev, exchange_text=shown))
    if not out:
        out.append(Finding("peer.rejected-untrusted",
                           f"They answered '{reply.text}' {when}: they do not trust our certificate.",
                           subject=who, evidence=ev, exchange_text=shown))
    return out


def failure_finding(session: SmtpSession) -> Finding:
    """The finding for why ``session`` stopped early (``session.failure`` must be set).

    A timeout after the connection was taken is a bad connection (4.4.2), not "no answer from host"
    (4.4.1), and Exchange shows it as a dropped connection rather than a failure to connect.
    """
    f = session.failure
    assert f is not None
    where = f"{session.address}:{session.port}"
    status = text = None
    if f.code == "net.timeout" and f.stage != "connect":
        status = "4.4.2"
        text = EXCHANGE_WRAP.format(inner="421 4.4.2 Connection dropped due to TimedOut")
    return Finding(f.code, f"{f.detail} (at {f.stage}).", subject=where, enhanced_status=status, exchange_text=text,
                   evidence={"stage": f.stage})


def dns_finding(failure: DnsFailure, subject: str) -> Finding:
    """The finding for a DNS failure, with its own status (5.1.2 no such domain, 5.1.10 null MX) and Exchange's text."""
    return Finding(failure.code, failure.detail, subject=subject, enhanced_status=failure.enhanced_status,
                   exchange_text=EXCHANGE_DNS_ERROR.format(error=failure.detail))


def _route_findings(route: MailRoute, domain: str) -> list[Finding]:
    """DNS findings of a mail domain: one ``dns.failure`` per MX host without an address (an error when no
    MX host has one, else a warning: mail still goes to the others), or the route's own failure."""
    usable = any(h.addresses for h in route.hosts)
    out: list[Finding] = []
    if not route.implicit:
        for h in route.hosts:
            if h.addresses:
                continue
            why = h.failure.detail if h.failure is not None else f"{h.name} has no A or AAAA record"
            status = h.failure.enhanced_status if h.failure is not None else None
            failure = DnsFailure("dns.failure", f"MX host {h.name} (preference {h.preference}) of {domain} has no "
                                 f"address: {why}", status)
            out.append(Finding(failure.code, failure.detail, subject=h.name,
                               severity=Severity.WARNING if usable else Severity.ERROR,
                               enhanced_status=failure.enhanced_status,
                               exchange_text=EXCHANGE_DNS_ERROR.format(error=failure.detail),
                               evidence={"mx": h.name, "preference": h.preference}))
    if route.failure is not None and not out:
        out.append(dns_finding(route.failure, domain))
    return out


def diagnose_session(session: SmtpSession, *, identity: ClientIdentity | None = None,
                     at: _dt.datetime) -> list[Finding]:
    """The SMTP/TLS findings of one session (not the verification of their certificate)."""
    out: list[Finding] = []
    s = session
    where = f"{s.address}:{s.port}"
    if s.injected:
        late = s.tls is None and s.failure is not None and s.failure.stage == "handshake"
        what = ("; they arrived during the TLS handshake, which failed on them" if late
                else "; they were discarded")
        out.append(Finding("smtp.starttls-injection", f"{where} sent {len(s.injected)} octets of plaintext after "
                           f"its 220 to STARTTLS{what}.", subject=where,
                           evidence={"data": printable(s.injected, 200)}))
    if s.failure is not None:
        out.append(failure_finding(s))
        if s.failure.stage in ("connect", "banner", "ehlo", "helo", "starttls", "handshake"):
            return out
    if s.banner is not None and not s.banner.positive:
        out.append(Finding("smtp.protocol-error", f"The greeting was negative: '{s.banner.text}'.", subject=where))
        return out
    if not s.implicit_tls and s.ehlo is not None and s.ehlo.positive and not s.starttls_offered:
        out.append(Finding("smtp.no-starttls", f"{where} did not offer STARTTLS after EHLO.", subject=where))
    if s.starttls is not None and s.starttls.code != 220:
        out.append(Finding("smtp.starttls-refused", f"STARTTLS was answered '{s.starttls.text}'.", subject=where))
    if s.tls is not None and s.tls.old_protocol:
        out.append(Finding("tls.old-protocol", f"The session used {s.tls.version}.", subject=where))
    rejection = rejection_of_us(s)
    if rejection is not None:
        out.extend(_our_causes(s, identity, at, rejection[1], rejection[0]))
        return out
    greeting = s.after_tls if s.tls is not None else s.ehlo
    if greeting is not None and not greeting.positive:
        when = "after the handshake" if s.tls is not None else "in plaintext"
        out.append(Finding("smtp.ehlo-refused", f"EHLO/HELO {when} was answered '{greeting.text}'.", subject=where,
                           enhanced_status=_reply_status(greeting), exchange_text=_wrapped(greeting),
                           evidence={"reply": greeting.text, "step": when}))
    elif s.mail is not None and s.mail.code == 530:
        out.append(Finding("smtp.tls-required", f"MAIL FROM was answered '{s.mail.text}'.", subject=where))
    elif s.mail is not None and not s.mail.positive:
        sender_refused = s.mail.permanent and (s.mail.enhanced or "").startswith(("5.1.", "5.7.1"))
        after = " (sent over TLS)" if s.tls is not None else ""
        out.append(Finding("smtp.mail-refused", f"They answered '{s.mail.text}' at MAIL FROM{after}; it is "
                           "not a refusal of our certificate, but no mail would be delivered.", subject=where,
                           side=Side.CONFIGURATION if sender_refused else None,
                           enhanced_status=_reply_status(s.mail), exchange_text=_wrapped(s.mail),
                           evidence={"reply": s.mail.text, "step": "at MAIL FROM"}))
    elif s.rcpt is not None and not s.rcpt.positive:
        out.append(Finding("smtp.recipient-refused", f"RCPT TO was answered '{s.rcpt.text}'.", subject=where,
                           enhanced_status=_reply_status(s.rcpt), evidence={"reply": s.rcpt.text}))
    return out


@dataclass(frozen=True)
class _DaneInput:
    """What DANE needs to judge one address: the mode, the lookup (``None``: none was made) and the names."""

    mode: str
    lookup: TlsaLookup | None
    name_secure: bool
    next_hop: str


def _judge_dane(result: AddressResult, d: _DaneInput, at: _dt.datetime, validator: str = "postfix") -> None:
    """DANE for one finished session (RFC 7672): findings on ``result``, and ``result.dane``.

    A match makes the trust store's (PKIX) verdict information only for the ``postfix`` validator, as a DANE
    sender decides; Exchange Server's Domain Security does no DANE, so under ``exchange`` it still decides."""
    _DaneJudge(result, d, at, validator).run()


class _DaneJudge:
    """The steps of :func:`_judge_dane`: whether DANE applies at all, then the session against the records."""

    def __init__(self, result: AddressResult, d: _DaneInput, at: _dt.datetime, validator: str) -> None:
        self.result, self.d, self.at, self.validator = result, d, at, validator
        self.host = result.host
        self.out = result.findings

    def report(self, status: str, summary: str, *, applies: bool = False, matched: TlsaRecord | None = None,
               checks: tuple[RecordCheck, ...] = ()) -> None:
        lookup = self.d.lookup
        self.result.dane = DaneReport(self.d.mode, status, lookup.name if lookup else None, self.d.name_secure,
                                      applies, tuple(lookup.records) if lookup else (), matched, checks, summary)

    def not_published(self, why: str) -> None:
        lookup = self.d.lookup
        if self.d.mode == "require":
            self.out.append(Finding("dane.not-published", f"DANE is required, but {why}.", subject=self.host,
                                    evidence={"owner": lookup.name if lookup else None,
                                              "records": [r.text() for r in (lookup.records if lookup else ())]}))

    def run(self) -> None:
        lookup = self.d.lookup
        if lookup is None:
            why = f"{self.host} is an IP address or a local name, with no TLSA records to look up"
            self.not_published(why)
            self.report("skipped", f"not looked up ({why})")
        elif lookup.status in ("bogus", "error"):
            self.lookup_failed(lookup)
        elif not self.applies(lookup):
            pass
        else:
            tls = self.result.session.tls if self.result.session is not None else None
            if tls is None or not tls.peer_chain:
                self.without_tls(lookup)
            else:
                self.match(lookup, tls.peer_chain)

    def lookup_failed(self, lookup: TlsaLookup) -> None:
        detail = lookup.error or "the TLSA lookup failed"
        require = self.d.mode == "require"
        if self.d.name_secure or require:
            severity = Severity.ERROR if lookup.status == "bogus" or require else Severity.WARNING
            self.out.append(Finding("dane.dnssec-bogus", f"The TLSA lookup of {lookup.name} failed: {detail}; a DANE "
                                    "sender cannot tell whether DANE applies and defers the mail.", subject=self.host,
                                    severity=severity, evidence={"owner": lookup.name, "error": detail}))
        self.report(lookup.status, f"TLSA lookup failed ({detail})")

    def applies(self, lookup: TlsaLookup) -> bool:
        """Whether the records count: secure records for a host from a secure MX lookup (RFC 7672 2.2.1)."""
        n, status = len(lookup.records), lookup.status
        if status == "none":
            denial = "securely denied" if lookup.secure else "not validated"
            self.not_published(f"{lookup.name} has no TLSA records ({denial})")
            self.report(status, f"no TLSA records ({denial})")
            return False
        if status == "insecure":
            self.not_published(f"the {plural(n, 'TLSA record')} of {lookup.name} came without DNSSEC validation "
                               "(no AD bit from the resolver)")
            self.report(status, f"{plural(n, 'TLSA record')} without DNSSEC validation (no AD bit): not used")
            return False
        if not self.d.name_secure:
            self.not_published(f"{self.host} comes from an MX lookup that was not DNSSEC-validated, so its "
                               f"{plural(n, 'secure TLSA record')} may not be used (RFC 7672 2.2.1)")
            self.report(status, f"{plural(n, 'secure TLSA record')}, not used: the MX lookup was not "
                                "DNSSEC-validated")
            return False
        return True

    def without_tls(self, lookup: TlsaLookup) -> None:
        """Secure records, and no certificate to match: STARTTLS was missing (or the session broke)."""
        n, session = len(lookup.records), self.result.session
        head = plural(n, "secure TLSA record")
        evidence = {"records": [r.text() for r in lookup.records]}
        if session is not None and session.starttls_missing:
            self.out.append(Finding("dane.starttls-missing", f"{self.host} publishes {head}, so a DANE sender "
                                    "requires STARTTLS, but the server did not offer it or refused it.",
                                    subject=self.host, evidence=evidence))
            tail = "STARTTLS missing"
        else:
            tail = "not checked (no TLS session)"
        unusable = [r for r in lookup.records if not r.usable]
        if len(unusable) == n:
            reasons = "; ".join(dict.fromkeys(str(r.unusable_reason) for r in unusable))
            self.out.append(Finding("dane.unusable-records", f"None of the {plural(n, 'TLSA record')} is usable "
                                    f"for SMTP: {reasons}.", subject=self.host, evidence=evidence))
            tail += ", none usable"
        self.report(lookup.status, f"{head}, {tail}", applies=True)

    def match(self, lookup: TlsaLookup, chain: Sequence[x509.Certificate]) -> None:
        from certkit.core.dane import dane_match

        head = plural(len(lookup.records), "secure TLSA record")
        match = dane_match(lookup.records, chain, host_names=[self.host, self.d.next_hop], at=self.at)
        self.out.extend(match.findings)
        rec = match.matched
        if rec is None:
            tail = "none matched" if match.usable_records else "none usable"
            self.report(lookup.status, f"{head}, {tail}", applies=True, checks=match.checks)
            return
        matched = f"{head}, {rec.usage} {rec.selector} {rec.matching_type} matched"
        if self.validator != "postfix":  # Exchange's Domain Security and Exchange Online's connectors
            self.report(lookup.status, f"{matched} (Domain Security still needs the trust store)", applies=True,
                        matched=rec, checks=match.checks)
            return
        # DANE authenticated the server: the trust store's (PKIX) verdict on their certificate is information only.
        result = self.result
        verification = {id(f) for f in (result.verification.findings if result.verification else ())}
        note = (f" (Information only: the TLSA record {rec.usage} {rec.selector} {rec.matching_type} authenticated "
                "the server, so DANE, not the trust store, decides.)")
        result.findings[:] = [replace(f, severity=Severity.INFO, detail=f.detail + note)
                              if id(f) in verification and f.severity is not Severity.INFO else f for f in self.out]
        self.report(lookup.status, matched, applies=True, matched=rec, checks=match.checks)


#: Called once per probed address, as soon as it is done (for progress displays); runs on the caller's loop.
#: If it also has a ``planned(count)`` method, that is called once per target as soon as the number of its
#: addresses is known (after DNS), so that a display can show ``done/total``.
ProgressCallback = Callable[[AddressResult], None]


@dataclass(frozen=True)
class ProbeOptions:
    """How :func:`probe` talks to the targets and judges them; checked once, when made.

    ``port``: for targets given without one; ``implicit_tls``: TLS from the first byte (port 465) instead
    of STARTTLS; ``validator``: ``exchange``, ``postfix`` or ``exchange-online`` (whose rules judge their
    certificate);
    ``domain`` (the Domain Security rule; default: the target when it is a domain) or ``name`` (the host
    rule); ``mail_from``, ``rcpt_to`` and ``helo_name``: the envelope and the EHLO name (defaults from our
    certificate); ``nameserver``: the DNS server to ask (default: the system's); ``timeout``: seconds per
    network step; at most ``concurrency`` sessions and DNS look-ups run at once; ``dane``: ``auto``,
    ``require`` or ``off``; ``mta_sts``: ``auto`` or ``off``, with ``sts_cadata`` (PEM roots in place of the
    Web PKI, certifi's Mozilla roots, for the policy host and the MX hosts) and ``sts_policy_port`` (the
    policy host's HTTPS port, 443) for a lab (see the module docstring); ``our_certificate``: check the
    certificate we present under ``validator``'s rules once, before connecting
    (:func:`certkit.checks.ourcert.check_our_certificate`; the pre-flight, which checks it in its own step,
    turns it off). Names and addresses are kept normalised.

    For many targets (docs/bulk.md): ``per_address`` and ``per_net``: at most that many sessions at once to one
    server address and to one network (IPv4 /24, IPv6 /48), on top of ``concurrency`` (``None``: no limit, the
    library's default); ``share_sessions``: targets that reach the same MX host at the same address and port in
    one run share one SMTP session (each judged under its own name rule; ``AddressResult.session_of`` names the
    target that made it). Its recipient is the first target's ``postmaster`` unless ``rcpt_to`` is given.
    """

    port: int = 25
    implicit_tls: bool = False
    validator: Validator = "exchange"
    domain: str | None = None
    name: str | None = None
    mail_from: str | None = None
    rcpt_to: str | None = None
    helo_name: str | None = None
    nameserver: str | None = None
    timeout: float = 10.0
    concurrency: int = 50
    dane: str = "off"
    mta_sts: str = "off"
    sts_cadata: str | None = None
    sts_policy_port: int = 443
    our_certificate: bool = True
    per_address: int | None = None
    per_net: int | None = None
    share_sessions: bool = False

    def __post_init__(self) -> None:
        _check_modes(self.validator, self.dane, self.timeout, self.concurrency, self.nameserver)
        for what, limit in (("per_address", self.per_address), ("per_net", self.per_net)):
            if limit is not None and not (isinstance(limit, int) and limit >= 1):
                raise UsageError(f"{what} must be at least 1 (or None for no limit), not {limit!r}.",
                                 f"Pass e.g. {what}=2.")
        check_sts_options(self.mta_sts, self.sts_cadata, self.sts_policy_port)
        if not (isinstance(self.port, int) and 1 <= self.port <= 65535):
            raise UsageError(f"The port {self.port!r} is not a TCP port.", "Pass a port from 1 to 65535, e.g. port=25.")
        domain, name = _check_names(self.domain, self.name)
        object.__setattr__(self, "domain", domain)
        object.__setattr__(self, "name", name)
        if self.mail_from is not None:
            object.__setattr__(self, "mail_from", check_address(self.mail_from, "--mail-from", null_ok=True))
        if self.rcpt_to is not None:
            object.__setattr__(self, "rcpt_to", check_address(self.rcpt_to, "--rcpt", postmaster_ok=True))
        if self.helo_name is not None:
            object.__setattr__(self, "helo_name", check_helo(self.helo_name))



def probe_sync(targets: Sequence[str], *, anchors: Any = (), identity: ClientIdentity | None = None,
               options: ProbeOptions | None = None, clock: Clock | None = None,
               progress: ProgressCallback | None = None,
               our_roots: Sequence[x509.Certificate] = ()) -> list[ProbeResult]:
    """Probe every target (see the module docstring); results in input order.

    ``anchors`` is an :class:`~certkit.core.trust.AnchorSet` or a sequence of certificates; ``identity``
    the client certificate we present; ``options`` a :class:`ProbeOptions` (port, validator, name rule,
    envelope, DNS, timeout, concurrency, DANE, MTA-STS); ``clock`` the time to judge at (default: the system's).
    ``progress`` is called per finished address. ``our_roots``: our own root(s), to follow our chain to
    when checking the certificate we present (besides ``anchors`` and the roots in ``identity.chain``).
    """
    return asyncio.run(probe(targets, anchors=anchors, identity=identity, options=options, clock=clock,
                             progress=progress, our_roots=our_roots))


async def probe(targets: Sequence[str], *, anchors: Any = (), identity: ClientIdentity | None = None,
                options: ProbeOptions | None = None, clock: Clock | None = None,
                progress: ProgressCallback | None = None,
                our_roots: Sequence[x509.Certificate] = ()) -> list[ProbeResult]:
    """The coroutine behind :func:`probe_sync`: ``concurrency`` sessions at once on the running loop; DNS and
    the verification (which may download CRLs) on a few daemon threads."""
    if options is not None and not isinstance(options, ProbeOptions):
        raise UsageError(f"options must be a ProbeOptions, not {type(options).__name__}.",
                         "Pass options=ProbeOptions(validator='postfix', timeout=5).")
    opts = _DEFAULT_OPTIONS if options is None else options
    parsed = [parse_target(t, opts.port) for t in targets]
    async with _open_run(opts, anchors, identity, clock, progress, our_roots, len(parsed)) as run:
        return list(await asyncio.gather(*(run.target(t) for t in parsed)))


@contextlib.asynccontextmanager
async def _open_run(options: ProbeOptions, anchors: Any, identity: ClientIdentity | None, clock: Clock | None,
                    progress: ProgressCallback | None, our_roots: Sequence[x509.Certificate],
                    expected: int) -> AsyncIterator[_ProbeRun]:
    """A run on the running loop, with our certificate checked (``expected``: targets, to start threads for)."""
    # Threads only for blocking work (DNS, CRL downloads): a few are enough, and fewer threads fight less
    # over the GIL with the sessions on the loop.
    threads = min(options.concurrency, _WORKERS)
    run = _ProbeRun(options, anchors, identity, (clock or SystemClock()).now(), progress,
                    _DaemonWorkers(asyncio.get_running_loop(), threads, prestart=min(expected, threads)))
    try:
        # Once per run, before connecting: our certificate as the partner's validator will judge it.
        if identity is not None and options.our_certificate:
            run.ours = await run.workers.submit(functools.partial(run.check_ours, tuple(our_roots)))
        yield run
    finally:
        run.workers.close()


class _ProbeRun:
    """One call of :func:`probe`: what every target and address shares (options, trust, time, limits)."""

    def __init__(self, options: ProbeOptions, anchors: Any, identity: ClientIdentity | None, at: _dt.datetime,
                 progress: ProgressCallback | None, workers: _DaemonWorkers) -> None:
        self.options = options
        self.anchors = anchors
        self.identity = identity
        self.at = at
        self.progress = progress
        self.workers = workers
        self.sessions = asyncio.Semaphore(options.concurrency)
        self.limits = ServerLimits(options.per_address, options.per_net)
        self.share: SessionShare[tuple[SmtpSession, str]] | None = SessionShare() if options.share_sessions else None
        self.crl_cache = CrlCache(timeout=options.timeout)
        self.ours: OurCertificate | None = None

    def check_ours(self, our_roots: tuple[x509.Certificate, ...]) -> OurCertificate:
        """The certificate we present under the validator's rules (blocking: may download our CRL)."""
        assert self.identity is not None
        anchors = as_anchor_set(self.anchors)
        if our_roots:
            anchors = anchors.union(AnchorSet.of(our_roots, origin="our root"))
        return check_our_certificate(self.identity.cert, self.identity.chain, anchors, at=self.at,
                                     validator=self.options.validator, crl_source=self.crl_cache.get,
                                     domain=_sender_domain(self.identity.cert, self.options))

    async def target(self, t: Target) -> ProbeResult:
        result = ProbeResult(t.text, ours=self.ours)
        pairs, name_secure = await self.resolve(t, result)
        result.addresses = await self.addresses(t, pairs, name_secure)
        await self.judge_sts(t, result)
        return result

    async def resolve(self, t: Target, result: ProbeResult) -> tuple[list[tuple[str, str]], bool]:
        """Step 1: the (host, address) pairs of ``t`` (see :func:`_addresses_of`); DNS findings on ``result``."""
        async with self.sessions:
            pairs, name_secure = await _addresses_of(t, result, self.workers, nameserver=self.options.nameserver,
                                                     timeout=self.options.timeout)
        planned = getattr(self.progress, "planned", None)
        if callable(planned):
            planned(len(pairs))
        return pairs, name_secure

    async def addresses(self, t: Target, pairs: Sequence[tuple[str, str]], name_secure: bool) -> list[AddressResult]:
        """Step 2: a session to each address of ``t``, judged (in the order of ``pairs``)."""
        envelope = _envelope(t, self.identity.cert if self.identity else None, self.options)
        tlsa: dict[str, asyncio.Future[TlsaLookup]] = {}  # one TLSA lookup per MX host, shared by its addresses
        return list(await asyncio.gather(
            *(self.address(t, host, address, envelope, tlsa, name_secure) for host, address in pairs)))

    async def judge_sts(self, t: Target, result: ProbeResult) -> None:
        """Step 3: MTA-STS of a domain target from its finished sessions (``mta_sts="auto"``)."""
        if self.options.mta_sts == "auto" and t.is_domain:
            result.mta_sts = await self.workers.submit(functools.partial(self.mta_sts, t, result.addresses))

    def mta_sts(self, t: Target, addresses: Sequence[AddressResult]) -> StsReport:
        """MTA-STS and TLS-RPT of domain target ``t``, from its finished sessions (blocking: DNS and HTTPS)."""
        opts = self.options
        return mta_sts_of_sessions(t.host, addresses, nameserver=opts.nameserver, timeout=opts.timeout,
                                   cadata=opts.sts_cadata, policy_port=opts.sts_policy_port, at=self.at)

    async def address(self, t: Target, host: str, address: str, envelope: _Envelope,
                      tlsa: dict[str, asyncio.Future[TlsaLookup]], name_secure: bool) -> AddressResult:
        opts = self.options
        lookup = self._tlsa_lookup(host, t.port, tlsa)
        session, session_of = await self._session(t, host, address, envelope)
        async with self.sessions:
            dane_in = None
            if opts.dane == "require" or lookup is not None:
                dane_in = _DaneInput(opts.dane, await lookup if lookup is not None else None, name_secure,
                                     t.host if t.is_domain else host)
            done = await self.workers.submit(functools.partial(
                self.judge, AddressResult(t.text, host, address, t.port, session, ours=self.ours,
                                          session_of=session_of), session, envelope.partner, dane_in))
        if self.progress is not None:
            self.progress(done)
        return done

    async def _session(self, t: Target, host: str, address: str,
                       envelope: _Envelope) -> tuple[SmtpSession, str | None]:
        """The SMTP session to ``address`` for ``t``, and the target whose session it shares (``None``: its own).

        A shared session is awaited before taking any slot; a new one takes the address's and its network's
        slots (:class:`~certkit.checks.limits.ServerLimits`), then one of the run's ``concurrency``."""
        async def connect() -> tuple[SmtpSession, str]:
            async with self.limits.hold(address), self.sessions:
                # The session runs on this loop (TLS through memory BIOs); only the judging, which may
                # download CRLs, goes to a worker thread.
                return await run_session_async(
                    address, t.port, server_name=host if host != address else None, helo_name=envelope.helo_name,
                    mail_from=envelope.mail_from, rcpt_to=envelope.rcpt_to, identity=self.identity,
                    implicit_tls=self.options.implicit_tls, timeout=self.options.timeout), t.text

        if self.share is None:
            return (await connect())[0], None
        # The name rule is judged per target; what is sent on the wire decides what may be shared.
        key = (address, t.port, host, envelope.helo_name, envelope.mail_from, self.options.rcpt_to)
        (session, first), shared = await self.share.get(key, connect)
        return session, first if shared else None

    def _tlsa_lookup(self, host: str, port: int,
                     tlsa: dict[str, asyncio.Future[TlsaLookup]]) -> asyncio.Future[TlsaLookup] | None:
        """The TLSA look-up of ``host``, started on a worker thread (while the session runs) on first need."""
        if self.options.dane == "off" or not _has_tlsa_name(host):
            return None
        lookup = tlsa.get(host)
        if lookup is None:
            lookup = tlsa[host] = self.workers.submit(functools.partial(
                lookup_tlsa, host, port, nameserver=self.options.nameserver, timeout=self.options.timeout))
        return lookup

    def judge(self, result: AddressResult, session: SmtpSession, partner: str | None,
              dane: _DaneInput | None) -> AddressResult:
        """The diagnosis and the verification of one finished session (blocking: may download CRLs)."""
        result.findings.extend(diagnose_session(session, identity=self.identity, at=self.at))
        result.verification = self._verify(session, partner)
        if result.verification is not None:
            result.findings.extend(result.verification.findings)
        if dane is not None:
            _judge_dane(result, dane, self.at, self.options.validator)
        return result

    def _verify(self, session: SmtpSession, partner: str | None) -> VerificationResult | None:
        """Verify their chain as presented, with the validator's revocation rules (see :mod:`certkit.validation`)."""
        if session.tls is None or not session.tls.peer_chain:
            return None
        leaf, *inters = session.tls.peer_chain
        return validate_peer(leaf, inters, self.anchors, crl_source=self.crl_cache.get, purpose="server",
                             validator=self.options.validator, name=self.options.name, domain=partner,
                             at=self.at).result


def _check_modes(validator: str, dane: str, timeout: float, concurrency: int, nameserver: str | None) -> None:
    if validator not in VALIDATOR_NAMES:
        raise InputError(f"Unknown validator {validator!r}.", "Use exchange, postfix or exchange-online.")
    if dane not in DANE_MODES:
        raise InputError(f"Unknown DANE mode {dane!r}.", "Use auto, require or off.")
    if not timeout > 0:  # also refuses NaN
        raise UsageError(f"The timeout must be a positive number of seconds, not {timeout!r}.", "Pass e.g. timeout=10.")
    if concurrency < 1:
        raise UsageError(f"The concurrency must be at least 1, not {concurrency!r}.", "Pass e.g. concurrency=50.")
    if nameserver is not None:
        make_resolver(nameserver, timeout)  # a malformed --nameserver is an InputError before anything is probed


def _check_names(domain: str | None, name: str | None) -> tuple[str | None, str | None]:
    if name is not None and domain is not None:
        raise InputError("--name and --domain are mutually exclusive.",
                         "Use --name for the host rule or --domain for the Domain Security rule.")
    if domain is not None:
        domain = _option_name(domain, "--domain")
    if name is not None and not _is_ip(name.strip("[]")):
        name = _option_name(name, "--name")
    return domain, name


_DEFAULT_OPTIONS = ProbeOptions()


@dataclass(frozen=True)
class _Envelope:
    """For one target: the partner domain of the name rule, MAIL FROM, RCPT TO and the EHLO name."""

    partner: str | None
    mail_from: str
    rcpt_to: str | None
    helo_name: str


def _envelope(t: Target, ours: x509.Certificate | None, options: ProbeOptions) -> _Envelope:
    partner = options.domain if options.domain is not None else (
        t.host if t.is_domain and options.name is None else None)
    sender = options.mail_from if options.mail_from is not None else (
        f"probe@{_our_domain(ours)}" if ours else "probe@localhost")
    rcpt = options.rcpt_to if options.rcpt_to is not None else (
        f"postmaster@{t.host}" if t.is_domain else f"postmaster@{partner}" if partner else None)
    return _Envelope(partner, sender, rcpt, options.helo_name or (_our_host(ours) if ours else "localhost"))


def _sender_domain(ours: x509.Certificate, options: ProbeOptions) -> str | None:
    """Our domain as the partner's Exchange sees it: MAIL FROM's (``--mail-from``, else the one the probe derives
    from our certificate); ``None`` for the null sender or an address literal (no name rule to apply)."""
    if options.mail_from is None and _our_host(ours) == "localhost":
        return None  # no host name in our certificate to take a domain from
    sender = options.mail_from if options.mail_from is not None else f"probe@{_our_domain(ours)}"
    domain = sender.rpartition("@")[2]
    return domain if domain and not domain.startswith("[") else None


async def _addresses_of(t: Target, result: ProbeResult, workers: _DaemonWorkers, *, nameserver: str | None,
                        timeout: float) -> tuple[list[tuple[str, str]], bool]:
    """The (host, address) pairs to probe for ``t`` (DNS findings go on ``result``), and whether the host names
    may carry TLSA records: RFC 7672 2.2.1 counts them only for a name from a secure MX lookup, or given
    directly (a domain without MX is its own host: no name came from DNS)."""
    if t.is_domain:
        route = await workers.submit(
            functools.partial(resolve_mail_domain, t.host, nameserver=nameserver, timeout=timeout))
        result.findings.extend(_route_findings(route, t.host))
        return route.targets, route.secure or route.implicit
    if _is_ip(t.host):
        return [(t.host, t.host)], True
    # host:port: resolved like an MX host (dnspython, --nameserver, timeout; every A and AAAA address).
    found = await workers.submit(functools.partial(resolve_host, t.host, nameserver=nameserver, timeout=timeout))
    if found.failure is not None and not found.addresses:
        result.findings.append(dns_finding(found.failure, t.host))
    return [(t.host, a) for a in found.addresses], True


#: Worker threads for DNS look-ups and verification (CRL downloads block for up to the timeout each).
_WORKERS = 8


class _DaemonWorkers:
    """Blocking work on a few daemon threads, started once per run; results complete futures on ``loop``.

    Not an executor: its worker threads are joined at interpreter exit, so Ctrl-C would wait for every
    session in flight (up to the whole --timeout); daemon workers are abandoned instead, each session
    bounded by its own timeouts. Not a thread per session either: ``Thread.start()`` waits until the new
    thread runs, which under a busy GIL cost milliseconds per session on the event loop's thread.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, count: int, *, prestart: int = 0) -> None:
        self.loop = loop
        self.jobs: queue.SimpleQueue[tuple[Callable[[], Any], asyncio.Future[Any]] | None] = queue.SimpleQueue()
        self.count = count
        self.started = 0
        # Started before any session runs, a thread starts at once; started later, it waits for the GIL.
        for _ in range(min(prestart, count)):
            self._start()

    def _start(self) -> None:
        self.started += 1
        threading.Thread(target=self._work, name="certkit-probe", daemon=True).start()

    def submit(self, fn: Callable[[], _R]) -> asyncio.Future[_R]:
        future: asyncio.Future[_R] = self.loop.create_future()
        self.jobs.put((fn, future))
        if self.started < self.count and self.jobs.qsize() > 0:  # more work than workers: one more
            self._start()
        return future

    def close(self) -> None:
        for _ in range(self.started):
            self.jobs.put(None)

    def _work(self) -> None:
        while (job := self.jobs.get()) is not None:
            fn, future = job
            try:
                outcome: tuple[bool, Any] = (True, fn())
            except BaseException as e:  # handed to the awaiting coroutine
                outcome = (False, e)
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
                self.loop.call_soon_threadsafe(_settle, future, *outcome)


def _settle(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if not future.done():
        (future.set_result if ok else future.set_exception)(value)


def _has_tlsa_name(host: str) -> bool:
    """Whether ``host`` is a DNS name with TLSA records to look up (not an IP address, not a localhost name)."""
    bare = host.rstrip(".").lower()
    return not _is_ip(host.strip("[]")) and bare != "localhost" and not bare.endswith(".localhost")


def _our_host(cert: x509.Certificate) -> str:
    names = [n for n in san_dns_names(cert) if "*" not in n]
    return names[0] if names else "localhost"


def _our_domain(cert: x509.Certificate) -> str:
    host = _our_host(cert)
    return host.split(".", 1)[1] if host.count(".") >= 2 else host
