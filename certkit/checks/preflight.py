"""The pre-flight before switching on Domain Security with a partner: will they accept us, will we accept them?

:func:`preflight` runs four steps and returns a :class:`PreflightReport` (plain data; nothing here prints):

1. **Our certificate**, as the partner's Edge will see it: the domain-security lint (both EKUs, RSA
   >= 2048 and RSA for Exchange 2010, SHA-256, wildcards, CDP, validity), the names (CN = our Edge
   FQDN, our domain and accepted domains in the SAN), the chain up to a root (our chain file and the
   trust store), the key matching the certificate, and our CRL fetched from its distribution point
   (reachable, correctly signed, current, nextUpdate not too near). A self-signed certificate is a
   warning: the partner must pin it.
2. **Routing**: the partner must have MX records (Domain Security routes through DNS); a smart host
   is a blocking finding (a smart-hosted Send connector cannot use Domain Security).
3. **The partner's endpoints**: every MX address is probed with our client certificate
   (:func:`certkit.checks.probe.probe_sync`, Exchange rules): STARTTLS, their certificate for the partner
   domain in our store, their CRL, and whether they accept our certificate after the handshake.
4. **The verdict**: ready when no finding is an error and at least one endpoint was reached. The exit
   code follows the probe's: 0 ready, 1 not ready, 3 when no endpoint of the partner could be reached
   (DNS failure included), whatever else was found.

DANE (``dane``: ``auto``, ``require`` or ``off``, passed to the probe step): with ``auto`` or ``require`` the
TLSA records of each MX host are looked up as :func:`~certkit.checks.probe.probe_sync` does, each endpoint
carries the probe's DANE status (``AddressResult.dane``) and the ``dane.*`` findings join the endpoints step
(outbound: they concern the partner's servers as we send to them), with the probe's severities. Under the
``exchange`` validator a DANE match does not replace the trust store (Exchange Server does no DANE). The
library's default is ``off`` (nothing looked up, the report of before); ``certkit preflight`` defaults to
``auto``.

MTA-STS (``mta_sts``: ``auto`` or ``off``, the library's default): after the endpoints, the partner domain's
MTA-STS policy and TLS-RPT record are judged from the endpoints' sessions
(:func:`certkit.checks.mtasts.mta_sts_of_sessions`, as ``certkit probe`` does) into
``PreflightReport.mta_sts``, shown by the text and HTML reports. It does not change the verdict: Exchange
Server applies no MTA-STS. ``certkit preflight`` defaults to ``auto``.

Every finding is placed in the direction(s) it affects: ``outbound`` (we send to them: they judge our
client certificate, we judge their server certificate) and ``inbound`` (they send to us).
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID

from certkit.adapters.crlfetch import CrlCache
from certkit.adapters.dns import DnsFailure, MailHost, MailRoute, resolve_host, resolve_mail_domain
from certkit.adapters.transport import ClientIdentity
from certkit.checks.mtasts import check_sts_options, mta_sts_of_sessions
from certkit.checks.ourcert import (
    CRL_WARNING,
    as_ours,
    crls_expiring,
    once_each,
    our_chain_verdict,
    our_domain_findings,
    self_signed_warning,
)
from certkit.checks.probe import DANE_MODES, AddressResult, ProbeOptions, dns_finding, parse_target, probe_sync
from certkit.clock import Clock, FixedClock, SystemClock, aware
from certkit.core.extensions import allows_client_auth, san_names
from certkit.core.findings import Finding, Severity, Side
from certkit.core.formats import sha256_fingerprint
from certkit.core.jsonfacts import certificate_facts, rfc3339
from certkit.core.keys import PrivateKey, public_key_matches
from certkit.core.lint import lint_certificate
from certkit.core.mtasts import StsReport, sts_owner, tlsrpt_owner
from certkit.core.names import dns_name, is_ip_address
from certkit.core.text import plural
from certkit.core.trust import AnchorSet, as_anchor_set, is_ca, is_self_signed
from certkit.errors import InputError, UsageError
from certkit.schemas import document
from certkit.validation import Validator

__all__ = [
    "CHAIN_STATES",
    "CRL_WARNING",
    "JSON_SCHEMA_VERSION",
    "MIN_TIMEOUT",
    "ChainCert",
    "Item",
    "PreflightOptions",
    "PreflightProgress",
    "PreflightReport",
    "chain_state",
    "preflight",
    "render_html",
    "render_text",
]

#: The version of the JSON document (certkit/schemas/preflight.schema.json); bumped only on breaking changes.
JSON_SCHEMA_VERSION = document("preflight").version

#: The shortest timeout (seconds) per network step: below it nothing could answer.
MIN_TIMEOUT = 0.1

OUTBOUND = "outbound"  # we send to them
INBOUND = "inbound"    # they send to us
BOTH = (OUTBOUND, INBOUND)

STEPS = {
    "certificate": "Our certificate, as the partner sees it",
    "routing": "Routing to the partner",
    "endpoints": "The partner's endpoints",
}

#: Called with (step, message) as the pre-flight goes; ``step`` is ``certificate``, ``routing``,
#: ``endpoints``, ``address`` (one finished address; the message says which and how many are done) or
#: ``mta-sts``.
PreflightProgress = Callable[[str, str], None]


@dataclass(frozen=True)
class Item:
    """One finding of the pre-flight: which step found it, which directions it blocks, and where."""

    step: str
    directions: tuple[str, ...]
    finding: Finding
    where: str | None = None
    #: What to do, when the catalogue's remedy (written for the partner's side) does not fit this item.
    remedy: str | None = None

    @property
    def blocking(self) -> bool:
        """An error: Domain Security will not work until it is fixed."""
        return self.finding.severity is Severity.ERROR

    def to_dict(self) -> dict[str, Any]:
        """The finding's dictionary (see :meth:`Finding.to_dict`) with ``step``, ``directions``, ``where``."""
        data = {**self.finding.to_dict(), "step": self.step, "directions": list(self.directions),
                "where": self.where}
        if self.remedy is not None:
            data["remedy"] = self.remedy
        return data


