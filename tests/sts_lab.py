"""An MTA-STS world on loopback: Contoso's DNS, its policy host over HTTPS and its MX, from a test CA.

The Web PKI is out of reach here, so the test CA stands in for it: certkit is told to trust it (``cadata``,
``--cafile``/``--sts-cafile``). :class:`StsLab` serves

* DNS (tests/dnsserver.py): ``contoso.test MX 10 mx1.contoso.test.``, ``mx1`` and ``mta-sts`` at 127.0.0.1,
  the ``_mta-sts`` and ``_smtp._tls`` TXT records given;
* the policy at ``https://mta-sts.contoso.test:PORT/.well-known/mta-sts.txt`` (certkit.lab.httpfiles over TLS,
  with a certificate for ``mta-sts.contoso.test`` unless told otherwise);
* the MX: the lab's Scripted SMTP server with a certificate for ``mx1.contoso.test`` (or the one given), and
  its TLSA records when given (``dns_class`` a resolver that sets the AD bit, for DANE).
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from certkit.checks.preflight import PreflightOptions, PreflightReport, preflight
from certkit.checks.probe import ProbeOptions, ProbeResult, probe_sync
from certkit.lab.httpfiles import Content, HttpFiles
from tests.dnsserver import DnsServer
from tests.pki import NOW, Issued, make_intermediate, make_leaf, make_root
from tests.smtp_servers import Scripted, SmtpTestServer

DOMAIN = "contoso.test"
MX = "mx1.contoso.test"
ROOT = make_root("STS Test Root")
INTER = make_intermediate(ROOT, "STS Test Issuing CA")
POLICY_CERT = make_leaf(INTER, [f"mta-sts.{DOMAIN}"])
MX_CERT = make_leaf(INTER, [MX])
OTHER_ROOT = make_root("Not The Web PKI")
#: Our Edge (Fabrikam) in the pre-flight against the lab's Contoso, issued by the same test CA.
OURS = make_leaf(INTER, ["edge.fabrikam.example", "fabrikam.example"])
PATH = "/.well-known/mta-sts.txt"


def policy(mode: str = "enforce", mx: Sequence[str] = (MX,), max_age: str = "86400", eol: str = "\r\n") -> bytes:
    """A policy file's bytes."""
    lines = ["version: STSv1", f"mode: {mode}", *(f"mx: {m}" for m in mx), f"max_age: {max_age}"]
    return (eol.join(lines) + eol).encode()


def cadata() -> str:
    """The test CA as the trusted 'Web PKI' (PEM)."""
    return ROOT.pem.decode()


