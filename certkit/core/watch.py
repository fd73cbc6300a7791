"""Watching the estate, the pure half: what a watched certificate is, when it changed, which settings that breaks.

Domain Security breaks on a date more often than on a change: an expired transport certificate, a CRL nobody
republished, a partner that renewed and changed its issuer or subject. :mod:`certkit.checks.watch` runs the checks
on a schedule; this module decides from plain data (no clock, no files, no sockets):

* :class:`CertFacts` -- what is remembered of a certificate between cycles (thumbprint, issuer, subject, names,
  EKU, key), and :func:`compare` -- which of those changed and the :class:`Setting` each change affects (an
  Exchange cmdlet parameter, a Postfix parameter or ``tls_policy`` level, a certkit command), by role: a partner's
  certificate is judged by *our* settings that rely on it, our own endpoint's by the connector that names it;
* :class:`WatchTarget` -- one entry of the inventory, with what is expected of it (validator, name rule, DANE,
  MTA-STS);
* :class:`CycleReport` -- what one cycle saw, which the metrics, the JSON and the summary are made from;
* the Nagios plugin's verdict (:func:`nagios_verdict`) and its performance data (:func:`perfdata`).
"""

from __future__ import annotations

import datetime as _dt
import enum
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from certkit.core.extensions import eku_of, san_dns_names
from certkit.core.formats import sha1_thumbprint
from certkit.core.jsonfacts import rfc3339, rfc3339_or_none, serial_hex
from certkit.errors import InputError

__all__ = [
    "ROLES",
    "CertFacts",
    "CertificateState",
    "Change",
    "CrlState",
    "CycleReport",
    "NagiosResult",
    "NagiosStatus",
    "Setting",
    "TargetState",
    "WatchTarget",
    "compare",
    "crl_state",
    "days_left",
    "expiry_state",
    "nagios_verdict",
    "perfdata",
    "settings_for",
]

#: Whose certificate a target presents: ``ours`` (our own endpoints, our CA's certificates) or ``partner``.
ROLES = ("ours", "partner")

_EKU_NAMES = {ExtendedKeyUsageOID.SERVER_AUTH: "serverAuth", ExtendedKeyUsageOID.CLIENT_AUTH: "clientAuth",
              ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE: "anyExtendedKeyUsage"}


def days_left(not_after: _dt.datetime, at: _dt.datetime) -> float:
    """Days from ``at`` to ``not_after``: fractional, and negative once expired (the metric keeps counting)."""
    return round((not_after - at).total_seconds() / 86400, 3)


