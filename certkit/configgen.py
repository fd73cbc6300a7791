"""Configuration hand-over: what was checked is what gets deployed.

* :func:`exchange_script` -- an Exchange Management Shell script for Domain Security with one partner
  (import the PFX, enable it for SMTP by thumbprint, add the partner to both domain-secure lists,
  enable Domain Security on the Send and Receive connectors, trust the partner's root, then checks).
* :func:`postfix_config` -- the Postfix equivalent: ``main.cf`` lines, the ``smtp_tls_policy_maps``
  entry ``PARTNER secure match=PARTNER:.PARTNER``, a dedicated ``master.cf`` listener that requires a
  trusted client certificate, and the CA bundle to write beside them. With ``dane=True``: opportunistic
  DANE outbound (``smtp_tls_security_level = dane``, ``smtp_dns_support_level = dnssec``,
  ``smtp_host_lookup = dns``) and, for inbound, the TLSA records of our MX as a zone fragment (``tlsa.zone``).
* :func:`postfix_inbound` -- Domain Security enforced inbound on port 25: ``main.cf`` lines for
  ``postconf -e``, a ``master.cf`` spawn service running ``certkit postfix-policy`` and its rules
  (``certkit-partners.json``, one entry per partner domain of the trust store; see
  :mod:`certkit.core.postfix_policy` for the rule and its limits).
* :func:`partner_kit` -- what to send the partner: our root (PEM and DER), its fingerprints, our
  Edge FQDN, our domains and our CRL URL, with a short text (and our MX's TLSA records when given a chain).
* :func:`our_tlsa` -- the TLSA records for our MX from the chain the server sends: DANE-EE ``3 1 1`` for the
  leaf, DANE-TA ``2 1 1`` for its issuing CA when the chain carries it (what ``certkit dane tlsa --cert`` prints).

Every text is rendered from a template in ``templates/`` through :mod:`certkit.adapters.render`.
"""

from __future__ import annotations

import datetime as _dt
import ntpath
import re
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import NameOID

from certkit.adapters.render import render
from certkit.core.dane import TlsaRecord, Usage, issued_by, owner_name, tlsa_for, zone_line
from certkit.core.formats import cert_der, cert_pem, sha1_thumbprint, sha256_fingerprint
from certkit.core.names import dns_name
from certkit.core.postfix_policy import PartnerRule, PolicyTable, table_from_rules
from certkit.core.text import printable
from certkit.core.trust import Anchor, is_ca, is_self_signed
from certkit.errors import InputError, UsageError

__all__ = [
    "DEFAULT_EXCHANGE_TARGET",
    "DEFAULT_SERVER_FOLDER",
    "EXCHANGE_TARGETS",
    "RUN_IN_EXCHANGE_ONLINE",
    "RUN_ON_EDGE",
    "RUN_ON_HUB",
    "RUN_ON_INTERNET_FACING",
    "RUN_ON_MAILBOX",
    "ExchangeScript",
    "PostfixConfig",
    "PostfixInbound",
    "check_script_target",
    "exchange_script",
    "our_tlsa",
    "partner_kit",
    "postfix_config",
    "postfix_inbound",
]

#: The Exchange a script is for (``--target``): ``2010`` trusts roots with certutil (Windows Server 2008 R2 has no
#: Import-Certificate); ``2016`` is Exchange 2013, 2016, 2019 and Subscription Edition, which keep 2010's Domain
#: Security cmdlets (the domain-secure lists, ``-DomainSecureEnabled``) and add ``-TlsCertificateName`` and
#: ``Import-Certificate``; ``online`` is Exchange Online, configured with Partner connectors instead. What each
#: target documents: :data:`certkit.core.cmdlets.CMDLETS`.
EXCHANGE_TARGETS = ("2010", "2016", "online")
#: The default everywhere a target is chosen (``config exchange``, ``preflight``): the oldest release still in
#: use that takes the modern script; 2010 is asked for by name.
DEFAULT_EXCHANGE_TARGET = "2016"
#: What the script's first line says it is for.
_TARGET_TITLES = {"2010": "Exchange 2010", "2016": "Exchange 2013, 2016, 2019 or Subscription Edition",
                  "online": "Exchange Online"}
