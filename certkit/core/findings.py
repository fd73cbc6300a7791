"""Findings are data: one catalogue of stable codes, each with the words an admin will see.

A :class:`Finding` is one observed problem (or fact) with its evidence. Its :class:`Code` comes from
:data:`CATALOGUE`, which says for every code: the severity, the side at fault, the RFC 8460 TLS-RPT
result type, the RFC 3463 enhanced status code, the text an Exchange admin sees, what Exchange Online
shows where it differs (its connectors' texts, :data:`~certkit.core.personality.EXCHANGE_ONLINE`), the
Postfix equivalent, a plain explanation, and the remedy (a certkit command where one exists).

Codes are stable strings: tools that read certkit's JSON may rely on them. Add codes; never rename.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from certkit.core.personality import (
    EXCHANGE_CONNECT_ERROR,
    EXCHANGE_DNS_ERROR,
    EXCHANGE_ONLINE,
    EXCHANGE_WRAP,
    Personality,
    behaviour,
)

__all__ = ["CATALOGUE", "CLASSIC", "EXCHANGE_CONNECT_ERROR", "EXCHANGE_DNS_ERROR", "EXCHANGE_WRAP", "Code", "Finding",
           "Severity", "Side", "finding", "worst"]


class Severity(enum.StrEnum):
    """How much a finding matters: error blocks Domain Security, warning will bite later, info is a fact."""

    ERROR = "error"      # blocks Domain Security
    WARNING = "warning"  # works today, will bite (expiring soon, CRL near nextUpdate)
    INFO = "info"        # a fact worth knowing


class Side(enum.StrEnum):
    """Whose problem a finding is: the partner's, ours, the network's, or our configuration's."""

    THEIRS = "theirs"                # the partner's certificate or server
    OURS = "ours"                    # our certificate or configuration as the partner sees it
    NETWORK = "network"              # connection, DNS, CRL download
    CONFIGURATION = "configuration"  # a setting on our side (routing, smart host, store)




def _said(personality: Personality, situation: str) -> str:
    """A reply of the personality model as one line (``<host>`` where the MTA puts its name)."""
    code, text = behaviour(personality).reply(situation, host="<host>")
    return f"{code} {text}"


CLASSIC = EXCHANGE_WRAP.format(inner=_said(Personality.EXCHANGE, "cert-untrusted"))
_TLS_FIRST = _said(Personality.POSTFIX, "tls-first")
_PF_UNTRUSTED = _said(Personality.POSTFIX, "cert-untrusted")


@dataclass(frozen=True)
class Code:
    """One entry of the catalogue."""

    code: str
    severity: Severity
    side: Side
    title: str
    explanation: str
    remedy: str
    tlsrpt_result_type: str | None = None
    enhanced_status: str | None = None
    exchange_text: str | None = None
    postfix_text: str | None = None
    #: What Exchange Online shows when it sends through a connector and meets this (None: no documented text).
    exchange_online_text: str | None = None


def _code(code: str, severity: str, side: str, title: str, explanation: str, remedy: str, *,
          tlsrpt: str | None = None, status: str | None = None, exchange: str | None = None,
          postfix: str | None = None, online: str | None = None) -> Code:
    return Code(code, Severity(severity), Side(side), title, explanation, remedy, tlsrpt, status, exchange, postfix,
                online)


_EXO_CERT = EXCHANGE_ONLINE["cert-invalid"]
_EXO_NAME = EXCHANGE_ONLINE["subject-mismatch"]