@dataclass(frozen=True)
class CertFacts:
    """What a cycle remembers of a presented certificate, to compare with the next cycle's."""

    thumbprint_sha1: str
    serial: str
    subject: str
    issuer: str
    dns_names: tuple[str, ...]
    #: the EKU names (``serverAuth``, ``clientAuth``, dotted OIDs for others); ``("any",)`` without the extension
    eku: tuple[str, ...]
    #: SHA-256 of the SubjectPublicKeyInfo (what DANE ``3 1 1`` and Postfix's pubkey fingerprint pin)
    key_sha256: str
    not_after: _dt.datetime

    @classmethod
    def of(cls, cert: x509.Certificate) -> CertFacts:
        eku = eku_of(cert)
        names = ("any",) if eku is None else tuple(_EKU_NAMES.get(o, o.dotted_string) for o in eku)
        spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                              serialization.PublicFormat.SubjectPublicKeyInfo)
        return cls(sha1_thumbprint(cert), serial_hex(cert.serial_number), cert.subject.rfc4514_string(),
                   cert.issuer.rfc4514_string(), tuple(n.lower() for n in san_dns_names(cert)), names,
                   hashlib.sha256(spki).hexdigest().upper(), cert.not_valid_after_utc)

    def allows_client_auth(self) -> bool:
        return bool({"any", "clientAuth", "anyExtendedKeyUsage"} & set(self.eku))

    def to_dict(self) -> dict[str, Any]:
        """Plain data (the JSON contract's names), also how the history keeps it."""
        return {"thumbprint_sha1": self.thumbprint_sha1, "serial": self.serial, "subject": self.subject,
                "issuer": self.issuer, "dns_names": list(self.dns_names), "eku": list(self.eku),
                "key_sha256": self.key_sha256, "not_after": rfc3339(self.not_after)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CertFacts:
        return cls(str(data["thumbprint_sha1"]), str(data["serial"]), str(data["subject"]), str(data["issuer"]),
                   tuple(data.get("dns_names", ())), tuple(data.get("eku", ())), str(data.get("key_sha256", "")),
                   _dt.datetime.fromisoformat(str(data["not_after"]).replace("Z", "+00:00")))


@dataclass(frozen=True)
class Setting:
    """A setting that relies on a certificate fact: where it lives (``exchange``, ``exchange-online``, ``postfix``,
    ``certkit``), its name as the admin types it, and what to do now."""

    product: str
    name: str
    action: str

    def to_dict(self) -> dict[str, str]:
        return {"product": self.product, "name": self.name, "action": self.action}


_TRUST = Setting("exchange", "Cert:\\LocalMachine\\Root (the Edge's trusted root store)",
                 "their new issuer must chain to a root the Edge trusts, or Domain Security fails with "
                 "'454 4.7.5 Certificate validation failure': import their new root (certkit trust fetch)")
_CAFILE = Setting("postfix", "smtp_tls_CAfile",
                  "the 'secure' level verifies their chain against this bundle: add their new root "
                  "(certkit trust add, then certkit config postfix)")
_POLICY_ISSUER = Setting("postfix", "certkit postfix-policy (ccert_issuer rule)",
                         "inbound mail from them is matched by issuer: regenerate with certkit config postfix")
_DOMAIN_SECURE = Setting("exchange", "Set-TransportConfig -TLSSendDomainSecureList / -TLSReceiveDomainSecureList",
                         "the partner domain in the list must still be in their certificate's subject or SAN")
_MATCH = Setting("postfix", "tls_policy: PARTNER secure match=PARTNER:.PARTNER",
                 "their certificate must still carry the partner domain or a host within it")
_ONLINE = Setting("exchange-online", "New-InboundConnector -TlsSenderCertificateName / "
                                     "New-OutboundConnector -TlsDomain",
                  "the certificate domain the connectors name must still be in their certificate")
_PIN = Setting("postfix", "tls_policy: PARTNER fingerprint match=... / check_ccert_access",
               "a fingerprint pin of their old certificate no longer matches: pin the new one")
_PINNED_ANCHOR = Setting("certkit", "certkit trust (a pinned partner certificate)",
                         "a pinned self-signed certificate no longer matches: certkit trust fetch the new one")
_THEIR_DANE = Setting("dane", "their TLSA records (_25._tcp.MX)",
                      "a new key needs a matching 3 1 1 record, or DANE senders defer: check with certkit probe")
_CLIENT_AUTH = Setting("exchange", "Set-ReceiveConnector -DomainSecureEnabled (their client certificate)",
                       "without clientAuth their certificate cannot authenticate their mail to us: "
                       "see certkit audit (docs/audit.md)")
_SERVER_AUTH = Setting("exchange", "Set-SendConnector -DomainSecureEnabled",
                       "without serverAuth our sending Edge refuses their certificate")
_TLS_CERT_NAME = Setting("exchange", 'Set-SendConnector -TlsCertificateName "<I>issuer<S>subject"',
                         "the connector names our certificate by issuer and subject: update it, or Exchange fails "
                         "with '454 4.7.5 The certificate specified in TlsCertificateName of the SendConnector "
                         "could not be found' (certkit config exchange)")
_RECEIVE_NAME = Setting("exchange", "Set-ReceiveConnector -TlsCertificateName",
                        "a Receive connector that names our certificate must name the new one")
_ENABLED = Setting("exchange", "Enable-ExchangeCertificate -Thumbprint ... -Services SMTP",
                   "the new certificate must be enabled for SMTP on the Edge")
_PARTNER_PINS = Setting("certkit", "certkit config partner-kit",
                        "partners that pin our certificate or key (Postfix fingerprint, DANE) need the new one")
_OUR_DANE = Setting("dane", "our TLSA records (certkit dane rollover)",
                    "a new key needs its 3 1 1 record published before it is used")
_OUR_CLIENT_AUTH = Setting("certkit", "certkit audit",
                           "our certificate lost clientAuth: partners refuse it when we send (docs/audit.md)")


#: Which settings rely on each fact, by role.
_SETTINGS: dict[str, dict[str, tuple[Setting, ...]]] = {
    "partner": {
        "issuer": (_TRUST, _CAFILE, _POLICY_ISSUER),
        "subject": (_DOMAIN_SECURE, _MATCH, _ONLINE),
        "dns_names": (_DOMAIN_SECURE, _MATCH, _ONLINE),
        "key": (_PIN, _PINNED_ANCHOR, _THEIR_DANE),
        "thumbprint": (_PIN, _PINNED_ANCHOR),
        "eku:clientAuth": (_CLIENT_AUTH,),
        "eku:serverAuth": (_SERVER_AUTH,),
    },
    "ours": {
        "issuer": (_TLS_CERT_NAME, _RECEIVE_NAME, _PARTNER_PINS),
        "subject": (_TLS_CERT_NAME, _RECEIVE_NAME),
        "dns_names": (_TLS_CERT_NAME,),
        "key": (_ENABLED, _OUR_DANE, _PARTNER_PINS),
        "thumbprint": (_ENABLED, _PARTNER_PINS),
        "eku:clientAuth": (_OUR_CLIENT_AUTH,),
        "eku:serverAuth": (_OUR_CLIENT_AUTH,),
    },
}


def settings_for(role: str, fields: Iterable[str]) -> list[Setting]:
    """The settings that rely on the changed ``fields`` of a certificate of ``role``, each once, in table order."""
    out: list[Setting] = []
    for f in fields:
        for s in _SETTINGS[role].get(f, ()):
            if s not in out:
                out.append(s)
    return out


@dataclass(frozen=True)
class Change:
    """A certificate that differs from the one the last cycle saw at the same endpoint."""

    target: str
    endpoint: str
    role: str
    #: what changed: ``issuer``, ``subject``, ``dns_names``, ``key``, ``eku:clientAuth`` (lost or gained) ...,
    #: and ``thumbprint`` alone when nothing else did (a reissue with the same key and names)
    fields: tuple[str, ...]
    before: CertFacts
    after: CertFacts
    settings: tuple[Setting, ...]
    at: _dt.datetime

    @property
    def summary(self) -> str:
        what = ", ".join(self.fields)
        return (f"{self.target} ({self.endpoint}): the certificate changed ({what}); "
                f"{self.before.thumbprint_sha1} -> {self.after.thumbprint_sha1}")

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "endpoint": self.endpoint, "role": self.role, "at": rfc3339(self.at),
                "fields": list(self.fields), "before": self.before.to_dict(), "after": self.after.to_dict(),
                "settings": [s.to_dict() for s in self.settings], "summary": self.summary}