#: Where each command runs: the comment line before it (``# Run on:`` / ``# Run in:``).
RUN_ON_EDGE = "# Run on: Edge Transport server"
RUN_ON_MAILBOX = "# Run on: Mailbox server (replicated to the Edge by EdgeSync)"
RUN_ON_HUB = "# Run on: Hub Transport server (replicated to the Edge by EdgeSync)"
RUN_ON_INTERNET_FACING = ("# Run on: Internet-facing transport server (Edge Transport without an Edge subscription, "
                          "or Mailbox/Hub Transport)")
RUN_IN_EXCHANGE_ONLINE = "# Run in: Exchange Online PowerShell (Connect-ExchangeOnline)"
#: Where the script expects its files when no path is given.
DEFAULT_SERVER_FOLDER = "C:\\certkit"

DEFAULT_SEND_CONNECTOR = "EdgeSync - Default-First-Site-Name to Internet"
DEFAULT_RECEIVE_CONNECTOR = "Default internal receive connector $env:COMPUTERNAME"


def _domain(text: str, what: str = "--partner") -> str:
    if "*" in text:
        raise InputError(f"{what} {text!r} is a wildcard; domain-secure lists take no wildcards.",
                         "Give the domain itself, e.g. fabrikam.com.")
    return dns_name(text.strip().rstrip("."))


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_HOST = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[0-9]{1,3}(?:\.[0-9]{1,3}){3}|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)")


def _conf_path(text: str, what: str) -> str:
    """A file or folder path for main.cf/master.cf: absolute, one line, no blanks, no ``$`` expansion."""
    if _CONTROL.search(text):
        raise InputError(f"{what} {text!r} contains a line break or control character.",
                         "It would inject lines into the Postfix configuration; give a plain path.")
    if not text.startswith("/") or any(c.isspace() for c in text) or "$" in text or "," in text:
        raise InputError(f"{what} {text!r} is not a usable Postfix path.",
                         "Give an absolute path without blanks, commas or '$' (Postfix would split or expand it).")
    return text


def _listen(text: str) -> str:
    """A master.cf inet service: ``PORT`` or ``HOST:PORT`` (``[IPv6]:PORT``), port 1-65535."""
    if _CONTROL.search(text):
        raise InputError(f"--listen {text!r} contains a line break or control character.",
                         "It would inject lines into master.cf; give PORT or ADDRESS:PORT.")
    host, sep, port = text.rpartition(":")
    ok = port.isascii() and port.isdigit() and 1 <= int(port) <= 65535 and len(port) <= 5
    if sep and not _HOST.fullmatch(host):
        ok = False
    if not ok:
        raise InputError(f"--listen {text!r} is not PORT or ADDRESS:PORT.",
                         "Give e.g. 2525, 127.0.0.1:2525 or [2001:db8::1]:2525.")
    return text


def _ps_string(text: str) -> str:
    """A PowerShell double-quoted string: escape the backtick, the quote and ``$`` (except ``$env:``)."""
    out = text.replace("`", "``").replace('"', '`"')
    return re.sub(r"\$(?!env:)", "`$", out)


def check_script_target(target: str) -> None:
    """Refuse a target :func:`exchange_script` cannot write for."""
    if target not in _TARGET_TITLES:
        raise InputError(f"Unknown Exchange target {target!r}.", "Use 2010, 2016 (2013 to SE) or online.")


# How Windows names the attributes of a distinguished name (CertNameToStr, X.500 form), most specific first.
_WINDOWS_ATTRIBUTES = {NameOID.COMMON_NAME: "CN", NameOID.ORGANIZATIONAL_UNIT_NAME: "OU",
                       NameOID.ORGANIZATION_NAME: "O", NameOID.LOCALITY_NAME: "L", NameOID.STATE_OR_PROVINCE_NAME: "S",
                       NameOID.COUNTRY_NAME: "C", NameOID.DOMAIN_COMPONENT: "DC", NameOID.EMAIL_ADDRESS: "E",
                       NameOID.STREET_ADDRESS: "STREET", NameOID.SERIAL_NUMBER: "SERIALNUMBER"}


