"""The end of public clientAuth: will the certificate this server presents *as a client* still be accepted?

Public CAs are removing the TLS client authentication EKU (``id-kp-clientAuth``) from the server
certificates they issue, because the Chrome Root Program requires hierarchies dedicated to TLS server
authentication. Many Postfix and Exchange servers present their public server certificate as the client
certificate in partner mutual TLS; after its next renewal it carries no clientAuth, and a partner that
checks the EKU (Postfix with a verifying CA, .NET, Exchange Online certificate connectors) refuses it.

:func:`audit_client_certificates` judges client-role certificates at an injected time ``at`` and returns an
:class:`AuditReport` (plain data; nothing here reads files or prints):

* a certificate whose EKU lacks clientAuth (and anyExtendedKeyUsage) is ``client.no-client-auth``: it
  breaks now, wherever the partner checks the EKU;
* a certificate that carries clientAuth but comes from a public CA in :data:`PUBLIC_ISSUERS` is
  ``client.public-ca-dropping-client-auth``: it works until its notAfter, and its successor from that CA
  will not carry clientAuth. It *breaks at* its notAfter (earlier if the renewal tool replaces it sooner);
  the finding is an error when that is within ``within`` of ``at``, a warning otherwise;
* an expired certificate is ``cert.expired``;
* anything else (a private CA's transport certificate, say certkit's) is fine.

Issuers are recognised by the issuer name of the certificate or of a certificate in the chain it is
presented with (organisation or common-name patterns), not by key identifiers: no CA's announcement lists
those, and this table records only what was found in the sources it cites.
"""

from __future__ import annotations

import datetime as _dt
import enum
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID

from certkit.clock import aware
from certkit.core.extensions import allows_client_auth, eku_of
from certkit.core.findings import Finding, Severity, Side, worst
from certkit.core.formats import sha1_thumbprint, sha256_fingerprint
from certkit.core.jsonfacts import rfc3339, serial_hex
from certkit.errors import UsageError

__all__ = [
    "DEFAULT_WITHIN",
    "JSON_SCHEMA_VERSION",
    "PUBLIC_ISSUERS",
    "ROOT_PROGRAM",
    "AuditReport",
    "AuditedCertificate",
    "ClientCertificate",
    "Milestone",
    "PublicIssuer",
    "Source",
    "Status",
    "audit_client_certificates",
    "public_issuer_of",
]

#: The version of ``certkit audit --json`` (certkit/schemas/audit.schema.json); bumped only on breaking changes.
JSON_SCHEMA_VERSION = 1

#: How far ahead a break counts as "soon" (exit 1) by default.
DEFAULT_WITHIN = _dt.timedelta(days=90)


class Status(enum.StrEnum):
    """How sure a milestone is: the CA's own words, a third party's report of them, or our reading."""

    ANNOUNCED = "announced"  # the CA (or root program) published it at the cited address
    REPORTED = "reported"    # a third party reports it; the CA's own page was not found
    INFERRED = "inferred"    # certkit's conclusion from the cited sources


@dataclass(frozen=True)
class Milestone:
    """One dated step of an issuer's clientAuth sunset, with where it was published."""

    date: _dt.date
    #: ``default-ends``: new certificates no longer carry clientAuth unless asked for;
    #: ``issuance-ends``: no certificate with clientAuth is issued after this date;
    #: ``subordinate-ca``: a root-program rule for intermediate CAs.
    event: str
    status: Status
    source: str
    note: str

    def to_dict(self) -> dict[str, Any]:
        return {"date": self.date.isoformat(), "event": self.event, "status": str(self.status),
                "source": self.source, "note": self.note}


