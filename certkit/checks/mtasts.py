"""MTA-STS and TLS-RPT for a mail domain: gather the facts over DNS, HTTPS and SMTP, let the core judge them.

:func:`check_mta_sts` looks up ``_mta-sts.<domain>`` and ``_smtp._tls.<domain>`` (TXT), fetches the policy
from ``https://mta-sts.<domain>/.well-known/mta-sts.txt`` as RFC 8461 3.3 says (:mod:`certkit.adapters.https`:
the Web PKI, no redirects, 64 KB, one timeout for all), and, when the policy is in ``testing`` or ``enforce``,
checks every MX host: one SMTP session per host (no client certificate, no MAIL FROM) whose chain is
verified against the Web PKI with the MX host name (RFC 8461 4.2). The probe passes its own sessions and
DANE results instead (:func:`mx_facts`). :func:`certkit.core.mtasts.judge` gives the verdict.

Trust: the Web PKI is Mozilla's roots (certifi); ``cadata`` (PEM roots, ``--cafile``) replaces it for both
the policy host and the MX hosts -- for a lab or tests, where the Web PKI is out of reach.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from cryptography import x509

from certkit.adapters.dns import TxtLookup, lookup_txt, make_resolver, resolve_host, resolve_mail_domain
from certkit.adapters.https import https_get
from certkit.adapters.transport import SmtpSession, run_session
from certkit.clock import Clock, SystemClock
from certkit.core.mtasts import (
    MxFacts,
    PolicyFacts,
    StsReport,
    judge,
    policy_host,
    policy_url,
    select_sts_record,
    sts_owner,
    tlsrpt_owner,
)
from certkit.core.names import dns_name
from certkit.core.trust import AnchorSet
from certkit.core.verify import verify_chain
from certkit.errors import InputError, UsageError

if TYPE_CHECKING:
    from certkit.checks.probe import AddressResult

__all__ = ["MTA_STS_MODES", "check_mta_sts", "check_sts_options", "fetch_policy", "mta_sts_of_sessions", "mx_facts",
           "read_cafile", "webpki_anchors"]

#: The values of ``--mta-sts``.
MTA_STS_MODES = ("auto", "off")
_POLICY_PATH = "/.well-known/mta-sts.txt"


def webpki_anchors(cadata: str | None = None) -> AnchorSet:
    """The roots of the Web PKI check: ``cadata`` (PEM) when given, else Mozilla's roots."""
    if cadata is None:
        from certkit.adapters.roots import public_roots

        return public_roots()
    try:
        certs = x509.load_pem_x509_certificates(cadata.encode("ascii"))
    except ValueError:
        raise InputError("The MTA-STS CA file holds no PEM certificate.", "Give a PEM file of root certificates.") \
            from None
    return AnchorSet.of(certs, origin="cafile")


def check_sts_options(mode: str, cadata: str | None, policy_port: int) -> None:
    """Check the MTA-STS options of the probe and the pre-flight once, when they are made: ``mode`` one of
    :data:`MTA_STS_MODES`, ``cadata`` PEM roots (or ``None``: the Web PKI), ``policy_port`` a TCP port."""
    if mode not in MTA_STS_MODES:
        raise InputError(f"Unknown MTA-STS mode {mode!r}.", "Use auto or off.")
    if not (isinstance(policy_port, int) and 1 <= policy_port <= 65535):
        raise UsageError(f"The MTA-STS policy port {policy_port!r} is not a TCP port.",
                         "Pass a port from 1 to 65535, e.g. sts_policy_port=443.")
    if cadata is not None:
        if not isinstance(cadata, str) or not cadata.isascii():
            raise UsageError("The MTA-STS roots must be PEM text.",
                             "Pass sts_cadata=read_cafile(PATH), or None for the Web PKI.")
        webpki_anchors(cadata)  # no PEM certificate in it: an InputError now, not once the probe ran


def read_cafile(path: str | None) -> str | None:
    """The PEM text of ``--cafile`` (``None``: use the Web PKI)."""
    if path is None:
        return None
    from certkit.adapters.inputs import read_input

    data = read_input(path, what="CA file", limit=4 * 1024 * 1024)
    text = data.decode("ascii", "replace")
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise InputError(f"{path} holds no PEM certificate.", "Give a PEM file of root certificates.")
    return text


def mx_facts(host: str, sessions: Iterable[SmtpSession], anchors: AnchorSet, at: _dt.datetime,
             dane: str | None = None) -> MxFacts:
    """What the sessions to MX ``host`` show under MTA-STS: TLS or not, and the Web PKI verification of its
    chain for ``host`` (a failing address wins over a passing one: the sender may pick either)."""
    chosen: MxFacts | None = None
    for s in sessions:
        if s.tls is not None and s.tls.peer_chain:
            leaf, *inters = s.tls.peer_chain
            v = verify_chain(leaf, tuple(inters), anchors, name=host, at=at)
            facts = MxFacts(host, True, v, dane)
            if not v.ok:
                return facts
            chosen = chosen or facts
        elif s.starttls_missing:
            refused = s.starttls is not None
            return MxFacts(host, False, None, dane, note="refused STARTTLS" if refused else "offered no STARTTLS")
    return chosen or MxFacts(host, None, None, dane, note="not reached over TLS")


def _lookups(domain: str, nameserver: str | None, timeout: float) -> tuple[TxtLookup, TxtLookup]:
    return (lookup_txt(sts_owner(domain), nameserver=nameserver, timeout=timeout),
            lookup_txt(tlsrpt_owner(domain), nameserver=nameserver, timeout=timeout))


