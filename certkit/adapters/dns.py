"""Mail routing through DNS, the way an MTA does it (RFC 5321 5.1). The only module importing dnspython.

:func:`resolve_mail_domain` returns a :class:`MailRoute`: the MX hosts by preference, each with every
A and AAAA address; a domain without MX records is its own implicit MX (RFC 5321 5.1); a null MX
(``0 .``, RFC 7505) means the domain accepts no mail. Failures are data (:class:`DnsFailure`, whose
``code`` is a finding code: ``dns.failure`` or ``dns.no-mx``), never exceptions, except for a
malformed ``nameserver`` argument, which is the caller's mistake (:class:`~certkit.errors.InputError`).

DNSSEC: certkit does not validate DNSSEC itself. Every query carries the AD flag and EDNS DO, and
the answer counts as *secure* when the resolver -- ``--nameserver``, else the system's -- sets the AD
bit (RFC 4035 3.2.3, RFC 6840 5.7), as Postfix does with ``smtp_dns_support_level = dnssec``. So a
secure answer is only as trustworthy as that resolver and the path to it: use a validating resolver
on the host itself or on a trusted network. :attr:`MailRoute.secure` says whether the MX RRset was
secure; :func:`lookup_tlsa` returns a :class:`TlsaLookup` (records, secure, bogus, none, error);
:func:`lookup_txt` a :class:`TxtLookup` (the MTA-STS and TLS-RPT policy records, RFC 8461 3.1, RFC 8460 3).

dnspython is imported by the functions that use it, not with this module: a probe of IP addresses
never asks DNS, and importing dnspython is a good part of the command's start-up time. Each function
imports the same modules in the same order, so that threads resolving at once cannot deadlock on the
import locks of dnspython's modules.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from certkit.errors import InputError

if TYPE_CHECKING:
    import dns.resolver

    from certkit.core.dane import TlsaRecord

__all__ = [
    "DnsFailure",
    "HostAddresses",
    "MailHost",
    "MailRoute",
    "TlsaLookup",
    "TxtLookup",
    "lookup_tlsa",
    "lookup_txt",
    "make_resolver",
    "parse_nameserver",
    "resolve_host",
    "resolve_mail_domain",
]


@dataclass(frozen=True)
class DnsFailure:
    """Why a lookup gave nothing usable. ``code`` is ``dns.failure`` or ``dns.no-mx``."""

    code: str
    detail: str
    #: The RFC 3463 status when it differs from the catalogue's (5.1.2 no such domain, 5.1.10 null MX).
    enhanced_status: str | None = None


@dataclass(frozen=True)
class HostAddresses:
    """The A and AAAA addresses of one name (IPv4 first), or why there are none."""

    name: str
    addresses: tuple[str, ...]
    failure: DnsFailure | None = None


@dataclass(frozen=True)
class MailHost:
    """One mail exchanger: its name, MX preference (``None`` for the implicit MX) and addresses."""

    name: str
    preference: int | None
    addresses: tuple[str, ...]
    failure: DnsFailure | None = None


@dataclass(frozen=True)
class MailRoute:
    """Where mail for ``domain`` goes.

    ``implicit`` is true when the domain has no MX records and its own address is used (RFC 5321 5.1);
    ``null_mx`` when it publishes ``MX 0 .`` (RFC 7505). ``failure`` is set when no address at all
    could be found. ``secure``: the resolver set the AD bit on the MX answer (or on its secure NODATA),
    so the MX host names may be used as TLSA base domains (RFC 7672 2.2.1).
    """

    domain: str
    hosts: tuple[MailHost, ...]
    implicit: bool = False
    null_mx: bool = False
    failure: DnsFailure | None = None
    secure: bool = False

    @property
    def targets(self) -> list[tuple[str, str]]:
        """``(host name, address)`` pairs in delivery order, one per address."""
        return [(h.name, a) for h in self.hosts for a in h.addresses]


def parse_nameserver(text: str) -> tuple[str, int]:
    """``"192.0.2.1"``, ``"192.0.2.1:5353"``, ``"[2001:db8::1]:53"`` or ``"2001:db8::1"`` -> ``(ip, port)``."""
    host, port = text.strip(), 53
    if host.startswith("["):
        end = host.find("]")
        if end < 0:
            raise InputError(f"Bad name server {text!r}.", "Write IPv6 as [ADDRESS]:PORT.")
        rest = host[end + 1:]
        host = host[1:end]
        if rest:
            if not rest.startswith(":"):
                raise InputError(f"Bad name server {text!r}.", "Write IP or IP:PORT.")
            port = _port(rest[1:], text)
    elif host.count(":") == 1:
        host, p = host.split(":")
        port = _port(p, text)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise InputError(f"The name server {text!r} is not an IP address.",
                         "Give the server as IP or IP:PORT, e.g. 127.0.0.1:5353.") from None
    return host, port


def _port(text: str, original: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise InputError(f"Bad port in name server {original!r}.", "The port must be 1 to 65535.")
    return int(text)


def make_resolver(nameserver: str | None = None, timeout: float = 5.0) -> dns.resolver.Resolver:
    """A resolver asking ``nameserver`` (IP[:PORT]) or the system's servers, each query bounded by ``timeout``."""
    import dns.exception
    import dns.flags
    import dns.name
    import dns.resolver

    if nameserver is not None:
        ip, port = parse_nameserver(nameserver)
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [ip]
        resolver.port = port
    else:
        resolver = dns.resolver.Resolver()
    resolver.timeout = timeout
    resolver.lifetime = timeout
    resolver.cache = None
    # Ask the resolver to report DNSSEC validation (the AD bit; certkit does not validate itself).
    resolver.set_flags(dns.flags.RD | dns.flags.AD)
    resolver.use_edns(0, dns.flags.DO, 1232)
    return resolver