@dataclass(frozen=True)
class PublicIssuer:
    """A public CA that is dropping clientAuth: how to recognise its issuing CAs, and its milestones."""

    name: str
    #: Regular expressions matched (full match, case-insensitive) against an issuer name's O values.
    organisations: tuple[str, ...]
    #: Regular expressions matched (full match, case-insensitive) against an issuer name's CN values.
    common_names: tuple[str, ...]
    milestones: tuple[Milestone, ...]
    #: How the name patterns were chosen (which are the CA's own names, which are inferred).
    recognised_by: str = ""

    def matches(self, name: x509.Name) -> bool:
        """True when ``name`` (an issuer DN) has an O or CN of this CA."""
        orgs = [str(a.value) for a in name.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
        cns = [str(a.value) for a in name.get_attributes_for_oid(NameOID.COMMON_NAME)]
        return (any(re.fullmatch(p, o, re.IGNORECASE) for p in self.organisations for o in orgs)
                or any(re.fullmatch(p, c, re.IGNORECASE) for p in self.common_names for c in cns))

    def latest(self, event: str) -> Milestone | None:
        """The latest milestone of kind ``event`` (a later date supersedes an earlier announcement)."""
        found = [m for m in self.milestones if m.event == event]
        return max(found, key=lambda m: m.date) if found else None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "milestones": [m.to_dict() for m in self.milestones]}


def _d(text: str) -> _dt.date:
    return _dt.date.fromisoformat(text)


_LE_2025 = "https://letsencrypt.org/2025/05/14/ending-tls-client-authentication/"
_CRP = "https://googlechrome.github.io/chromerootprogram/#132-promote-use-of-dedicated-tls-server-authentication-pki-hierarchies"
_DIGICERT = "https://knowledge.digicert.com/alerts/sunsetting-client-authentication-eku-from-digicert-public-tls-certificates"
_SECTIGO = "https://sectigo.com/faq-client-authentication-eku-deprecation"

#: The Chrome Root Program's rule, which every CA in the Chrome Root Store follows (the reason for all of
#: the CA milestones below). Listed with each public-CA finding; it does not recognise issuers itself.
ROOT_PROGRAM: tuple[Milestone, ...] = (
    Milestone(_d("2026-06-15"), "subordinate-ca", Status.ANNOUNCED, _CRP,
              "Chrome Root Program policy 1.3.2: subordinate CAs disclosed to the CCADB from this date must assert "
              "only id-kp-serverAuth (serverAuth-only hierarchies)."),
    Milestone(_d("2027-03-15"), "issuance-ends", Status.ANNOUNCED, _CRP,
              "Chrome Root Program policy 1.3.2 (version 1.8, as quoted by zlint pull request 1031): TLS server "
              "certificates issued after this date must not contain id-kp-clientAuth."),
)