@dataclass(frozen=True)
class ChainCert:
    """One certificate of a chain, for the pictures: its role and its state at the pre-flight's time."""

    role: str            # leaf, intermediate, root
    subject: str
    issuer: str
    not_before: _dt.datetime
    not_after: _dt.datetime
    status: str          # valid, expired, not-yet-valid, untrusted
    sha256: str
    #: What the pictures draw (see :data:`CHAIN_STATES`): ``status`` refined by the verification's facts --
    #: ``revoked`` (on its issuer's CRL) and ``self-signed`` (a self-signed leaf) are never drawn as valid.
    #: Not given: the ``status``.
    state: str | None = None

    def __post_init__(self) -> None:
        if self.state is None:
            object.__setattr__(self, "state", self.status)

    @property
    def label(self) -> str:
        """The state in words (the legend's label)."""
        return CHAIN_STATES[self.state or self.status][0]

    def to_dict(self) -> dict[str, Any]:
        """Plain data (the JSON contract, docs/json.md)."""
        return {"role": self.role, "subject": self.subject, "issuer": self.issuer,
                "not_before": rfc3339(self.not_before), "not_after": rfc3339(self.not_after),
                "status": self.status, "state": self.state, "fingerprint_sha256": self.sha256}


#: The states a chain certificate is drawn in, most serious first: state -> (label, what it means). The HTML
#: report's legend lists them all.
CHAIN_STATES: dict[str, tuple[str, str]] = {
    "revoked": ("revoked", "on its issuer's CRL: no validator accepts it"),
    "expired": ("expired", "its notAfter has passed at the report's time"),
    "not-yet-valid": ("not yet valid", "its notBefore is after the report's time"),
    "self-signed": ("self-signed", "a leaf signed by itself: trusted only where this exact certificate is pinned"),
    "untrusted": ("untrusted", "its chain does not reach a root in the trust store used"),
    "valid": ("valid", "in its validity period, in a chain that reaches a trusted root, not revoked"),
}


def _revoked(findings: Sequence[Finding]) -> set[tuple[str, str]]:
    """The (subject, serial in hex) of every certificate the verification found on a CRL."""
    return {(f.subject or "", str(f.evidence.get("serial", "")).upper()) for f in findings
            if f.code == "revocation.revoked"}


def chain_state(cert: x509.Certificate, index: int, *, trusted: bool, revoked: set[tuple[str, str]],
                at: _dt.datetime) -> str:
    """The state (a key of :data:`CHAIN_STATES`) to draw ``cert``, the ``index``-th of a chain, in.

    From the verification's facts: ``revoked`` as :func:`_revoked` lists them (the CRL check), the validity
    period against ``at`` (the report's time, not the clock), a self-signed leaf, and ``trusted`` (the chain
    reaches an anchor). The most serious state wins, in the order of :data:`CHAIN_STATES`.
    """
    if (cert.subject.rfc4514_string() or "(empty subject)", f"{cert.serial_number:X}") in revoked:
        return "revoked"
    if at > cert.not_valid_after_utc:
        return "expired"
    if at < cert.not_valid_before_utc:
        return "not-yet-valid"
    if index == 0 and is_self_signed(cert):
        return "self-signed"
    return "valid" if trusted else "untrusted"


def _chain_view(certs: Sequence[x509.Certificate], *, trusted: bool, at: _dt.datetime,
                findings: Sequence[Finding] = ()) -> list[ChainCert]:
    revoked = _revoked(findings)
    out = []
    for i, c in enumerate(certs):
        root = is_self_signed(c) and is_ca(c)
        role = "leaf" if i == 0 else "root" if root else "intermediate"
        if at > c.not_valid_after_utc:
            status = "expired"
        elif at < c.not_valid_before_utc:
            status = "not-yet-valid"
        elif not trusted:
            status = "untrusted"
        else:
            status = "valid"
        out.append(ChainCert(role, c.subject.rfc4514_string(), c.issuer.rfc4514_string(), c.not_valid_before_utc,
                             c.not_valid_after_utc, status, sha256_fingerprint(c),
                             chain_state(c, i, trusted=trusted, revoked=revoked, at=at)))
    return out