def compare(before: CertFacts, after: CertFacts, *, target: str, endpoint: str, role: str,
            at: _dt.datetime) -> Change | None:
    """The :class:`Change` from ``before`` to ``after`` (``None``: the same certificate)."""
    if before.thumbprint_sha1 == after.thumbprint_sha1:
        return None
    fields = [f for f in ("issuer", "subject") if getattr(before, f) != getattr(after, f)]
    if set(before.dns_names) != set(after.dns_names):
        fields.append("dns_names")
    if before.key_sha256 != after.key_sha256:
        fields.append("key")
    for usage in ("serverAuth", "clientAuth"):
        had, has = _allows(before, usage), _allows(after, usage)
        if had != has:
            fields.append(f"eku:{usage}")
    if not fields:
        fields.append("thumbprint")
    lost = [f for f in fields if not f.startswith("eku:") or not _allows(after, f[4:])]
    return Change(target, endpoint, role, tuple(fields), before, after, tuple(settings_for(role, lost)), at)


def _allows(facts: CertFacts, usage: str) -> bool:
    return bool({"any", "anyExtendedKeyUsage", usage} & set(facts.eku))


# --- the inventory ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WatchTarget:
    """One watched endpoint or partner domain and what is expected of it (the probe's options, as text).

    ``source``: ``added`` (``certkit watch add``) or ``trust`` (a partner domain of the trust store).
    ``options``: the probe's options by their :class:`~certkit.checks.probe.ProbeOptions` names (``validator``,
    ``domain``, ``name``, ``port``, ``dane``, ``mta_sts``, ``timeout``, ``nameserver``, ``implicit_tls``) and
    ``as_name`` (present our certificate for that name from the CA, as ``probe --as``).
    """

    target: str
    role: str = "partner"
    source: str = "added"
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise InputError(f"The role {self.role!r} is not one of {', '.join(ROLES)}.",
                             "Use --role partner (their endpoint) or --role ours (our own).")
        object.__setattr__(self, "options", {k: v for k, v in sorted(dict(self.options).items()) if v is not None})

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "role": self.role, "source": self.source, "options": dict(self.options)}