#: Public CAs that announced the end of clientAuth in their TLS server certificates. One row per CA; add
#: rows with their source, never a date without one. Status says whose words a date is.
PUBLIC_ISSUERS: tuple[PublicIssuer, ...] = (
    PublicIssuer(
        "Let's Encrypt",
        organisations=(r"Let's Encrypt", r"ISRG", r"Internet Security Research Group"),
        common_names=(r"R1[0-4]", r"E[5-9]", r"R3", r"E1", r"Y[RE]\d+"),
        recognised_by="Issuer O 'Let's Encrypt' (intermediates R10-R14, E5-E9; the CNs alone also match) or "
                      "ISRG (the 2025 generation Y: YR1-3, YE1-3, which never carry clientAuth).",
        milestones=(
            Milestone(_d("2026-02-11"), "default-ends", Status.ANNOUNCED, _LE_2025,
                      "The default 'classic' ACME profile no longer includes the TLS Client Authentication EKU."),
            Milestone(_d("2026-05-13"), "issuance-ends", Status.ANNOUNCED, _LE_2025,
                      "The 'tlsclient' ACME profile is no longer available; no further certificates with the "
                      "Client Authentication EKU."),
            Milestone(_d("2026-07-08"), "issuance-ends", Status.REPORTED,
                      "https://pocketlantern.dev/briefs/lets-encrypt-tlsclient-profile-retirement-2026",
                      "Reported later: accounts already using 'tlsclient' by 2026-05-13 may use it until this "
                      "date (Let's Encrypt's own page for the extension was not found)."),
        ),
    ),
    PublicIssuer(
        "DigiCert",
        organisations=(r"DigiCert,? Inc\.?",),
        common_names=(r"DigiCert .*", r"GeoTrust .*", r"Thawte .*", r"RapidSSL .*", r"Encryption Everywhere .*"),
        recognised_by="Issuer O 'DigiCert Inc' (its brands GeoTrust, Thawte, RapidSSL and Encryption Everywhere "
                      "issue from DigiCert Inc intermediates; their CNs also match).",
        milestones=(
            Milestone(_d("2025-10-01"), "default-ends", Status.ANNOUNCED, _DIGICERT,
                      "Public TLS certificates carry serverAuth only unless clientAuth is chosen at enrolment."),
            Milestone(_d("2026-05-01"), "issuance-ends", Status.ANNOUNCED, _DIGICERT,
                      "First announced end of the clientAuth option (superseded by the 2027-03-01 update)."),
            Milestone(_d("2027-03-01"), "issuance-ends", Status.ANNOUNCED, _DIGICERT,
                      "Update of 2026-03-03 after Chrome extended its timeline: clientAuth no longer included "
                      "in any public TLS certificate (all brands) from this date."),
        ),
    ),
    PublicIssuer(
        "Sectigo",
        organisations=(r"Sectigo Limited", r"COMODO CA Limited", r"The USERTRUST Network"),
        common_names=(r"Sectigo .*",),
        recognised_by="Issuer O 'Sectigo Limited'; 'COMODO CA Limited' and 'The USERTRUST Network' are inferred "
                      "(Sectigo's former name and its USERTrust hierarchy).",
        milestones=(
            Milestone(_d("2025-09-15"), "default-ends", Status.ANNOUNCED, _SECTIGO,
                      "The Client Authentication EKU is no longer included by default."),
            Milestone(_d("2026-05-15"), "issuance-ends", Status.ANNOUNCED, _SECTIGO,
                      "The Client Authentication EKU is permanently removed from newly issued SSL/TLS "
                      "certificates."),
            Milestone(_d("2027-02-10"), "issuance-ends", Status.REPORTED, "https://comparecheapssl.com/?p=12632",
                      "Reported later as Sectigo's extended hard deadline (Sectigo's own page for it was not "
                      "found)."),
        ),
    ),
    PublicIssuer(
        "Certum",
        organisations=(r"Asseco Data Systems S\.A\.", r"Unizeto Technologies S\.A\."),
        common_names=(r"Certum .*",),
        recognised_by="Issuer O of Certum's CAs (Asseco Data Systems, formerly Unizeto) or a CN starting 'Certum'.",
        milestones=(
            Milestone(_d("2026-05-15"), "issuance-ends", Status.ANNOUNCED,
                      "https://support.certum.eu/en/technical-news/sunsetting-the-clientauth-eku-from-certum-ssl-tls-certificates",
                      "Certum stops issuing public SSL/TLS certificates with clientAuth."),
        ),
    ),
    PublicIssuer(
        "SSL.com",
        organisations=(r"SSL Corp(oration)?",),
        common_names=(r"SSL\.com .*",),
        recognised_by="Issuer O 'SSL Corporation' / 'SSL Corp' or a CN starting 'SSL.com'.",
        milestones=(
            Milestone(_d("2025-09-15"), "issuance-ends", Status.ANNOUNCED,
                      "https://stg.ssl.com/blogs/removal-of-the-client-authentication-eku-from-tls-server-"
                      "certificates-what-you-need-to-know",
                      "SSL.com's TLS server certificates are issued without the Client Authentication EKU."),
        ),
    ),
)


def public_issuer_of(cert: x509.Certificate, chain: Sequence[x509.Certificate] = ()) -> PublicIssuer | None:
    """The public CA in :data:`PUBLIC_ISSUERS` that issued ``cert`` (its issuer name, or a chain CA's)."""
    names = [cert.issuer, *(c.issuer for c in chain), *(c.subject for c in chain)]
    for issuer in PUBLIC_ISSUERS:
        if any(issuer.matches(n) for n in names):
            return issuer
    return None


@dataclass(frozen=True)
class Source:
    """Where a client certificate came from: a file, and for a Postfix configuration the parameter and service."""

    file: str
    #: The main.cf / master.cf parameter that names the file (``smtp_tls_chain_files``...), if any.
    parameter: str | None = None
    #: The master.cf service whose ``-o`` override names it (``None``: main.cf, every smtp transport).
    service: str | None = None

    def describe(self) -> str:
        """``/etc/postfix/client.pem (smtp_tls_cert_file, master.cf service relay)``."""
        where = ", ".join(p for p in (self.parameter, f"master.cf service {self.service}" if self.service else None)
                          if p)
        return f"{self.file} ({where})" if where else self.file

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "parameter": self.parameter, "service": self.service}