def _describe(err: Exception, qname: str, rdtype: str) -> DnsFailure:
    import dns.exception
    import dns.flags
    import dns.name
    import dns.resolver

    if isinstance(err, dns.resolver.NXDOMAIN):
        return DnsFailure("dns.failure", f"{qname} does not exist (NXDOMAIN)", "5.1.2")
    if isinstance(err, dns.resolver.LifetimeTimeout | dns.exception.Timeout):
        return DnsFailure("dns.failure", f"no DNS answer for {qname} {rdtype} in time")
    if isinstance(err, dns.resolver.NoNameservers):
        return DnsFailure("dns.failure", f"every name server failed for {qname} {rdtype} (SERVFAIL or refused)")
    return DnsFailure("dns.failure", f"DNS lookup of {qname} {rdtype} failed: {err}")


def _query(resolver: dns.resolver.Resolver, qname: str, rdtype: str) -> tuple[list[object], DnsFailure | None]:
    records, failure, _ = _query_ad(resolver, qname, rdtype)
    return records, failure


def _ad(response: object) -> bool:
    import dns.exception
    import dns.flags
    import dns.name
    import dns.resolver

    flags = getattr(response, "flags", 0)
    return bool(flags & dns.flags.AD)


def _query_ad(resolver: dns.resolver.Resolver, qname: str, rdtype: str
              ) -> tuple[list[object], DnsFailure | None, bool]:
    """The records, the failure, and whether the resolver set the AD bit (on the answer or a NODATA)."""
    import dns.exception
    import dns.flags
    import dns.name
    import dns.resolver

    try:
        answer = resolver.resolve(qname, rdtype, search=False)
    except dns.resolver.NoAnswer as e:
        return [], None, _ad(e.kwargs.get("response"))
    except (dns.exception.DNSException, OSError) as e:
        return [], _describe(e, qname, rdtype), False
    return list(answer), None, _ad(answer.response)


def resolve_host(name: str, *, nameserver: str | None = None, timeout: float = 5.0,
                 resolver: dns.resolver.Resolver | None = None) -> HostAddresses:
    """Every A then AAAA address of ``name``."""
    if name.rstrip(".").lower() == "localhost" or name.rstrip(".").lower().endswith(".localhost"):
        # RFC 6761 6.3: localhost names are the loopback address, without asking DNS (which has no /etc/hosts).
        return HostAddresses(name, ("127.0.0.1",))
    r = resolver or make_resolver(nameserver, timeout)
    addresses: list[str] = []
    failures: list[DnsFailure] = []
    for rdtype in ("A", "AAAA"):
        records, failure = _query(r, name, rdtype)
        # Sorted for reproducible reports (an MTA would shuffle equal records; order carries no meaning).
        addresses.extend(sorted((str(rec) for rec in records), key=ipaddress.ip_address))
        if failure is not None:
            failures.append(failure)
    if addresses:
        return HostAddresses(name, tuple(addresses))
    return HostAddresses(name, (), failures[0] if failures else DnsFailure("dns.failure", f"{name} has no address"))


