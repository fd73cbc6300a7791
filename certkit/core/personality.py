"""How Exchange and Postfix behave at the SMTP layer with mutual TLS: one model for every part of certkit.

A :class:`Behaviour` says what an MTA replies (its texts), where it refuses a client certificate that
fails (Postfix: the first command after the handshake; Exchange: ``MAIL FROM``, once the sender's domain
is known), which checks decide (Exchange: chain, clientAuth, the Domain Security name rule and checkable
revocation; Postfix with ``smtpd_tls_req_ccert``: chain and EKU only) and how the server engine words its
own refusals. ``lab serve`` answers with it, the lab sender and the probe read replies with it
(:func:`rejection_of_us`), and the tests' servers are lab servers configured with it.

The texts are the ones observed on Postfix 3.7 (``shared/docs/postfix-lab.md``) and documented for
Exchange 2010-2019 Edge Transport servers; where an MTA has no fixed text (a line that is too long), the
wording follows its style.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Literal

from certkit.core.smtp.server import Refusals
from certkit.core.smtp.wire import Reply

if TYPE_CHECKING:
    from certkit.core.smtp.dialogue import SmtpSession

__all__ = [
    "BEHAVIOURS",
    "EXCHANGE_CONNECT_ERROR",
    "EXCHANGE_DNS_ERROR",
    "EXCHANGE_ONLINE",
    "EXCHANGE_WRAP",
    "REJECTION_CODES",
    "VALIDATORS",
    "Behaviour",
    "Personality",
    "ValidatorRules",
    "behaviour",
    "is_security_refusal",
    "rejection_of_us",
    "validator_rules",
]


class Personality(enum.StrEnum):
    """Whose behaviour: an Exchange Edge Receive connector with Domain Security, or Postfix with
    ``smtpd_tls_req_ccert = yes``."""

    EXCHANGE = "exchange"
    POSTFIX = "postfix"


#: What a sending Exchange Edge's queue (Get-Queue LastError) shows for a receiver's transient reply ``inner``.
EXCHANGE_WRAP = '451 4.4.0 Primary target IP address responded with: "{inner}."'
#: Exchange 2007/2010's LastError when it could not talk to the target at all (``inner`` is the socket error).
EXCHANGE_CONNECT_ERROR = '441 4.4.1 Error encountered while communicating with primary target IP address: "{inner}"'
#: Exchange's LastError when routing through DNS failed (``error`` is the resolver's reason).
EXCHANGE_DNS_ERROR = "451 4.4.0 DNS query failed. The error was: {error}"

#: Replies after the handshake that mean the server refused us (Exchange 454, Postfix 421, RFC 3207 554, 530).
REJECTION_CODES = frozenset({421, 454, 530, 554})

RefusalPoint = Literal["after-handshake", "mail-from"]


@dataclass(frozen=True)
class Behaviour:
    """One MTA's behaviour. ``replies`` maps a situation to ``(code, text)``; texts may hold ``{host}``,
    ``{ip}``, ``{stamp}``, ``{queue_id}``, ``{size}``."""

    personality: Personality
    refuses_at: RefusalPoint
    checks_revocation: bool      # a CRL that cannot be fetched, or a revoked certificate, refuses the session
    checks_name: bool            # the Domain Security name rule against the sender's domain
    tls_required: bool           # req_ccert only works with mandatory TLS
    replies: Mapping[str, tuple[int, str]] = field(default_factory=dict)
    refusal_texts: Mapping[str, tuple[int, str]] = field(default_factory=dict)

    def reply(self, situation: str, **values: object) -> tuple[int, str]:
        """``(code, text)`` for ``situation`` (``"mail-ok"``, ``"cert-untrusted"``, ...), values filled in."""
        code, text = self.replies[situation]
        return code, text.format(**values)

    def refusals(self, host: str) -> Refusals:
        """The server engine's own refusals in this MTA's words."""
        return Refusals(**{k: (c, t.format(host=host)) for k, (c, t) in self.refusal_texts.items()})

    def certificate_refusal(self, host: str, *, presented: bool) -> tuple[int, str]:
        """The reply that refuses a client certificate that failed (or none, when ``presented`` is false)."""
        if self.personality is Personality.EXCHANGE:
            return self.reply("cert-untrusted", host=host)
        return self.reply("cert-untrusted" if presented else "cert-missing", host=host)


_EXCHANGE = Behaviour(
    Personality.EXCHANGE, refuses_at="mail-from", checks_revocation=True, checks_name=True, tls_required=False,
    replies=MappingProxyType({
        "banner": (220, "{host} Microsoft ESMTP MAIL Service ready at {stamp}"),
        "ehlo": (250, "{host} Hello [{ip}]"),
        "helo": (250, "{host} Hello [{ip}]"),
        "helo-syntax": (501, "5.5.4 Invalid domain name"),
        "starttls": (220, "2.0.0 SMTP server ready"),
        "mail-ok": (250, "2.1.0 Sender OK"),
        "rcpt-ok": (250, "2.1.5 Recipient OK"),
        "rcpt-limit": (452, "4.5.3 Too many recipients"),
        "data": (354, "Start mail input; end with <CRLF>.<CRLF>"),
        "queued": (250, "2.6.0 <{queue_id}@{host}> Queued mail for delivery"),
        "too-big": (552, "5.3.4 Message size exceeds fixed maximum message size"),
        "bare-newline": (554, "5.6.11 Invalid characters in the message: bare line feed"),
        "local-error": (451, "4.3.0 Local error in processing"),
        "rset": (250, "2.0.0 Resetting"),
        "noop": (250, "2.0.0 OK"),
        "vrfy": (252, "2.1.5 Cannot VRFY user"),
        "help": (214, "2.0.0 EHLO HELO STARTTLS MAIL RCPT DATA RSET NOOP QUIT"),
        "quit": (221, "2.0.0 {host} Service closing transmission channel"),
        "tls-first": (530, "5.7.0 Must issue a STARTTLS command first"),
        "cert-untrusted": (454, "4.7.5 Certificate validation failure"),
        "busy": (421, "4.3.2 The maximum number of concurrent server connections has exceeded a limit, "
                      "closing transmission channel"),
        "timeout": (421, "4.4.1 Connection timed out"),
        "shutdown": (421, "4.3.2 Service not available, closing transmission channel"),
    }),
    refusal_texts=MappingProxyType({
        "unknown": (500, "5.3.3 Unrecognized command"),
        "bad_sequence": (503, "5.5.2 Send hello first"),
        "no_parameters": (501, "5.5.4 Invalid arguments"),
        "bad_address": (501, "5.1.7 Invalid address"),
        "bad_helo": (501, "5.5.4 Invalid domain name"),
        "line_too_long": (500, "5.5.6 Line too long"),
        "tls_active": (503, "5.5.1 Already in TLS session"),
        "too_many_errors": (421, "4.7.0 Too many errors on this connection, closing transmission channel"),
    }),
)

_POSTFIX = Behaviour(
    Personality.POSTFIX, refuses_at="after-handshake", checks_revocation=False, checks_name=False,
    tls_required=True,
    replies=MappingProxyType({
        "banner": (220, "{host} ESMTP Postfix"),
        "ehlo": (250, "{host}"),
        "helo": (250, "{host}"),
        "helo-syntax": (501, "Syntax: EHLO hostname"),
        "starttls": (220, "2.0.0 Ready to start TLS"),
        "mail-ok": (250, "2.1.0 Ok"),
        "rcpt-ok": (250, "2.1.5 Ok"),
        "rcpt-limit": (452, "4.5.3 Error: too many recipients"),
        "data": (354, "End data with <CR><LF>.<CR><LF>"),
        "queued": (250, "2.0.0 Ok: queued as {queue_id}"),
        "too-big": (552, "5.3.4 Error: message file too big"),
        "bare-newline": (550, "5.5.2 Error: bare <LF> received"),
        "local-error": (451, "4.3.0 Error: queue file write error"),
        "rset": (250, "2.0.0 Ok"),
        "noop": (250, "2.0.0 Ok"),
        "vrfy": (252, "2.0.0 Cannot VRFY user"),
        "help": (214, "2.0.0 Ok"),
        "quit": (221, "2.0.0 Bye"),
        "tls-first": (530, "5.7.0 Must issue a STARTTLS command first"),
        "cert-untrusted": (421, "4.7.1 {host} Error: Client certificate not trusted"),
        "cert-missing": (421, "4.7.1 {host} Error: No client certificate presented"),
        "busy": (421, "4.3.2 {host} Error: too many connections"),
        "timeout": (421, "4.4.2 {host} Error: timeout exceeded"),
        "shutdown": (421, "4.3.2 {host} Service shutting down, closing transmission channel"),
    }),
    refusal_texts=MappingProxyType({
        "unknown": (502, "5.5.2 Error: command not recognized"),
        "bad_sequence": (503, "5.5.1 Error: bad sequence of commands"),
        "no_parameters": (501, "5.5.4 Syntax error: no parameters allowed"),
        "bad_address": (501, "5.1.7 Bad address syntax"),
        "bad_helo": (501, "5.5.2 Helo command rejected: Invalid name"),
        "line_too_long": (500, "5.5.2 Error: line too long"),
        "tls_active": (554, "5.5.1 Error: TLS already active"),
        "too_many_errors": (421, "4.7.0 {host} Error: too many errors"),
    }),
)

#: The behaviours by personality.
BEHAVIOURS: Mapping[Personality, Behaviour] = MappingProxyType({
    Personality.EXCHANGE: _EXCHANGE, Personality.POSTFIX: _POSTFIX})


def behaviour(personality: Personality | str) -> Behaviour:
    """The :class:`Behaviour` of ``personality`` (``"exchange"`` or ``"postfix"``)."""
    return BEHAVIOURS[Personality(personality)]


# --- Exchange Online: what it shows as a sender, and how its connectors judge a certificate -------------------

#: What Exchange Online shows (queue, message trace, NDR) when it cannot deliver through a connector, by situation:
#: "mail flow intelligence", https://learn.microsoft.com/defender-office-365/mail-flow-intelligence-in-office-365
#: (4.7.320's details name the cause, "for example: Certificate expired, Certificate subject mismatch"); the
#: ``{LED=...};{MSG=SubjectMismatch}`` form of a name mismatch is the message trace's, as Microsoft's support blog
#: shows it (certkit.core.cmdlets.SOURCES["subject-mismatch"]). Exchange Online is not a lab personality: the
#: replies it gives as a receiver are not documented, so certkit does not imitate them.
EXCHANGE_ONLINE: Mapping[str, str] = MappingProxyType({
    "dns": "450 4.4.312 DNS query failed",
    "timeout": "450 4.4.315 Connection timed out",
    "refused": "450 4.4.316 Connection refused",
    "no-tls": "450 4.4.317 Cannot connect to remote server",
    "closed": "450 4.4.318 Connection was closed abruptly",
    "cert-invalid": "450 4.7.320 Certificate validation failed",
    "subject-mismatch": "[{LED=450 4.7.320 Certificate validation failed};{MSG=SubjectMismatch}]",
})

NameRule = Literal["domain-security", "certificate-name", "as-given"]


@dataclass(frozen=True)
class ValidatorRules:
    """How a validator judges a peer's certificate (``--validator``): the probe, the pre-flight and
    :func:`certkit.validation.validate_peer` read these.

    ``name_rule``: ``domain-security`` (Exchange: a DNS subjectAltName that is the partner domain or a host in it),
    ``as-given`` (the name or domain rule the caller chose, SAN only), ``certificate-name`` (Exchange Online
    connectors: the subject CN or a DNS subjectAltName matches the connector's certificate domain,
    ``TlsSenderCertificateName``/``TlsDomain``). ``public_roots_only``: the validator has no store for a private
    root (Exchange Online trusts certificates "issued by a trusted certificate authority (CA)" and offers no way
    to add one).
    """

    validator: str
    checks_revocation: bool
    name_rule: NameRule
    public_roots_only: bool = False


#: The validators by name: ``exchange`` and ``postfix`` take their revocation rule from their :class:`Behaviour`;
#: ``exchange-online`` checks revocation lists as its connectors' ``CertificateValidation``/``DomainValidation``
#: document ("certificate chain validation and revocation lists checks are performed").
VALIDATORS: Mapping[str, ValidatorRules] = MappingProxyType({
    "exchange": ValidatorRules("exchange", _EXCHANGE.checks_revocation, "domain-security"),
    "postfix": ValidatorRules("postfix", _POSTFIX.checks_revocation, "as-given"),
    "exchange-online": ValidatorRules("exchange-online", True, "certificate-name", public_roots_only=True),
})


def validator_rules(validator: str) -> ValidatorRules:
    """The :class:`ValidatorRules` of ``validator`` (``exchange``, ``postfix`` or ``exchange-online``)."""
    return VALIDATORS[validator]


# --- reading a server's replies as a sender -----------------------------------------------------------


def is_security_refusal(reply: Reply) -> bool:
    """A reply that refuses us for security: 421/454/530/554 with a 4.7.x/5.7.x or no enhanced status."""
    return reply.code in REJECTION_CODES and (reply.enhanced is None or reply.enhanced[2:4] == "7.")


def rejection_of_us(session: SmtpSession) -> tuple[str, Reply] | None:
    """Where and by which reply the server refused us after the handshake, if it did (the one rule).

    Postfix refuses the first command after the handshake (``421 4.7.1``): any of 421/454/530/554 there
    is a refusal of our certificate. Exchange accepts EHLO and refuses ``MAIL FROM`` (``454 4.7.5
    Certificate validation failure``); at MAIL FROM (or RCPT TO) only a security reply counts (421/454/
    530/554 with a 4.7.x/5.7.x or no enhanced status), not a policy or availability refusal such as
    ``421 4.3.2`` or ``550 5.7.1``. Returns ``("after the handshake" | "at MAIL FROM" | "at RCPT TO", reply)``.
    The probe and the lab sender both use this function.
    """
    if session.tls is None:
        return None
    if session.rejected_after_tls and session.after_tls is not None:
        return "after the handshake", session.after_tls
    for where, reply in (("at MAIL FROM", session.mail), ("at RCPT TO", session.rcpt)):
        if reply is not None and is_security_refusal(reply):
            return where, reply
    return None