def fetch_policy(domain: str, *, nameserver: str | None = None, timeout: float = 10.0, cadata: str | None = None,
                 policy_port: int = 443) -> PolicyFacts:
    """The policy of ``domain`` over HTTPS (RFC 8461 3.3); the host's address from ``nameserver``."""
    host = policy_host(domain)
    url = policy_url(domain) if policy_port == 443 else f"https://{host}:{policy_port}{_POLICY_PATH}"
    found = resolve_host(host, nameserver=nameserver, timeout=timeout)
    if not found.addresses:
        why = found.failure.detail if found.failure else "no address"
        return PolicyFacts(url, error=f"{host} has no address: {why}")
    got = None
    for address in found.addresses:
        got = https_get(host, _POLICY_PATH, address=address, port=policy_port, cadata=cadata, timeout=timeout)
        if got.status is not None or got.certificate_error:
            break  # an answer, good or bad; only a failed connection tries the next address
    assert got is not None
    return PolicyFacts(url, got.body if got.ok else None, got.error, got.certificate_error, got.status,
                       got.content_type)


def check_mta_sts(domain: str, *, nameserver: str | None = None, timeout: float = 10.0, cadata: str | None = None,
                  port: int = 25, policy_port: int = 443, clock: Clock | None = None,
                  mx: Sequence[MxFacts] | Callable[[], Sequence[MxFacts]] | None = None,
                  helo_name: str = "localhost") -> StsReport:
    """MTA-STS and TLS-RPT for ``domain`` (see the module docstring).

    ``mx``: the MX facts the caller already has (the probe), or a function that makes them, called only when
    a policy in mode testing or enforce needs them; else each MX host of the domain is reached on ``port``
    for its certificate. ``policy_port``: the policy host's port (443; another for a lab).
    """
    domain = _domain(domain)
    if nameserver is not None:
        make_resolver(nameserver, timeout)  # a malformed --nameserver is an InputError before anything is asked
    sts_txt, rpt_txt = _lookups(domain, nameserver, timeout)
    facts: dict[str, Any] = {"txt": sts_txt.records, "txt_error": sts_txt.error, "tlsrpt_txt": rpt_txt.records,
                             "tlsrpt_error": rpt_txt.error}
    record, _ = select_sts_record(sts_txt.records)
    if record is None or sts_txt.error is not None:
        return judge(domain, **facts)
    facts["fetch"] = fetch_policy(domain, nameserver=nameserver, timeout=timeout, cadata=cadata,
                                  policy_port=policy_port)
    first = judge(domain, **facts)
    if first.policy is None or first.policy.mode == "none":
        return first
    if callable(mx):
        mx = mx()
    elif mx is None:
        at = (clock or SystemClock()).now()
        mx = _reach_mx(domain, nameserver=nameserver, timeout=timeout, port=port, anchors=webpki_anchors(cadata),
                       at=at, helo_name=helo_name)
    return judge(domain, **facts, mx=mx)


def _domain(domain: str) -> str:
    name = dns_name(domain)
    if "." not in name:
        raise InputError(f"{domain!r} is not a mail domain.", "Give the domain, e.g. contoso.com.")
    return name


def _reach_mx(domain: str, *, nameserver: str | None, timeout: float, port: int, anchors: AnchorSet,
              at: _dt.datetime, helo_name: str) -> list[MxFacts]:
    route = resolve_mail_domain(domain, nameserver=nameserver, timeout=timeout)
    out: list[MxFacts] = []
    for host in route.hosts:
        sessions = [run_session(a, port, server_name=host.name, helo_name=helo_name, timeout=timeout)
                    for a in host.addresses[:1]]
        out.append(mx_facts(host.name, sessions, anchors, at))
    return out


def _dane_of(a: AddressResult) -> str | None:
    if a.dane is None or not a.dane.applies:
        return None
    return "pass" if a.dane.matched is not None else "fail"


def mta_sts_of_sessions(domain: str, addresses: Sequence[AddressResult], *, nameserver: str | None = None,
                        timeout: float = 10.0, cadata: str | None = None, policy_port: int = 443,
                        clock: Clock | None = None, at: _dt.datetime | None = None,
                        anchors: AnchorSet | None = None) -> StsReport:
    """MTA-STS for ``domain`` from the sessions the probe (or the pre-flight) already ran to its MX hosts: their
    chains are checked against the Web PKI for each MX name, and DANE's result where it applied is carried
    (MTA-STS never overrides a failing DANE validation). Nothing is sent to the MX hosts again.

    ``at`` (else ``clock``'s time) is when the chains are judged; ``anchors`` the Web PKI's roots made once by
    the caller (else from ``cadata``)."""
    judged_at = at if at is not None else (clock or SystemClock()).now()

    def mx() -> list[MxFacts]:  # the Web PKI checks, only for a policy that needs them (most domains have none)
        roots = anchors if anchors is not None else webpki_anchors(cadata)
        hosts: dict[str, list[AddressResult]] = {}
        for a in addresses:
            hosts.setdefault(a.host, []).append(a)
        facts = []
        for host, results in hosts.items():
            dane = next((d for d in map(_dane_of, results) if d is not None), None)
            if any(_dane_of(r) == "fail" for r in results):
                dane = "fail"
            facts.append(mx_facts(host, [r.session for r in results if r.session is not None], roots, judged_at,
                                  dane))
        return facts

    return check_mta_sts(domain, nameserver=nameserver, timeout=timeout, cadata=cadata, policy_port=policy_port,
                         clock=clock, mx=mx)