@dataclass
class PreflightReport:
    """Everything the pre-flight saw; :attr:`ready`, :attr:`blocking` and :attr:`exit_code` give the verdict."""

    partner: str
    our_domain: str
    edge_fqdn: str
    at: _dt.datetime
    port: int
    certificate: x509.Certificate
    items: list[Item] = field(default_factory=list)
    our_chain: list[ChainCert] = field(default_factory=list)
    their_chains: dict[str, list[ChainCert]] = field(default_factory=dict)
    route: MailRoute | None = None
    smart_host: str | None = None
    endpoints: list[AddressResult] = field(default_factory=list)
    accepted_domains: tuple[str, ...] = ()
    validator: Validator = "exchange"
    #: The DANE mode the endpoints were probed with (``auto``, ``require`` or ``off``).
    dane: str = "off"
    #: The partner domain's MTA-STS and TLS-RPT (``mta_sts="auto"``; ``None`` with ``off``). Not part of the
    #: verdict: its findings are its own, not :attr:`items`.
    mta_sts: StsReport | None = None
    #: The hosts given instead of MX resolution (``PreflightOptions.mx``, ``--mx``): empty when DNS gave the MX list.
    mx_given: tuple[str, ...] = ()

    @property
    def reached(self) -> bool:
        """At least one of the partner's addresses answered."""
        return any(e.reached for e in self.endpoints)

    @property
    def blocking(self) -> list[Item]:
        """The errors, in step order (certificate, routing, endpoints)."""
        return [i for i in self.items if i.blocking]

    @property
    def warnings(self) -> list[Item]:
        """The warnings."""
        return [i for i in self.items if i.finding.severity is Severity.WARNING]

    @property
    def ready(self) -> bool:
        """No blocking finding, and at least one endpoint reached."""
        return not self.blocking and self.reached

    @property
    def verdict(self) -> str:
        """``ready`` or ``not ready``."""
        return "ready" if self.ready else "not ready"

    @property
    def exit_code(self) -> int:
        """0 ready, 1 not ready, 3 nothing reachable: no address of the partner answered, or none was found
        (a DNS failure) -- the same rule as the probe's exit code."""
        if not self.reached:
            return 3
        return 0 if self.ready else 1

    def direction(self, name: str) -> list[Item]:
        """The items affecting ``outbound`` (we send to them) or ``inbound`` (they send to us), errors first."""
        order = {Severity.ERROR: 0, Severity.WARNING: 1, Severity.INFO: 2}
        chosen = [i for i in self.items if name in i.directions]
        return sorted(chosen, key=lambda i: order[i.finding.severity or Severity.INFO])

    def step_status(self, step: str) -> str:
        """``fail`` (an error), ``warn`` (a warning) or ``pass`` for ``step``."""
        sev = {i.finding.severity for i in self.items if i.step == step}
        return "fail" if Severity.ERROR in sev else "warn" if Severity.WARNING in sev else "pass"

    def to_dict(self) -> dict[str, Any]:
        """The report as plain data, documented by ``certkit/schemas/preflight.schema.json``."""
        c = self.certificate
        route = self.route
        errors = len(self.blocking)
        return {
            "schema_version": JSON_SCHEMA_VERSION,
            "kind": "preflight",
            "partner": self.partner,
            "our_domain": self.our_domain,
            "accepted_domains": list(self.accepted_domains),
            "edge_fqdn": self.edge_fqdn,
            "at": rfc3339(self.at),
            "port": self.port,
            "validator": self.validator,
            "dane": self.dane,
            "ready": self.ready,
            "verdict": self.verdict,
            "exit_code": self.exit_code,
            "summary": {"errors": errors, "warnings": len(self.warnings),
                        "info": len(self.items) - errors - len(self.warnings),
                        "endpoints": len(self.endpoints),
                        "reached": sum(1 for e in self.endpoints if e.reached)},
            "blocking": [i.to_dict() for i in self.blocking],
            "steps": [{"name": s, "title": t, "status": self.step_status(s),
                       "findings": [i.to_dict() for i in self.items if i.step == s]} for s, t in STEPS.items()],
            "certificate": {**certificate_facts(c), "chain": [x.to_dict() for x in self.our_chain]},
            "routing": {
                "smart_host": self.smart_host,
                "implicit_mx": bool(route and route.implicit),
                "mx_given": list(self.mx_given),
                "mx": [{"name": h.name, "preference": h.preference, "addresses": list(h.addresses)}
                       for h in (route.hosts if route else ())],
            },
            "endpoints": [{**e.to_dict(), "chain": [x.to_dict() for x in self.their_chains.get(_where(e), [])]}
                          for e in self.endpoints],
            "mta_sts": None if self.mta_sts is None else self.mta_sts.to_dict(),
        }


