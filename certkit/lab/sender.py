"""The lab sender: deliver one message the way a sending Edge does, and show the queue as Exchange does.

:func:`send_message` routes by MX (or to ``via``), runs :func:`certkit.adapters.transport.deliver_message`
with our transport certificate, and, with Domain Security (``domain_secure``), validates the receiver's
certificate against the recipient domain before sending the message (``TLSSendDomainSecureList``:
chain to the store, serverAuth, the Domain Security name rule, checkable revocation). On failure the
:class:`SendResult` holds the queue entry as ``Get-Queue | fl`` shows it (:func:`queue_lines`) and
certkit's diagnosis from the sender's side (:func:`certkit.checks.probe.diagnose_session` plus the
verification of the receiver's certificate). Nothing here prints.
"""

from __future__ import annotations

import datetime as _dt
import secrets
from dataclasses import dataclass, field
from email.utils import format_datetime, make_msgid
from typing import Any

from certkit.adapters.crlfetch import CrlCache
from certkit.adapters.dns import DnsFailure, resolve_host, resolve_mail_domain
from certkit.adapters.transport import ClientIdentity, Delivery, SmtpSession, deliver_message
from certkit.checks.probe import diagnose_session, dns_finding, failure_finding, parse_target
from certkit.clock import Clock, SystemClock
from certkit.core.findings import (
    CATALOGUE,
    EXCHANGE_CONNECT_ERROR,
    EXCHANGE_DNS_ERROR,
    EXCHANGE_WRAP,
    Finding,
    Severity,
)
from certkit.core.issuance import fqdn_of
from certkit.core.names import is_ip_address
from certkit.core.personality import Personality, behaviour
from certkit.core.trust import AnchorSet, is_self_signed
from certkit.core.verify import VerificationResult
from certkit.errors import InputError
from certkit.validation import validate_peer

__all__ = ["FAILOVER", "SendResult", "build_message", "diagnosis_lines", "queue_lines", "send_message"]

#: What Exchange 2007/2010 appends to a LastError when the only target failed.
FAILOVER = ("Attempted failover to alternate host, but that did not succeed. Either there are no alternate "
            "hosts, or delivery failed to all alternate hosts.")



@dataclass
class SendResult:
    """One delivery attempt (or several, one per MX address) and what the sender's admin would see."""

    mail_from: str
    rcpt_to: str
    next_hop: str                                   # the recipient domain (Get-Queue's NextHopDomain)
    attempts: list[Delivery] = field(default_factory=list)
    verification: VerificationResult | None = None  # our check of the receiver's certificate
    findings: list[Finding] = field(default_factory=list)
    last_error: str | None = None
    route_error: str | None = None
    at: _dt.datetime | None = None  # when the message was sent
    domain_secure: bool = False
    our_certificate_self_signed: bool = False

    @property
    def delivered(self) -> bool:
        return any(a.delivered for a in self.attempts)

    @property
    def status(self) -> str:
        """``Retry`` for a transient failure (the message stays queued), ``Ready`` once delivered."""
        if self.delivered:
            return "Ready"
        last = self.attempts[-1].last_reply if self.attempts else None
        return "Failed" if last is not None and last.permanent else "Retry"

    def to_dict(self) -> dict[str, Any]:
        return {"delivered": self.delivered, "next_hop_domain": self.next_hop, "status": self.status,
                "last_error": self.last_error, "findings": [f.to_dict() for f in self.findings],
                "transcript": [str(t) for a in self.attempts for t in a.session.transcript]}


def build_message(mail_from: str, rcpt_to: str, *, subject: str = "certkit lab test message",
                  body: str = "Sent by certkit lab send over mutual TLS.", at: _dt.datetime | None = None) -> bytes:
    """A small RFC 5322 message."""
    date = at or _dt.datetime.now(_dt.UTC)
    domain = mail_from.rsplit("@", 1)[-1] or "localhost"
    lines = [f"From: <{mail_from}>", f"To: <{rcpt_to}>", f"Subject: {subject}", f"Date: {format_datetime(date)}",
             f"Message-ID: {make_msgid(secrets.token_hex(4), domain=domain)}", "MIME-Version: 1.0",
             "Content-Type: text/plain; charset=utf-8", "", body, ""]
    return "\r\n".join(lines).encode("utf-8")


def _domain(address: str, what: str) -> str:
    if address.count("@") != 1 or not address.split("@")[1]:
        raise InputError(f"{address!r} is not a mail address.", f"Give {what} as user@domain.")
    return address.split("@")[1].lower().rstrip(".")