@dataclass(frozen=True)
class ClientCertificate:
    """A certificate presented as a TLS client certificate, with the chain sent with it and its source."""

    cert: x509.Certificate
    chain: tuple[x509.Certificate, ...] = ()
    source: Source = field(default_factory=lambda: Source("the input"))


def _client_auth(cert: x509.Certificate) -> tuple[bool, list[str] | None]:
    """(may it be used as a TLS client certificate, its EKU names or ``None`` without the extension)."""
    eku = eku_of(cert)
    if eku is None:
        return True, None  # RFC 5280 4.2.1.12: no EKU extension means no restriction
    return allows_client_auth(cert), [getattr(oid, "_name", None) or oid.dotted_string for oid in eku]


@dataclass(frozen=True)
class AuditedCertificate:
    """One client-role certificate as judged: its identity, its EKU, its issuer and when it breaks."""

    cert: x509.Certificate
    source: Source
    client_auth: bool
    eku: tuple[str, ...] | None
    public_issuer: PublicIssuer | None
    #: When a partner that checks the EKU will refuse it (``None``: not foreseen).
    breaks_at: _dt.datetime | None
    findings: tuple[Finding, ...]

    @property
    def status(self) -> str:
        """``breaks`` (an error: within the window or already), ``warning`` (later), or ``ok``."""
        level = worst(self.findings)
        return {Severity.ERROR: "breaks", Severity.WARNING: "warning"}.get(level, "ok") if level else "ok"

    def to_dict(self) -> dict[str, Any]:
        """The canonical JSON object (see certkit/schemas/audit.schema.json)."""
        c = self.cert
        return {
            "source": self.source.to_dict(),
            "subject": c.subject.rfc4514_string(),
            "issuer": c.issuer.rfc4514_string(),
            "serial": serial_hex(c.serial_number),
            "thumbprint_sha1": sha1_thumbprint(c),
            "fingerprint_sha256": sha256_fingerprint(c),
            "not_before": rfc3339(c.not_valid_before_utc),
            "not_after": rfc3339(c.not_valid_after_utc),
            "eku": list(self.eku) if self.eku is not None else None,
            "client_auth": self.client_auth,
            "public_issuer": self.public_issuer.to_dict() if self.public_issuer else None,
            "breaks_at": rfc3339(self.breaks_at) if self.breaks_at else None,
            "status": self.status,
            "findings": [f.to_dict() for f in self.findings],
        }


@dataclass(frozen=True)
class AuditReport:
    """Every audited certificate, the time they were judged at, and the verdict as an exit code."""

    at: _dt.datetime
    within: _dt.timedelta
    certificates: tuple[AuditedCertificate, ...]
    #: What the reader of the configuration could not see (no master.cf, no certificate configured).
    notes: tuple[str, ...] = ()

    @property
    def deadline(self) -> _dt.datetime:
        """``at + within``: a break before this is an error."""
        return self.at + self.within

    @property
    def exit_code(self) -> int:
        """0 when nothing breaks within the window, 1 when something does (or already lacks clientAuth)."""
        return 1 if any(c.status == "breaks" for c in self.certificates) else 0

    def to_dict(self) -> dict[str, Any]:
        """The ``certkit audit --json`` document (schema_version 1)."""
        return {
            "schema_version": JSON_SCHEMA_VERSION,
            "kind": "audit",
            "at": rfc3339(self.at),
            "within_seconds": int(self.within.total_seconds()),
            "deadline": rfc3339(self.deadline),
            "exit_code": self.exit_code,
            "summary": {status: sum(c.status == status for c in self.certificates)
                        for status in ("ok", "warning", "breaks")},
            "certificates": [c.to_dict() for c in self.certificates],
            "notes": list(self.notes),
        }