def _where(e: AddressResult) -> str:
    return f"{e.host} [{e.address}]:{e.port}" if e.host != e.address else f"[{e.address}]:{e.port}"


def _cn(cert: x509.Certificate) -> str | None:
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(cns[0].value) if cns else None


_EKU_DIRECTION = {"eku.no-client-auth": (OUTBOUND,), "eku.no-server-auth": (INBOUND,),
                  "peer.rejected-no-client-auth": (OUTBOUND,)}


#: Remedies for OUR chain: the catalogue's (import the partner's root) are written for the partner's chain.
_OUR_CHAIN_REMEDY = {
    "chain.self-signed": "Our certificate is self-signed, so there is no root of ours to send: give the partner this "
                         "exact certificate to trust (on Exchange: import it into Cert:\\LocalMachine\\Root; "
                         "certkit config partner-kit prepares the kit) and again at every renewal, or better, "
                         "issue a transport certificate from our CA (certkit ca issue FQDN --accepted-domain DOMAIN) "
                         "and give the partner our root.",
    "chain.unknown-issuer": "Our chain does not reach a root the pre-flight was given: pass our root with --chain "
                            "ROOT.crt (certkit's CA keeps it as <home>/root.crt) or point --home at our CA; and "
                            "make sure the partner imports that root (certkit config partner-kit).",
    "chain.missing-intermediate": "Our Edge must send the intermediates with its certificate: pass them with "
                                  "--chain (certkit ca issue writes <fqdn>.chain.pem) and install the whole chain "
                                  "on the Edge.",
}


def _our_remedy(f: Finding) -> str | None:
    return _OUR_CHAIN_REMEDY.get(f.code) if f.side is Side.OURS else None


def _domain(value: str, option: str) -> str:
    """A domain option as a checked host name (lower-case A-label), or an :class:`InputError` naming it."""
    try:
        return dns_name(value)
    except InputError as e:
        raise InputError(f"Bad {option}: {e.message}", e.hint) from None


def _check_certificate(cert: x509.Certificate, key: PrivateKey | None, chain: Sequence[x509.Certificate],
                       anchors: AnchorSet, report: PreflightReport, options: PreflightOptions,
                       crl_cache: CrlCache) -> tuple[list[Finding], list[ChainCert]]:
    """Step 1: our certificate as the partner's Edge sees it."""
    at = report.at
    out: list[Finding] = list(lint_certificate(cert, at=at, side=Side.OURS, exchange2010=options.exchange2010))
    out += _our_name_findings(cert, report.edge_fqdn, (report.our_domain, *report.accepted_domains))
    if key is not None and not public_key_matches(key, cert.public_key()):
        out.append(Finding("key.mismatch", "The private key given is not the key of the certificate.",
                           subject=cert.subject.rfc4514_string()))
    if is_self_signed(cert):
        out.append(self_signed_warning(cert))
    result, fetches = our_chain_verdict(cert, chain, anchors, at, options.validator, crl_cache.get)
    # The pinned-leaf fact was said above, as the self-signed warning.
    out += [as_ours(f) for f in result.findings if f.code != "chain.pinned-leaf"]
    out += crls_expiring(fetches, at)
    trusted = result.ok or (result.anchor is not None and not any(
        f.code.startswith("chain.") and f.severity is Severity.ERROR for f in result.findings))
    return once_each(out), _chain_view(list(result.chain), trusted=trusted, at=at, findings=result.findings)


def _our_name_findings(cert: x509.Certificate, edge_fqdn: str, domains: Sequence[str]) -> list[Finding]:
    """Microsoft's advice: CN = the Edge's public FQDN, SAN = that FQDN plus every accepted domain."""
    who = cert.subject.rfc4514_string()
    out: list[Finding] = []
    cn = _cn(cert)
    if cn is None or cn.lower().rstrip(".") != edge_fqdn:
        out.append(Finding("name.host-mismatch", f"The certificate's CN is {cn or '(none)'}, not our Edge FQDN "
                           f"{edge_fqdn}; the partner's Edge reaches us under that name.", subject=who,
                           side=Side.OURS, evidence={"expected": edge_fqdn, "cn": cn}))
    sans = [n.lower() for n in san_names(cert)]
    if edge_fqdn not in sans:
        out.append(Finding("name.host-mismatch", f"The SAN does not name our Edge FQDN {edge_fqdn}; it names "
                           f"{', '.join(sans) or '(nothing)'}.", subject=who, side=Side.OURS,
                           evidence={"expected": edge_fqdn, "names": sans}))
    out += our_domain_findings(cert, domains)
    return out


def _their_client_auth(e: AddressResult, where: str) -> list[Finding]:
    """Their certificate must also be a TLS client certificate: their Edge presents it when sending to us."""
    tls = e.session.tls if e.session else None
    if tls is None or not tls.peer_chain:
        return []
    leaf = tls.peer_chain[0]
    if allows_client_auth(leaf):
        return []
    return [Finding("eku.no-client-auth", f"{where} presents {leaf.subject.rfc4514_string()} without clientAuth: "
                    "when their Edge sends to us with it, our Receive connector rejects it.",
                    subject=leaf.subject.rfc4514_string(), side=Side.THEIRS)]