def windows_dn(name: x509.Name) -> str:
    """``name`` as Windows (and so Get-ExchangeCertificate's Issuer/Subject) writes it: ``CN=..., O=..., C=..``.

    A value with a separator or quote in it is double-quoted (inner quotes doubled); an attribute Windows has no
    short name for is written by its OID."""
    parts = []
    for rdn in reversed(name.rdns):
        items = []
        for attr in rdn:
            value = str(attr.value)
            if any(c in value for c in ',+="\n<>#;') or value != value.strip():
                value = '"' + value.replace('"', '""') + '"'
            items.append(f"{_WINDOWS_ATTRIBUTES.get(attr.oid, 'OID.' + attr.oid.dotted_string)}={value}")
        parts.append(" + ".join(items))
    return ", ".join(parts)


def tls_certificate_name(cert: x509.Certificate) -> str:
    """A connector's ``-TlsCertificateName`` for ``cert``: ``<I>issuer<S>subject`` as Windows writes them."""
    return f"<I>{windows_dn(cert.issuer)}<S>{windows_dn(cert.subject)}"


@dataclass(frozen=True)
class ExchangeScript:
    """The script text and what it was built from (``thumbprint`` is ``None`` for Exchange Online, where
    Microsoft's certificate is used)."""

    text: str
    thumbprint: str | None
    #: one of :data:`EXCHANGE_TARGETS`
    target: str
    partner: str
    #: the files the admin copies to the server first: (path on the server, what it is)
    files: tuple[tuple[str, str], ...] = ()
    #: Exchange Online: the connectors' certificate domain (TlsSenderCertificateName, TlsDomain)
    certificate_domain: str | None = None


def _certificate_domain(text: str | None, partner: str) -> str:
    """The connectors' certificate domain: ``*.PARTNER`` by default (the partner domain and every host in it)."""
    if text is None:
        return f"*.{partner}"
    wild = text.strip().startswith("*.")
    base = text.strip()[2:] if wild else text.strip()
    if "*" in base:
        raise InputError(f"--certificate-domain {text!r} embeds a wildcard.",
                         "Give a domain (fabrikam.com) or *. and a domain (*.fabrikam.com), nothing else.")
    return ("*." if wild else "") + dns_name(base.rstrip("."))


def _online_script(domain: str, certificate_domain: str | None, generated: _dt.datetime | None) -> ExchangeScript:
    name = _certificate_domain(certificate_domain, domain)
    text = render("exchange-online.ps1.j2", partner=_ps_string(domain), title=_TARGET_TITLES["online"],
                  certificate_domain=_ps_string(name), run=RUN_IN_EXCHANGE_ONLINE,
                  inbound=_ps_string(f"certkit: from {domain}"), outbound=_ps_string(f"certkit: to {domain}"),
                  generated=generated)
    return ExchangeScript(text, None, "online", domain, (), name)