def resolve_mail_domain(domain: str, *, nameserver: str | None = None, timeout: float = 5.0) -> MailRoute:
    """The MX hosts of ``domain`` by preference, with their addresses (see :class:`MailRoute`)."""
    import dns.exception
    import dns.flags
    import dns.name
    import dns.resolver

    try:
        domain = dns.name.from_text(domain).to_text(omit_final_dot=True)
    except dns.exception.DNSException as e:
        return MailRoute(domain, (), failure=DnsFailure("dns.failure", f"{domain!r} is not a domain name: {e}"))
    r = make_resolver(nameserver, timeout)
    records, failure, secure = _query_ad(r, domain, "MX")
    if failure is not None:
        return MailRoute(domain, (), failure=failure)
    mx = sorted(((int(rec.preference), rec.exchange.to_text(omit_final_dot=True))  # type: ignore[attr-defined]
                 for rec in records), key=lambda p: (p[0], p[1].lower()))
    if not mx:
        own = resolve_host(domain, resolver=r)
        host = MailHost(domain, None, own.addresses, own.failure)
        fail = None if own.addresses else DnsFailure(
            "dns.no-mx", f"{domain} has no MX records and no address of its own")
        return MailRoute(domain, (host,), implicit=True, failure=fail, secure=secure)
    if len(mx) == 1 and mx[0][1] in ("", "."):
        null = DnsFailure("dns.no-mx", f"{domain} publishes a null MX: it accepts no mail (RFC 7505)", "5.1.10")
        return MailRoute(domain, (), null_mx=True, failure=null, secure=secure)
    hosts = []
    for pref, name in mx:
        if name in ("", "."):
            continue
        found = resolve_host(name, resolver=r)
        hosts.append(MailHost(name, pref, found.addresses, found.failure))
    fail = None
    if not any(h.addresses for h in hosts):
        reasons = "; ".join(h.failure.detail for h in hosts if h.failure) or "no addresses"
        fail = DnsFailure("dns.failure", f"no MX host of {domain} has an address: {reasons}")
    return MailRoute(domain, tuple(hosts), failure=fail, secure=secure)


@dataclass(frozen=True)
class TlsaLookup:
    """The TLSA RRset of one service (``_25._tcp.mx.fabrikam.com.``), as the resolver reported it.

    certkit does not validate DNSSEC: ``secure`` is the AD bit set by the resolver (``--nameserver``
    or the system's), which a validating resolver sets only for data it validated (as Postfix relies on
    with ``smtp_dns_support_level = dnssec``). Exactly one of the outcomes holds: ``records`` (with
    ``secure`` true or false); ``none`` (NXDOMAIN or NODATA: no records; ``secure`` when the denial
    was validated); ``bogus`` (SERVFAIL, which a validating resolver answers for bogus data); ``error``
    (a timeout or another failure; its text).
    """

    name: str
    records: list[TlsaRecord] = field(default_factory=list)
    secure: bool = False
    bogus: bool = False
    none: bool = False
    error: str | None = None
    #: The TTL the resolver served the RRset with: a lower bound of the zone's TTL (a cache counts it down).
    ttl: int | None = None

    @property
    def status(self) -> str:
        """``secure`` (validated records), ``insecure`` (records without AD), ``none``, ``bogus`` or ``error``."""
        if self.bogus:
            return "bogus"
        if self.error is not None:
            return "error"
        if self.none or not self.records:
            return "none"
        return "secure" if self.secure else "insecure"