def _endpoint_directions(f: Finding) -> tuple[str, ...]:
    if f.code == "eku.no-client-auth" and f.side is Side.THEIRS:
        return (INBOUND,)  # their Edge presents it as a client when it sends to us
    if f.code == "eku.no-server-auth":
        return (OUTBOUND,)  # we connect to it as a server
    if f.code in _EKU_DIRECTION:
        return _EKU_DIRECTION[f.code]
    # Trust in, and the name of, their certificate matter both ways: our Receive connector checks the
    # certificate their Edge sends with against the partner domain, as our Send connector does.
    if f.side is Side.THEIRS and (f.code.startswith(("chain.", "name.", "cert.", "revocation.", "key.", "sig."))):
        return BOTH
    return (OUTBOUND,)


@dataclass(frozen=True)
class PreflightOptions:
    """How :func:`preflight` checks, beyond who and when; checked once, when made.

    ``edge_fqdn``: our Edge's public FQDN (default: our certificate's CN); ``accepted_domains``: our other
    accepted domains, each of which our certificate should name; ``smart_host``: the smart host our Send
    connector uses, if any (blocking); ``nameserver``, ``port`` and ``timeout``: for the DNS look-ups and
    the probe of their endpoints; ``exchange2010``: lint for Exchange 2010's limits too; ``validator``:
    whose rules judge their certificate and our chain (``exchange``: revocation must be checkable;
    ``postfix``: revocation facts are information only); ``dane``: ``auto``, ``require`` or ``off`` (the
    default: no TLSA lookups); ``mta_sts``: ``auto`` or ``off`` (the default: nothing looked up), with
    ``sts_cadata`` (PEM roots in place of the Web PKI) and ``sts_policy_port`` (the policy host's HTTPS
    port, 443) for a lab; see the module docstring; ``mx``: ``HOST[:PORT]`` entries (host names, IPv4
    addresses, ``[IPv6]:PORT``; the port defaults to ``port``) probed instead of the partner's MX records
    (a staging or lab MX that no public DNS names), kept as ``host:port``.
    """

    edge_fqdn: str | None = None
    accepted_domains: Sequence[str] = ()
    smart_host: str | None = None
    nameserver: str | None = None
    port: int = 25
    timeout: float = 10.0
    exchange2010: bool = True
    validator: Validator = "exchange"
    dane: str = "off"
    mta_sts: str = "off"
    sts_cadata: str | None = None
    sts_policy_port: int = 443
    mx: Sequence[str] = ()

    def __post_init__(self) -> None:
        if self.validator not in ("exchange", "postfix"):
            raise InputError(f"Unknown validator {self.validator!r}.", "Use exchange or postfix.")
        if self.dane not in DANE_MODES:
            raise InputError(f"Unknown DANE mode {self.dane!r}.", "Use auto, require or off.")
        if not (isinstance(self.timeout, int | float) and math.isfinite(self.timeout) and self.timeout >= MIN_TIMEOUT):
            raise InputError(f"The timeout {self.timeout!r} is not a usable number of seconds.",
                             f"Give --timeout of at least {MIN_TIMEOUT} seconds (default 10).")
        if not (isinstance(self.port, int) and 1 <= self.port <= 65535):
            raise InputError(f"The port {self.port!r} is not a TCP port.", "Give 1 to 65535 (default 25).")
        check_sts_options(self.mta_sts, self.sts_cadata, self.sts_policy_port)
        object.__setattr__(self, "accepted_domains", tuple(d.lower() for d in self.accepted_domains))
        if isinstance(self.mx, str):
            raise UsageError("mx must be a sequence of HOST[:PORT] strings, not one string.",
                             "Pass mx=('mx1.fabrikam.com:25',).")
        object.__setattr__(self, "mx", tuple(_mx_target(m, self.port) for m in self.mx))


def _mx_target(text: str, port: int) -> str:
    """One ``--mx`` value as the probe's ``host:port`` target (``[v6]:port``); a bare name is a host, not a domain."""
    try:
        t = parse_target(text, port)
    except InputError as e:
        raise InputError(f"Bad --mx {text!r}: {e.message}", "Give --mx HOST[:PORT], e.g. mx1.fabrikam.com:25, "
                         "192.0.2.1:2525 or [2001:db8::1]:25.") from None
    return f"[{t.host}]:{t.port}" if ":" in t.host else f"{t.host}:{t.port}"


_DEFAULT_OPTIONS = PreflightOptions()