_ENTRIES: tuple[Code, ...] = (
    # --- certificate validity -------------------------------------------------------------
    _code("cert.expired", "error", "theirs", "certificate expired",
          "The certificate's notAfter has passed; no validator accepts it.",
          "Renew it: certkit ca renew SERIAL (or have the partner renew theirs).",
          tlsrpt="certificate-expired", status="4.7.5",
          exchange="The certificate has expired.",
          postfix="certificate verification failed: certificate has expired",
          online=_EXO_CERT),
    _code("cert.not-yet-valid", "error", "theirs", "certificate not yet valid",
          "The certificate's notBefore is in the future: a clock is wrong or it was issued back-dated.",
          "Check the clocks on both servers, or reissue the certificate.",
          tlsrpt="validation-failure", status="4.7.5",
          postfix="certificate verification failed: certificate is not yet valid",
          online=_EXO_CERT),
    _code("cert.expiring-soon", "warning", "theirs", "certificate expires soon",
          "The certificate expires within the warning period; Domain Security stops when it does.",
          "Renew it now: certkit ca renew SERIAL."),
    # --- chain and trust --------------------------------------------------------------------
    _code("chain.self-signed", "error", "theirs", "self-signed certificate",
          "The certificate is signed by itself and is not a trusted anchor here; a self-signed Edge "
          "certificate (New-ExchangeCertificate's default) is trusted by nobody else.",
          "Use a CA-signed transport certificate (certkit ca issue FQDN) and send the partner your root, "
          "or pin this exact certificate: certkit trust add FILE --pin.",
          tlsrpt="certificate-not-trusted", status="4.7.5",
          exchange="The certificate is valid but it is selfsigned.",
          postfix="certificate verification failed: self-signed certificate",
          online=_EXO_CERT),
    _code("chain.unknown-issuer", "error", "theirs", "issuer not trusted",
          "The chain ends at a root that is not in the trust store used for validation.",
          "Import the partner's root: certkit trust add ROOT.crt --partner DOMAIN "
          "(and on Exchange: Import-Certificate into Cert:\\LocalMachine\\Root).",
          tlsrpt="certificate-not-trusted", status="4.7.5",
          exchange="A certificate chain processed, but ended in a root certificate which is not trusted by "
                "the trust provider.",
          postfix="certificate verification failed: untrusted issuer",
          online=_EXO_CERT),
    _code("chain.missing-intermediate", "error", "theirs", "intermediate certificate missing",
          "The certificate's issuer is an intermediate CA that the server did not send and the store "
          "does not hold, so no path to a trusted root can be built.",
          "Configure the server to send the full chain (certkit writes FQDN.chain.pem for that).",
          tlsrpt="certificate-not-trusted", status="4.7.5",
          exchange="A certificate chain could not be built to a trusted root authority.",
          postfix="certificate verification failed: unable to get local issuer certificate",
          online=_EXO_CERT),
    _code("chain.invalid", "error", "theirs", "chain rejected",
          "The certificate path violates RFC 5280 (constraints, key usage or a malformed extension).",
          "Reissue the certificate from a correctly configured CA.",
          tlsrpt="validation-failure", status="4.7.5",
          exchange="A certificate chain processed, but ended in a root certificate which is not trusted by "
                "the trust provider.",
          postfix="certificate verification failed",
          online=_EXO_CERT),
    _code("chain.too-deep", "error", "theirs", "chain too long",
          "The path from the certificate to a trusted root has more intermediate CAs than the verifier accepts "
          "(certkit's limit, like OpenSSL's verify depth). Every certificate was sent and the root is trusted: "
          "importing the root again does not help.",
          "Issue the certificate from a CA closer to the root (certkit ca init makes a root with one intermediate), "
          "or have the partner do so.",
          tlsrpt="validation-failure", status="4.7.5",
          postfix="certificate verification failed: certificate chain too long"),
    _code("chain.path-length", "error", "theirs", "path length constraint exceeded",
          "A CA in the path limits how many intermediate CAs may follow it (basicConstraints pathLenConstraint), "
          "and the path has more (RFC 5280 6.1.4). The root may well be trusted; this CA forbids the path.",
          "Issue the certificate from an intermediate that the constraining CA allows (one directly below it when "
          "the constraint is 0), or reissue that CA with a larger pathLenConstraint.",
          tlsrpt="validation-failure", status="4.7.5",
          postfix="certificate verification failed: path length constraint exceeded"),
    _code("chain.pinned-leaf", "info", "theirs", "pinned certificate",
          "The certificate is trusted because this exact certificate was pinned in the store.",
          "Nothing to do; replace the pin when the certificate is renewed."),
    # --- names ------------------------------------------------------------------------------
    _code("name.domain-mismatch", "error", "theirs", "certificate does not name the domain",
          "Domain Security requires the certificate to name the partner domain itself or a host within it.",
          "Reissue with the domain in the SAN: certkit ca issue FQDN --accepted-domain DOMAIN.",
          tlsrpt="certificate-host-mismatch", status="4.7.5",
          exchange="Certificate subject does not match the passed value.",
          postfix="Server certificate not verified (name does not match nexthop/dot-nexthop)",
          online=_EXO_NAME),
    _code("name.domain-not-listed", "warning", "ours", "domain named only through a host name",
          "The certificate matches the domain only through a host name within it, not the domain itself; "
          "Microsoft's advice is that the SAN list the domain (every accepted domain) as well as the Edge FQDN.",
          "Reissue with the domain in the SAN: certkit ca issue FQDN --accepted-domain DOMAIN."),
    _code("name.host-mismatch", "error", "theirs", "name does not match the host",
          "The certificate does not name the host it was reached at.",
          "Reissue the certificate with the host's FQDN: certkit ca issue FQDN.",
          tlsrpt="certificate-host-mismatch", status="4.7.5",
          exchange="Certificate subject does not match the passed value.",
          postfix="Server certificate not verified (name does not match hostname)",
          online=_EXO_NAME),
    _code("name.connector-mismatch", "error", "theirs", "certificate does not match the connector's certificate domain",
          "Exchange Online connectors match the certificate's subject (CN) or a DNS subjectAltName against the domain "
          "configured on the connector (TlsSenderCertificateName inbound, TlsDomain outbound; '*.D' stands for D and "
          "every host within it): none of the certificate's names does.",
          "Use a certificate from a public CA that names the domain (or a host within it, with '*.DOMAIN' on the "
          "connector), or correct the connector: certkit config exchange --target online --certificate-domain NAME.",
          tlsrpt="certificate-host-mismatch", status="4.7.320", online=_EXO_NAME),
    _code("chain.not-public", "error", "theirs", "root is not a public CA",
          "The chain ends at a root that is trusted here (a managed anchor) but is not one of the public CAs: "
          "Exchange Online accepts certificates issued by a trusted (public) certificate authority and offers no "
          "store to add a private root to, so a private CA's certificate (certkit's included) is refused there.",
          "For mail flow with Exchange Online, present a certificate from a public CA; keep the private CA for "
          "partners on Exchange Server or Postfix, which can import its root.",
          tlsrpt="certificate-not-trusted", status="4.7.320", online=_EXO_CERT),
    _code("name.wildcard", "warning", "theirs", "wildcard name",
          "The certificate carries a wildcard name; Domain Security lists take no wildcards and Exchange "
          "matches the partner domain, which a wildcard does not name.",
          "Issue a certificate naming the FQDN and the domains: certkit ca issue FQDN --accepted-domain DOMAIN."),
    # --- usages -------------------------------------------------------------------------------
    _code("eku.no-server-auth", "error", "theirs", "certificate lacks serverAuth",
          "The certificate's Extended Key Usage does not allow TLS server use; inbound SMTP needs it.",
          "Reissue with the transport profile: certkit ca issue FQDN --profile transport.",
          tlsrpt="validation-failure", status="4.7.5",
          postfix="certificate verification failed: unsupported certificate purpose"),
    _code("eku.no-client-auth", "error", "ours", "certificate lacks clientAuth",
          "The certificate's Extended Key Usage does not allow TLS client use; the sending Edge presents "
          "it as a client certificate, and the receiver rejects it.",
          "Reissue with the transport profile: certkit ca issue FQDN --profile transport.",
          tlsrpt="validation-failure", status="4.7.5",
          exchange=CLASSIC,
          postfix="certificate verification failed: not designated for use as a client certificate"),
    # --- algorithms ------------------------------------------------------------------------------
    _code("key.weak", "error", "theirs", "weak key",
          "The key is below current minimums (RSA under 2048 bits).",
          "Generate a new key and reissue: certkit ca renew SERIAL --rekey.",
          tlsrpt="validation-failure", status="4.7.5"),
    _code("key.not-rsa", "warning", "ours", "not an RSA key",
          "Exchange 2010 supports RSA keys only; an EC certificate may not be usable there.",
          "For Exchange 2010, issue with --key rsa2048."),
    _code("key.mismatch", "error", "ours", "key does not match the certificate",
          "The private key is not the key of the certificate; the TLS handshake fails.",
          "Use the key that was generated with the certificate, or reissue with --rekey."),
    _code("sig.sha1", "error", "theirs", "SHA-1 signature",
          "The certificate is signed with SHA-1, which current validators reject.",
          "Reissue the certificate: certkit ca renew SERIAL (certkit signs with SHA-256).",
          tlsrpt="validation-failure", status="4.7.5"),
    # --- revocation ------------------------------------------------------------------------------
    _code("revocation.revoked", "error", "theirs", "certificate revoked",
          "The certificate appears on its issuer's CRL.",
          "Issue a new certificate: certkit ca issue FQDN, and deploy it.",
          tlsrpt="validation-failure", status="4.7.5",
          exchange="The certificate has been revoked.",
          postfix="certificate verification failed: certificate revoked",
          online=_EXO_CERT),
    _code("revocation.unreachable", "error", "network", "revocation could not be checked",
          "The CRL named in the certificate's CRL distribution point could not be fetched. Windows treats "
          "this as RevocationCheckFailure and fails Domain Security (it is not the same as 'revoked').",
          "Publish the CRL at the CDP URL (certkit ca crl --out FILE) and let the partner's Edge reach it "
          "over HTTP (WinHTTP proxy: netsh winhttp show proxy).",
          tlsrpt="validation-failure", status="4.7.5",
          exchange="RevocationCheckFailure"),
    _code("revocation.crl-stale", "error", "theirs", "CRL expired",
          "The CRL's nextUpdate has passed; Windows rejects every certificate of this CA until it is republished.",
          "Publish a fresh CRL: certkit ca crl (and copy it to the CDP URL).",
          tlsrpt="validation-failure", status="4.7.5",
          exchange="RevocationCheckFailure"),
    _code("revocation.crl-expiring", "warning", "theirs", "CRL expires soon",
          "The CRL's nextUpdate is near; if it is not republished in time, every certificate of this CA fails.",
          "Publish a fresh CRL now: certkit ca crl."),
    _code("revocation.crl-bad-signature", "error", "theirs", "CRL signature invalid",
          "The CRL is not signed by the certificate's issuer, so it proves nothing.",
          "Publish a CRL signed by the issuing CA: certkit ca crl.",
          tlsrpt="validation-failure", status="4.7.5",
          exchange="RevocationCheckFailure"),
    _code("revocation.no-cdp", "error", "theirs", "no CRL distribution point",
          "The CA-signed certificate has no CRL distribution point, so Windows cannot check revocation "
          "(RevocationCheckFailure) and Domain Security fails.",
          "Configure a CRL URL (certkit ca init --crl-url URL) and reissue the certificate.",
          tlsrpt="validation-failure", status="4.7.5",
          exchange="RevocationCheckFailure"),
    # --- SMTP and TLS -----------------------------------------------------------------------------
    _code("smtp.no-starttls", "error", "theirs", "STARTTLS not offered",
          "The server did not offer STARTTLS after EHLO, so no TLS session is possible.",
          "On Exchange: bind a certificate for the connector's FQDN (Enable-ExchangeCertificate -Services SMTP); "
          "on Postfix: set smtpd_tls_security_level = may and a certificate.",
          tlsrpt="starttls-not-supported", status="4.7.4",
          exchange="451 5.7.3 STARTTLS is required to send mail",
          postfix="4.7.4 TLS is required, but was not offered by host",
          online=EXCHANGE_ONLINE["no-tls"]),
    _code("smtp.starttls-refused", "error", "theirs", "STARTTLS refused",
          "The server offered STARTTLS but refused the command.",
          "Check the server's TLS configuration (certificate and key).",
          tlsrpt="starttls-not-supported", status="4.7.0",
          exchange=EXCHANGE_WRAP.format(inner="454 4.7.0 TLS not available due to local problem"),
          postfix="454 4.7.0 TLS not available due to local problem"),
    _code("smtp.starttls-injection", "error", "theirs", "STARTTLS response injection",
          "The server (or a machine in the path) sent plaintext after its 220 reply to STARTTLS. That data "
          "was discarded; a client that acted on it would be attackable (CVE-2011-0411 class).",
          "Fix or replace the server or middlebox that injects data.",
          tlsrpt="validation-failure", status="4.7.0"),
    _code("smtp.protocol-error", "error", "theirs", "SMTP protocol error",
          "The server's replies did not follow SMTP (garbage, overlong lines, or a reply cut short).",
          "Check the server or any SMTP proxy in front of it.", tlsrpt="validation-failure"),
    _code("smtp.tls-required", "error", "ours", "server requires STARTTLS first",
          "The server refused a command because TLS was not started.",
          "Send with STARTTLS (on Exchange: the Send connector must not ignore STARTTLS).",
          status="5.7.0", exchange=EXCHANGE_WRAP.format(inner=_said(Personality.EXCHANGE, "tls-first")),
          postfix=_TLS_FIRST),
    _code("smtp.mail-refused", "error", "theirs", "MAIL FROM refused",
          "The server refused the transaction at MAIL FROM for a reason that is not about TLS or our certificate "
          "(the server is not accepting mail now, a policy refuses our sender, or the dialogue broke). No mail "
          "would be delivered; the finding's enhanced status is the one of their reply.",
          "Read their reply: a 4.x.x is temporary (retry later, or ask the partner why their server refuses); "
          "a 5.1.x or 5.7.1 refuses the sender address (probe with --mail-from an address of ours they accept, "
          "and check SPF/sender policy); 503 5.5.1 means a command sequence problem on their side.",
          exchange=EXCHANGE_WRAP.format(inner="<their reply to MAIL FROM>")),
    _code("smtp.ehlo-refused", "error", "theirs", "EHLO refused",
          "The server refused both EHLO and HELO, so no mail transaction (and no STARTTLS) is possible; "
          "after the handshake this means the TLS session was accepted but the greeting was not.",
          "Read their reply: a refused greeting usually means our IP address or EHLO name is blocked by "
          "their policy (check --helo, and ask the partner).",
          exchange=EXCHANGE_WRAP.format(inner="<their reply to EHLO>")),
    _code("smtp.recipient-refused", "warning", "configuration", "recipient refused",
          "The server refused the test recipient; this is not a TLS problem.",
          "Probe with a recipient the server accepts (--rcpt postmaster@DOMAIN)."),
    _code("tls.handshake-failed", "error", "theirs", "TLS handshake failed",
          "The TLS handshake did not complete (see the alert).",
          "Check protocol versions, ciphers and the certificate on the server.",
          tlsrpt="validation-failure", status="4.7.5",
          exchange=EXCHANGE_WRAP.format(inner="TLS negotiation failed"),
          postfix="4.7.5 Cannot start TLS: handshake failure"),
    _code("tls.old-protocol", "warning", "theirs", "old TLS version",
          "The session used TLS 1.0 or 1.1, which current clients disable.",
          "Enable TLS 1.2 or 1.3 on the server.", tlsrpt="validation-failure"),
    # --- our certificate, as refused by the peer after the handshake -------------------------------
    _code("peer.rejected-no-client-cert", "error", "ours", "we presented no client certificate",
          "The receiver requires a client certificate (Domain Security) and we sent none.",
          "Present the transport certificate: certkit probe ... --as FQDN (on Exchange: enable a certificate "
          "for SMTP with Enable-ExchangeCertificate -Services SMTP).",
          tlsrpt="validation-failure", status="4.7.5", exchange=CLASSIC,
          postfix=_said(Personality.POSTFIX, "cert-missing")),
    _code("peer.rejected-untrusted", "error", "ours", "they do not trust our certificate",
          "The receiver completed the handshake and then refused us: it could not validate our certificate "
          "(most often: it does not trust our root, or our certificate is self-signed).",
          "Send the partner our root (certkit ca root --out ROOT.crt; certkit config partner-kit) and ask them "
          "to import it; use a CA-signed certificate rather than a self-signed one.",
          tlsrpt="validation-failure", status="4.7.5", exchange=CLASSIC,
          postfix=_PF_UNTRUSTED),
    _code("peer.rejected-issuer-not-accepted", "error", "ours", "our issuer is not on their list",
          "The server's list of acceptable client-certificate issuers does not include our issuer, so it "
          "does not trust our CA.",
          "Send the partner our root (certkit ca root --out ROOT.crt) and ask them to import it.",
          tlsrpt="validation-failure", status="4.7.5", exchange=CLASSIC,
          postfix=_PF_UNTRUSTED),
    _code("peer.rejected-self-signed", "error", "ours", "they do not trust our self-signed certificate",
          "The receiver refused us after the handshake, and the certificate we presented is self-signed "
          "(New-ExchangeCertificate's default): it has no issuer whose root we could send, and the partner "
          "trusts it only if they import this exact certificate.",
          "Issue a transport certificate from our CA (certkit ca issue FQDN --accepted-domain DOMAIN) and give the "
          "partner our root (certkit config partner-kit); or give the partner this exact certificate to trust "
          "(on Exchange: import it into Cert:\\LocalMachine\\Root; with certkit: certkit trust add FILE --pin), "
          "and again at every renewal.",
          tlsrpt="validation-failure", status="4.7.5", exchange=CLASSIC,
          postfix=_PF_UNTRUSTED),
    _code("peer.rejected-no-client-auth", "error", "ours", "our certificate lacks clientAuth",
          "Our certificate's EKU does not allow client use, and the receiver refused it.",
          "Reissue with both EKUs: certkit ca issue FQDN --profile transport.",
          tlsrpt="validation-failure", status="4.7.5", exchange=CLASSIC,
          postfix=_PF_UNTRUSTED),
    _code("peer.rejected-expired", "error", "ours", "our certificate expired",
          "Our certificate has expired, and the receiver refused it.",
          "Renew it: certkit ca renew SERIAL.",
          tlsrpt="validation-failure", status="4.7.5", exchange=CLASSIC,
          postfix=_PF_UNTRUSTED),
    _code("peer.rejected-weak-session", "error", "ours", "the receiver finds the session too weak",
          "RFC 3207: the server answers 554 to every command because the TLS session is not good enough for it.",
          "Present a certificate they trust and use TLS 1.2 or later.", tlsrpt="validation-failure", status="5.7.0"),
    # --- network and DNS ----------------------------------------------------------------------------
    # RFC 3463: X.4.1 no answer from host (the connection was not taken), X.4.2 bad connection (taken, then
    # lost or timed out), X.4.3 directory (DNS) server failure, X.4.4 unable to route; 5.1.2 bad destination
    # system address (the domain does not exist) and 5.1.10 null MX (RFC 7505) are set per finding.
    _code("net.refused", "error", "network", "connection refused",
          "Nothing listens at the address and port, or a firewall rejects the connection.",
          "Check the address, the port (25) and the firewall.", status="4.4.1",
          exchange=EXCHANGE_CONNECT_ERROR.format(inner="Failed to connect. Winsock error code: 10061, Win32 error "
                                                    "code: 10061."),
          online=EXCHANGE_ONLINE["refused"]),
    _code("net.timeout", "error", "network", "timed out",
          "The server did not answer in time (connection, a reply, or the handshake).",
          "Check firewalls and the server's load; raise --timeout if the server is slow.", status="4.4.1",
          exchange=EXCHANGE_CONNECT_ERROR.format(inner="Failed to connect. Winsock error code: 10060, Win32 error "
                                                    "code: 10060."),
          online=EXCHANGE_ONLINE["timeout"]),
    _code("net.closed", "error", "network", "connection closed",
          "The server closed the connection in the middle of the dialogue.",
          "Check the server's logs for why it dropped the session.", status="4.4.2",
          exchange=EXCHANGE_WRAP.format(inner="421 4.4.2 Connection dropped due to SocketError"),
          online=EXCHANGE_ONLINE["closed"]),
    _code("dns.failure", "error", "network", "DNS lookup failed",
          "The name could not be resolved.", "Check the domain name and the DNS server (--nameserver).",
          status="4.4.3", exchange=EXCHANGE_DNS_ERROR.format(error="<the DNS error>"),
          online=EXCHANGE_ONLINE["dns"]),
    _code("dns.no-mx", "error", "configuration", "no MX records",
          "The partner domain has no MX records. Domain Security needs DNS (MX) routing.",
          "Ask the partner to publish MX records, or check the domain name.", status="5.4.4",
          exchange=EXCHANGE_DNS_ERROR.format(error="<the DNS error>")),
    _code("route.smart-host", "error", "configuration", "smart host configured",
          "A Send connector that routes through a smart host cannot use Domain Security.",
          "Route the partner domain through DNS: Set-SendConnector -DNSRoutingEnabled $true."),
    _code("revocation.crl-invalid", "error", "theirs", "CRL not usable",
          "The CRL is malformed (no CRL number, thisUpdate in the future) or its issuer may not sign CRLs "
          "(keyUsage without cRLSign), so it proves nothing (RFC 5280 5.1, 4.2.1.3).",
          "Publish a correct CRL from the issuing CA: certkit ca crl.",
          tlsrpt="validation-failure", status="4.7.5",
          exchange="RevocationCheckFailure"),
    # --- DANE (RFC 7672) --------------------------------------------------------------------------
    _code("dane.no-match", "error", "theirs", "no TLSA record matches",
          "The MX host publishes DNSSEC-signed TLSA records, and none of the usable ones (DANE-EE 3, DANE-TA 2) "
          "matches the certificate chain the server presented: the key changed without new records, the DANE-TA "
          "issuer is not sent in the chain, the chain is broken, or (DANE-TA) the certificate has expired or does "
          "not name the MX host. A DANE sender defers the mail.",
          "Publish records for the certificate the server uses: certkit dane tlsa MX-HOST (from the CA home, or "
          "--cert FILE with the chain the server sends), and keep the old records until every resolver has the "
          "new ones.",
          tlsrpt="tlsa-invalid", status="4.7.5",
          postfix="Server certificate not trusted"),
    _code("dane.unusable-records", "warning", "theirs", "no usable TLSA record",
          "The MX host publishes TLSA records, but none an SMTP client may use (RFC 7672 3.1.3): only usages 2 "
          "(DANE-TA) and 3 (DANE-EE) with a known selector and matching type count. DANE authenticates nothing: "
          "a DANE sender still requires STARTTLS and then delivers over unauthenticated TLS (RFC 7672 2.2; "
          "Postfix: 'fallback to unauthenticated TLS').",
          "Replace them with DANE-EE and DANE-TA records: certkit dane tlsa MX-HOST prints them.",
          tlsrpt="tlsa-invalid", status="4.7.5",
          postfix="TLSA records unusable"),
    _code("dane.starttls-missing", "error", "theirs", "STARTTLS missing under DANE",
          "The MX host has usable TLSA records, so a DANE sender requires STARTTLS, but the server did not offer "
          "it (or a middlebox stripped it). The mail is deferred, never sent in clear text.",
          "Offer STARTTLS with the certificate the TLSA records name (certkit dane tlsa MX-HOST prints the records "
          "for the current one), or remove the TLSA records before turning TLS off.",
          tlsrpt="starttls-not-supported", status="4.7.4",
          postfix="TLS is required, but was not offered by host"),
    _code("dane.dnssec-bogus", "error", "network", "TLSA lookup failed DNSSEC validation",
          "The TLSA lookup for the MX host returned a bogus (DNSSEC validation failed) or failed answer, so a DANE "
          "sender cannot tell whether DANE applies and defers the mail.",
          "Fix the zone's signatures (expired RRSIGs, a DS record that does not match the key, broken NSEC/NSEC3 "
          "denial), then republish the records: certkit dane tlsa MX-HOST.",
          tlsrpt="dnssec-invalid", status="4.7.5",
          postfix="TLSA lookup error for <host>:25"),
    _code("dane.not-published", "error", "theirs", "no DNSSEC-signed TLSA records",
          "DANE was required (certkit probe --dane require), but the MX host has no TLSA records that the "
          "resolver validated (AD bit): none at all, records in an unsigned zone, or MX records that are not "
          "signed (RFC 7672 2.2.1). A sender that requires DANE defers the mail.",
          "Have the partner sign their zones with DNSSEC and publish TLSA records for each MX host (certkit dane "
          "tlsa MX-HOST prints ours), or probe with --dane auto.",
          tlsrpt="dane-required", status="4.7.4"),
    # --- MTA-STS (RFC 8461) and TLS-RPT (RFC 8460) ------------------------------------------------------
    _code("sts.not-published", "info", "theirs", "no MTA-STS policy",
          "The domain publishes no _mta-sts TXT record beginning with v=STSv1, so senders apply no MTA-STS policy: "
          "they use TLS when offered, without checking the certificate against the Web PKI.",
          "To publish one: serve the policy as text/plain at https://mta-sts.DOMAIN/.well-known/mta-sts.txt "
          "(lines 'version: STSv1', 'mode: testing', 'mx: MX-HOST' per MX, 'max_age: 86400'), then the record "
          '_mta-sts.DOMAIN. IN TXT "v=STSv1; id=20260101T000000"; check it with certkit mta-sts check DOMAIN.'),
    _code("sts.txt-invalid", "warning", "theirs", "MTA-STS record not usable",
          "The _mta-sts TXT records do not leave exactly one valid v=STSv1 record with an id of 1 to 32 letters and "
          "digits (RFC 8461 3.1): more than one, no id, or a malformed field. Senders treat the domain as having no "
          "policy.",
          'Publish exactly one record: _mta-sts.DOMAIN. IN TXT "v=STSv1; id=20260101T000000" (a new id for every new '
          "policy), and remove the others."),
    _code("sts.policy-fetch-error", "warning", "theirs", "MTA-STS policy not fetched",
          "The record announces a policy, but https://mta-sts.DOMAIN/.well-known/mta-sts.txt did not give it: no "
          "address, no connection, a timeout, an HTTP status other than 200, a redirect (never followed), a body over "
          "64 KB or a media type other than text/plain (RFC 8461 3.3). Senders without a cached policy deliver "
          "without MTA-STS.",
          "Serve the policy file itself at that URL with status 200 and Content-Type: text/plain, without a redirect, "
          "within a minute and 64 KB; then certkit mta-sts check DOMAIN.",
          tlsrpt="sts-policy-fetch-error"),
    _code("sts.policy-webpki-invalid", "warning", "theirs", "MTA-STS policy host certificate not valid",
          "The HTTPS server of mta-sts.DOMAIN presented a certificate that is not valid for that name under the Web "
          "PKI (expired, untrusted issuer, or another name), so the policy cannot be authenticated (RFC 8461 3.3).",
          "Give the policy host a certificate from a public CA that names mta-sts.DOMAIN (with the chain), e.g. "
          "from an ACME CA; certkit's own CA is not in senders' Web PKI.",
          tlsrpt="sts-webpki-invalid"),
    _code("sts.policy-invalid", "warning", "theirs", "MTA-STS policy not valid",
          "The policy file is not valid (RFC 8461 3.2): version STSv1, mode (enforce, testing or none) and max_age "
          "(0 to 31557600 seconds) must appear exactly once, and at least one mx pattern unless the mode is none. "
          "Senders ignore the policy.",
          "Serve a policy of 'key: value' lines, e.g. 'version: STSv1', 'mode: testing', 'mx: mx1.DOMAIN', "
          "'mx: *.mail.DOMAIN', 'max_age: 86400', and change the id of the _mta-sts record.",
          tlsrpt="sts-policy-invalid"),
    _code("sts.mx-not-listed", "error", "theirs", "MX host not in the MTA-STS policy",
          "The MX host matches none of the policy's mx patterns (RFC 8461 4.1; *.DOMAIN matches exactly one more "
          "label). Under enforce, MTA-STS senders do not deliver to it; under testing they report it.",
          "Add the host to the policy ('mx: MX-HOST' or a '*.' pattern one label above it) and change the id of the "
          "_mta-sts record, or change the MX record.",
          tlsrpt="validation-failure"),
    _code("sts.starttls-missing", "error", "theirs", "STARTTLS missing under MTA-STS",
          "The MX host did not offer STARTTLS. Under enforce, MTA-STS senders deliver only over TLS with a certificate "
          "valid under the Web PKI, so they do not deliver to it.",
          "Offer STARTTLS with a certificate from a public CA that names the MX host, or set the policy to testing "
          "until it does.",
          tlsrpt="starttls-not-supported", status="4.7.4"),
    _code("sts.mx-webpki-invalid", "error", "theirs", "MX certificate not valid under the Web PKI",
          "Under MTA-STS the MX host's certificate must chain to a public root and name the MX host (RFC 8461 4.2); "
          "this one does not (expired, untrusted issuer such as a private CA, missing intermediate, or another name). "
          "Under enforce, MTA-STS senders do not deliver to it. The evidence names the TLS-RPT type of the cause.",
          "Serve a certificate from a public CA naming the MX host with its full chain (a private CA such as "
          "certkit's suits Domain Security, not MTA-STS), or set the policy to testing until it does.",
          tlsrpt="validation-failure", status="4.7.5"),
    _code("sts.dane-precedence", "info", "theirs", "DANE decides before MTA-STS",
          "DANE applies to this MX host (secure TLSA records). A sender that does DANE decides by DANE, and MTA-STS "
          "never overrides a failing DANE validation (RFC 8461 2); the MTA-STS result counts for senders without "
          "DANE.",
          "Nothing to do for MTA-STS; if DANE fails, fix the TLSA records: certkit dane tlsa MX-HOST."),
    _code("tlsrpt.not-published", "info", "theirs", "no TLS-RPT record",
          "The domain publishes no _smtp._tls TXT record (RFC 8460 3), so senders report their TLS failures "
          "(DANE, MTA-STS, STARTTLS) to nobody.",
          'Publish _smtp._tls.DOMAIN. IN TXT "v=TLSRPTv1; rua=mailto:tlsrpt@DOMAIN".'),
    _code("tlsrpt.record-invalid", "warning", "theirs", "TLS-RPT record not usable",
          "The _smtp._tls TXT records do not leave exactly one valid v=TLSRPTv1 record with a rua= field of mailto: "
          "or https: URIs (RFC 8460 3). Senders send no reports.",
          'Publish exactly one record: _smtp._tls.DOMAIN. IN TXT "v=TLSRPTv1; rua=mailto:tlsrpt@DOMAIN".'),
    # --- the certificate we present as an SMTP client (certkit audit) ------------------------------
    _code("client.no-client-auth", "error", "ours", "client certificate lacks clientAuth",
          "The certificate this server presents as its TLS client certificate has an Extended Key Usage without "
          "clientAuth (often a public server certificate renewed after its CA dropped clientAuth). Partners that "
          "check the EKU (Postfix with a verifying CA, .NET, Exchange, Exchange Online certificate connectors) "
          "refuse it.",
          "Present a transport certificate from our CA (certkit ca issue FQDN --profile transport; Postfix: "
          "smtp_tls_chain_files), or a separate client certificate (certkit ca issue FQDN --profile client).",
          tlsrpt="validation-failure", status="4.7.5", exchange=CLASSIC,
          postfix="certificate verification failed: unsupported certificate purpose"),
    _code("client.public-ca-dropping-client-auth", "warning", "ours",
          "client certificate from a CA dropping clientAuth",
          "The certificate this server presents as its TLS client certificate carries clientAuth today, but its "
          "issuer is a public CA that has announced the end of clientAuth in its certificates (the Chrome Root "
          "Program requires serverAuth-only hierarchies). Its renewal will not carry clientAuth, and partners that "
          "check the EKU will refuse it from then; an error when that is within the audit's look-ahead.",
          "Before it expires, present a transport certificate from our CA (certkit ca issue FQDN --profile "
          "transport) and send partners our root (certkit ca root --out ROOT.crt), or a separate client "
          "certificate (certkit ca issue FQDN --profile client)."),
)