class StsLab:
    """The servers (see the module docstring); close with :meth:`close` or use as a context manager."""

    def __init__(self, tmp: Path, *, policy_body: Content | None = None, txt: Sequence[str] = ("v=STSv1; id=20260101",),
                 tlsrpt: Sequence[str] = ("v=TLSRPTv1; rua=mailto:tlsrpt@contoso.test",),
                 policy_cert: Issued = POLICY_CERT, mx_cert: Issued = MX_CERT, mx_name: str = MX,
                 smtp: Mapping[str, Any] | None = None, content_type: str = "text/plain",
                 tlsa: Sequence[str] = (), dns_class: type[DnsServer] = DnsServer, **dns_options: Any) -> None:
        chain = tmp / "policy-host.pem"
        key = tmp / "policy-host.key"
        chain.write_bytes(policy_cert.pem + INTER.pem)
        key.write_bytes(policy_cert.key_pem)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(chain, key)
        body = policy() if policy_body is None else policy_body
        self.https = HttpFiles({PATH: body}, tls=ctx, content_type=content_type)
        self.scripted = Scripted(identity=mx_cert, chain=[INTER.cert], hostname=mx_name, **(smtp or {}))
        self.smtp = SmtpTestServer(self.scripted)
        zones: dict[str, dict[str, list[str]]] = {
            DOMAIN: {"MX": [f"10 {mx_name}."]},
            mx_name: {"A": ["127.0.0.1"]},
            f"mta-sts.{DOMAIN}": {"A": ["127.0.0.1"]},
        }
        if txt:
            zones[f"_mta-sts.{DOMAIN}"] = {"TXT": [_quoted(t) for t in txt]}
        if tlsrpt:
            zones[f"_smtp._tls.{DOMAIN}"] = {"TXT": [_quoted(t) for t in tlsrpt]}
        if tlsa:
            zones[f"_{self.smtp.port}._tcp.{mx_name}"] = {"TLSA": list(tlsa)}
        self.zones = zones
        self.dns = dns_class(zones, **dns_options)

    def options(self) -> dict[str, Any]:
        """The keyword arguments of :func:`certkit.checks.mtasts.check_mta_sts` that point at this lab."""
        return {"nameserver": self.dns.address, "cadata": cadata(), "port": self.smtp.port,
                "policy_port": self.https.port, "timeout": 3.0}

    def cli_options(self, cafile: Path) -> list[str]:
        """The same as command-line options (``--cafile`` written to ``cafile``)."""
        cafile.write_bytes(ROOT.pem)
        return ["--nameserver", self.dns.address, "--cafile", str(cafile), "--port", str(self.smtp.port),
                "--policy-port", str(self.https.port), "--timeout", "3"]

    def probe_options(self, tmp: Path) -> list[str]:
        """``certkit probe DOMAIN`` options for this lab: the test root in a trust store and as the Web PKI."""
        from certkit.adapters.truststore import TrustStore

        store = tmp / "trust"
        if not store.exists():
            TrustStore(store).add(ROOT.cert, label="sts test root")
        (tmp / "sts-ca.pem").write_bytes(ROOT.pem)
        return ["--nameserver", self.dns.address, "--port", str(self.smtp.port), "--store", str(store),
                "--managed-only", "--validator", "postfix", "--timeout", "3", "--sts-cafile", str(tmp / "sts-ca.pem"),
                "--sts-policy-port", str(self.https.port)]

    def sts_fields(self) -> dict[str, Any]:
        """The MTA-STS fields of :class:`ProbeOptions` and :class:`PreflightOptions` for this lab: on, the test
        root as the Web PKI, the policy host's port."""
        return {"mta_sts": "auto", "sts_cadata": cadata(), "sts_policy_port": self.https.port}

    def probe(self, **options: Any) -> ProbeResult:
        """The library's probe of the lab's domain (postfix rules, the test root trusted); ``options``: more
        :class:`ProbeOptions` fields."""
        opts = ProbeOptions(nameserver=self.dns.address, port=self.smtp.port, timeout=3, validator="postfix",
                            **options)
        [result] = probe_sync([DOMAIN], anchors=[ROOT.cert], options=opts)
        return result

    def preflight(self, **options: Any) -> PreflightReport:
        """The library's pre-flight of the lab's domain from fabrikam.example (:data:`OURS`), judged at tests.pki's
        NOW; ``options``: more :class:`PreflightOptions` fields."""
        opts = PreflightOptions(nameserver=self.dns.address, port=self.smtp.port, timeout=3, validator="postfix",
                                **options)
        return preflight(DOMAIN, our_domain="fabrikam.example", cert=OURS.cert, key=OURS.key,  # type: ignore[arg-type]
                         chain=[INTER.cert, ROOT.cert], anchors=[ROOT.cert], at=NOW, options=opts)

    def close(self) -> None:
        self.smtp.close()
        self.https.close()
        self.dns.close()

    def __enter__(self) -> StsLab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _quoted(text: str) -> str:
    """A TXT record's presentation form: character-strings of at most 255 bytes, quoted."""
    parts = [text[i:i + 200] for i in range(0, len(text), 200)] or [""]
    return " ".join('"' + p.replace("\\", "\\\\").replace('"', '\\"') + '"' for p in parts)