def preflight(partner: str, *, our_domain: str, cert: x509.Certificate, key: PrivateKey | None = None,
              chain: Sequence[x509.Certificate] = (), anchors: Any = (), at: _dt.datetime | None = None,
              clock: Clock | None = None, progress: PreflightProgress | None = None,
              options: PreflightOptions | None = None) -> PreflightReport:
    """Run the pre-flight for Domain Security with ``partner`` (see the module docstring).

    ``cert``/``key``/``chain``: our transport certificate, its key and the intermediates (and root) we
    send; ``anchors``: the trust store (an :class:`~certkit.core.trust.AnchorSet`, certificates, or a
    :class:`~certkit.adapters.truststore.TrustStore`) used for their certificates and our chain;
    ``at`` or ``clock``: the time to judge at; ``progress(step, text)`` is told what is being done;
    ``options``: a :class:`PreflightOptions` (our Edge's name, smart host, DNS, port, timeout, rules).
    Never raises for what it finds: the findings are in the report.
    """
    if options is not None and not isinstance(options, PreflightOptions):
        raise UsageError(f"options must be a PreflightOptions, not {type(options).__name__}.",
                         "Pass options=PreflightOptions(edge_fqdn='edge.contoso.com').")
    opts = _DEFAULT_OPTIONS if options is None else options
    partner, our_domain = _partner_and_ours(partner, our_domain)
    at = aware(at) if at is not None else (clock or SystemClock()).now()
    fqdn = (opts.edge_fqdn or _cn(cert) or "").strip().rstrip(".").lower()
    if not fqdn:
        raise InputError("Our Edge FQDN is unknown (the certificate has no CN).", "Give --edge-fqdn.")
    anchor_set = as_anchor_set(anchors)
    report = PreflightReport(partner, our_domain, fqdn, at, opts.port, cert, smart_host=opts.smart_host,
                             accepted_domains=tuple(opts.accepted_domains), validator=opts.validator, dane=opts.dane,
                             mx_given=tuple(opts.mx))

    def say(step: str, text: str) -> None:
        if progress is not None:
            progress(step, text)

    say("certificate", f"checking our certificate {_cn(cert) or cert.subject.rfc4514_string()}")
    found, report.our_chain = _check_certificate(cert, key, chain, anchor_set, report, opts,
                                                 CrlCache(timeout=min(opts.timeout, 10.0)))
    report.items += [Item("certificate", _EKU_DIRECTION.get(f.code, BOTH), f, remedy=_our_remedy(f)) for f in found]
    if opts.mx:
        say("routing", f"MX resolution skipped: {plural(len(opts.mx), 'host')} given ({', '.join(opts.mx)})")
        _given_routing(report, opts)
    else:
        say("routing", f"resolving the MX records of {partner}")
        _check_routing(report, opts)
    if report.route is not None and report.route.targets:
        identity = _our_identity(cert, key, chain)
        _check_endpoints(report, opts, anchor_set, identity, say)
    if opts.mta_sts == "auto":
        _check_mta_sts(report, opts, say)
    return report


def _partner_and_ours(partner: str, our_domain: str) -> tuple[str, str]:
    """The partner domain and ours, checked (two different host names), as lower-case A-labels."""
    if not partner.strip() or not our_domain.strip():
        raise InputError("The partner domain and our domain are both needed.",
                         "Give --partner fabrikam.com --our-domain contoso.com.")
    partner = _domain(partner, "--partner")
    our_domain = _domain(our_domain, "--our-domain")
    if partner == our_domain:
        raise InputError(f"The partner domain is our own domain {our_domain}.", "Give the partner's domain.")
    return partner, our_domain


def _check_routing(report: PreflightReport, options: PreflightOptions) -> None:
    """Step 2: a smart host in the way, and the partner's MX records (``report.route``)."""
    partner, smart_host = report.partner, options.smart_host
    if smart_host:
        report.items.append(Item("routing", (OUTBOUND,), Finding(
            "route.smart-host", f"Our Send connector routes through the smart host {smart_host}; Domain Security "
            f"needs it to deliver to {partner}'s MX hosts itself (DNS routing).", subject=smart_host)))
    route = report.route = resolve_mail_domain(partner, nameserver=options.nameserver, timeout=options.timeout)
    if route.failure is not None:
        report.items.append(Item("routing", (OUTBOUND,), Finding(route.failure.code, route.failure.detail,
                                                                 subject=partner)))
    elif route.implicit:
        report.items.append(Item("routing", (OUTBOUND,), Finding(
            "dns.no-mx", f"{partner} has no MX records; mail would go to its own address "
            f"({', '.join(route.targets[0][1:]) if route.targets else 'none'}), but Domain Security needs MX "
            "routing.", subject=partner)))