def exchange_script(partner: str, *, pfx_path: str | None = None, certificate: x509.Certificate | None = None,
                    target: str = DEFAULT_EXCHANGE_TARGET,
                    send_connector: str = DEFAULT_SEND_CONNECTOR,
                    receive_connector: str = DEFAULT_RECEIVE_CONNECTOR,
                    partner_root: x509.Certificate | None = None, partner_root_path: str | None = None,
                    edge_subscription: bool = True, certificate_domain: str | None = None,
                    generated: _dt.datetime | None = None) -> ExchangeScript:
    """The script for certificate-based mail flow with ``partner`` on ``target`` (:data:`EXCHANGE_TARGETS`).

    ``2010``/``2016`` (2013 to SE): an Exchange Management Shell script enabling Domain Security, every command
    preceded by where it runs (:data:`RUN_ON_EDGE` ...). ``pfx_path`` is where the PFX will be on the Edge (default
    folder :data:`DEFAULT_SERVER_FOLDER`); ``certificate`` is the certificate inside it (its SHA-1 thumbprint is
    what Exchange shows); ``partner_root``/``partner_root_path``: the partner's root and where its file will be
    (default: ``<domain>-root.cer``, the partner kit's name, beside the PFX; without ``partner_root`` the import
    step is still written, marked as a placeholder). The script opens with the files to copy there.
    ``edge_subscription``: an EdgeSync subscription exists (the default): the domain-secure lists and the Send
    connector are set on a Mailbox (2010: Hub Transport) server and replicated; the Receive connector keeps
    ``ExchangeServer`` next to ``Tls`` and the checks include ``Test-EdgeSynchronization``.

    ``online``: an Exchange Online PowerShell script with a Partner inbound connector (TLS required, restricted
    to the partner's certificate domain) and a Partner outbound connector (``TlsSettings DomainValidation``);
    ``certificate_domain`` is that domain (default ``*.PARTNER``). No certificate, PFX or root is needed there.
    """
    check_script_target(target)
    domain = _domain(partner)
    if target == "online":
        return _online_script(domain, certificate_domain, generated)
    if certificate_domain is not None:
        raise InputError("--certificate-domain is for --target online.", "Leave it out, or use --target online.")
    if pfx_path is None or certificate is None:
        raise UsageError(f"An Exchange {target} script needs our certificate and where its PFX will be.",
                         "Pass pfx_path= and certificate=.")
    folder = ntpath.dirname(pfx_path) or DEFAULT_SERVER_FOLDER
    # The partner's root is always imported: without it Domain Security fails with "454 4.7.5". Without the
    # certificate at hand the step is still written, with a placeholder path the admin must fill in.
    if not partner_root_path:
        partner_root_path = ntpath.join(folder, f"{domain}-root.cer")
    files = ((pfx_path, "our transport certificate with its private key (PFX)"),
             (partner_root_path, f"{domain}'s root certificate" + (" (placeholder: from their partner kit)"
                                                                   if partner_root is None else "")))
    org = RUN_ON_HUB if target == "2010" else RUN_ON_MAILBOX
    text = render("exchange.ps1.j2", partner=_ps_string(domain), target=target,
                  title=_TARGET_TITLES[target],
                  pfx_path=_ps_string(pfx_path), pfx_name=ntpath.basename(pfx_path),
                  thumbprint=sha1_thumbprint(certificate), subject=certificate.subject.rfc4514_string(),
                  not_after=certificate.not_valid_after_utc,
                  send_connector=_ps_string(send_connector), receive_connector=_ps_string(receive_connector),
                  root_path=_ps_string(partner_root_path), root_placeholder=partner_root is None,
                  root_thumbprint=sha1_thumbprint(partner_root) if partner_root is not None else None,
                  root_subject=partner_root.subject.rfc4514_string() if partner_root is not None else None,
                  tls_certificate_name=_ps_string(tls_certificate_name(certificate)) if target != "2010" else None,
                  copies=[{"path": p, "what": w} for p, w in files],
                  copy_to=ntpath.dirname(pfx_path) or folder,
                  edge_name="Edge Transport server" if edge_subscription else "Internet-facing transport server",
                  run_edge=RUN_ON_EDGE if edge_subscription else RUN_ON_INTERNET_FACING,
                  run_org=org if edge_subscription else RUN_ON_INTERNET_FACING, run_org_only=org,
                  org_server="Hub Transport server" if target == "2010" else "Mailbox server",
                  edge_subscription=edge_subscription, generated=generated)
    return ExchangeScript(text, sha1_thumbprint(certificate), target, domain, files)


@dataclass(frozen=True)
class PostfixConfig:
    """The Postfix hand-over: file name -> content (``main.cf.certkit``, ``tls_policy``, ``master.cf.certkit``,
    and the CA bundle) and the paths the settings refer to."""

    files: dict[str, bytes]
    main_cf: str
    tls_policy: str
    master_cf: str
    #: with ``dane=True``: the zone fragment with our MX's TLSA records (also ``files["tlsa.zone"]``)
    tlsa_zone: str | None = None