#: Every code certkit can report, by code.
CATALOGUE: Mapping[str, Code] = {entry.code: entry for entry in _ENTRIES}


@dataclass(frozen=True)
class Finding:
    """One observation: its catalogue code, what it concerns, and the evidence in plain words."""

    code: str
    detail: str
    subject: str | None = None
    severity: Severity | None = None
    side: Side | None = None
    evidence: Mapping[str, Any] = field(default_factory=dict)
    #: This occurrence's RFC 3463 status (e.g. from the server's reply), overriding the catalogue's.
    enhanced_status: str | None = None
    #: What Exchange shows for this occurrence (e.g. its reply wrapped), overriding the catalogue's.
    exchange_text: str | None = None

    def __post_init__(self) -> None:
        if self.code not in CATALOGUE:
            raise KeyError(f"finding code {self.code!r} is not in the catalogue")
        entry = CATALOGUE[self.code]
        if self.severity is None:
            object.__setattr__(self, "severity", entry.severity)
        if self.side is None:
            object.__setattr__(self, "side", entry.side)
        if self.enhanced_status is None:
            object.__setattr__(self, "enhanced_status", entry.enhanced_status)
        if self.exchange_text is None:
            object.__setattr__(self, "exchange_text", entry.exchange_text)

    @property
    def entry(self) -> Code:
        return CATALOGUE[self.code]

    def to_dict(self) -> dict[str, Any]:
        e = self.entry
        return {
            "code": self.code,
            "severity": str(self.severity),
            "side": str(self.side),
            "title": e.title,
            "detail": self.detail,
            "subject": self.subject,
            "tlsrpt_result_type": e.tlsrpt_result_type,
            "enhanced_status": self.enhanced_status,
            "exchange_text": self.exchange_text,
            "postfix_text": e.postfix_text,
            "exchange_online_text": e.exchange_online_text,
            "explanation": e.explanation,
            "remedy": e.remedy,
            "evidence": dict(self.evidence),
        }