# --- one cycle -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CertificateState:
    """A certificate watched for its expiry: one of our CA's, or the one a target presented."""

    role: str
    #: the CA record's common name, or the target that presented it (never the peer's text: it labels metrics)
    name: str
    facts: CertFacts
    days_left: float
    #: ``ok``, ``expiring`` (within the warning period) or ``expired``
    state: str
    since: _dt.datetime
    target: str | None = None
    endpoint: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"role": self.role, "name": self.name, "target": self.target, "endpoint": self.endpoint,
                "serial": self.facts.serial, "thumbprint_sha1": self.facts.thumbprint_sha1,
                "subject": self.facts.subject, "issuer": self.facts.issuer, "not_after": rfc3339(self.facts.not_after),
                "days_left": self.days_left, "state": self.state, "since": rfc3339(self.since)}


@dataclass(frozen=True)
class CrlState:
    """One of our CRLs: its nextUpdate, and whether the copy served at its distribution point is the current one."""

    issuer: str
    number: int
    this_update: _dt.datetime
    next_update: _dt.datetime
    seconds_left: float
    url: str | None
    #: ``None``: no URL to fetch; else whether the CRL served there has our number (or a later one)
    served_current: bool | None
    served_number: int | None
    served_this_update: _dt.datetime | None
    served_error: str | None
    #: ``fresh``, ``expiring``, ``lapsed``, ``served-old`` or ``unreachable``
    state: str
    since: _dt.datetime

    def to_dict(self) -> dict[str, Any]:
        return {"issuer": self.issuer, "number": self.number, "this_update": rfc3339(self.this_update),
                "next_update": rfc3339(self.next_update), "seconds_left": round(self.seconds_left, 1),
                "url": self.url, "served_current": self.served_current, "served_number": self.served_number,
                "served_this_update": rfc3339_or_none(self.served_this_update), "served_error": self.served_error,
                "state": self.state, "since": rfc3339(self.since)}


@dataclass(frozen=True)
class TargetState:
    """The probe of one target in one cycle."""

    target: str
    role: str
    success: bool
    exit_code: int
    duration: float
    verdict: str
    #: ``ok``, ``failing`` (error findings) or ``unreachable``
    state: str
    since: _dt.datetime

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "role": self.role, "success": self.success, "exit_code": self.exit_code,
                "duration": round(self.duration, 4), "verdict": self.verdict, "state": self.state,
                "since": rfc3339(self.since)}