def _given_routing(report: PreflightReport, options: PreflightOptions) -> None:
    """Step 2 with ``mx`` (``--mx``): no MX lookup; the hosts given, each resolved to its addresses (an IP literal
    is its own). A host without an address is a ``dns.failure``; a smart host is still blocking."""
    if options.smart_host:
        report.items.append(Item("routing", (OUTBOUND,), Finding(
            "route.smart-host", f"Our Send connector routes through the smart host {options.smart_host}; Domain "
            f"Security needs it to deliver to {report.partner}'s MX hosts itself (DNS routing).",
            subject=options.smart_host)))
    hosts: list[MailHost] = []
    for text in options.mx:
        host = parse_target(text).host
        if is_ip_address(host):
            hosts.append(MailHost(host, None, (host,)))
            continue
        found = resolve_host(host, nameserver=options.nameserver, timeout=options.timeout)
        hosts.append(MailHost(host, None, found.addresses, found.failure))
        if not found.addresses:
            failure = found.failure or DnsFailure("dns.failure", f"{host} has no A or AAAA record")
            report.items.append(Item("routing", (OUTBOUND,), dns_finding(failure, host)))
    report.route = MailRoute(report.partner, tuple(hosts))


def _our_identity(cert: x509.Certificate, key: PrivateKey | None,
                  chain: Sequence[x509.Certificate]) -> ClientIdentity | None:
    """What our Edge presents; with no key, or a key that is not the certificate's, no handshake could present
    it: the endpoints are probed without one."""
    if key is None or not public_key_matches(key, cert.public_key()):
        return None
    return ClientIdentity(cert, key, tuple(c for c in chain if not is_self_signed(c)))


def _check_endpoints(report: PreflightReport, options: PreflightOptions, anchors: AnchorSet,
                     identity: ClientIdentity | None, say: Callable[[str, str], None]) -> None:
    """Step 3: the partner's endpoints, probed with our certificate."""
    assert report.route is not None
    total = len(report.route.targets)
    done = 0

    def on_address(result: AddressResult) -> None:
        nonlocal done
        done += 1
        say("address", f"[{done}/{total}] {_where(result)}: {result.verdict}")

    say("endpoints", f"probing {plural(total, 'address')} of {report.partner} on port {options.port}")
    # MAIL FROM our domain (not a guess from the certificate's name): a receiving Exchange applies
    # Domain Security only when the sender's domain is in its TLSReceiveDomainSecureList.
    probe_options = ProbeOptions(port=options.port, validator=options.validator, domain=report.partner,
                                 nameserver=options.nameserver, timeout=options.timeout,
                                 mail_from=f"probe@{report.our_domain}", helo_name=report.edge_fqdn, dane=options.dane,
                                 our_certificate=False)  # step 1 checked it
    # --mx: exactly the hosts given (as host:port targets: no MX lookup), else the partner's MX records.
    results = probe_sync(list(options.mx) or [report.partner], anchors=anchors, identity=identity,
                         options=probe_options, clock=FixedClock(report.at), progress=on_address)
    for e in (e for r in results for e in r.addresses):
        report.endpoints.append(e)
        where = _where(e)
        for f in [*e.findings, *_their_client_auth(e, where)]:
            report.items.append(Item("endpoints", _endpoint_directions(f), f, where))
        v = e.verification
        if v is not None:
            report.their_chains[where] = _chain_view(v.chain, trusted=v.anchor is not None, at=report.at,
                                                      findings=v.findings)


def _check_mta_sts(report: PreflightReport, options: PreflightOptions, say: Callable[[str, str], None]) -> None:
    """After the endpoints: the partner's MTA-STS and TLS-RPT, from the endpoints' sessions (``report.mta_sts``).
    Also without endpoints (no MX, a DNS failure): the record and the policy are still the partner's."""
    say("mta-sts", f"checking the MTA-STS policy and TLS-RPT record of {report.partner}")
    report.mta_sts = mta_sts_of_sessions(report.partner, report.endpoints, nameserver=options.nameserver,
                                         timeout=options.timeout, cadata=options.sts_cadata,
                                         policy_port=options.sts_policy_port, at=report.at)


# --- rendering (through certkit.adapters.render, the only jinja2 module) ----------------------------


def _box(c: ChainCert) -> dict[str, Any]:
    """One chain certificate for the templates: its state and label computed here, never in a template."""
    return {"role": c.role, "subject": c.subject, "state": c.state, "label": c.label, "not_before": c.not_before,
            "not_after": c.not_after, "sha256": c.sha256}


def _chains(report: PreflightReport) -> dict[str, Any]:
    """Our chain and each endpoint's (in the order of ``report.endpoints``), as boxes."""
    return {"ours": [_box(c) for c in report.our_chain],
            "endpoints": [[_box(c) for c in report.their_chains.get(_where(e), [])] for e in report.endpoints]}


def _timeline(report: PreflightReport) -> dict[str, Any]:
    """Bars for the validity timeline: one row per distinct certificate, on one axis around ``at``."""
    certs: dict[str, tuple[str, ChainCert]] = {}
    for c in report.our_chain:
        certs.setdefault(c.sha256, ("ours", c))
    for chain in report.their_chains.values():
        for c in chain:
            certs.setdefault(c.sha256, ("theirs", c))
    if not certs:
        return {"bars": [], "now": 50.0, "start": report.at, "end": report.at}
    span = _dt.timedelta(days=3 * 365)
    start = max(min(c.not_before for _, c in certs.values()), report.at - span)
    end = min(max(c.not_after for _, c in certs.values()), report.at + span)
    start, end = min(start, report.at - _dt.timedelta(days=30)), max(end, report.at + _dt.timedelta(days=30))
    total = (end - start).total_seconds()

    def pos(t: _dt.datetime) -> float:
        return round(min(100.0, max(0.0, (t - start).total_seconds() / total * 100)), 2)

    bars = [{**_box(c), "side": side, "left": pos(c.not_before),
             "width": max(0.5, round(pos(c.not_after) - pos(c.not_before), 2)),
             "days_left": (c.not_after - report.at).days} for side, c in certs.values()]
    return {"bars": bars, "now": pos(report.at), "start": start, "end": end}


