"""``trust fetch``: take the chain a partner's live endpoint presents, and decide what may be added.

:func:`fetch_offer` talks to the endpoint (STARTTLS on an SMTP port, or TLS from the first byte) and
returns an :class:`Offer`: the top of the presented chain (a partner's root, or at least a CA), or with
``pin`` the endpoint's own certificate. A certificate fetched over the network proves nothing by
itself: :meth:`Offer.check_fingerprint` compares it with the fingerprint the partner gave over another
channel before :meth:`Offer.add_to` puts it into the trust store. Nothing here prints or asks.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509

from certkit.adapters.transport import run_session
from certkit.adapters.truststore import AddResult, TrustStore
from certkit.checks.probe import parse_target
from certkit.core.formats import sha256_fingerprint
from certkit.core.names import is_ip_address
from certkit.core.trust import is_ca
from certkit.errors import CertkitError, InputError, UnreachableError

__all__ = ["Offer", "fetch_offer"]


@dataclass(frozen=True)
class Offer:
    """What ``host:port`` presented, and the certificate offered for trust."""

    host: str
    port: int
    chain: tuple[x509.Certificate, ...]
    #: The endpoint's own certificate is offered (to trust exactly it), not the top of its chain.
    pin: bool = False
    implicit_tls: bool = False

    @property
    def certificate(self) -> x509.Certificate:
        """The certificate to trust: the leaf with ``pin``, else the top of the chain."""
        return self.chain[0] if self.pin else self.chain[-1]

    @property
    def fingerprint(self) -> str:
        """Its SHA-256 fingerprint (64 hex digits, upper case): what the partner reads out."""
        return sha256_fingerprint(self.certificate)

    @property
    def is_intermediate(self) -> bool:
        """The top of the chain is not self-issued: trusting it trusts everything it signs."""
        return not self.pin and self.certificate.issuer != self.certificate.subject

    @property
    def source(self) -> str:
        """Where it came from, as the store records it: ``smtp://host:port`` or ``tls://host:port``."""
        return f"{'tls' if self.implicit_tls else 'smtp'}://{self.host}:{self.port}"

    def check_fingerprint(self, expected: str) -> None:
        """Refuse the offer (:class:`~certkit.errors.CertkitError`) unless its SHA-256 is ``expected``
        (colons, spaces and case ignored)."""
        wanted = expected.replace(":", "").replace(" ", "").upper()
        if wanted != self.fingerprint:
            raise CertkitError(f"The offered certificate's SHA-256 is {self.fingerprint}, not the expected {wanted}; "
                               "nothing was added.", "Check the fingerprint with the partner: a different "
                               "certificate may mean a different server or an interception.")

    def add_to(self, store: TrustStore, *, label: str | None = None, partners: tuple[str, ...] = (),
               force: bool = False) -> AddResult:
        """Trust the offered certificate in ``store`` (pinned with ``pin``), recording where it came from."""
        return store.add(self.certificate, label=label, partners=partners, pin=self.pin, force=force,
                         source=self.source)


def fetch_offer(target: str, *, port: int | None = None, implicit_tls: bool = False, pin: bool = False,
                timeout: float = 10.0) -> Offer:
    """Connect to ``target`` (``host``, ``host:port``, ``[ip]:port``; :func:`~certkit.checks.probe.parse_target`)
    and take what it presents.

    ``port`` is used when the target names none (default 25, or 465 with ``implicit_tls``). No
    certificate is an :class:`~certkit.errors.UnreachableError` when nothing answered (exit 3), else a
    :class:`~certkit.errors.CertkitError`; a chain without a CA certificate (and no ``pin``) is an
    :class:`~certkit.errors.InputError`.
    """
    parsed = parse_target(target, port or (465 if implicit_tls else 25))
    host, real_port = parsed.host, parsed.port
    session = run_session(host, real_port, server_name=None if is_ip_address(host) else host, timeout=timeout,
                          implicit_tls=implicit_tls)
    if session.tls is None or not session.tls.peer_chain:
        why = session.failure.detail if session.failure else "the endpoint did not start TLS"
        error = (UnreachableError if session.failure is not None and session.failure.code.startswith("net.")
                 else CertkitError)
        raise error(f"No certificate was obtained from {host}:{real_port}: {why}.",
                    "Check the host and port, or use certkit trust add with a file from the partner.")
    offer = Offer(host, real_port, tuple(session.tls.peer_chain), pin=pin, implicit_tls=implicit_tls)
    if not pin and not is_ca(offer.certificate):
        raise InputError(f"{host}:{real_port} presents no CA certificate, only "
                         f"{offer.certificate.subject.rfc4514_string()} (a self-signed or incomplete chain).",
                         "Ask the partner for their root, or trust exactly this certificate with --pin.")
    return offer