def _mx_host(leaf: x509.Certificate, mx: str | None) -> str:
    """The TLSA base name: ``mx``, else the leaf's CN (our Edge FQDN, by this project's profile)."""
    if mx is not None:
        return dns_name(mx.strip().rstrip("."))
    cns = [str(a.value) for a in leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if cns and "*" not in cns[0]:
        try:
            return dns_name(cns[0].rstrip("."))
        except InputError:
            pass
    raise InputError(f"The certificate's CN ({printable(cns[0]) if cns else 'none'}) is not a host name.",
                     "Give the MX host name the TLSA records are for with --mx HOST.")


def our_tlsa(chain: Sequence[x509.Certificate]) -> list[tuple[TlsaRecord, x509.Certificate]]:
    """The TLSA records for our MX from ``chain`` (leaf first, as the server sends it), each with its certificate:
    DANE-EE ``3 1 1`` for the leaf, and DANE-TA ``2 1 1`` for the CA that issued it when the chain carries that
    CA (a DANE-TA record matches only a CA certificate the server sends)."""
    if not chain:
        raise InputError("No certificate to compute the TLSA records from.", "Give our certificate (leaf first).")
    leaf = chain[0]
    out = [(tlsa_for(leaf, Usage.DANE_EE), leaf)]
    issuer = next((c for c in chain[1:] if issued_by(leaf, c)), None)
    if issuer is not None:
        out.append((tlsa_for(issuer, Usage.DANE_TA), issuer))
    return out


def tlsa_zone(chain: Sequence[x509.Certificate], host: str, port: int = 25) -> str:
    """A zone-file fragment with the TLSA records of :func:`our_tlsa` for ``host``, comments first."""
    records = our_tlsa(chain)
    lines = [f"; certkit: TLSA records for {owner_name(host, port)} (DANE for SMTP, RFC 7672) -- add to the "
             "DNSSEC-signed zone.",
             "; Same records as: certkit dane tlsa " + host + (f" --port {port}" if port != 25 else "")
             + " --cert CHAIN. Renewing with a new key needs a rollover: certkit dane rollover."]
    for record, cert in records:
        what = "our key" if record.usage == Usage.DANE_EE else "the issuing CA, sent in our chain"
        lines.append(f"; {record.usage} {record.selector} {record.matching_type}: {what}, "
                     f"{printable(cert.subject.rfc4514_string())} (not after {cert.not_valid_after_utc:%Y-%m-%d})")
    if len(records) == 1:
        lines.append("; (no 2 1 1 record: the chain file holds no CA certificate that issued our certificate)")
    lines += [zone_line(record, host, port) for record, _ in records]
    return "\n".join(lines) + "\n"


def postfix_config(partner: str, *, ca_bundle: Sequence[x509.Certificate], config_dir: str = "/etc/postfix",
                   cert_file: str | None = None, key_file: str | None = None, listen: str = "25",
                   generated: _dt.datetime | None = None, dane: bool = False,
                   dane_chain: Sequence[x509.Certificate] = (), mx: str | None = None) -> PostfixConfig:
    """The Postfix settings for Domain Security with ``partner`` (see the module docstring).

    ``ca_bundle``: the certificates Postfix trusts (the trust store's export), written as
    ``certkit-ca.pem`` in ``config_dir``; ``cert_file``/``key_file``: our certificate (chain after the
    leaf) and key as Postfix will read them; ``listen``: the master.cf service of the dedicated
    partner listener (a port, or ``address:port``).

    ``dane``: outbound, opportunistic DANE for every destination (RFC 7672: safe as a default; the partner
    keeps its ``secure`` entry, authenticated by its root); inbound, ``tlsa.zone`` with the records of our MX
    computed from ``dane_chain`` (the certificates in ``cert_file``, leaf first) for ``mx`` (default: the
    leaf's CN).
    """
    domain = _domain(partner)
    if not ca_bundle:
        raise InputError("The CA bundle is empty: Postfix would trust nobody.",
                         "Add the partner's root to the trust store: certkit trust add ROOT --partner DOMAIN.")
    # Every value below ends up in main.cf or master.cf: one line each, in the shape Postfix reads.
    base = _conf_path(config_dir, "--config-dir").rstrip("/")
    cert_file = _conf_path(cert_file, "--cert") if cert_file is not None else None
    key_file = _conf_path(key_file, "--key") if key_file is not None else None
    ctx = {"partner": domain, "config_dir": base, "ca_file": f"{base}/certkit-ca.pem",
           "policy_file": f"{base}/tls_policy", "cert_file": cert_file or f"{base}/certkit-cert.pem",
           "key_file": key_file or f"{base}/certkit-key.pem", "listen": _listen(str(listen)), "generated": generated,
           "anchors": [(c.subject.rfc4514_string(), sha256_fingerprint(c)) for c in ca_bundle], "dane": dane}
    zone = None
    if dane:
        if not dane_chain:
            raise InputError("DANE needs our certificate to compute the TLSA records of our MX.",
                             "Give --cert: the file Postfix will present (leaf first, chain after).")
        host = _mx_host(dane_chain[0], mx)
        zone = tlsa_zone(dane_chain, host)
        ctx["tlsa_owner"] = owner_name(host)
    main_cf = render("postfix-main.cf.j2", **ctx)
    policy = render("postfix-tls_policy.j2", **ctx)
    master = render("postfix-master.cf.j2", **ctx)
    files = {"main.cf.certkit": main_cf.encode(), "tls_policy": policy.encode(), "master.cf.certkit": master.encode(),
             "certkit-ca.pem": cert_pem(*ca_bundle)}
    if zone is not None:
        files["tlsa.zone"] = zone.encode()
    return PostfixConfig(files, main_cf, policy, master, zone)


@dataclass(frozen=True)
class PostfixInbound:
    """Inbound Domain Security for Postfix: file name -> content (``main.cf.inbound``, ``master.cf.inbound``,
    ``certkit-partners.json``) and the policy table those files carry."""

    files: dict[str, bytes]
    main_cf: str
    master_cf: str
    table: PolicyTable


def _subject_name(cert: x509.Certificate) -> str:
    """The name Postfix reports as ``ccert_issuer`` for the certificates ``cert`` issues: its CN, else its O."""
    for oid in (NameOID.COMMON_NAME, NameOID.ORGANIZATION_NAME):
        values = cert.subject.get_attributes_for_oid(oid)
        if values:
            return str(values[0].value)
    return ""


def _partner_rules(anchors: Sequence[Anchor]) -> list[PartnerRule]:
    """One rule per partner tag: its CA certificates name the issuers, its pinned certificates the fingerprints."""
    rules: list[PartnerRule] = []
    for anchor in anchors:
        for partner in anchor.partners:
            if is_ca(anchor.cert) and not anchor.pinned:
                name = _subject_name(anchor.cert)
                if not name:
                    raise InputError(f"The CA {anchor.cert.subject.rfc4514_string()} (for {partner}) has neither CN "
                                     "nor O: Postfix could not name it as an issuer.",
                                     f"Pin {partner}'s certificates instead: certkit trust add CERT --pin "
                                     f"--partner {partner}.")
                rules.append(PartnerRule(dns_name(partner), issuers=frozenset({name})))
            else:
                rules.append(PartnerRule(dns_name(partner), fingerprints=frozenset({sha256_fingerprint(anchor.cert)})))
    return rules


def _refuse_issuer_clashes(table: PolicyTable, anchors: Sequence[Anchor], bundle: Sequence[x509.Certificate]) -> None:
    """Postfix reports the issuer by name only: no other CA Postfix trusts may carry a partner issuer's name."""
    own: dict[str, set[str]] = {}
    for anchor in anchors:
        for partner in anchor.partners:
            own.setdefault(dns_name(partner), set()).add(sha256_fingerprint(anchor.cert))
    for cert in bundle:
        if not (is_ca(cert) or is_self_signed(cert)):
            continue
        name = _subject_name(cert)
        for rule in table.partners:
            if name in rule.issuers and sha256_fingerprint(cert) not in own.get(rule.domain, set()):
                raise InputError(f"{cert.subject.rfc4514_string()} is trusted but not tagged for {rule.domain}, and "
                                 f"carries the name {printable(name)!r} of {rule.domain}'s CA: Postfix names an "
                                 "issuer only by that name, so the policy could not tell them apart.",
                                 f"Tag it (certkit trust add FILE --partner {rule.domain}) if it is "
                                 f"{rule.domain}'s, else remove it or pin {rule.domain}'s certificates "
                                 "(certkit trust add CERT --pin --partner ...).")


def _argv(words: Sequence[str]) -> list[str]:
    if not words:
        raise InputError("The policy command is empty.", "Give the certkit program, e.g. /usr/local/bin/certkit.")
    for w in words:
        if _CONTROL.search(w) or any(c.isspace() for c in w) or not w:
            raise InputError(f"The policy command word {w!r} has blanks or control characters.",
                             "Give a command whose words master.cf can carry (no blanks inside a word).")
    return [_conf_path(words[0], "--policy-command"), *words[1:]]


def postfix_inbound(partner: str, *, anchors: Sequence[Anchor], ca_bundle: Sequence[x509.Certificate],
                    config_dir: str = "/etc/postfix", policy_command: Sequence[str] = ("/usr/local/bin/certkit",),
                    user: str = "nobody", listen: str | None = None,
                    generated: _dt.datetime | None = None) -> PostfixInbound:
    """Domain Security enforced on Postfix's inbound listeners (port 25 included), per sender domain.

    ``anchors``: the trust store's anchors; every partner tag becomes a domain-secure partner whose CA
    certificates (by the name Postfix reports as the issuer) and pinned certificates (by SHA-256) its
    senders' client certificates must come from (the rule: :mod:`certkit.core.postfix_policy`). ``partner``
    must be one of them. ``ca_bundle``: what ``smtpd_tls_CAfile`` holds (:func:`postfix_config` writes it
    as ``certkit-ca.pem``); no certificate in it but the partner's own may carry a partner CA's name.
    ``policy_command``: how spawn(8) runs certkit (absolute program path, then its arguments); ``user``:
    the unprivileged account it runs as. ``listen`` (``ADDRESS:PORT``): Postfix asks a policy daemon there
    (``check_policy_service inet:...``, started by the admin with ``--listen``) instead of spawning one.
    """
    domain = _domain(partner)
    if listen is not None and not _listen(listen).rpartition(":")[0]:
        raise InputError(f"--policy-listen {listen!r} has no address.", "Give ADDRESS:PORT, e.g. 127.0.0.1:10031.")
    base = _conf_path(config_dir, "--config-dir").rstrip("/")
    argv = _argv(policy_command)
    if not re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", user) or user in ("root", "postfix"):
        raise InputError(f"{user!r} cannot run the policy service.",
                         "Give an unprivileged account (spawn refuses root and the postfix account), e.g. nobody.")
    table = table_from_rules(_partner_rules(anchors))
    if domain not in {r.domain for r in table.partners}:
        raise InputError(f"No anchor in the trust store is tagged for {domain}: the inbound policy would not know "
                         f"{domain}'s CA.", f"Tag its root: certkit trust add ROOT --partner {domain} (and its "
                         "issuing CA, when the chain has one).")
    _refuse_issuer_clashes(table, anchors, ca_bundle)
    ctx = {"config_dir": base, "ca_file": f"{base}/certkit-ca.pem", "partners_file": f"{base}/certkit-partners.json",
           "partners": [r.domain for r in table.partners], "argv": argv, "user": user, "generated": generated,
           "listen": listen, "endpoint": f"inet:{listen}" if listen else "unix:private/certkit-policy"}
    main_cf = render("postfix-inbound-main.cf.j2", **ctx)
    master = render("postfix-inbound-master.cf.j2", **ctx)
    files = {"main.cf.inbound": main_cf.encode(), "master.cf.inbound": master.encode(),
             "certkit-partners.json": table.to_json()}
    return PostfixInbound(files, main_cf, master, table)


def partner_kit(root: x509.Certificate, *, edge_fqdn: str, domains: Sequence[str], crl_url: str | None,
                organisation: str | None = None, generated: _dt.datetime | None = None,
                more_crl_urls: Sequence[str] = (), dane_chain: Sequence[x509.Certificate] = ()) -> dict[str, bytes]:
    """The files to send the partner: ``<name>-root.pem``, ``<name>-root.cer`` (DER) and ``README.txt``.

    ``crl_url`` is our issuing CA's CRL; ``more_crl_urls`` the others the partner's Edge must reach too
    (the root's CRL, named in our intermediate's distribution point). ``dane_chain`` (our certificate, leaf
    first, with the CA certificates our server sends): the README lists the TLSA records of ``edge_fqdn``
    (:func:`our_tlsa`), for partners whose MTA does DANE.
    """
    fqdn = _domain(edge_fqdn, "--edge-fqdn")
    doms = [_domain(d, "--domain") for d in domains]
    if not doms:
        raise InputError("No domain was given.", "Give our mail domain(s) with --domain.")
    stem = re.sub(r"[^a-z0-9.-]+", "-", doms[0])
    text = render("partner-kit.txt.j2", edge_fqdn=fqdn, domains=doms, crl_url=crl_url,
                  more_crl_urls=[u for u in more_crl_urls if u and u != crl_url],
                  organisation=organisation or doms[0], root_subject=root.subject.rfc4514_string(),
                  sha256=sha256_fingerprint(root), sha1=sha1_thumbprint(root), not_after=root.not_valid_after_utc,
                  pem_name=f"{stem}-root.pem", cer_name=f"{stem}-root.cer", generated=generated,
                  tlsa=[zone_line(r, fqdn) for r, _ in our_tlsa(dane_chain)] if dane_chain else [])
    return {f"{stem}-root.pem": cert_pem(root), f"{stem}-root.cer": cert_der(root), "README.txt": text.encode()}
