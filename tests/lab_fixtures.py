"""Fixtures for the lab tests: a time limit per test, a test PKI, lab endpoints, and a Postfix *sender*.

``tests/postfix.py`` runs Postfix as a receiving MTA; :class:`PostfixSender` reuses it (by subclassing)
as a *sending* MTA: its own smtpd accepts the test's message in plaintext from loopback, and its smtp
client delivers it to a lab endpoint through a transport map, presenting a client certificate, with
``smtp_tls_security_level = secure`` and the lab's CA as the only trusted root.
"""

from __future__ import annotations

import contextlib
import os
import signal
import smtplib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import pytest
from cryptography import x509

from certkit.adapters.transport import ClientIdentity
from certkit.core.trust import AnchorSet
from certkit.lab.server import LabConfig, LabServer, Personality, run_in_thread
from tests.pki import Issued, PrivateKey, make_leaf, make_root, make_self_signed
from tests.postfix import PostfixInstance, _pem

__all__ = ["LabPki", "PostfixSender", "lab_pki", "lab_server", "time_limit"]


@pytest.fixture(autouse=False)
def time_limit() -> Iterator[Callable[[float], None]]:
    """Every lab test is bounded: 60 s by default; ``time_limit(seconds)`` re-arms (SIGALRM, main thread)."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise TimeoutError("the test ran over its time limit")

    old = signal.signal(signal.SIGALRM, handler)

    def arm(seconds: float) -> None:
        signal.setitimer(signal.ITIMER_REAL, seconds)

    arm(60)
    yield arm
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, old)


@dataclass
class LabPki:
    """A lab CA, the endpoint's certificate, a trusted and a foreign client certificate."""

    root: Issued
    server: Issued
    client: Issued           # mx.contoso.test + contoso.test, issued by the lab root
    foreign: Issued          # self-signed, like New-ExchangeCertificate's default
    other_root: Issued
    other_client: Issued     # from another CA

    def identity(self, which: str) -> ClientIdentity | None:
        issued = {"trusted": self.client, "foreign": self.foreign, "other": self.other_client}.get(which)
        return None if issued is None else ClientIdentity(issued.cert, issued.key)


@pytest.fixture(scope="module")
def lab_pki() -> LabPki:
    root = make_root("Lab Test Root")
    other = make_root("Other Root")
    return LabPki(root=root, server=make_leaf(root, ["mx.lab.test", "lab.test"]),
                  client=make_leaf(root, ["mx.contoso.test", "contoso.test"]),
                  foreign=make_self_signed(["mx.contoso.test", "contoso.test"]),
                  other_root=other, other_client=make_leaf(other, ["mx.contoso.test", "contoso.test"]))


def lab_config(pki: LabPki, **kwargs: object) -> LabConfig:
    """An endpoint config: the lab root trusted, contoso.test domain-secure, no revocation unless asked."""
    opts: dict[str, object] = {"anchors": AnchorSet.of([pki.root.cert]), "domain_secure": ("contoso.test",),
                               "personality": Personality.EXCHANGE, "validator": Personality.POSTFIX,
                               "hostname": "mx.lab.test", "command_timeout": 10.0, "handshake_timeout": 5.0}
    opts.update(kwargs)
    return LabConfig(pki.server.cert, pki.server.key, **opts)  # type: ignore[arg-type]


@pytest.fixture
def lab_server(lab_pki: LabPki, tmp_path: Path) -> Iterator[Callable[..., LabServer]]:
    """A factory: ``lab_server(personality="postfix", ...)`` starts an endpoint on a free loopback port."""
    with contextlib.ExitStack() as stack:

        def start(**kwargs: object) -> LabServer:
            kwargs.setdefault("maildir", tmp_path / "maildir")
            return stack.enter_context(run_in_thread(lab_config(lab_pki, **kwargs)))

        yield start


class PostfixSender(PostfixInstance):
    """A private Postfix that relays ``@lab.test`` mail to a lab endpoint, presenting ``client``."""

    def __init__(self, client: Issued, trusted_root: x509.Certificate, lab_port: int, *,
                 chain: Sequence[x509.Certificate] = ()) -> None:
        key: PrivateKey = client.key
        super().__init__(client.cert, key, chain, hostname="mx.contoso.test", domain="contoso.test")
        (self.etc / "lab-ca.pem").write_bytes(_pem([trusted_root]))
        extra = {
            "smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination",
            "transport_maps": f"inline:{{ lab.test=smtp:[127.0.0.1]:{lab_port} }}",
            "smtp_tls_cert_file": str(self.etc / "server.pem"),
            "smtp_tls_key_file": str(self.etc / "server.key"),
            "smtp_tls_security_level": "secure",
            "smtp_tls_secure_cert_match": "lab.test, .lab.test",
            "smtp_tls_CAfile": str(self.etc / "lab-ca.pem"),
            "smtp_tls_loglevel": "1",
            "smtp_connect_timeout": "5s",
            "smtp_helo_timeout": "10s",
            "smtp_mail_timeout": "10s",
            "delay_warning_time": "0h",
        }
        main_cf = self.etc / "main.cf"
        main_cf.write_text(main_cf.read_text() + "".join(f"{k} = {v}\n" for k, v in extra.items()))
        old = time.time() - 10
        os.utime(main_cf, (old, old))

    def submit(self, mail_from: str, rcpt_to: str, subject: str = "via postfix") -> None:
        """Hand a message to this Postfix over plain SMTP on loopback."""
        with smtplib.SMTP("127.0.0.1", self.port, timeout=10) as s:
            s.sendmail(mail_from, [rcpt_to], f"Subject: {subject}\r\n\r\nhello from postfix\r\n")