def _their_certificate(session: SmtpSession, anchors: AnchorSet, domain: str, at: _dt.datetime,
                       crls: CrlCache) -> VerificationResult | None:
    if session.tls is None or not session.tls.peer_chain:
        return None
    leaf, *inters = session.tls.peer_chain
    return validate_peer(leaf, inters, anchors, crl_source=crls.get, purpose="server", validator="exchange",
                         domain=domain, at=at).result


def _last_error(delivery: Delivery) -> str:
    s = delivery.session
    if delivery.refused_locally is not None:
        code, text = behaviour(Personality.EXCHANGE).reply("cert-untrusted")
        return f"{code} {text} (on our side: {delivery.refused_locally}) {FAILOVER}"
    reply = delivery.last_reply
    if s.failure is not None and (reply is None or s.failure.stage in ("connect", "handshake")):
        if s.failure.code in ("net.refused", "net.timeout", "net.closed"):
            # Exchange's own texts for these live in the catalogue (certkit.core.findings).
            return f"{failure_finding(s).exchange_text} {FAILOVER}"
        if s.failure.code == "tls.handshake-failed":
            return f"{EXCHANGE_WRAP.format(inner='TLS negotiation failed with error ' + s.failure.detail)} {FAILOVER}"
        if s.failure.code == "smtp.no-starttls":
            return CATALOGUE["smtp.no-starttls"].exchange_text or "451 5.7.3 STARTTLS is required to send mail"
        return f"{EXCHANGE_CONNECT_ERROR.format(inner=s.failure.detail)} {FAILOVER}"
    if reply is not None:
        return f"{EXCHANGE_WRAP.format(inner=reply.text.rstrip('.'))} {FAILOVER}"
    return f"451 4.4.0 The delivery did not complete. {FAILOVER}"


def send_message(mail_from: str, rcpt_to: str, *, identity: ClientIdentity | None, anchors: AnchorSet | None = None,
                 via: str | None = None, domain_secure: bool = False, nameserver: str | None = None,
                 helo_name: str | None = None, message: bytes | None = None, timeout: float = 10.0,
                 clock: Clock | None = None) -> SendResult:
    """Deliver one message from ``mail_from`` to ``rcpt_to`` (blocking) and explain a failure.

    ``via`` (``host:port``) replaces the MX lookup (Domain Security itself needs MX routing; the lab
    uses ``via`` to reach loopback ports). ``domain_secure``: TLS is required and the receiver's
    certificate must validate for the recipient domain against ``anchors`` with revocation checked.
    """
    at = (clock or SystemClock()).now()
    _domain(mail_from, "--from")
    hop = _domain(rcpt_to, "--to")
    result = SendResult(mail_from, rcpt_to, hop, at=at, domain_secure=domain_secure)
    result.our_certificate_self_signed = identity is not None and is_self_signed(identity.cert)
    route = _route(result, via, nameserver, timeout)
    if route is None:
        return result
    pairs, port = route
    check = _ReceiverCheck(result, anchors if anchors is not None else AnchorSet(), at, CrlCache(timeout=timeout))
    data = message if message is not None else build_message(mail_from, rcpt_to, at=at)
    for host, address in pairs:
        delivery = deliver_message(address, port, mail_from=mail_from, rcpt_to=rcpt_to, message=data,
                                   server_name=host if host != address else None,
                                   helo_name=helo_name or _our_host(identity), identity=identity,
                                   require_tls=domain_secure, approve=check.approve, timeout=timeout)
        result.attempts.append(delivery)
        if delivery.delivered:
            return result
    _explain_failure(result, identity, check)
    return result


def _route(result: SendResult, via: str | None, nameserver: str | None,
           timeout: float) -> tuple[list[tuple[str, str]], int] | None:
    """The (host, address) pairs to try and the port: ``via``'s, or the recipient domain's MX hosts on port 25.
    ``None`` when DNS found nothing (the error is on ``result``, as Exchange's queue shows it)."""
    if via is None:
        route = resolve_mail_domain(result.next_hop, nameserver=nameserver, timeout=timeout)
        if route.failure is not None and not route.targets:
            _no_route(result, route.failure, result.next_hop)
            return None
        return route.targets, 25
    t = parse_target(via, 25)
    if is_ip_address(t.host):
        return [(t.host, t.host)], t.port
    # A host name is resolved like an MX host (dnspython, nameserver, timeout; every A and AAAA address).
    found = resolve_host(t.host, nameserver=nameserver, timeout=timeout)
    if found.failure is not None and not found.addresses:
        _no_route(result, found.failure, t.host)
        return None
    return [(t.host, a) for a in found.addresses], t.port