def finding(code: str, detail: str, **kwargs: Any) -> Finding:
    """Shorthand for ``Finding(code, detail, ...)``."""
    return Finding(code, detail, **kwargs)


_ORDER = {Severity.ERROR: 0, Severity.WARNING: 1, Severity.INFO: 2}


def worst(findings: Iterable[Finding]) -> Severity | None:
    """The most severe severity among ``findings`` (``None`` when there are none)."""
    found = [f.severity for f in findings if f.severity is not None]
    return min(found, key=lambda s: _ORDER[s]) if found else None


def markdown_table() -> str:
    """The catalogue as the Markdown table in the README (a test keeps the two identical)."""
    def cell(value: object) -> str:
        return "" if value is None else str(value).replace("|", "\\|")

    lines = ["| code | severity | side | TLS-RPT result type | enhanced status | Exchange shows "
             "| Exchange Online shows | Postfix equivalent | what it means | remedy |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for c in CATALOGUE.values():
        lines.append(f"| `{c.code}` | {c.severity} | {c.side} | {cell(c.tlsrpt_result_type)} | "
                     f"{cell(c.enhanced_status)} | {cell(c.exchange_text)} | {cell(c.exchange_online_text)} | "
                     f"{cell(c.postfix_text)} | {cell(c.explanation)} | {cell(c.remedy)} |")
    return "\n".join(lines)