@dataclass(frozen=True)
class CycleReport:
    """What one cycle saw; ``change_counts``: every change recorded so far, per target (the counter's value)."""

    at: _dt.datetime
    seconds: float
    certificates: tuple[CertificateState, ...] = ()
    crls: tuple[CrlState, ...] = ()
    targets: tuple[TargetState, ...] = ()
    changes: tuple[Change, ...] = ()
    change_counts: Mapping[tuple[str, str], int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """No expired certificate, lapsed or stale-served CRL, failing target or change in this cycle."""
        return (all(c.state != "expired" for c in self.certificates)
                and all(c.state in ("fresh", "expiring") for c in self.crls)
                and all(t.success for t in self.targets) and not self.changes)

    def to_dict(self) -> dict[str, Any]:
        return {"at": rfc3339(self.at), "seconds": round(self.seconds, 4),
                "certificates": [c.to_dict() for c in self.certificates], "crls": [c.to_dict() for c in self.crls],
                "targets": [t.to_dict() for t in self.targets], "changes": [c.to_dict() for c in self.changes],
                "ok": self.ok}


def expiry_state(left: float, warn_days: float) -> str:
    """``expired``, ``expiring`` (within ``warn_days``) or ``ok``."""
    return "expired" if left <= 0 else "expiring" if left < warn_days else "ok"


def crl_state(info_next: _dt.datetime, info_this: _dt.datetime, at: _dt.datetime, served_current: bool | None,
              served_error: str | None) -> str:
    """A CRL's state: lapsed past nextUpdate; expiring once less than half its lifetime (at most two days) is left,
    as ``certkit ca status`` warns; ``unreachable`` or ``served-old`` when its distribution point does not serve it."""
    left = info_next - at
    if left <= _dt.timedelta(0):
        return "lapsed"
    if served_error is not None:
        return "unreachable"
    if served_current is False:
        return "served-old"
    if left < max((info_next - info_this) / 2, _dt.timedelta(days=2)):
        return "expiring"
    return "fresh"


# --- the Nagios plugin -----------------------------------------------------------------------------------------


class NagiosStatus(enum.IntEnum):
    """The plugin exit codes (Nagios plugin guidelines, "Plugin Return Codes")."""

    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3


@dataclass(frozen=True)
class NagiosResult:
    """A plugin's answer: status, one line of text, performance data and the long output."""

    status: NagiosStatus
    text: str
    perfdata: str
    details: tuple[str, ...] = ()

    def output(self, service: str = "CERTKIT") -> str:
        """``SERVICE STATUS: text | perfdata`` then the long output, a line each (``|`` in texts is replaced:
        Nagios reads everything after it as performance data)."""
        first = f"{service} {self.status.name}: {_no_pipe(self.text)}"
        lines = [f"{first} | {self.perfdata}" if self.perfdata else first]
        lines += [_no_pipe(d) for d in self.details]
        return "\n".join(lines)


def _no_pipe(text: str) -> str:
    return text.replace("|", "/").replace("\n", " ")


def perfdata(days: float | None, warning_days: float, critical_days: float, duration: float) -> str:
    """``days_left=12.5;30:;7: duration=0.41s;;;0``: the guidelines' ``'label'=value[UOM];[warn];[crit];[min];[max]``.

    The thresholds are ranges: ``30:`` alerts below 30 (days left falling is the danger), as the guidelines'
    range format says; a plain ``30`` would mean "above 30 or below 0".
    """
    parts = []
    if days is not None:
        parts.append(f"days_left={days:.2f};{_num(warning_days)}:;{_num(critical_days)}:")
    parts.append(f"duration={duration:.3f}s;;;0")
    return " ".join(parts)


def _num(value: float) -> str:
    return f"{value:g}"


def nagios_verdict(target: str, *, exit_code: int, verdict: str, days: float | None, not_after: _dt.datetime | None,
                   warning_days: float, critical_days: float, duration: float, details: Sequence[str] = (),
                   changes: Sequence[Change] = ()) -> NagiosResult:
    """The plugin's answer for one probed target: CRITICAL when it would fail, cannot be reached, or its
    certificate expires within ``critical_days``; WARNING within ``warning_days`` or when its certificate changed
    since the last watch cycle; else OK."""
    expiry = ""
    if days is not None and not_after is not None:
        expiry = (f"certificate expired {abs(days):.0f} days ago ({not_after:%Y-%m-%d})" if days <= 0
                  else f"certificate expires in {days:.0f} days ({not_after:%Y-%m-%d})")
    if exit_code == 3:
        status, text = NagiosStatus.CRITICAL, f"{target}: nothing could be reached"
    elif exit_code != 0:
        status, text = NagiosStatus.CRITICAL, f"{target}: {verdict}"
    elif days is not None and days < critical_days:
        status, text = NagiosStatus.CRITICAL, f"{target}: {expiry}"
    elif days is not None and days < warning_days:
        status, text = NagiosStatus.WARNING, f"{target}: {expiry}"
    elif changes:
        fields = ", ".join(changes[0].fields)
        status, text = NagiosStatus.WARNING, f"{target}: {verdict}; the certificate changed ({fields})"
    else:
        status, text = NagiosStatus.OK, f"{target}: {verdict}" + (f"; {expiry}" if expiry else "")
    more = [*details]
    for c in changes:
        more.append(c.summary)
        more += [f"  affects {s.product}: {s.name}: {s.action}" for s in c.settings]
    return NagiosResult(status, text, perfdata(days, warning_days, critical_days, duration), tuple(more))
