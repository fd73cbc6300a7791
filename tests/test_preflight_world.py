"""A partner pair on loopback for the pre-flight tests: Contoso (us) and Fabrikam (the partner).

Both sides have a root and an issuing CA whose CRLs are served over HTTP on 127.0.0.1; Fabrikam's MX
is an in-test STARTTLS server that trusts Contoso's issuing CA (like Postfix with req_ccert), found
through a real loopback DNS server.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certkit.checks.preflight import PreflightOptions, PreflightReport, preflight
from certkit.lab.httpfiles import HttpFiles
from tests.dnsserver import DnsServer
from tests.pki import NOW, Issued, make_crl, make_intermediate, make_leaf, make_root
from tests.smtp_servers import Scripted, SmtpTestServer
from tests.tools import in_ci

DAY = dt.timedelta(days=1)
ZONES = {
    "fabrikam.test": {"MX": ["10 mx1.fabrikam.test."]},
    "mx1.fabrikam.test": {"A": ["127.0.0.1"]},
    "nomx.test": {"A": ["127.0.0.1"]},
}


@dataclass
class World:
    """Everything a pre-flight needs: our identity, their server, DNS and the CRL server."""

    http: HttpFiles
    dns: DnsServer
    our_root: Issued
    our_inter: Issued
    our_leaf: Issued
    their_root: Issued
    their_inter: Issued
    their_leaf: Issued
    server: SmtpTestServer | None = None
    scripted: Scripted | None = None

    def serve(self, *, trusted: Sequence[x509.Certificate] | None = None, identity: Issued | None = None,
              chain: Sequence[x509.Certificate] | None = None) -> SmtpTestServer:
        """Start Fabrikam's MX (trusting our issuing CA unless told otherwise)."""
        self.scripted = Scripted(identity=identity or self.their_leaf,
                                 chain=list(chain) if chain is not None else [self.their_inter.cert],
                                 hostname="mx1.fabrikam.test",
                                 trusted=list(trusted) if trusted is not None else [self.our_inter.cert])
        self.server = SmtpTestServer(self.scripted)
        return self.server

    def leaf(self, **kwargs: object) -> Issued:
        """Another certificate of ours (edge.contoso.test, contoso.test) from our issuing CA."""
        opts: dict[str, object] = {"cdp": self.http.url("contoso-issuing.crl"), "key_type": "rsa"}
        opts.update(kwargs)
        return make_leaf(self.our_inter, ["edge.contoso.test", "contoso.test"], **opts)  # type: ignore[arg-type]

    def kwargs(self, leaf: Issued | None = None) -> dict[str, object]:
        """The keyword arguments of :func:`certkit.checks.preflight.preflight` for this world."""
        mine = leaf or self.our_leaf
        return {"our_domain": "contoso.test", "cert": mine.cert, "key": mine.key,
                "chain": [self.our_inter.cert, self.our_root.cert],
                "anchors": [self.their_root.cert, self.our_root.cert], "at": NOW,
                "options": PreflightOptions(nameserver=self.dns.address,
                                            port=self.server.port if self.server else 1, timeout=3.0)}

    def preflight(self, partner: str = "fabrikam.test", leaf: Issued | None = None,
                  **overrides: object) -> PreflightReport:
        """:func:`~certkit.checks.preflight.preflight` in this world; ``overrides`` replace its keyword arguments
        or fields of its :class:`~certkit.checks.preflight.PreflightOptions`."""
        args = self.kwargs(leaf)
        options = args.pop("options")
        changes = {k: overrides.pop(k) for k in list(overrides) if k in _OPTION_FIELDS}
        args.update(overrides)
        return preflight(partner, **args, options=replace(options, **changes))  # type: ignore[arg-type, type-var]


_OPTION_FIELDS = {f.name for f in fields(PreflightOptions)}


def pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


@contextmanager
def world() -> Iterator[World]:
    """A fresh world (a module-scoped fixture keeps the PKI; servers are per test)."""
    with HttpFiles() as http, DnsServer(ZONES) as dns:
        our_root = make_root("Contoso Root", org="Contoso")
        our_inter = make_intermediate(our_root, "Contoso Issuing CA", org="Contoso",
                                      cdp=http.url("contoso-root.crl"))
        their_root = make_root("Fabrikam Root", org="Fabrikam")
        their_inter = make_intermediate(their_root, "Fabrikam Issuing CA", org="Fabrikam",
                                        cdp=http.url("fabrikam-root.crl"))
        their_leaf = make_leaf(their_inter, ["mx1.fabrikam.test", "fabrikam.test"],
                               cdp=http.url("fabrikam-issuing.crl"))
        http.files.update({
            "/contoso-root.crl": make_crl(our_root).public_bytes(serialization.Encoding.DER),
            "/contoso-issuing.crl": make_crl(our_inter).public_bytes(serialization.Encoding.DER),
            "/fabrikam-root.crl": make_crl(their_root).public_bytes(serialization.Encoding.DER),
            "/fabrikam-issuing.crl": make_crl(their_inter).public_bytes(serialization.Encoding.DER),
        })
        w = World(http, dns, our_root, our_inter, our_root, their_root, their_inter, their_leaf)
        w.our_leaf = w.leaf()
        try:
            yield w
        finally:
            if w.server is not None:
                w.server.close()


# --- golden files -----------------------------------------------------------------------------------

GOLDEN = __import__("pathlib").Path(__file__).parent / "golden"
REGEN_ENV = "CERTKIT_REGEN_GOLDEN"


def normalise(text: str) -> str:
    """Replace what changes from run to run (times, fingerprints, ports, serial-bearing names, temp paths)."""
    import re

    subs = [
        (r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(\+00:00|Z| UTC)?", "<TIME>"),
        (r"\d{4}-\d{2}-\d{2}", "<DATE>"),
        (r"\b[0-9A-F]{64}\b", "<SHA256>"),
        (r"\b[0-9A-F]{40}\b", "<SHA1>"),
        (r"\(-?\d+ days\)", "(<N> days)"),
        (r"127\.0\.0\.1:\d+", "127.0.0.1:<PORT>"),
        (r"\]:\d+", "]:<PORT>"),
        (r"port \d+", "port <PORT>"),
        (r"/tmp/[^\s\"<]+", "<TMP>"),
        (r"TLS_[A-Z0-9_]+", "<CIPHER>"),
        (r"(left|width|now): [\d.]+%", r"\1: <PCT>%"),
    ]
    for pattern, repl in subs:
        text = re.sub(pattern, repl, text)
    return text


def check_golden(name: str, text: str) -> None:
    """Compare ``text`` (normalised) with tests/golden/NAME; rewrite it when $CERTKIT_REGEN_GOLDEN is set."""
    import os

    path = GOLDEN / name
    got = normalise(text)
    if os.environ.get(REGEN_ENV) or not path.exists():
        if not os.environ.get(REGEN_ENV) and in_ci():
            raise AssertionError(f"golden file {path} is missing; run with {REGEN_ENV}=1 and commit it")
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(got)
        return
    expected = path.read_text()
    assert got == expected, f"{name} differs from its golden file (regenerate with {REGEN_ENV}=1 after review)"