def _no_route(result: SendResult, failure: DnsFailure, name: str) -> None:
    result.route_error = failure.detail
    result.last_error = EXCHANGE_DNS_ERROR.format(error=failure.detail)
    result.findings.append(dns_finding(failure, name))


class _ReceiverCheck:
    """Domain Security on the sending side: the receiver's certificate must validate for the recipient domain
    before the message is sent (``TLSSendDomainSecureList``)."""

    def __init__(self, result: SendResult, anchors: AnchorSet, at: _dt.datetime, crls: CrlCache) -> None:
        self.result = result
        self.anchors = anchors
        self.at = at
        self.crls = crls

    def verify(self, session: SmtpSession) -> VerificationResult | None:
        return _their_certificate(session, self.anchors, self.result.next_hop, self.at, self.crls)

    def approve(self, session: SmtpSession) -> str | None:
        """Why the message must not be sent over ``session`` (its TLS is up), or ``None``."""
        if not self.result.domain_secure:
            return None
        verification = self.result.verification = self.verify(session)
        if verification is None:
            return "the receiver presented no certificate"
        if not verification.ok:
            first = verification.errors[0]
            return (f"the certificate of {session.address} does not validate for {self.result.next_hop}: "
                    f"{first.entry.title}")
        return None


def _explain_failure(result: SendResult, identity: ClientIdentity | None, check: _ReceiverCheck) -> None:
    """The queue's LastError and certkit's diagnosis of the last attempt."""
    last = result.attempts[-1]
    result.last_error = _last_error(last)
    # One rule for "they refused our certificate" (after the handshake, at MAIL FROM or at RCPT TO): the probe's.
    result.findings = diagnose_session(last.session, identity=identity, at=check.at)
    if result.domain_secure and result.verification is None and last.session.tls is not None:
        result.verification = check.verify(last.session)
    if result.verification is not None:
        result.findings.extend(f for f in result.verification.findings if f.severity is not Severity.INFO)


def _our_host(identity: ClientIdentity | None) -> str:
    return (fqdn_of(identity.cert) if identity is not None else None) or "localhost"


def queue_lines(result: SendResult, *, server: str = "EDGE01") -> list[str]:
    """The queue entry as ``Get-Queue | fl Identity,DeliveryType,NextHopDomain,TlsDomain,Status,...`` shows it."""
    retried_at = result.at or _dt.datetime.now(_dt.UTC)
    fields = [
        ("Identity", f"{server}\\{3 + len(result.attempts)}"),
        ("DeliveryType", "DnsConnectorDelivery"),
        ("NextHopDomain", result.next_hop),
        ("TlsDomain", result.next_hop if result.domain_secure else ""),
        ("Status", result.status),
        ("MessageCount", "0" if result.delivered else "1"),
        ("LastError", result.last_error or ""),
        ("LastRetryTime", f"{retried_at:%m/%d/%Y %I:%M:%S %p}"),
        ("NextRetryTime", "" if result.delivered else f"{retried_at + _dt.timedelta(minutes=10):%m/%d/%Y %I:%M:%S %p}"),
    ]
    width = max(len(k) for k, _ in fields)
    return [f"{k.ljust(width)} : {v}" for k, v in fields]


def diagnosis_lines(result: SendResult) -> list[str]:
    """certkit's diagnosis of a failed delivery, from the sender's side, as indented plain text."""
    lines: list[str] = []
    ours = [f for f in result.findings if f.code.startswith("peer.") or f.side == "ours"]
    theirs = [f for f in result.findings if f not in ours]
    for title, group in (("The receiver refused us", ours), ("Other findings", theirs)):
        if not group:
            continue
        lines.append(f"{title}:")
        for f in group:
            lines.append(f"  [{f.severity}] {f.code}: {f.detail}")
            lines.append(f"      why: {f.entry.explanation}")
            lines.append(f"      fix: {f.entry.remedy}")
    if result.our_certificate_self_signed and any(f.code.startswith("peer.rejected") for f in ours):
        lines.append("Note: our certificate is self-signed (as New-ExchangeCertificate makes it). The partner can "
                     "trust it only by importing it as a root; a certificate from a CA whose root the partner "
                     "imports is the lasting fix.")
    if not lines and result.last_error:
        lines.append(f"No diagnosis beyond the reply: {result.last_error}")
    return lines