def _read_any_tlsa_length() -> None:
    """Let dnspython read a TLSA record whose data length does not fit its matching type (``3 1 2`` with 32
    bytes). dnspython 2.9 refuses the whole answer as malformed, so the resolver retries until the timeout
    and a DANE sender's verdict ("unusable record, unauthenticated TLS", RFC 7672 2.2 and Postfix) becomes
    "no answer, defer". certkit judges the length itself (:attr:`TlsaRecord.unusable_reason`). The check
    lives in a class attribute of dnspython's TLSA base class; where it does not exist, nothing to do.
    """
    import dns.rdtypes.tlsabase

    base = dns.rdtypes.tlsabase.TLSABase
    if getattr(base, "_cert_length_by_mtype", None):
        base._cert_length_by_mtype = {}


def lookup_tlsa(host: str, port: int = 25, *, nameserver: str | None = None, timeout: float = 5.0) -> TlsaLookup:
    """The TLSA records of ``host``'s SMTP service on ``port`` (owner ``_PORT._tcp.HOST.``), see :class:`TlsaLookup`.

    The query asks for DNSSEC (AD flag and EDNS DO); whether the answer is secure is the resolver's
    word (its AD bit): certkit does not validate DNSSEC itself in this version. Never raises for a DNS
    failure; a malformed ``nameserver`` is an :class:`~certkit.errors.InputError`.
    """
    import dns.exception
    import dns.flags
    import dns.name
    import dns.resolver

    from certkit.core.dane import TlsaRecord

    _read_any_tlsa_length()
    owner = f"_{port}._tcp.{host.rstrip('.')}."
    r = make_resolver(nameserver, timeout)
    try:
        answer = r.resolve(owner, "TLSA", search=False)
    except dns.resolver.NXDOMAIN as e:
        responses: dict[object, object] = e.kwargs.get("responses") or {}
        return TlsaLookup(owner, none=True, secure=any(_ad(m) for m in responses.values()))
    except dns.resolver.NoAnswer as e:
        return TlsaLookup(owner, none=True, secure=_ad(e.kwargs.get("response")))
    except dns.resolver.NoNameservers as e:
        rcodes = [str(err[3]) for err in e.kwargs.get("errors", ()) if len(err) > 3]
        if "SERVFAIL" in rcodes:
            return TlsaLookup(owner, bogus=True, error=f"SERVFAIL for {owner} TLSA (a validating resolver answers "
                                                       "SERVFAIL for bogus DNSSEC data)")
        return TlsaLookup(owner, error=_describe(e, owner, "TLSA").detail)
    except (dns.exception.DNSException, OSError) as e:
        return TlsaLookup(owner, error=_describe(e, owner, "TLSA").detail)
    records = [TlsaRecord(int(rd.usage), int(rd.selector), int(rd.mtype), bytes(rd.cert))
               for rd in answer]
    records.sort(key=TlsaRecord.text)  # reproducible reports (an RRset has no order)
    ttl = int(answer.rrset.ttl) if answer.rrset is not None else None
    return TlsaLookup(owner, records, secure=_ad(answer.response), ttl=ttl)


@dataclass(frozen=True)
class TxtLookup:
    """The TXT RRset of ``name``: each record's character-strings joined (RFC 7208 3.3 style, as MTA-STS and
    TLS-RPT read them), decoded as UTF-8 with bad bytes replaced. ``none``: NXDOMAIN or NODATA; ``error``:
    a timeout, SERVFAIL or another failure (its text). A CNAME at ``name`` is followed by the resolver."""

    name: str
    records: tuple[str, ...] = ()
    none: bool = False
    error: str | None = None


def lookup_txt(name: str, *, nameserver: str | None = None, timeout: float = 5.0) -> TxtLookup:
    """The TXT records of ``name`` (see :class:`TxtLookup`), sorted for reproducible reports.

    Never raises for a DNS failure; a malformed ``nameserver`` is an :class:`~certkit.errors.InputError`.
    """
    import dns.exception
    import dns.flags
    import dns.name
    import dns.resolver

    owner = name.rstrip(".") + "."
    r = make_resolver(nameserver, timeout)
    try:
        answer = r.resolve(owner, "TXT", search=False)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return TxtLookup(owner, none=True)
    except (dns.exception.DNSException, OSError) as e:
        return TxtLookup(owner, error=_describe(e, owner, "TXT").detail)
    texts = [b"".join(rd.strings).decode("utf-8", "replace") for rd in answer]
    return TxtLookup(owner, tuple(sorted(texts)))