def _ca_finding(cert: x509.Certificate, issuer: PublicIssuer, at: _dt.datetime, deadline: _dt.datetime
                ) -> tuple[_dt.datetime, Finding]:
    """When a public CA's clientAuth certificate breaks, and the finding that says so."""
    breaks_at = cert.not_valid_after_utc
    end = issuer.latest("issuance-ends")
    default = issuer.latest("default-ends")
    said = []
    if default is not None:
        said.append(f"{'since' if default.date <= at.date() else 'from'} {default.date} its default issuance "
                    f"carries no clientAuth ({default.status})")
    if end is not None:
        said.append(f"{'since' if end.date <= at.date() else 'from'} {end.date} none of its certificates may "
                    f"({end.status})")
    detail = (f"Issued by {issuer.name}, which is dropping clientAuth: {'; '.join(said)}. This certificate carries "
              f"clientAuth until it expires on {rfc3339(breaks_at)}; its renewal will not, and partners that check "
              f"the EKU will refuse it from then (or from the day the renewal tool replaces it).")
    severity = Severity.ERROR if breaks_at <= deadline else Severity.WARNING
    evidence = {"issuer": issuer.name, "breaks_at": rfc3339(breaks_at),
                "milestones": [m.to_dict() for m in issuer.milestones],
                "root_program": [m.to_dict() for m in ROOT_PROGRAM]}
    return breaks_at, Finding("client.public-ca-dropping-client-auth", detail, subject=cert.subject.rfc4514_string(),
                              severity=severity, evidence=evidence)


def _audit_one(item: ClientCertificate, at: _dt.datetime, deadline: _dt.datetime) -> AuditedCertificate:
    cert = item.cert
    allowed, eku = _client_auth(cert)
    issuer = public_issuer_of(cert, item.chain)
    subject = cert.subject.rfc4514_string()
    findings: list[Finding] = []
    breaks_at: _dt.datetime | None = None
    if cert.not_valid_after_utc <= at:
        breaks_at = cert.not_valid_after_utc
        findings.append(Finding("cert.expired", f"The client certificate expired on {rfc3339(breaks_at)}.",
                                subject=subject, side=Side.OURS, evidence={"not_after": rfc3339(breaks_at)}))
    if not allowed:
        breaks_at = at if breaks_at is None else breaks_at
        by = f" (issued by {issuer.name}, which has dropped clientAuth)" if issuer else ""
        findings.append(Finding(
            "client.no-client-auth",
            f"The certificate's EKU is {', '.join(eku or [])}: no clientAuth{by}. Partners that check the EKU "
            f"refuse it as a client certificate now.",
            subject=subject, evidence={"eku": list(eku or []), "issuer": issuer.name if issuer else None}))
    elif issuer is not None and not findings:
        breaks_at, finding = _ca_finding(cert, issuer, at, deadline)
        findings.append(finding)
    return AuditedCertificate(cert, item.source, allowed, tuple(eku) if eku is not None else None, issuer,
                              breaks_at, tuple(findings))


def audit_client_certificates(certificates: Iterable[ClientCertificate | x509.Certificate], *, at: _dt.datetime,
                              within: _dt.timedelta = DEFAULT_WITHIN, notes: Sequence[str] = ()) -> AuditReport:
    """Judge certificates presented as TLS client certificates, at ``at``, looking ``within`` ahead.

    Each certificate gets the findings ``client.no-client-auth`` (its EKU has no clientAuth: it breaks now),
    ``client.public-ca-dropping-client-auth`` (its issuer is a public CA in :data:`PUBLIC_ISSUERS`: it breaks
    at its notAfter; an error when that is before ``at + within``, else a warning) or ``cert.expired``.
    :attr:`AuditReport.exit_code` is 1 when any certificate breaks before ``at + within``. ``notes`` (what a
    configuration reader could not see) are carried into the report.
    """
    at = aware(at)
    if within < _dt.timedelta(0):
        raise UsageError("The look-ahead period is negative.", "Give a period of zero or more, e.g. 90d.")
    items = [c if isinstance(c, ClientCertificate) else ClientCertificate(c) for c in certificates]
    return AuditReport(at, within, tuple(_audit_one(item, at, at + within) for item in items), tuple(notes))