#: How the MX table names a Web PKI result (:attr:`certkit.core.mtasts.MxVerdict.webpki`).
_WEBPKI_LABELS = {"valid": "valid", "invalid": "invalid", "no-tls": "no TLS", "not-checked": "not checked"}


def _record_state(found: object, codes: set[str], invalid: str, failed: bool) -> str:
    """A TXT record's state in words: published, not usable (``invalid`` among ``codes``), lookup failed, or none."""
    if found is not None:
        return "published"
    if invalid in codes:
        return "not usable"
    return "lookup failed" if failed else "not published"


def _mta_sts_view(report: PreflightReport) -> dict[str, Any] | None:
    """The partner's MTA-STS and TLS-RPT for the templates (``None``: not checked): every state and label computed
    here, never in a template."""
    sts = report.mta_sts
    if sts is None:
        return None
    codes = {f.code for f in sts.findings}
    failed_lookups = {f.subject for f in sts.findings if f.code == "dns.failure"}
    severities = {f.severity for f in sts.findings}
    p = sts.policy
    if p is not None:
        policy = f"mode {p.mode}, max_age {p.max_age}, mx {', '.join(p.mx) or '(none)'}"
    elif sts.fetch_error is not None:
        policy = f"not usable: {sts.fetch_error}"
    elif sts.record is not None:
        policy = "not valid (see the findings)"
    else:
        policy = "not fetched (no usable record)"
    if p is None or p.mode == "none":
        mx_note = "" if p is None else "not checked: the policy's mode is none"
    else:
        mx_note = "" if sts.mx else "no MX host was reached"
    row = "error" if sts.verdict == "enforce" else "warning"
    return {
        "domain": sts.domain, "verdict": sts.verdict, "summary": sts.summary,
        "status": "fail" if Severity.ERROR in severities else "warn" if Severity.WARNING in severities else "pass",
        "record": {"state": _record_state(sts.record, codes, "sts.txt-invalid",
                                          sts_owner(sts.domain) in failed_lookups),
                   "text": sts.record.text if sts.record is not None else None},
        "policy": policy, "policy_url": sts.policy_url, "mx_note": mx_note,
        "mx": [{"host": m.host, "listed": f"listed ({m.pattern})" if m.pattern is not None else "NOT listed",
                "webpki": _WEBPKI_LABELS.get(m.webpki, m.webpki), "dane": m.dane or "-",
                "failures": "; ".join(m.failures) or "-", "row": row if m.failures else ""} for m in sts.mx],
        "tlsrpt": {"state": _record_state(sts.tlsrpt, codes, "tlsrpt.record-invalid",
                                          tlsrpt_owner(sts.domain) in failed_lookups),
                   "text": sts.tlsrpt.text if sts.tlsrpt is not None else None,
                   "rua": list(sts.tlsrpt.rua) if sts.tlsrpt is not None else []},
        "findings": [{**f.to_dict(), "where": f.subject} for f in sts.findings],
    }


def render_text(report: PreflightReport) -> str:
    """The report as text (the default output of ``certkit preflight``)."""
    from certkit.adapters.render import render

    return render("preflight.txt.j2", r=report.to_dict(), chains=_chains(report), sts=_mta_sts_view(report))


def _installed_version() -> str:
    """certkit's version as installed (package metadata), or ``unknown`` when it is not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("certkit")
    except PackageNotFoundError:
        return "unknown"


def render_html(report: PreflightReport, *, command: str | None = None, version: str | None = None,
                generated: _dt.datetime | None = None) -> str:
    """The report as one self-contained HTML page (inline CSS, no scripts, no external assets).

    The footer names certkit's ``version`` (default: the installed one), the ``command`` line that made the
    report (``certkit preflight`` passes its own, secrets replaced by ``***``; the default is none) and the
    time: the report's time and, when given, when the page was ``generated``.
    """
    from certkit.adapters.render import render

    footer = {"version": version or _installed_version(), "command": command,
              "generated": aware(generated) if generated is not None else None}
    return render("preflight.html.j2", r=report.to_dict(), timeline=_timeline(report), chains=_chains(report),
                  states=CHAIN_STATES, footer=footer, sts=_mta_sts_view(report),
                  outbound=[i.to_dict() for i in report.direction(OUTBOUND)],
                  inbound=[i.to_dict() for i in report.direction(INBOUND)])
